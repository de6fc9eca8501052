//! The steady workload of a scenario: orders created, then paid or cancelled, at a fixed rate,
//! with a tally of what clients were told.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use api::loms::{Item, OrderCancelRequest, OrderCreateRequest, OrderPayRequest};
use loms::domain::Status;
use tonic::Code;

/// One order every this long: about 200 orders per second.
const ORDER_EVERY: Duration = Duration::from_millis(5);
/// How long a client waits to connect before the call counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a call may take before it counts as failed: a call whose connection went away
/// without an answer must not hold the workload's end (and the run) for ever.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Skus the workload spreads its orders over.
const SKUS: u64 = 100;

#[derive(Default)]
pub struct Tally {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    /// Replies outside the contract (a 5xx other than Unavailable, an unexpected code).
    pub bad: AtomicU64,
    /// Orders whose OrderCreate returned OK, with the status a later pay or cancel returned OK
    /// for, if one did.
    pub acknowledged: Mutex<Vec<(i64, Option<Status>)>>,
    /// Every OrderCreate answered.
    pub creates: Mutex<Vec<Create>>,
}

/// One OrderCreate: when it was answered, whether with OK, and how long the call took.
pub struct Create {
    pub at: SystemTime,
    pub ok: bool,
    pub took: Duration,
}

impl Tally {
    fn judge(&self, code: Code) {
        match code {
            // ResourceExhausted: refused at once when too many requests are in flight.
            Code::Unavailable
            | Code::ResourceExhausted
            | Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::FailedPrecondition => self.failed.fetch_add(1, Ordering::Relaxed),
            _ => {
                eprintln!("reply outside the contract: {code:?}");
                self.bad.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

/// Drives the workload against `addresses` (shared, so that a fault can swap replicas) until
/// `stop`.
pub fn start(
    addresses: Arc<Mutex<Vec<String>>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(ORDER_EVERY);
        let mut i: u64 = 0;
        let mut tasks = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            ticker.tick().await;
            i += 1;
            let address = {
                let a = addresses.lock().unwrap();
                a[i as usize % a.len()].clone()
            };
            let tally = tally.clone();
            tasks.push(tokio::spawn(
                async move { one_order(&address, i, &tally).await },
            ));
        }
        futures::future::join_all(tasks).await;
    })
}

/// `call`, or DeadlineExceeded once it took [`CALL_TIMEOUT`].
async fn called<T>(
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer from loms")))
}

async fn one_order(address: &str, i: u64, tally: &Tally) {
    let Ok(Ok(mut client)) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        api::LomsClient::connect(format!("http://{address}")),
    )
    .await
    else {
        tally.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let request = OrderCreateRequest {
        user_id: i as i64,
        items: vec![Item {
            sku: systest::load_sku(i % SKUS),
            count: 1,
        }],
    };
    let started = std::time::Instant::now();
    let reply = called(client.order_create(request)).await;
    tally.creates.lock().unwrap().push(Create {
        at: SystemTime::now(),
        ok: reply.is_ok(),
        took: started.elapsed(),
    });
    let order_id = match reply {
        Ok(r) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            r.get_ref().order_id
        }
        Err(s) => return tally.judge(s.code()),
    };
    let index = {
        let mut a = tally.acknowledged.lock().unwrap();
        a.push((order_id, None));
        a.len() - 1
    };
    let (status, result) = if i.is_multiple_of(2) {
        let reply = called(client.order_pay(OrderPayRequest { order_id })).await;
        (Status::Payed, reply.map(drop))
    } else {
        let reply = called(client.order_cancel(OrderCancelRequest { order_id })).await;
        (Status::Cancelled, reply.map(drop))
    };
    match result {
        Ok(()) => {
            tally.ok.fetch_add(1, Ordering::Relaxed);
            tally.acknowledged.lock().unwrap()[index].1 = Some(status);
        }
        Err(s) => tally.judge(s.code()),
    }
}
