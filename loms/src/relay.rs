//! The outbox relay: publishes committed events to Kafka, in id order, at least once.
//!
//! One relay is active per database: the leader holds a PostgreSQL advisory lock on a connection
//! of its own and does all its reads and deletes on that same connection, so it cannot go on
//! deleting rows once it has lost the lock. A row is deleted only after Kafka acknowledged it.
//! On a delivery error the batch stops at the first failed row; the rows before it are deleted,
//! the rest are read again from the database, in id order, after a back-off, by a new producer,
//! so a later event of an order never overtakes an earlier one.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use opentelemetry::{Context as TraceContext, KeyValue};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use service_runtime::telemetry::Messaging;
use service_runtime::Backoff;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, RelaySettings};
use crate::metrics::Metrics;

pub struct Relay {
    pub connect: PgConnectOptions,
    pub settings: RelaySettings,
    pub kafka: KafkaSettings,
    pub metrics: Metrics,
    /// Signalled after each commit that wrote events.
    pub wake: Arc<Notify>,
}

struct Row {
    id: i64,
    topic: String,
    key: String,
    payload: Vec<u8>,
    headers: serde_json::Value,
}

/// A follower tries the leader lock at most this often, however short the poll interval.
const FOLLOWER_POLL_MIN: Duration = Duration::from_millis(500);

/// Batches in flight at once: while one awaits its acknowledgements, the next is read and sent.
const BATCHES_IN_FLIGHT: usize = 2;

/// How long an unfinished batch may still take once shutdown was asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Messages the producer may hold queued: far more than a batch, so enqueueing never fails.
const PRODUCER_QUEUE_MESSAGES: u32 = 1_000_000;

pub fn producer_config(kafka: &KafkaSettings) -> ClientConfig {
    let defaults = [
        ("enable.idempotence", "true".to_string()),
        ("acks", "all".to_string()),
        // Java-compatible hashing of the key, so any Kafka client agrees on the partition.
        ("partitioner", "murmur2_random".to_string()),
        ("message.timeout.ms", kafka.message_timeout_ms.to_string()),
        // The relay hands over whole batches already; a long linger would only add latency.
        ("linger.ms", "1".to_string()),
        (
            "queue.buffering.max.messages",
            PRODUCER_QUEUE_MESSAGES.to_string(),
        ),
    ];
    service_runtime::kafka::client_config(
        &kafka.brokers,
        &kafka.client_id,
        defaults,
        &kafka.properties,
    )
}

