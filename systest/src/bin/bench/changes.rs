//! OrderPay and OrderCancel at capacity, on the orders the OrderCreate run left awaiting
//! payment: 64 clients pay the first half of them, then cancel the second half, each for half
//! the run's time so that the orders last; with the requests per batch of changes.

use std::sync::Arc;
use std::time::Duration;

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
    /// Orders payed and cancelled: fewer than the calls if the clients ran out of orders and
    /// paid or cancelled some twice (answered at once, nothing to change).
    pub changed: (i64, i64),
}

pub async fn measure(loms: &LomsProcess, notifier: u32, secs: u64) -> Changes {
    let pool = sqlx::PgPool::connect(&loms.options().database_url)
        .await
        .expect("connect");
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM orders WHERE status = 'awaiting payment' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("order ids");
    let (to_pay, to_cancel) = ids.split_at(ids.len() / 2);
    let run = Duration::from_secs(secs.div_ceil(2));
    let pids = (Some(loms.process.pid()), Some(notifier));
    let before = histogram::parse(&histogram::scrape(&loms.admin).await, BATCH_SIZES);
    let to_pay = Arc::new(to_pay.to_vec());
    let (pay, pay_cpu) = cpu::measured(
        pids.0,
        pids.1,
        load::closed_loop(&loms.grpc, CLIENTS, run, move |mut client, i| {
            let order_id = to_pay[i as usize % to_pay.len()];
            async move {
                client
                    .order_pay(OrderPayRequest { order_id })
                    .await
                    .expect("OrderPay");
            }
        }),
    )
    .await;
    let to_cancel = Arc::new(to_cancel.to_vec());
    let (cancel, cancel_cpu) = cpu::measured(
        pids.0,
        pids.1,
        load::closed_loop(&loms.grpc, CLIENTS, run, move |mut client, i| {
            let order_id = to_cancel[i as usize % to_cancel.len()];
            async move {
                client
                    .order_cancel(OrderCancelRequest { order_id })
                    .await
                    .expect("OrderCancel");
            }
        }),
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
        pay: Run {
            load: pay,
            cpu: pay_cpu,
        },
        cancel: Run {
            load: cancel,
            cpu: cancel_cpu,
        },
        batches,
        changed,
    }
}

impl Changes {
    pub fn print(&self, secs: u64) {
        crate::print_run("OrderPay", "/s", secs.div_ceil(2), &self.pay);
        crate::print_run("OrderCancel", "/s", secs.div_ceil(2), &self.cancel);
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
