//! The test harness of the whole workspace, one copy of it: every integration test and the
//! whole-system programs (bench, chaos) start, wait for, stop and judge the system through it.
//!
//! - [`stack`]: the stack from the environment (`make test` and `with-stack.sh` set it), and
//!   `stack.sh` commands to stop and start its pieces;
//! - [`db`]: fresh databases, the outbox, what committed;
//! - [`kafka`]: fresh topics, a producer, a topic reader returning partition, offset and key;
//! - [`process`]: loms and notifier as processes of their own, started until ready, signalled,
//!   killed, waited for until gone and their ports free;
//! - [`app`]: loms in the test's own process, on free ports;
//! - [`jaeger`]: Jaeger on free ports, and the spans it holds of a trace;
//! - [`browser`]: headless Chromium over WebDriver, for pages;
//! - [`eventually`]: the one poller;
//! - [`checks`]: the judgement of a topic's events; [`compose`]: reading the compose file.

pub mod app;
pub mod browser;
pub mod checks;
pub mod compose;
pub mod db;
pub mod fuzz;
pub mod jaeger;
pub mod kafka;
pub mod notifier_app;
pub mod process;
pub mod stack;
pub mod toxiproxy;

/// The order status, with its text form and history, as the system under test defines it.
pub use loms::domain::Status;

use std::future::Future;
use std::time::Duration;

/// How often [`eventually`] checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Waits until `condition` holds, checking it every few milliseconds; panics naming `what`
/// when it does not hold `within` the given time.
pub async fn eventually<F, Fut>(what: &str, within: Duration, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        holds_within(within, condition).await,
        "timed out after {within:?} waiting until {what}"
    );
}

/// Waits until `condition` holds, at most `within`; whether it came to hold.
pub async fn holds_within<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A unique suffix for names of databases, topics and groups.
pub fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// An order of one unit of a seeded sku, by user 42, through `client`: its id.
pub async fn one_order(client: &mut api::LomsClient<tonic::transport::Channel>) -> i64 {
    let request = api::loms::OrderCreateRequest {
        user_id: 42,
        items: vec![api::loms::Item {
            sku: 1076963,
            count: 1,
        }],
    };
    client
        .order_create(request)
        .await
        .expect("OrderCreate")
        .get_ref()
        .order_id
}
