//! A batch of outbox rows handed to the producer, and its acknowledgements.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Status, TraceContextExt};
use opentelemetry::{Context as TraceContext, KeyValue};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use super::failure::{permanent, Failure};
use super::ProducerStats;
use crate::metrics::Metrics;
use crate::outbox::store::Row;
use service_runtime::telemetry::{Carrier, Messaging};

/// How long an unfinished batch may still take once shutdown was asked for.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Rows acknowledged by Kafka and not yet deleted, with when their batches were read.
#[derive(Default)]
pub(super) struct Acknowledged {
    pub(super) ids: Vec<i64>,
    read_at: Vec<Instant>,
}

impl Acknowledged {
    /// They are deleted now: counted as published, and their batches' cycles end.
    pub(super) fn deleted(&mut self, metrics: &Metrics) {
        metrics.published(self.ids.len() as u64);
        for read_at in self.read_at.drain(..) {
            metrics.relay_cycle(read_at.elapsed());
        }
        self.ids.clear();
    }
}

/// A batch handed to the producer, in id order.
pub(super) struct Batch {
    pub(super) rows: Vec<Row>,
    deliveries: Vec<DeliveryFuture>,
    /// The publish span of each row sent (in its context), ended at its acknowledgement.
    spans: Vec<TraceContext>,
    /// Why enqueueing stopped before the end of the batch, if it did.
    pub(super) enqueue_error: Option<KafkaError>,
    read_at: Instant,
}

impl Batch {
    pub(super) fn send(
        producer: &FutureProducer<ProducerStats>,
        rows: Vec<Row>,
        read_at: Instant,
    ) -> Self {
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        let mut enqueue_error = None;
        for row in &rows {
            let (span, trace) = publish_span(row);
            let record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(&row.payload)
                .headers(headers(row, &trace));
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    spans.push(span);
                }
                Err((e, _)) => {
                    enqueue_error = Some(e);
                    break;
                }
            }
        }
        Self {
            rows,
            deliveries,
            spans,
            enqueue_error,
            read_at,
        }
    }

    pub(super) fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.rows.iter().map(|r| r.id)
    }

    /// Waits for the acknowledgements in order and adds the acknowledged prefix to `done`;
    /// returns the first row not acknowledged, and why, if any. After shutdown the batch gets
    /// a grace period, then is abandoned.
    pub(super) async fn acknowledged(
        self,
        shutdown: &CancellationToken,
        metrics: &Metrics,
        done: &mut Acknowledged,
    ) -> Option<Failure> {
        let Self {
            rows,
            deliveries,
            spans,
            enqueue_error,
            read_at,
        } = self;
        let alone = rows.len() == 1;
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::pin!(deadline);
        let mut rows = rows.into_iter();
        for (delivery, span) in deliveries.into_iter().zip(spans) {
            let result = tokio::select! {
                r = delivery => r,
                _ = &mut deadline => Err(futures::channel::oneshot::Canceled),
            };
            let row = rows.next().expect("a row per delivery");
            match result {
                Ok(Ok(delivery)) => {
                    acknowledged(&span, delivery);
                    metrics.publish(read_at.elapsed());
                    done.ids.push(row.id);
                }
                Ok(Err((e, _))) => {
                    span.span().set_status(Status::error(e.to_string()));
                    return Some(Failure {
                        row,
                        error: e.to_string(),
                        permanent: permanent(&e),
                        alone,
                    });
                }
                Err(_) => {
                    return Some(Failure {
                        row,
                        error: "delivery canceled or abandoned at shutdown".into(),
                        permanent: false,
                        alone,
                    })
                }
            }
        }
        done.read_at.push(read_at);
        match (rows.next(), enqueue_error) {
            (Some(row), Some(e)) => Some(Failure {
                row,
                error: format!("enqueue: {e}"),
                permanent: permanent(&e),
                // The producer judged this message on its own.
                alone: true,
            }),
            _ => None,
        }
    }
}

/// Ends a row's publish span with where Kafka wrote it.
fn acknowledged(span: &TraceContext, delivery: rdkafka::producer::future_producer::Delivery) {
    let span = span.span();
    span.set_attribute(KeyValue::new(
        "messaging.kafka.destination.partition",
        i64::from(delivery.partition),
    ));
    span.set_attribute(KeyValue::new(
        "messaging.kafka.message.offset",
        delivery.offset,
    ));
    span.end();
}

/// The span of one event's publication, in its context, and the W3C headers that carry it on:
/// a child of the request that wrote the event (whose context the outbox row keeps), with
/// OpenTelemetry's messaging attributes. Made with the OpenTelemetry API directly, not through
/// `tracing`: one per event on the relay's hot path, it must cost next to nothing when spans
/// are not exported.
fn publish_span(row: &Row) -> (TraceContext, HashMap<String, String>) {
    let stored = Carrier::from_lookup(|k| row.headers.get(k).and_then(serde_json::Value::as_str));
    service_runtime::telemetry::publish_span(
        "loms",
        Messaging {
            operation: "publish",
            topic: row.topic.clone(),
            more: vec![
                KeyValue::new("messaging.kafka.message.key", row.key.clone()),
                KeyValue::new("outbox.id", row.id),
            ],
        },
        &stored,
    )
}

/// The Kafka headers of a row: those stored with it, the trace context (`trace`) being that of
/// its publish span. Rows written before trace context was stored start a trace of their own.
fn headers(row: &Row, trace: &HashMap<String, String>) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(map) = row.headers.as_object() {
        for (key, value) in map {
            if trace.contains_key(key.as_str()) {
                continue;
            }
            headers = headers.insert(Header {
                key,
                value: Some(value.as_str().unwrap_or_default()),
            });
        }
    }
    for (key, value) in trace {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}
