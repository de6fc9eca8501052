//! Logging and tracing: readable lines by default, JSON lines by a switch; `RUST_LOG` overrides
//! the filter. Every span has an OpenTelemetry context (W3C trace context), so a trace id can be
//! logged and propagated whether or not spans are exported; export is OTLP over HTTP, off unless
//! an endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or the service's setting), through a
//! bounded batch queue on a thread of its own: a slow or absent collector costs dropped spans,
//! counted, never a request's time.
//!
//! A log line that cannot be written (the reader of stdout is gone, the disk is full) is dropped
//! and counted, never reported as an error: tracing-subscriber would report it on stderr, often
//! the same dead pipe, and that report panics the task that was logging. Nothing in a service may
//! hang or crash because nobody reads its logs. With `Logging::OffThePath` (loms) lines are
//! written by a thread of their own through a bounded buffer (tracing-appender's lossy
//! non-blocking writer): a reader that stops reading fills the buffer, and further lines are
//! dropped and counted, never waited for by a request. The notifier keeps `Logging::InLine`: its
//! event line is what handling a message means, so a stalled reader holds consumption (and the
//! offsets it commits) back rather than losing lines.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{
    Link, SamplingDecision, SamplingResult, SpanKind, TraceContextExt, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Config, SdkTracerProvider, ShouldSample, SpanData,
    SpanExporter,
};
use opentelemetry_sdk::Resource;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static DROPPED_LINES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// The off-the-path writer's count of lines its full buffer turned away, once there is one.
static BUFFER_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped: stdout could not take them, or the buffer in front of it was full.
#[derive(Debug)]
struct DroppedLines;

impl prometheus_client::metrics::TypedMetric for DroppedLines {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Counter;
}

impl prometheus_client::encoding::EncodeMetric for DroppedLines {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let full = BUFFER_DROPS.get().map_or(0, |c| c.dropped_lines() as u64);
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &(DROPPED_LINES.get() + full),
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// Registers the count of log lines dropped because stdout could not take them.
pub fn register_dropped_lines(registry: &mut Registry, prefix: &str) {
    registry.register(
        format!("{prefix}_log_lines_dropped"),
        "Log lines dropped because stdout (or the buffer in front of it) could not take them.",
        DroppedLines,
    );
}

/// Lines the off-the-path writer holds at most before it drops.
const LOG_BUFFER_LINES: usize = 4_096;

/// How a service's log lines reach stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// Written by the thread that logs: a stalled reader holds it.
    InLine,
    /// Written by a thread of its own through a bounded buffer; dropped and counted when full.
    OffThePath,
}

/// Stdout that drops what it cannot write.
#[derive(Clone, Copy, Default)]
pub struct DroppingStdout;

impl Write for DroppingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One formatted event arrives as one buffer: it is written whole or dropped whole.
        if std::io::stdout().lock().write_all(buf).is_err() {
            DROPPED_LINES.inc();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stdout().lock().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for DroppingStdout {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        *self
    }
}

/// `[log]` of both services' configuration: how they log and where their spans go.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// JSON lines instead of text.
    pub json: bool,
    /// `tracing_subscriber::EnvFilter` directives; RUST_LOG wins when set.
    pub filter: String,
    /// OTLP/HTTP endpoint spans are exported to (off when unset);
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    pub otlp_endpoint: Option<String>,
    /// CA certificates (PEM) of an `https://` collector; `OTEL_EXPORTER_OTLP_CERTIFICATE` wins.
    pub otlp_ca_file: Option<std::path::PathBuf>,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            json: false,
            filter: "info".into(),
            otlp_endpoint: None,
            otlp_ca_file: None,
        }
    }
}

impl LogSettings {
    /// The telemetry options of `service`, logging as `logging` says.
    pub fn options<'a>(&'a self, service: &'a str, logging: Logging) -> Options<'a> {
        Options {
            service,
            json: self.json,
            filter: &self.filter,
            otlp_endpoint: self.otlp_endpoint.as_deref(),
            otlp_ca_file: self.otlp_ca_file.as_deref(),
            logging,
        }
    }
}

/// How the service logs and traces.
pub struct Options<'a> {
    /// Name in exported spans, unless `OTEL_SERVICE_NAME` says otherwise.
    pub service: &'a str,
    pub json: bool,
    /// `tracing_subscriber::EnvFilter` directives.
    pub filter: &'a str,
    /// OTLP/HTTP endpoint (e.g. `http://jaeger:4318`, or `https://...`);
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` wins.
    pub otlp_endpoint: Option<&'a str>,
    /// CA certificates (PEM) an `https://` collector's certificate must chain to, besides the
    /// system's; `OTEL_EXPORTER_OTLP_CERTIFICATE` wins.
    pub otlp_ca_file: Option<&'a std::path::Path>,
    pub logging: Logging,
}

/// Keeps the tracer provider (and the log writer's thread); `shutdown` flushes what is queued,
/// within a bound.
pub struct Telemetry {
    provider: SdkTracerProvider,
    _log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::debug!(error = %e, "tracer provider shutdown");
        }
    }
}

/// The crates whose spans carry the trace.
const TRACED_TARGETS: [&str; 2] = ["loms", "notifier"];

/// How long one export may take: a collector that hangs holds nothing longer.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
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

