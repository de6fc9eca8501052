//! The consumer loop: at least once. Offsets are stored only after a message was handled
//! (`enable.auto.offset.store=false`), committed in the background, on partition revoke and on
//! shutdown; after a crash the group resumes at the first message not handled.

use std::time::Duration;

use anyhow::Context;
use events_proto::OrderEvent;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dedup::RecentIds;
use crate::metrics::Metrics;

/// Logs assignments, commits what was handled before partitions are taken away, and reads the
/// consumer lag from librdkafka's statistics.
pub struct GroupContext {
    metrics: Metrics,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.metrics
            .lag
            .store(lag, std::sync::atomic::Ordering::Relaxed);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = %describe(partitions), "partitions revoked, committing handled offsets");
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored since the last commit is the common case.
                    tracing::debug!(error = %e, "commit on revoke");
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(partitions) = rebalance {
            tracing::info!(partitions = %describe(partitions), "partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "offsets committed"),
            Err(e) => tracing::debug!(error = %e, "offset commit"),
        }
    }
}

fn describe(list: &TopicPartitionList) -> String {
    let parts: Vec<String> = list
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}[{}]@{o}", e.topic(), e.partition()),
            _ => format!("{}[{}]", e.topic(), e.partition()),
        })
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub type GroupConsumer = StreamConsumer<GroupContext>;

pub fn consumer(settings: &Settings, metrics: &Metrics) -> anyhow::Result<GroupConsumer> {
    let k = &settings.kafka;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("client.id", &k.client_id)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        // A crashed member's partitions move after this long; a clean stop hands them over at once.
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set(
            "statistics.interval.ms",
            if settings.metrics_addr.is_some() {
                "5000"
            } else {
                "0"
            },
        );
    for (key, value) in &k.properties {
        config.set(key, value);
    }
    let consumer: GroupConsumer = config
        .create_with_context(GroupContext {
            metrics: metrics.clone(),
        })
        .context("creating the consumer")?;
    consumer.subscribe(&[&k.topic]).context("subscribing")?;
    Ok(consumer)
}

fn producer(settings: &Settings) -> anyhow::Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.kafka.brokers)
        .set("client.id", format!("{}-dlq", settings.kafka.client_id))
        .set("enable.idempotence", "true")
        .set("acks", "all");
    for (key, value) in &settings.kafka.properties {
        config.set(key, value);
    }
    config.create().context("creating the dead-letter producer")
}

pub struct Notifier {
    consumer: GroupConsumer,
    handler: Handler,
}

/// What is done with each message.
struct Handler {
    settings: Settings,
    dlq: FutureProducer,
    recent: RecentIds,
    metrics: Metrics,
}

impl Notifier {
    pub fn new(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let consumer = consumer(&settings, &metrics)?;
        let handler = Handler {
            dlq: producer(&settings)?,
            recent: RecentIds::new(settings.dedup_window),
            settings,
            metrics,
        };
        Ok(Self { consumer, handler })
    }

    /// Consumes until `shutdown`; the message in hand is finished, offsets committed, and the
    /// group left (when the consumer is dropped) so another member takes over at once.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            consumer,
            mut handler,
        } = self;
        let settings = &handler.settings.kafka;
        tracing::info!(topic = %settings.topic, group = %settings.group_id, "notifier consuming");
        loop {
            let message = tokio::select! {
                m = consumer.recv() => m,
                _ = shutdown.cancelled() => break,
            };
            match message {
                Ok(message) => {
                    if !handler.handle(&message, &shutdown).await {
                        break; // shutdown while the dead-letter topic was unwritable: not stored
                    }
                    if let Err(e) = consumer.store_offset_from_message(&message) {
                        tracing::warn!(error = %e, partition = message.partition(), offset = message.offset(), "storing the offset");
                    }
                }
                // The broker going away shows here; librdkafka reconnects by itself.
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(handler.settings.retry_initial_ms))
                        .await;
                }
            }
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            Err(e) => tracing::info!(error = %e, "final commit (nothing new to commit is fine)"),
        }
        consumer.unsubscribe();
        tracing::info!("unsubscribed; leaving the group");
        Ok(())
    }
}

impl Handler {
    /// Handles one message; false only if shutdown interrupted it before it was handled.
    async fn handle(
        &mut self,
        message: &BorrowedMessage<'_>,
        shutdown: &CancellationToken,
    ) -> bool {
        let payload = message.payload().unwrap_or_default();
        match OrderEvent::decode_from(payload) {
            Ok(event) => {
                self.log_event(&event, message);
                true
            }
            Err(error) => {
                self.dead_letter(message, &error.to_string(), shutdown)
                    .await
            }
        }
    }

    fn log_event(&mut self, event: &OrderEvent, message: &BorrowedMessage<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        let occurred_at = event
            .occurred_at
            .as_ref()
            .and_then(|t| {
                chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
            })
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
            .unwrap_or_default();
        let mut metadata: Vec<_> = event
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        metadata.sort();
        let metadata = metadata.join(",");
        let items: Vec<String> = event
            .items
            .iter()
            .map(|i| format!("{}x{}", i.sku, i.count))
            .collect();
        let fields = (
            event.order_id,
            event.status.as_str(),
            event.previous_status.as_str(),
            occurred_at.as_str(),
        );
        if self.recent.insert(&event.event_id) {
            self.metrics.handled.fetch_add(1, Relaxed);
            tracing::info!(
                order_id = fields.0, status = fields.1, previous_status = fields.2, occurred_at = fields.3,
                user_id = event.user_id, sequence = event.sequence, items = items.join(","),
                event_id = %event.event_id, partition = message.partition(), offset = message.offset(),
                metadata = %metadata, "order event"
            );
        } else {
            self.metrics.duplicates.fetch_add(1, Relaxed);
            tracing::info!(
                order_id = fields.0, status = fields.1, event_id = %event.event_id,
                partition = message.partition(), offset = message.offset(), "duplicate order event, already logged"
            );
        }
    }

    /// Logs a message that does not decode and copies it to the dead-letter topic, retrying
    /// until the copy is acknowledged: it is never dropped silently.
    async fn dead_letter(
        &self,
        message: &BorrowedMessage<'_>,
        error: &str,
        shutdown: &CancellationToken,
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.metrics.decode_errors.fetch_add(1, Relaxed);
        let payload = message.payload().unwrap_or_default();
        let prefix: String = payload
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        tracing::error!(
            partition = message.partition(), offset = message.offset(), key = %key, bytes = payload.len(),
            hex_prefix = %prefix, %error, dlq = %self.settings.kafka.dlq_topic,
            "message does not decode as an OrderEvent; copying it to the dead-letter topic"
        );
        let (partition, offset) = (
            message.partition().to_string(),
            message.offset().to_string(),
        );
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "source-topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "source-partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "source-offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "error",
                value: Some(error),
            });
        let mut delay = Duration::from_millis(self.settings.retry_initial_ms);
        loop {
            let mut record = FutureRecord::to(&self.settings.kafka.dlq_topic)
                .payload(payload)
                .headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            match self.dlq.send(record, Duration::from_secs(10)).await {
                Ok(_) => return true,
                Err((e, _)) => {
                    self.metrics.dlq_retries.fetch_add(1, Relaxed);
                    tracing::warn!(error = %e, retry_in = ?delay, "dead-letter write failed; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return false,
            }
            delay = (delay * 2).min(Duration::from_millis(self.settings.retry_max_ms));
        }
    }
}
