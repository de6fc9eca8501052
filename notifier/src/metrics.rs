//! The notifier's metrics (`prometheus-client`, OpenMetrics text) and readiness, served on the
//! optional admin listener (`service_runtime::admin`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use service_runtime::admin::{Readiness, Status};
use service_runtime::listener::ListenerMetrics;
use service_runtime::metrics::{register, register_latency};

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    figures: Figures,
}

struct Figures {
    handled: Counter,
    decode_errors: Counter,
    duplicates: Counter,
    out_of_order: Counter,
    dlq_retries: Counter,
    dlq_writes: Counter,
    commit_errors: Counter,
    lag: Gauge,
    group_member: Gauge,
    broker_up: Gauge,
    event_age: Histogram,
    fetch_requests: Counter,
    listeners: ListenerMetrics,
}

impl Figures {
    #[rustfmt::skip]
    fn register(r: &mut Registry) -> Self {
        Self {
            handled: register(r, "notifier_events_handled", "Events logged."),
            decode_errors: register(r, "notifier_decode_errors", "Messages that did not decode."),
            duplicates: register(r, "notifier_duplicates", "Events seen again within the window."),
            out_of_order: register(r, "notifier_out_of_order", "Unseen events logged after a later event of their order."),
            dlq_writes: register(r, "notifier_dlq_writes", "Messages written to the dead-letter topic."),
            commit_errors: register(r, "notifier_commit_errors", "Offset commits that failed."),
            dlq_retries: register(r, "notifier_dlq_retries", "Failed writes to the dead-letter topic, retried."),
            lag: register(r, "notifier_consumer_lag", "Messages not yet handled on the assigned partitions."),
            group_member: register(r, "notifier_group_member", "1 while this consumer is a member of its group."),
            broker_up: register(r, "notifier_broker_up", "1 while a broker of the cluster is reachable (librdkafka's statistics)."),
            event_age: register_latency(r, "notifier_event_age_seconds", "Time from an event's occurred_at to its handling."),
            fetch_requests: register(r, "notifier_kafka_fetch_requests", "Fetch requests the consumer sent (librdkafka's statistics, as often as statistics.interval.ms; only with an admin listener)."),
            listeners: ListenerMetrics::register(r, "notifier"),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let figures = Figures::register(&mut registry);
        service_runtime::telemetry::register_dropped_lines(&mut registry, "notifier");
        service_runtime::telemetry::register_dropped_spans(&mut registry, "notifier");
        Self {
            inner: Arc::new(Inner { registry, figures }),
        }
    }
}

impl Metrics {
    /// An event logged; `out_of_order` when a later event of its order was logged before it.
    pub fn handled(&self, out_of_order: bool) {
        self.inner.figures.handled.inc();
        if out_of_order {
            self.inner.figures.out_of_order.inc();
        }
    }

    /// Events logged so far.
    pub fn handled_count(&self) -> u64 {
        self.inner.figures.handled.get()
    }

    pub fn duplicate(&self) {
        self.inner.figures.duplicates.inc();
    }

    pub fn decode_error(&self) {
        self.inner.figures.decode_errors.inc();
    }

    pub fn dlq_write(&self) {
        self.inner.figures.dlq_writes.inc();
    }

    pub fn dlq_retry(&self) {
        self.inner.figures.dlq_retries.inc();
    }

    /// An offset commit the broker refused or that failed.
    pub fn commit_error(&self) {
        self.inner.figures.commit_errors.inc();
    }

    /// Messages between the last handled offset and the end of the assigned partitions.
    pub fn set_lag(&self, lag: i64) {
        self.inner.figures.lag.set(lag);
    }

    /// Whether librdkafka's last statistics showed a broker of the cluster up.
    pub fn set_broker_up(&self, up: bool) {
        self.inner.figures.broker_up.set(i64::from(up));
    }

    /// Whether this consumer is a member of its group (given an assignment, even an empty one).
    pub fn set_group_member(&self, member: bool) {
        self.inner.figures.group_member.set(i64::from(member));
    }

    pub fn fetch_requests(&self, sent: u64) {
        self.inner.figures.fetch_requests.inc_by(sent);
    }

    /// Now minus the event's `occurred_at`, when it is handled.
    pub fn observe_age(&self, age: Duration) {
        self.inner.figures.event_age.observe(age.as_secs_f64());
    }

    pub fn render(&self) -> String {
        service_runtime::metrics::encode(&self.inner.registry)
    }

    pub fn listeners(&self) -> ListenerMetrics {
        self.inner.figures.listeners.clone()
    }
}

impl Status for Metrics {
    fn metrics(&self) -> String {
        self.render()
    }

    /// Ready: a member of its group, with a broker reachable.
    fn readiness(&self) -> Readiness {
        let group_member = self.inner.figures.group_member.get() == 1;
        let broker_up = self.inner.figures.broker_up.get() == 1;
        Readiness {
            ready: group_member && broker_up,
            parts: [
                ("group_member".to_string(), group_member.into()),
                ("broker_up".to_string(), broker_up.into()),
            ]
            .into_iter()
            .collect(),
        }
    }
}
