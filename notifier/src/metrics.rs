//! Counters on the optional `--metrics-addr` (Prometheus text format).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Metrics(Arc<Counters>);

#[derive(Default)]
pub struct Counters {
    pub handled: AtomicU64,
    pub decode_errors: AtomicU64,
    pub duplicates: AtomicU64,
    pub dlq_retries: AtomicU64,
    /// Messages between the last handled offset and the end of the assigned partitions.
    pub lag: AtomicI64,
}

impl std::ops::Deref for Metrics {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.0
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "notifier_events_handled_total",
                "counter",
                "Events logged.",
                self.handled.load(Ordering::Relaxed) as i64,
            ),
            (
                "notifier_decode_errors_total",
                "counter",
                "Messages that did not decode.",
                self.decode_errors.load(Ordering::Relaxed) as i64,
            ),
            (
                "notifier_duplicates_total",
                "counter",
                "Events seen again within the window.",
                self.duplicates.load(Ordering::Relaxed) as i64,
            ),
            (
                "notifier_dlq_retries_total",
                "counter",
                "Failed writes to the dead-letter topic, retried.",
                self.dlq_retries.load(Ordering::Relaxed) as i64,
            ),
            (
                "notifier_consumer_lag",
                "gauge",
                "Messages not yet handled on the assigned partitions.",
                self.lag.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        out
    }
}

/// Serves `GET /metrics` until `shutdown`.
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics served");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move { metrics.render() }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