impl Relay {
    /// Runs until `shutdown`: waits for leadership, relays while leader, starts over on errors.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.backoff();
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "relay: stopped, will retry");
                    self.metrics.set_leader(false);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.advance()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
        self.metrics.set_leader(false);
        tracing::info!("relay: stopped");
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.settings.backoff_initial_ms),
            Duration::from_millis(self.settings.backoff_max_ms),
        )
    }

    /// One leadership term: returns Ok on shutdown, Err when the connection or the lock is lost.
    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect_with(&self.connect)
            .await
            .context("relay: connecting")?;
        let follower_poll = self.settings.poll_interval().max(FOLLOWER_POLL_MIN);
        loop {
            let (leader,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(self.settings.lock_key)
                .fetch_one(&mut conn)
                .await
                .context("relay: taking the leader lock")?;
            if leader {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(follower_poll) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
        self.metrics.set_leader(true);
        tracing::info!(
            lock_key = self.settings.lock_key,
            "relay: leader, publishing the outbox"
        );
        let result = self.relay(&mut conn, shutdown).await;
        self.metrics.set_leader(false);
        // Closing the connection releases the lock even if the unlock is not reached.
        let _ = conn.close().await;
        result
    }

    /// Relays while leader. Two batches are in flight at once: while one awaits its
    /// acknowledgements, one statement deletes what was acknowledged and reads the next batch,
    /// which is sent at once. The read skips only the rows in flight, never "everything up to
    /// the last id read": a row with a lower id may commit later, and it is then read next, while
    /// no later event of its order can be in flight yet (that event's transaction locks the
    /// order after this one committed). The first failed delivery stops everything: the rows
    /// acknowledged before it are deleted, every row from it on is read again from the
    /// database, in id order, by a new producer.
    async fn relay(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut producer = self.producer()?;
        let mut backoff = self.backoff();
        let mut in_flight: VecDeque<Batch> = VecDeque::new();
        let mut done = Acknowledged::default();
        while !shutdown.is_cancelled() {
            if in_flight.len() < BATCHES_IN_FLIGHT {
                let sending: Vec<i64> = in_flight.iter().flat_map(Batch::ids).collect();
                let read_at = Instant::now();
                let rows = self.delete_and_read(conn, &mut done, &sending).await?;
                if !rows.is_empty() {
                    in_flight.push_back(Batch::send(&producer, rows, read_at));
                    continue; // read the next one while this one flies
                }
                if in_flight.is_empty() {
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(self.settings.poll_interval()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            let Some(batch) = in_flight.pop_front() else {
                continue;
            };
            let error = batch.acknowledged(shutdown, &self.metrics, &mut done).await;
            match error {
                None => backoff.reset(),
                Some((failed, error)) => {
                    self.metrics.delivery_error();
                    tracing::warn!(outbox_id = failed.id, key = %failed.key, %error, acked = done.ids.len(),
                        "relay: delivery failed, resending from the database after a back-off");
                    // Nothing queued in the old producer may overtake the resend.
                    in_flight.clear();
                    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    drop(producer);
                    self.delete(conn, &mut done).await?;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.advance()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    producer = self.producer()?;
                }
            }
        }
        // What is still in flight may be acknowledged within the grace; what is, is deleted.
        for batch in in_flight {
            if batch
                .acknowledged(shutdown, &self.metrics, &mut done)
                .await
                .is_some()
            {
                break;
            }
        }
        self.delete(conn, &mut done).await?;
        let _ = producer.flush(SHUTDOWN_GRACE);
        Ok(())
    }

    fn producer(&self) -> anyhow::Result<FutureProducer> {
        producer_config(&self.kafka)
            .create()
            .context("relay: creating the producer")
    }

    /// One round trip: deletes the acknowledged rows and reads the next batch, skipping the
    /// rows in flight (and those just deleted, which the statement's own read still sees). The
    /// skipped ids are looked up in a hash (`NOT IN` a subquery), not compared one by one
    /// against arrays: with two batches of ids, that was the bulk of each read.
    async fn delete_and_read(
        &self,
        conn: &mut PgConnection,
        done: &mut Acknowledged,
        sending: &[i64],
    ) -> anyhow::Result<Vec<Row>> {
        let rows: Vec<(i64, String, String, Vec<u8>, serde_json::Value, f64)> = sqlx::query_as(
            "WITH deleted AS (DELETE FROM outbox WHERE id = ANY($1))
             SELECT id, topic, key, payload, headers,
                    EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8
             FROM outbox
             WHERE id NOT IN (SELECT unnest($1::bigint[]) UNION ALL SELECT unnest($2::bigint[]))
             ORDER BY id LIMIT $3",
        )
        .bind(&done.ids)
        .bind(sending)
        .bind(self.settings.batch_size)
        .fetch_all(&mut *conn)
        .await
        .context("relay: deleting published rows and reading the outbox")?;
        done.deleted(&self.metrics);
        Ok(rows
            .into_iter()
            .map(|(id, topic, key, payload, headers, waited)| {
                self.metrics.outbox_wait(waited);
                Row {
                    id,
                    topic,
                    key,
                    payload,
                    headers,
                }
            })
            .collect())
    }

    async fn delete(&self, conn: &mut PgConnection, done: &mut Acknowledged) -> anyhow::Result<()> {
        if !done.ids.is_empty() {
            sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                .bind(&done.ids)
                .execute(&mut *conn)
                .await
                .context("relay: deleting published rows")?;
            done.deleted(&self.metrics);
        }
        Ok(())
    }
}

/// Rows acknowledged by Kafka and not yet deleted, with when their batches were read.
#[derive(Default)]
struct Acknowledged {
    ids: Vec<i64>,
    read_at: Vec<Instant>,
}

impl Acknowledged {
    /// They are deleted now: counted as published, and their batches' cycles end.
    fn deleted(&mut self, metrics: &Metrics) {
        metrics.published(self.ids.len() as u64);
        for read_at in self.read_at.drain(..) {
            metrics.relay_cycle(read_at.elapsed());
        }
        self.ids.clear();
    }
}

/// A batch handed to the producer, in id order.
struct Batch {
    rows: Vec<Row>,
    deliveries: Vec<DeliveryFuture>,
    /// The publish span of each row sent (in its context), ended at its acknowledgement.
    spans: Vec<TraceContext>,
    /// Why enqueueing stopped before the end of the batch, if it did.
    enqueue_error: Option<String>,
    read_at: Instant,
}

impl Batch {
    fn send(producer: &FutureProducer, rows: Vec<Row>, read_at: Instant) -> Self {
        let mut deliveries = Vec::with_capacity(rows.len());
        let mut spans = Vec::with_capacity(rows.len());
        let mut enqueue_error = None;
        for row in &rows {
            let span = publish_span(row);
            let record = FutureRecord::to(&row.topic)
                .key(&row.key)
                .payload(&row.payload)
                .headers(headers(row, &span));
            match producer.send_result(record) {
                Ok(delivery) => {
                    deliveries.push(delivery);
                    spans.push(span);
                }
                Err((e, _)) => {
                    enqueue_error = Some(format!("enqueue: {e}"));
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

    fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.rows.iter().map(|r| r.id)
    }

    /// Waits for the acknowledgements in order and adds the acknowledged prefix to `done`;
    /// returns the first row not acknowledged, and why, if any. After shutdown the batch gets
    /// a grace period, then is abandoned.
    async fn acknowledged(
        self,
        shutdown: &CancellationToken,
        metrics: &Metrics,
        done: &mut Acknowledged,
    ) -> Option<(Row, String)> {
        let Self {
            rows,
            deliveries,
            spans,
            enqueue_error,
            read_at,
        } = self;
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
                    metrics.publish(read_at.elapsed());
                    done.ids.push(row.id);
                }
                Ok(Err((e, _))) => {
                    span.span().set_status(Status::error(e.to_string()));
                    return Some((row, e.to_string()));
                }
                Err(_) => return Some((row, "delivery canceled or abandoned at shutdown".into())),
            }
        }
        done.read_at.push(read_at);
        match (rows.next(), enqueue_error) {
            (Some(row), Some(error)) => Some((row, error)),
            _ => None,
        }
    }
}

/// The span of one event's publication, in its context: a child of the request that wrote the
/// event (whose context the outbox row keeps), with OpenTelemetry's messaging attributes. Made
/// with the OpenTelemetry API directly, not through `tracing`: one per event on the relay's
/// hot path, it must cost next to nothing when spans are not exported.
fn publish_span(row: &Row) -> TraceContext {
    service_runtime::telemetry::message_span(
        "loms",
        "publish",
        SpanKind::Producer,
        Messaging {
            operation: "publish",
            topic: row.topic.clone(),
            more: vec![
                KeyValue::new("messaging.kafka.message.key", row.key.clone()),
                KeyValue::new("outbox.id", row.id),
            ],
        },
        &StoredHeaders(&row.headers),
    )
}

/// An outbox row's headers as a carrier of the trace context it was written in.
struct StoredHeaders<'a>(&'a serde_json::Value);

impl opentelemetry::propagation::Extractor for StoredHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(serde_json::Value::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }
}

/// The Kafka headers of a row: those stored with it, the trace context being that of its
/// publish span. Rows written before trace context was stored start a trace of their own.
fn headers(row: &Row, span: &TraceContext) -> OwnedHeaders {
    let trace = service_runtime::telemetry::context_headers(span);
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
    for (key, value) in &trace {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    headers
}
