//! Metrics for the admin listener's `GET /metrics`, through `prometheus-client` (OpenMetrics
//! text). Nothing is queried for a scrape: the relay leader measures the outbox backlog on its
//! own connection every second, the pool's gauges are read from the pool's counters, and the
//! producer's queue from librdkafka's statistics.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use service_runtime::listener::ListenerMetrics;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<MethodLabel, Histogram, fn() -> Histogram>,
    relay: RelayMetrics,
    pool: PoolMetrics,
    order_batch_size: Histogram,
    change_batch_size: Histogram,
    listeners: ListenerMetrics,
}

/// The relay's figures: what it published, how it fails, and the outbox it works through.
struct RelayMetrics {
    events_published: Counter,
    delivery_errors: Counter,
    events_parked: Counter,
    outbox_parked: Gauge,
    leader: Gauge,
    last_publish: FloatGauge,
    consecutive_failures: Gauge,
    outbox_backlog: Gauge,
    outbox_oldest_age: FloatGauge,
    outbox_wait: Histogram,
    publish: Histogram,
    cycle: Histogram,
    producer_queue_messages: Gauge,
    producer_queue_bytes: Gauge,
    produce_requests: Counter,
}

/// The request pool's connections, read from the pool itself at each scrape.
struct PoolMetrics {
    pool: OnceLock<PgPool>,
    in_use: Gauge,
    idle: Gauge,
    max: Gauge,
}

use service_runtime::metrics::{register, register_latency as stage};

impl RelayMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            events_published: register(r, "loms_events_published", "Order events acknowledged by Kafka."),
            delivery_errors: register(r, "loms_relay_delivery_errors", "Batches stopped by a delivery error."),
            events_parked: register(r, "loms_events_parked", "Outbox rows parked: refused for good by the broker, or behind such a row of their order."),
            outbox_parked: register(r, "loms_outbox_parked_rows", "Parked outbox rows waiting for an operator (loms outbox parked), as the relay last counted them."),
            leader: register(r, "loms_relay_leader", "1 when this replica holds the relay lock."),
            last_publish: register(r, "loms_relay_last_publish_timestamp_seconds", "Unix time of this replica's last batch acknowledged by Kafka and deleted (0: none yet)."),
            consecutive_failures: register(r, "loms_relay_consecutive_failures", "Delivery failures and lost leadership terms since the relay last published; 0 while it publishes."),
            outbox_backlog: register(r, "loms_outbox_backlog", "Events waiting in the outbox (estimated from the ids of the oldest and newest rows), as the relay leader last measured it."),
            outbox_oldest_age: register(r, "loms_outbox_oldest_age_seconds", "Age of the oldest waiting event, as the relay leader last measured it."),
            outbox_wait: stage(r, "loms_outbox_wait_seconds", "Time from an event's transaction to its read by the relay."),
            publish: stage(r, "loms_relay_publish_seconds", "Time from an event's read by the relay to its acknowledgement by Kafka."),
            cycle: stage(r, "loms_relay_cycle_seconds", "Time from a batch's read to its deletion once acknowledged."),
            producer_queue_messages: register(r, "loms_kafka_producer_queue_messages", "Messages in the relay producer's queue, not yet acknowledged (librdkafka's statistics)."),
            producer_queue_bytes: register(r, "loms_kafka_producer_queue_bytes", "Bytes in the relay producer's queue (librdkafka's statistics)."),
            produce_requests: register(r, "loms_kafka_produce_requests", "Produce requests the relay's producer sent (librdkafka's statistics, as often as statistics.interval.ms)."),
        }
    }
}

impl PoolMetrics {
    fn register(r: &mut Registry) -> Self {
        Self {
            pool: OnceLock::new(),
            in_use: register(
                r,
                "loms_db_pool_connections_in_use",
                "The request pool's connections serving a request now.",
            ),
            idle: register(
                r,
                "loms_db_pool_connections_idle",
                "The request pool's open connections waiting for a request.",
            ),
            max: register(
                r,
                "loms_db_pool_max_connections",
                "Most connections the request pool opens.",
            ),
        }
    }

    fn refresh(&self) {
        let Some(pool) = self.pool.get() else {
            return;
        };
        let (open, idle) = (i64::from(pool.size()), pool.num_idle() as i64);
        self.idle.set(idle);
        self.in_use.set((open - idle).max(0));
        self.max
            .set(i64::from(pool.options().get_max_connections()));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: Family<MethodLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(service_runtime::metrics::latency_histogram);
        registry.register(
            "loms_requests",
            "Requests handled, by method and gRPC code.",
            requests.clone(),
        );
        registry.register(
            "loms_request_duration_seconds",
            "Time to handle a request, by method.",
            request_duration.clone(),
        );
        let order_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "loms_order_batch_size",
            "Orders committed together by one call of create_orders.",
            order_batch_size.clone(),
        );
        let change_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "loms_change_batch_size",
            "OrderPay and OrderCancel requests decided together by one batch (one read, at most one call of change_orders).",
            change_batch_size.clone(),
        );
        let listeners = ListenerMetrics::register(&mut registry, "loms");
        let relay = RelayMetrics::register(&mut registry);
        let pool = PoolMetrics::register(&mut registry);
        service_runtime::telemetry::register_dropped_lines(&mut registry, "loms");
        service_runtime::telemetry::register_dropped_spans(&mut registry, "loms");
        Self {
            inner: Arc::new(Inner {
                registry,
                requests,
                request_duration,
                relay,
                pool,
                order_batch_size,
                change_batch_size,
                listeners,
            }),
        }
    }
}

