//! Span export over OTLP/HTTP, off unless an endpoint is configured: a bounded batch queue on a
//! thread of its own, and a sampler that stops recording while the collector is away.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, SpanKind, TraceContextExt, TraceId,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Config, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::Options;

/// How long one export may take: a collector that hangs holds nothing longer.
pub(super) const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Spans queued for export at most; beyond, they are dropped.
const EXPORT_QUEUE: usize = 2_048;

/// While the collector is unreachable, one span in this interval is still recorded: its export
/// is the probe that finds the collector back.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

static DROPPED_SPANS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Registers the count of spans that could not be exported.
pub fn register_dropped_spans(registry: &mut Registry, prefix: &str) {
    registry.register(
        format!("{prefix}_spans_dropped"),
        "Spans not exported: the collector refused or could not be reached, or was known to be \
         unreachable when they started.",
        DROPPED_SPANS.clone(),
    );
}

/// Whether the last export reached the collector.
static COLLECTOR_UP: AtomicBool = AtomicBool::new(true);

/// The configured sampler (`OTEL_TRACES_SAMPLER`, parent-based always-on by default) while the
/// collector takes spans; while it does not, spans are not recorded at all (their context still
/// propagates, so trace ids stay in logs and headers) but for a probe per [`PROBE_INTERVAL`].
/// Recording and queueing spans only to fail their export cost the notifier a third of its
/// throughput.
#[derive(Clone, Debug)]
struct WhileCollectorUp {
    configured: Box<dyn ShouldSample>,
    /// When the next probe is due, in milliseconds since `epoch`.
    next_probe: Arc<AtomicU64>,
    epoch: Instant,
}

impl WhileCollectorUp {
    fn new(configured: Box<dyn ShouldSample>) -> Self {
        Self {
            configured,
            next_probe: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the due probe; false if another span took it first.
    fn claim_probe(&self, due: u64) -> bool {
        let next = self
            .now()
            .saturating_add(u64::try_from(PROBE_INTERVAL.as_millis()).unwrap_or(0));
        self.next_probe
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

impl ShouldSample for WhileCollectorUp {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let configured = || {
            self.configured.should_sample(
                parent_context,
                trace_id,
                name,
                span_kind,
                attributes,
                links,
            )
        };
        if COLLECTOR_UP.load(Ordering::Relaxed) {
            return configured();
        }
        let due = self.next_probe.load(Ordering::Relaxed);
        if self.now() >= due {
            // A span the configured sampler drops anyway leaves the probe to the next one.
            let result = configured();
            if result.decision == SamplingDecision::Drop || self.claim_probe(due) {
                return result;
            }
        }
        DROPPED_SPANS.inc();
        SamplingResult {
            decision: SamplingDecision::Drop,
            attributes: Vec::new(),
            trace_state: parent_context
                .map(|c| c.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// The tracer provider: exporting over OTLP/HTTP when an endpoint is configured, else local.
pub(super) struct Export {
    pub(super) provider: SdkTracerProvider,
    pub(super) endpoint: Option<String>,
    /// Why spans cannot be exported to the configured endpoint.
    pub(super) error: Option<String>,
}

pub(super) fn export(options: &Options<'_>) -> Export {
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| options.otlp_endpoint.map(str::to_string));
    let resource = Resource::builder()
        .with_service_name(
            std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| options.service.to_string()),
        )
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let mut error = None;
    let ca = std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE")
        .filter(|c| !c.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| options.otlp_ca_file.map(std::path::Path::to_path_buf));
    if let Some(endpoint) = &endpoint {
        match exporter(endpoint, ca.as_deref()) {
            Ok(exporter) => {
                let config = BatchConfigBuilder::default()
                    .with_max_queue_size(EXPORT_QUEUE)
                    .build();
                let processor = BatchSpanProcessor::builder(Counted(exporter))
                    .with_batch_config(config)
                    .build();
                provider = provider
                    .with_span_processor(processor)
                    .with_sampler(WhileCollectorUp::new(Config::default().sampler));
            }
            Err(e) => error = Some(e),
        }
    }
    Export {
        provider: provider.build(),
        endpoint,
        error,
    }
}

fn exporter(
    endpoint: &str,
    ca: Option<&std::path::Path>,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::WithHttpConfig;
    let mut client = reqwest::blocking::Client::builder().timeout(EXPORT_TIMEOUT);
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("OTLP CA {}: {e}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("OTLP CA {}: {e}", ca.display()))?;
        for cert in certs {
            client = client.add_root_certificate(cert);
        }
    }
    // The blocking client runs a runtime of its own, which may not be built (nor dropped)
    // on a runtime's thread.
    let client = std::thread::spawn(move || client.build())
        .join()
        .map_err(|_| "building the OTLP HTTP client panicked".to_string())?
        .map_err(|e| format!("the OTLP HTTP client: {e}"))?;
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// An exporter that counts the spans it could not deliver.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            DROPPED_SPANS.inc_by(spans);
        }
        match (
            &result,
            COLLECTOR_UP.swap(result.is_ok(), Ordering::Relaxed),
        ) {
            (Ok(()), false) => tracing::info!("span collector reachable again; recording spans"),
            (Err(e), true) => tracing::warn!(
                error = %e,
                "span collector unreachable; spans are not recorded until it answers"
            ),
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
    use opentelemetry::SpanId;
    use opentelemetry_sdk::trace::Sampler;

    use super::*;

    fn decide(sampler: &WhileCollectorUp, parent: Option<&opentelemetry::Context>) -> bool {
        let result = sampler.should_sample(
            parent,
            TraceId::from(1),
            "span",
            &SpanKind::Internal,
            &[],
            &[],
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn spans_are_recorded_while_the_collector_is_up_and_one_probe_a_second_while_it_is_not() {
        let always = WhileCollectorUp::new(Box::new(Sampler::AlwaysOn));
        assert!(decide(&always, None) && decide(&always, None));

        COLLECTOR_UP.store(false, Ordering::Relaxed);
        // A parent the configured sampler drops does not use up the probe.
        let parent_based =
            WhileCollectorUp::new(Box::new(Sampler::ParentBased(Box::new(Sampler::AlwaysOn))));
        let unsampled = opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(1),
            SpanId::from(1),
            TraceFlags::default(),
            true,
            TraceState::default(),
        ));
        let dropped = DROPPED_SPANS.get();
        assert!(!decide(&parent_based, Some(&unsampled)));
        assert!(decide(&parent_based, None), "the probe");
        assert!(
            !decide(&parent_based, None),
            "not recorded until the next probe"
        );
        assert!(DROPPED_SPANS.get() > dropped, "counted as dropped");
        COLLECTOR_UP.store(true, Ordering::Relaxed);
        assert!(decide(&parent_based, None));
    }
}
