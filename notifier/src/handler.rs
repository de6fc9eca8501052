//! What is done with each message: decoded, logged once per event id within the window (a
//! redelivery is logged as a duplicate, an unseen event behind a later one of its order in full,
//! at WARN, as out of order), or, when it does not decode, logged at ERROR and handed to the
//! dead-letter writer.

use std::time::SystemTime;

use events_proto::OrderEvent;
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::Message;
use service_runtime::telemetry::{Carrier, Messaging};
use tokio_util::sync::CancellationToken;

use crate::dead_letter::DeadLetters;
use crate::dedup::{RecentIds, Seen};
use crate::metrics::Metrics;

/// The trace context a message's headers carry.
fn carrier<'m>(message: &'m BorrowedMessage<'_>) -> Carrier<'m> {
    let headers = message.headers();
    Carrier::from_lookup(|name| {
        let header = headers?.iter().find(|h| h.key == name)?;
        std::str::from_utf8(header.value?).ok()
    })
}

/// Bytes of an undecodable payload shown in its log line.
const HEX_PREFIX_BYTES: usize = 16;
/// Items of an event shown in its log line; the rest are counted.
const ITEMS_SHOWN: usize = 20;

/// An event's items as `skuxcount,...`, at most [`ITEMS_SHOWN`] of them.
fn items_text(items: &[events_proto::Item]) -> String {
    service_runtime::abridged::first_and_rest(
        items,
        ITEMS_SHOWN,
        |i| format!("{}x{}", i.sku, i.count),
        |rest| format!("+{rest} more"),
    )
    .join(",")
}

pub struct Handler {
    dead_letters: DeadLetters,
    recent: RecentIds,
    metrics: Metrics,
}

impl Handler {
    pub fn new(dead_letters: DeadLetters, recent: RecentIds, metrics: Metrics) -> Self {
        Self {
            dead_letters,
            recent,
            metrics,
        }
    }

    /// Handles one message in a span that continues the trace its headers carry (W3C
    /// `traceparent`, `tracestate`), or starts one; false only if shutdown interrupted it
    /// before it was handled.
    pub async fn handle(
        &mut self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> bool {
        // Through the OpenTelemetry API, not `tracing`: one span per message must cost next to
        // nothing when spans are not exported.
        let span = service_runtime::telemetry::message_span(
            "notifier",
            "handle",
            SpanKind::Consumer,
            Messaging {
                operation: "process",
                topic: message.topic().to_string(),
                more: vec![
                    KeyValue::new(
                        "messaging.kafka.destination.partition",
                        i64::from(message.partition()),
                    ),
                    KeyValue::new("messaging.kafka.message.offset", message.offset()),
                ],
            },
            &carrier(message),
        );
        let trace_id = service_runtime::telemetry::context_trace_id(&span);
        let payload = message.payload().unwrap_or_default();
        match OrderEvent::decode_from(payload) {
            Ok(event) => {
                self.log_event(&event, message, &trace_id);
                true
            }
            Err(error) => {
                self.log_undecodable(message, &error.to_string(), &trace_id);
                self.dead_letters
                    .write(message, &error.to_string(), &trace_id, shutdown)
                    .await
            }
        }
    }

    fn log_event(&mut self, event: &OrderEvent, message: &BorrowedMessage<'_>, trace_id: &str) {
        let occurred_at = event.occurred_at.as_ref().and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        });
        if let Some(age) = occurred_at.and_then(|t| SystemTime::now().duration_since(t.into()).ok())
        {
            self.metrics.observe_age(age);
        }
        let occurred_at = occurred_at
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_default();
        let mut metadata: Vec<_> = event
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        metadata.sort();
        let metadata = metadata.join(",");
        let items = items_text(&event.items);
        let seen = self
            .recent
            .insert(&event.event_id, event.order_id, event.sequence);
        // One line shape for an event logged in full, at the level its sighting calls for.
        macro_rules! event_line {
            ($level:expr, $($extra:tt)*) => {
                tracing::event!(
                    $level,
                    trace_id,
                    order_id = event.order_id, status = event.status, previous_status = event.previous_status,
                    occurred_at, user_id = event.user_id, sequence = event.sequence, items,
                    event_id = %event.event_id, partition = message.partition(), offset = message.offset(),
                    metadata = %metadata, $($extra)* "order event"
                )
            };
        }
        match seen {
            Seen::New => {
                self.metrics.handled(false);
                event_line!(tracing::Level::INFO,);
            }
            // Never dropped: no one may have logged it yet.
            Seen::OutOfOrder { after } => {
                self.metrics.handled(true);
                event_line!(
                    tracing::Level::WARN,
                    out_of_order = true,
                    after_sequence = after,
                );
            }
            Seen::Duplicate => {
                self.metrics.duplicate();
                tracing::info!(
                    trace_id,
                    order_id = event.order_id, status = event.status, event_id = %event.event_id,
                    partition = message.partition(), offset = message.offset(), "duplicate order event, already logged"
                );
            }
        }
    }

    fn log_undecodable(&self, message: &BorrowedMessage<'_>, error: &str, trace_id: &str) {
        self.metrics.decode_error();
        let payload = message.payload().unwrap_or_default();
        let prefix: String = payload
            .iter()
            .take(HEX_PREFIX_BYTES)
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        tracing::error!(
            trace_id,
            partition = message.partition(), offset = message.offset(), key = %key, bytes = payload.len(),
            hex_prefix = %prefix, %error, dlq = %self.dead_letters.dlq_topic(),
            "message does not decode as an OrderEvent; copying it to the dead-letter topic"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_shows_a_bounded_number_of_items() {
        let items = |n: i64| -> Vec<events_proto::Item> {
            (1..=n)
                .map(|sku| events_proto::Item { sku, count: 2 })
                .collect()
        };
        assert_eq!(items_text(&items(2)), "1x2,2x2");
        let long = items_text(&items(1_000));
        assert!(long.ends_with(",20x2,+980 more"), "{long}");
    }
}
