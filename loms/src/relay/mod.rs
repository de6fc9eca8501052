//! The outbox relay: publishes committed events to Kafka, in id order, at least once.
//!
//! In three parts: [`leadership`] (one relay per database: the connection and its lock, with
//! deadlines, heartbeats and the lease that lets a follower replace a silent leader), the
//! outbox's statements ([`crate::outbox::store`]), and the publishing [`pipeline`] with its
//! explicit states. A row is deleted only after Kafka acknowledged it; a row the broker refuses
//! for good is parked with the rest of its order, and the other orders go on.

mod batch;
mod failure;
mod leadership;
mod pipeline;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::{ClientConfig, ClientContext, Statistics};
use service_runtime::kafka::{ClientSettings, RequestCount};
use service_runtime::Backoff;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{KafkaSettings, RelaySettings};
use crate::metrics::Metrics;

pub use leadership::FOLLOWER_POLL_MIN;

pub struct Relay {
    pub connect: PgConnectOptions,
    pub settings: RelaySettings,
    pub kafka: KafkaSettings,
    pub metrics: Metrics,
    /// Signalled after each commit that wrote events.
    pub wake: Arc<Notify>,
}

/// How often librdkafka reports the producer's queue to the metrics.
const STATISTICS_INTERVAL_MS: u32 = 5_000;

/// Reads the producer's queue and its produce requests from librdkafka's statistics into the
/// metrics.
pub struct ProducerStats {
    metrics: Metrics,
    produce_requests: RequestCount,
}

impl ProducerStats {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            produce_requests: RequestCount::default(),
        }
    }
}

impl ClientContext for ProducerStats {
    fn stats(&self, statistics: Statistics) {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.metrics
            .set_producer_queue(as_i64(statistics.msg_cnt), as_i64(statistics.msg_size));
        self.metrics
            .produce_requests(self.produce_requests.since_last(&statistics, "Produce"));
    }
}

/// Messages the producer may hold queued: far more than a batch, so enqueueing never fails.
const PRODUCER_QUEUE_MESSAGES: u32 = 1_000_000;

/// The relay's producer. Idempotent, with acks from all in-sync replicas, and gapless: with
/// `message.timeout.ms` 0 a message is retried until it is written or the producer fails for
/// good (`enable.gapless.guarantee` turns any error that could leave a gap into a fatal one), so
/// an acknowledged later event never sits on the partition without the earlier one. Only a
/// fatal or permanent error makes the relay resend from the outbox.
pub fn producer_config(kafka: &KafkaSettings) -> anyhow::Result<ClientConfig> {
    let defaults = [
        ("enable.idempotence", "true".to_string()),
        ("enable.gapless.guarantee", "true".to_string()),
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
        ("statistics.interval.ms", STATISTICS_INTERVAL_MS.to_string()),
    ];
    kafka.client("", defaults).map_err(anyhow::Error::msg)
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
                    self.metrics.relay_failure();
                    // Long enough for a follower's poll to find the lock free first.
                    let pause = backoff.advance().max(2 * FOLLOWER_POLL_MIN);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
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

    /// One leadership term: returns Ok on shutdown, Err when the connection or the lock is lost,
    /// or publishing stalled.
    async fn lead(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(mut leader) = leadership::acquire(&self.connect, &self.settings, shutdown).await?
        else {
            return Ok(());
        };
        self.metrics.set_leader(true);
        tracing::info!(
            lock_key = self.settings.lock_key,
            "relay: leader, publishing the outbox"
        );
        let result = pipeline::Pipeline::new(self)?
            .run(&mut leader, shutdown)
            .await;
        self.metrics.set_leader(false);
        leader.resign().await;
        result
    }
}
