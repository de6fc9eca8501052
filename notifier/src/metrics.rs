//! Metrics on the optional `--admin-addr` (with `/readyz` and `/livez`), through `prometheus-client` (OpenMetrics text).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

pub struct Inner {
    registry: Registry,
    pub handled: Counter,
    pub decode_errors: Counter,
    pub duplicates: Counter,
    /// Unseen events logged after a later event of their order.
    pub out_of_order: Counter,
    pub dlq_retries: Counter,
    /// Messages written to the dead-letter topic.
    pub dlq_writes: Counter,
    /// Offset commits the broker refused or that failed.
    pub commit_errors: Counter,
    /// Messages between the last handled offset and the end of the assigned partitions.
    pub lag: Gauge,
    /// 1 while this consumer is a member of its group (given an assignment, even an empty one).
    pub group_member: Gauge,
    /// 1 while librdkafka's last statistics showed a broker of the cluster up.
    pub broker_up: Gauge,
    /// Now minus the event's `occurred_at`, when it is handled.
    pub event_age: Histogram,
}

impl std::ops::Deref for Metrics {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let handled = counter(&mut registry, "notifier_events_handled", "Events logged.");
        let decode_errors = counter(
            &mut registry,
            "notifier_decode_errors",
            "Messages that did not decode.",
        );
        let duplicates = counter(
            &mut registry,
            "notifier_duplicates",
            "Events seen again within the window.",
        );
        let out_of_order = counter(
            &mut registry,
            "notifier_out_of_order",
            "Unseen events logged after a later event of their order.",
        );
        let dlq_writes = counter(
            &mut registry,
            "notifier_dlq_writes",
            "Messages written to the dead-letter topic.",
        );
        let commit_errors = counter(
            &mut registry,
            "notifier_commit_errors",
            "Offset commits that failed.",
        );
        let dlq_retries = counter(
            &mut registry,
            "notifier_dlq_retries",
            "Failed writes to the dead-letter topic, retried.",
        );
        let lag = Gauge::default();
        registry.register(
            "notifier_consumer_lag",
            "Messages not yet handled on the assigned partitions.",
            lag.clone(),
        );
        let group_member = Gauge::default();
        registry.register(
            "notifier_group_member",
            "1 while this consumer is a member of its group.",
            group_member.clone(),
        );
        let broker_up = Gauge::default();
        registry.register(
            "notifier_broker_up",
            "1 while a broker of the cluster is reachable (librdkafka's statistics).",
            broker_up.clone(),
        );
        let event_age = service_runtime::metrics::latency_histogram();
        registry.register(
            "notifier_event_age_seconds",
            "Time from an event's occurred_at to its handling.",
            event_age.clone(),
        );
        service_runtime::telemetry::register_dropped_lines(&mut registry, "notifier");
        service_runtime::telemetry::register_dropped_spans(&mut registry, "notifier");
        Self(Arc::new(Inner {
            registry,
            handled,
            decode_errors,
            duplicates,
            out_of_order,
            dlq_retries,
            dlq_writes,
            commit_errors,
            lag,
            group_member,
            broker_up,
            event_age,
        }))
    }
}

impl Metrics {
    pub fn observe_age(&self, age: Duration) {
        self.event_age.observe(age.as_secs_f64());
    }

    pub fn render(&self) -> String {
        service_runtime::metrics::encode(&self.registry)
    }

    /// Ready: a member of its group, with a broker reachable.
    pub fn ready(&self) -> bool {
        self.group_member.get() == 1 && self.broker_up.get() == 1
    }
}

/// Serves `GET /metrics`, `GET /readyz` (200 when [`Metrics::ready`], 503 otherwise) and
/// `GET /livez` until `shutdown`.
pub async fn serve(
    addr: &str,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics served");
    let ready = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        service_runtime::metrics::CONTENT_TYPE,
                    )],
                    metrics.render(),
                )
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || async move {
                if ready.ready() {
                    (axum::http::StatusCode::OK, "ready")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route("/livez", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
