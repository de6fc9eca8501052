//! The W3C trace context across the services' transports: read from a carrier, written to
//! headers, and the spans of Kafka messages.

use std::collections::HashMap;

use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace context's headers: the only ones a carrier is read for.
pub const HEADERS: [&str; 2] = ["traceparent", "tracestate"];

/// The trace context a request or a message carries, whatever carried it (gRPC metadata, Kafka
/// headers, an outbox row's stored headers): each transport gives only a lookup by name.
pub struct Carrier<'a> {
    values: [Option<&'a str>; 2],
}

impl<'a> Carrier<'a> {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<&'a str>) -> Self {
        Self {
            values: HEADERS.map(lookup),
        }
    }
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let i = HEADERS.iter().position(|h| *h == key)?;
        self.values[i]
    }

    fn keys(&self) -> Vec<&str> {
        HEADERS
            .iter()
            .zip(&self.values)
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .collect()
    }
}

/// The trace id of `span` (32 hex digits), as logged and propagated.
pub fn trace_id(span: &tracing::Span) -> String {
    context_trace_id(&span.context())
}

/// Makes the context carried by `carrier` (W3C `traceparent`, `tracestate`) the parent of
/// `span`; without one, `span` starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, carrier: &Carrier<'_>) {
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
    carrier: &Carrier<'_>,
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

/// A producer's span for one message (see [`message_span`]), with the W3C headers that carry it
/// on: one call per message published.
pub fn publish_span(
    service: &'static str,
    messaging: Messaging,
    carrier: &Carrier<'_>,
) -> (opentelemetry::Context, HashMap<String, String>) {
    let context = message_span(service, "publish", SpanKind::Producer, messaging, carrier);
    let headers = context_headers(&context);
    (context, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_carrier_gives_only_the_trace_context_headers_it_holds() {
        let stored = [("traceparent", "00-abc-def-01"), ("baggage", "x=1")];
        let carrier =
            Carrier::from_lookup(|k| stored.iter().find(|(n, _)| *n == k).map(|(_, v)| *v));
        assert_eq!(carrier.get("traceparent"), Some("00-abc-def-01"));
        assert_eq!(carrier.get("tracestate"), None);
        assert_eq!(carrier.get("baggage"), None);
        assert_eq!(carrier.keys(), vec!["traceparent"]);
    }
}
