//! The outbox relay: publishes committed events to Kafka, in id order, at least once.
//!
//! One relay is active per database: the leader holds a PostgreSQL advisory lock on a connection
//! of its own and does all its reads and deletes on that same connection, so it cannot go on
//! deleting rows once it has lost the lock. A row is deleted only after Kafka acknowledged it.
//! On a delivery error the batch stops at the first failed row; the rows before it are deleted,
//! the rest are read again from the database, in id order, after a back-off, by a new producer,
//! so a later event of an order never overtakes an earlier one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, RelaySettings};
use crate::metrics::Metrics;
use service_runtime::Backoff;

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

    async fn relay(
        &self,
        conn: &mut PgConnection,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut producer: FutureProducer = producer_config(&self.kafka)
            .create()
            .context("relay: creating the producer")?;
        let mut backoff = self.backoff();
        while !shutdown.is_cancelled() {
            let rows = read_batch(conn, self.settings.batch_size).await?;
            if rows.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval()) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let outcome = publish(&producer, &rows, shutdown).await;
            let acked: Vec<i64> = rows[..outcome.acked].iter().map(|r| r.id).collect();
            if !acked.is_empty() {
                sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
                    .bind(&acked)
                    .execute(&mut *conn)
                    .await
                    .context("relay: deleting published rows")?;
                self.metrics.published(acked.len() as u64);
            }
            match outcome.error {
                None => backoff.reset(),
                Some(error) => {
                    self.metrics.delivery_error();
                    let failed = &rows[outcome.acked];
                    tracing::warn!(outbox_id = failed.id, key = %failed.key, %error, acked = acked.len(),
                        "relay: delivery failed, resending from the database after a back-off");
                    // A fresh producer: nothing left queued in the old one can overtake the resend.
                    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                    drop(producer);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.advance()) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    producer = producer_config(&self.kafka)
                        .create()
                        .context("relay: creating the producer")?;
                }
            }
        }
        // Everything acknowledged was deleted above; flush whatever a cut-short batch left queued.
        let _ = producer.flush(SHUTDOWN_GRACE);
        Ok(())
    }
}

async fn read_batch(conn: &mut PgConnection, limit: i64) -> anyhow::Result<Vec<Row>> {
    let rows: Vec<(i64, String, String, Vec<u8>, serde_json::Value)> =
        sqlx::query_as("SELECT id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT $1")
            .bind(limit)
            .fetch_all(conn)
            .await
            .context("relay: reading the outbox")?;
    Ok(rows
        .into_iter()
        .map(|(id, topic, key, payload, headers)| Row {
            id,
            topic,
            key,
            payload,
            headers,
        })
        .collect())
}

struct Outcome {
    /// Rows acknowledged from the start of the batch, without a gap.
    acked: usize,
    error: Option<String>,
}

fn headers(row: &Row) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(map) = row.headers.as_object() {
        for (key, value) in map {
            let value = value.as_str().unwrap_or_default();
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
    }
    headers
}

/// Sends a batch in order and waits for the acknowledgements, up to the first failure.
async fn publish(producer: &FutureProducer, rows: &[Row], shutdown: &CancellationToken) -> Outcome {
    let mut deliveries = Vec::with_capacity(rows.len());
    let mut error = None;
    for row in rows {
        let record = FutureRecord::to(&row.topic)
            .key(&row.key)
            .payload(&row.payload)
            .headers(headers(row));
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => {
                error = Some(format!("enqueue: {e}"));
                break;
            }
        }
    }
    let mut acked = 0;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::pin!(deadline);
    for delivery in deliveries {
        let result = tokio::select! {
            r = delivery => r,
            _ = &mut deadline => return Outcome { acked, error: Some("shutdown: batch abandoned".into()) },
        };
        match result {
            Ok(Ok(_)) => acked += 1,
            Ok(Err((e, _))) => {
                return Outcome {
                    acked,
                    error: Some(e.to_string()),
                }
            }
            Err(_) => {
                return Outcome {
                    acked,
                    error: Some("delivery canceled".into()),
                }
            }
        }
    }
    Outcome { acked, error }
}
