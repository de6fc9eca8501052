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

mod export;
mod logging;
mod propagation;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use export::{export, Export, EXPORT_TIMEOUT};
use logging::log_writer;

pub use export::register_dropped_spans;
pub use logging::{register_dropped_lines, DroppingStdout, Logging};
pub use propagation::*;

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