/// What the relay of this replica is doing, for `/readyz`'s body.
#[derive(Debug, serde::Serialize)]
pub struct RelayStatus {
    pub leader: bool,
    pub consecutive_failures: i64,
    /// Seconds since this replica last published, if it ever did.
    pub last_publish_age_seconds: Option<f64>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
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

    /// The pool whose connections the scrape reports.
    /// The listeners' connection figures, for the listeners to keep.
    pub fn listeners(&self) -> ListenerMetrics {
        self.inner.listeners.clone()
    }

    pub fn order_batch(&self, orders: usize) {
        self.inner.order_batch_size.observe(orders as f64);
    }

    pub fn change_batch(&self, requests: usize) {
        self.inner.change_batch_size.observe(requests as f64);
    }

    pub fn watch_pool(&self, pool: PgPool) {
        let _ = self.inner.pool.pool.set(pool);
    }

    /// `n` events acknowledged and deleted: the relay publishes.
    pub fn published(&self, n: u64) {
        if n == 0 {
            return;
        }
        let relay = &self.inner.relay;
        relay.events_published.inc_by(n);
        relay.last_publish.set(unix_now());
        relay.consecutive_failures.set(0);
    }

    /// A delivery failed or a leadership term ended in an error.
    pub fn relay_failure(&self) {
        self.inner.relay.consecutive_failures.inc();
    }

    pub fn outbox_wait(&self, seconds: f64) {
        self.inner.relay.outbox_wait.observe(seconds);
    }

    pub fn publish(&self, took: Duration) {
        self.inner.relay.publish.observe(took.as_secs_f64());
    }

    pub fn relay_cycle(&self, took: Duration) {
        self.inner.relay.cycle.observe(took.as_secs_f64());
    }

    pub fn delivery_error(&self) {
        self.inner.relay.delivery_errors.inc();
        self.relay_failure();
    }

    /// `n` outbox rows parked.
    pub fn parked(&self, n: u64) {
        self.inner.relay.events_parked.inc_by(n);
    }

    pub fn set_parked_rows(&self, rows: i64) {
        self.inner.relay.outbox_parked.set(rows);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.relay.leader.set(i64::from(leader));
    }

    pub fn events_published(&self) -> u64 {
        self.inner.relay.events_published.get()
    }

    /// The outbox backlog as the relay last measured it.
    pub fn set_backlog(&self, rows: i64, oldest_age_secs: f64) {
        self.inner.relay.outbox_backlog.set(rows);
        self.inner.relay.outbox_oldest_age.set(oldest_age_secs);
    }

    /// The relay producer's queue, from librdkafka's statistics.
    pub fn set_producer_queue(&self, messages: i64, bytes: i64) {
        self.inner.relay.producer_queue_messages.set(messages);
        self.inner.relay.producer_queue_bytes.set(bytes);
    }

    pub fn produce_requests(&self, sent: u64) {
        self.inner.relay.produce_requests.inc_by(sent);
    }

    pub fn relay_status(&self) -> RelayStatus {
        let relay = &self.inner.relay;
        let last = relay.last_publish.get();
        RelayStatus {
            leader: relay.leader.get() == 1,
            consecutive_failures: relay.consecutive_failures.get(),
            last_publish_age_seconds: (last > 0.0).then(|| (unix_now() - last).max(0.0)),
        }
    }

    /// The OpenMetrics text: no query runs for a scrape.
    pub fn render(&self) -> String {
        self.inner.pool.refresh();
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

    #[test]
    fn failures_count_until_the_relay_publishes_again() {
        let metrics = Metrics::default();
        assert!(metrics.relay_status().last_publish_age_seconds.is_none());
        metrics.delivery_error();
        metrics.relay_failure();
        metrics.published(0);
        assert_eq!(metrics.relay_status().consecutive_failures, 2);
        metrics.published(3);
        let status = metrics.relay_status();
        assert_eq!(status.consecutive_failures, 0);
        assert!(status.last_publish_age_seconds.is_some());
        assert!(metrics
            .render()
            .contains("loms_relay_delivery_errors_total 1"));
    }
}
