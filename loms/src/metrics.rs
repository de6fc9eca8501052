//! Counters for `GET /metrics` (Prometheus text format). Outbox backlog and age are read from the
//! database at scrape time, so they are right whichever replica holds the relay.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;

#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<BTreeMap<(&'static str, i32), u64>>,
    events_published: AtomicU64,
    delivery_errors: AtomicU64,
    relay_leader: AtomicU64,
}

impl Metrics {
    pub fn request(&self, method: &'static str, code: tonic::Code) {
        let mut requests = self
            .inner
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *requests.entry((method, code as i32)).or_default() += 1;
    }

    pub fn published(&self, n: u64) {
        self.inner.events_published.fetch_add(n, Ordering::Relaxed);
    }

    pub fn delivery_error(&self) {
        self.inner.delivery_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner
            .relay_leader
            .store(u64::from(leader), Ordering::Relaxed);
    }

    pub fn events_published(&self) -> u64 {
        self.inner.events_published.load(Ordering::Relaxed)
    }

    pub async fn render(&self, pool: &PgPool) -> String {
        let mut out = String::new();
        out.push_str("# HELP loms_requests_total Requests handled, by method and gRPC code.\n# TYPE loms_requests_total counter\n");
        for ((method, code), n) in self
            .inner
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "loms_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
            );
        }
        let counters = [
            (
                "loms_events_published_total",
                "Order events acknowledged by Kafka.",
                &self.inner.events_published,
            ),
            (
                "loms_relay_delivery_errors_total",
                "Batches stopped by a delivery error.",
                &self.inner.delivery_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP loms_relay_leader 1 when this replica holds the relay lock.\n# TYPE loms_relay_leader gauge\nloms_relay_leader {}",
            self.inner.relay_leader.load(Ordering::Relaxed)
        );
        let backlog: Result<(i64, f64), _> = sqlx::query_as(
            "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at))::float8, 0) FROM outbox",
        )
        .fetch_one(pool)
        .await;
        match backlog {
            Ok((rows, age)) => {
                let _ = writeln!(
                    out,
                    "# HELP loms_outbox_backlog Events waiting in the outbox.\n# TYPE loms_outbox_backlog gauge\nloms_outbox_backlog {rows}\n\
                     # HELP loms_outbox_oldest_age_seconds Age of the oldest waiting event.\n# TYPE loms_outbox_oldest_age_seconds gauge\nloms_outbox_oldest_age_seconds {age}"
                );
            }
            Err(e) => tracing::warn!(error = %e, "metrics: outbox backlog not readable"),
        }
        out
    }
}
