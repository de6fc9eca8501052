//! Metrics for `GET /metrics`, through `prometheus-client` (OpenMetrics text). The outbox backlog
//! and age are read from the database at scrape time, so they are right whichever replica holds
//! the relay.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    events_published: Counter,
    delivery_errors: Counter,
    events_parked: Counter,
    outbox_parked: Gauge,
    relay_leader: Gauge,
    outbox_backlog: Gauge,
    outbox_oldest_age: Gauge<f64, AtomicU64>,
    outbox_wait: Histogram,
    publish: Histogram,
    relay_cycle: Histogram,
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

fn stage(registry: &mut Registry, name: &str, help: &str) -> Histogram {
    let h = service_runtime::metrics::latency_histogram();
    registry.register(name, help, h.clone());
    h
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: Family<MethodLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(service_runtime::metrics::latency_histogram);
        let outbox_oldest_age = Gauge::<f64, AtomicU64>::default();
        r.register(
            "loms_requests",
            "Requests handled, by method and gRPC code.",
            requests.clone(),
        );
        r.register(
            "loms_request_duration_seconds",
            "Time to handle a request, by method.",
            request_duration.clone(),
        );
        r.register(
            "loms_outbox_oldest_age_seconds",
            "Age of the oldest waiting event, as the relay leader last measured it.",
            outbox_oldest_age.clone(),
        );
        let inner = Inner {
            requests,
            request_duration,
            events_published: counter(
                r,
                "loms_events_published",
                "Order events acknowledged by Kafka.",
            ),
            delivery_errors: counter(
                r,
                "loms_relay_delivery_errors",
                "Batches stopped by a delivery error.",
            ),
            events_parked: counter(
                r,
                "loms_events_parked",
                "Outbox rows parked: refused for good by the broker, or behind such a row of their order.",
            ),
            outbox_parked: gauge(
                r,
                "loms_outbox_parked_rows",
                "Parked outbox rows waiting for an operator (loms outbox parked), as the relay last counted them.",
            ),
            relay_leader: gauge(
                r,
                "loms_relay_leader",
                "1 when this replica holds the relay lock.",
            ),
            outbox_backlog: gauge(r, "loms_outbox_backlog", "Events waiting in the outbox (estimated from the ids of the oldest and newest rows), as the relay leader last measured it."),
            outbox_oldest_age,
            outbox_wait: stage(
                r,
                "loms_outbox_wait_seconds",
                "Time from an event's transaction to its read by the relay.",
            ),
            publish: stage(
                r,
                "loms_relay_publish_seconds",
                "Time from an event's read by the relay to its acknowledgement by Kafka.",
            ),
            relay_cycle: stage(
                r,
                "loms_relay_cycle_seconds",
                "Time from a batch's read to its deletion once acknowledged.",
            ),
            registry: Registry::default(),
        };
        service_runtime::telemetry::register_dropped_lines(&mut registry, "loms");
        service_runtime::telemetry::register_dropped_spans(&mut registry, "loms");
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }
}

impl Metrics {
    pub fn request(&self, method: &'static str, code: tonic::Code, took: Duration) {
        // By name (`NotFound`), as dashboards and alerts read it, not by number.
        let code = format!("{code:?}");
        self.inner
            .requests
            .get_or_create(&RequestLabels { method, code })
            .inc();
        self.inner
            .request_duration
            .get_or_create(&MethodLabel { method })
            .observe(took.as_secs_f64());
    }

    pub fn published(&self, n: u64) {
        self.inner.events_published.inc_by(n);
    }

    pub fn outbox_wait(&self, seconds: f64) {
        self.inner.outbox_wait.observe(seconds);
    }

    pub fn publish(&self, took: Duration) {
        self.inner.publish.observe(took.as_secs_f64());
    }

    pub fn relay_cycle(&self, took: Duration) {
        self.inner.relay_cycle.observe(took.as_secs_f64());
    }

    pub fn delivery_error(&self) {
        self.inner.delivery_errors.inc();
    }

    /// `n` outbox rows parked; `total` are parked now.
    pub fn parked(&self, n: u64) {
        self.inner.events_parked.inc_by(n);
    }

    pub fn set_parked_rows(&self, rows: i64) {
        self.inner.outbox_parked.set(rows);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.relay_leader.set(i64::from(leader));
    }

    pub fn events_published(&self) -> u64 {
        self.inner.events_published.get()
    }

    /// The outbox backlog as the relay last measured it.
    pub fn set_backlog(&self, rows: i64, oldest_age_secs: f64) {
        self.inner.outbox_backlog.set(rows);
        self.inner.outbox_oldest_age.set(oldest_age_secs);
    }

    /// The OpenMetrics text: no query runs for a scrape.
    pub fn render(&self) -> String {
        service_runtime::metrics::encode(&self.inner.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_codes_are_labelled_by_name() {
        let metrics = Metrics::default();
        metrics.request("OrderInfo", tonic::Code::NotFound, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains("loms_requests_total{method=\"OrderInfo\",code=\"NotFound\"} 1"),
            "{text}"
        );
    }
}
