//! How both services declare their metrics: one call registers one metric and returns it to
//! keep; the exposition's content type and encoding; the buckets of a latency histogram.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

/// Content type of the OpenMetrics text exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// First latency bucket (0.25 ms) and how many doublings follow (up to about 8 s).
const FIRST_BUCKET_SECONDS: f64 = 0.000_25;
const BUCKETS: u16 = 16;

/// A histogram of latencies in seconds.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(FIRST_BUCKET_SECONDS, 2.0, BUCKETS))
}

/// Registers a new metric of type `M` as `name`, and returns it.
pub fn register<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// Registers a new latency histogram (seconds) as `name`, and returns it.
pub fn register_latency(registry: &mut Registry, name: &str, help: &str) -> Histogram {
    let histogram = latency_histogram();
    registry.register(name, help, histogram.clone());
    histogram
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics: encoding failed");
    }
    out
}
