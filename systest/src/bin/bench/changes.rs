//! OrderPay and OrderCancel at capacity, on the orders the OrderCreate run left awaiting
//! payment: 64 clients pay the first half of them, then cancel the second half, each order
//! once; with the requests per batch of changes.

use std::future::Future;
use std::sync::Arc;

use api::loms::{OrderCancelRequest, OrderPayRequest};
use testkit::process::LomsProcess;

use crate::histogram::{self, Buckets};
use crate::{cpu, load, Run, CLIENTS};

/// loms's OrderPay and OrderCancel batches (requests per batch of changes).
const BATCH_SIZES: &str = "loms_change_batch_size";

pub struct Changes {
    pub pay: Run,
    pub cancel: Run,
    pub batches: Buckets,
    /// Orders payed and cancelled, counted in the database: each call changed one.
    pub changed: (i64, i64),
}

pub async fn measure(loms: &LomsProcess, notifier: u32) -> Changes {
    let pool = sqlx::PgPool::connect(&loms.options().database_url)
        .await
        .expect("connect");
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM orders WHERE status = 'awaiting payment' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("order ids");
    let (to_pay, to_cancel) = ids.split_at(ids.len() / 2);
    let pids = (Some(loms.process.pid()), Some(notifier));
    let before = histogram::parse(&histogram::scrape(&loms.admin).await, BATCH_SIZES);
    let pay = changing(
        &loms.grpc,
        pids,
        to_pay,
        |mut client, order_id| async move {
            let request = OrderPayRequest { order_id };
            client.order_pay(request).await.expect("OrderPay");
        },
    )
    .await;
    let cancel = changing(
        &loms.grpc,
        pids,
        to_cancel,
        |mut client, order_id| async move {
            let request = OrderCancelRequest { order_id };
            client.order_cancel(request).await.expect("OrderCancel");
        },
    )
    .await;
    let batches =
        histogram::parse(&histogram::scrape(&loms.admin).await, BATCH_SIZES).since(&before);
    let changed = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'payed'), count(*) FILTER (WHERE status = 'cancelled') FROM orders",
    )
    .fetch_one(&pool)
    .await
    .expect("count changes");
    Changes {
        pay,
        cancel,
        batches,
        changed,
    }
}

/// `CLIENTS` clients call `change` once on each of `ids`.
async fn changing<F, Fut>(
    grpc: &str,
    pids: (Option<u32>, Option<u32>),
    ids: &[i64],
    change: F,
) -> Run
where
    F: Fn(load::Client, i64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let ids = Arc::new(ids.to_vec());
    let stop = load::Stop::Calls(ids.len() as u64);
    let calls = load::closed_loop(grpc, CLIENTS, stop, move |client, i| {
        change(client, ids[i as usize])
    });
    let (load, cpu) = cpu::measured(pids.0, pids.1, calls).await;
    Run { load, cpu }
}

impl Changes {
    pub fn print(&self) {
        let runs = [("OrderPay", &self.pay), ("OrderCancel", &self.cancel)];
        for (name, run) in runs {
            let secs = run.load.elapsed.as_secs_f64();
            crate::print_run(name, "/s", &format!("{secs:.1} s"), run);
        }
        let b = &self.batches;
        println!(
            "     requests per batch of changes (both runs): p50 {:.1}, p99 {:.1}, max <= {:.0} ({} batches); orders payed {}, cancelled {}",
            b.quantile(0.5),
            b.quantile(0.99),
            b.max_at_most(),
            b.count(),
            self.changed.0,
            self.changed.1
        );
    }

    /// The bench table's row.
    pub fn table_row(&self) -> String {
        let (pay, cancel) = (&self.pay, &self.cancel);
        format!(
            "| OrderPay, OrderCancel, {CLIENTS} clients | {:.0}/s, {:.0}/s; PostgreSQL CPU per call {:.0}, {:.0} us; {:.1} requests per batch at p50 | |",
            pay.load.rate(),
            cancel.load.rate(),
            pay.per_call_us("postgres"),
            cancel.per_call_us("postgres"),
            self.batches.quantile(0.5)
        )
    }

    pub fn json(&self) -> serde_json::Value {
        let run = |r: &Run| {
            serde_json::json!({
                "throughput_per_s": r.load.rate(),
                "latency_ms": {"p50": r.load.p(0.5), "p99": r.load.p(0.99)},
                "pg_cpu_us_per_call": r.per_call_us("postgres"),
                "machine_cpu_us_per_call": r.cpu.per_op_us(r.load.rate()),
                "cpu_cores": r.cpu.json(),
            })
        };
        let b = &self.batches;
        serde_json::json!({
            "pay": run(&self.pay),
            "cancel": run(&self.cancel),
            "batch_requests": {"p50": b.quantile(0.5), "p99": b.quantile(0.99), "max_at_most": b.max_at_most(), "batches": b.count()},
            "orders_payed": self.changed.0,
            "orders_cancelled": self.changed.1,
        })
    }
}