pub fn init(options: &Options<'_>) -> Telemetry {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let Export {
        provider,
        endpoint,
        error: export_error,
    } = export(options);
    let tracer = provider.tracer(options.service.to_string());
    // For spans made with the OpenTelemetry API directly (the relay's, one per event).
    opentelemetry::global::set_tracer_provider(provider.clone());
    // What is logged: the service's filter, or RUST_LOG.
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| options.filter.to_string());
    // The OpenTelemetry crates log their own export failures at ERROR, once per process and
    // batch; the sampler's one WARN ("span collector unreachable") says it already.
    let quiet_sdk =
        "opentelemetry=off,opentelemetry_sdk=off,opentelemetry-otlp=off,opentelemetry_otlp=off";
    let logged = EnvFilter::try_new(format!("{directives},{quiet_sdk}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{quiet_sdk}")));
    // What exists at all: that, and every span of the services' own crates, so that the trace
    // is carried whatever the log filter lets through. (A filter on the tracing layer alone
    // would be simpler, but tracing-subscriber then misses a callsite's first span.)
    let traced: Vec<String> = TRACED_TARGETS
        .iter()
        .map(|t| format!("{t}=trace"))
        .collect();
    let exists = EnvFilter::try_new(format!("{directives},{}", traced.join(",")))
        .unwrap_or_else(|_| EnvFilter::new(traced.join(",")));
    // Enter and exit times of spans are not exported: not measuring them saves two clock reads
    // per poll of every instrumented future.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false);
    let (writer, log_writer) = log_writer(options.logging);
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .log_internal_errors(false)
        .with_writer(writer);
    let registry = tracing_subscriber::registry().with(exists).with(otel);
    // try_init: a second call (several tests in one process) keeps the first subscriber.
    let _ = if options.json {
        registry
            .with(
                // The lines of a request or an event name their trace id themselves; the
                // span's other fields would only make every line longer.
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_filter(logged),
            )
            .try_init()
    } else {
        registry.with(fmt.with_filter(logged)).try_init()
    };
    match (&endpoint, export_error) {
        (Some(endpoint), None) => tracing::info!(%endpoint, "exporting spans over OTLP/HTTP"),
        (Some(endpoint), Some(e)) => {
            tracing::warn!(%endpoint, error = %e, "spans cannot be exported; tracing goes on locally")
        }
        (None, _) => tracing::debug!("span export off"),
    }
    Telemetry {
        provider,
        _log_writer: log_writer,
    }
}

/// The tracer provider: exporting over OTLP/HTTP when an endpoint is configured, else local.
struct Export {
    provider: SdkTracerProvider,
    endpoint: Option<String>,
    /// Why spans cannot be exported to the configured endpoint.
    error: Option<String>,
}

fn export(options: &Options<'_>) -> Export {
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

/// Where log lines go: stdout in line, or through a bounded buffer that drops when full.
fn log_writer(
    logging: Logging,
) -> (
    tracing_subscriber::fmt::writer::BoxMakeWriter,
    Option<tracing_appender::non_blocking::WorkerGuard>,
) {
    match logging {
        Logging::InLine => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(DroppingStdout),
            None,
        ),
        Logging::OffThePath => {
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(LOG_BUFFER_LINES)
                .thread_name("log-writer")
                .finish(DroppingStdout);
            let _ = BUFFER_DROPS.set(writer.error_counter());
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer),
                Some(guard),
            )
        }
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

/// The trace id of `span` (32 hex digits), as logged and propagated.
pub fn trace_id(span: &tracing::Span) -> String {
    context_trace_id(&span.context())
}

/// Makes the context carried by `carrier` (W3C `traceparent`, `tracestate`) the parent of
/// `span`; without one, `span` starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, carrier: &dyn Extractor) {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// What a Kafka message span is about: OpenTelemetry's messaging attributes.
pub struct Messaging {
    /// `publish` or `process`.
    pub operation: &'static str,
    pub topic: String,
    /// Attributes of this operation alone (key, partition, offset, ...).
    pub more: Vec<KeyValue>,
}

/// A span made with the OpenTelemetry API directly, for the hot paths that make one per Kafka
/// message (the relay's publish, the notifier's handling): a child of the context `carrier`
/// holds, or the root of a trace of its own. Returned in its context; it ends when dropped.
pub fn message_span(
    service: &'static str,
    name: &'static str,
    kind: SpanKind,
    messaging: Messaging,
    carrier: &dyn Extractor,
) -> opentelemetry::Context {
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(carrier));
    let tracer = opentelemetry::global::tracer(service);
    let mut attributes = vec![
        KeyValue::new("messaging.system", "kafka"),
        KeyValue::new("messaging.operation", messaging.operation),
        KeyValue::new("messaging.destination.name", messaging.topic),
    ];
    attributes.extend(messaging.more);
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// The trace id of the span in `context`.
pub fn context_trace_id(context: &opentelemetry::Context) -> String {
    context.span().span_context().trace_id().to_string()
}

/// The W3C trace context of `span`, as headers (`traceparent`, and `tracestate` if any).
pub fn trace_headers(span: &tracing::Span) -> HashMap<String, String> {
    context_headers(&span.context())
}

/// The W3C trace context of `context`, as headers.
pub fn context_headers(context: &opentelemetry::Context) -> HashMap<String, String> {
    let mut headers = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(context, &mut headers));
    // An empty tracestate says nothing.
    headers.retain(|_, value| !value.is_empty());
    headers
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
