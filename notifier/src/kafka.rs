//! The Kafka clients of the notifier: the group consumer with its rebalance context, and the
//! dead-letter producer.

use anyhow::Context;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use service_runtime::kafka::{ClientSettings, RequestCount};

use crate::config::Settings;
use crate::metrics::Metrics;

/// How long a dead-letter write may take in all before it fails and is retried: well below the
/// consumer's `max.poll.interval.ms` (300 s), so that a slow write never gets the member
/// evicted from its group.
pub const DEAD_LETTER_TIMEOUT_MS: u32 = 30_000;
/// How often librdkafka reports statistics (for the lag gauge) when metrics are served.
const STATISTICS_INTERVAL_MS: u32 = 5_000;
/// How often handled offsets are committed in the background.
const AUTO_COMMIT_INTERVAL_MS: u32 = 1_000;
const HEARTBEAT_INTERVAL_MS: u32 = 1_000;

/// Logs assignments, commits what was handled before partitions are taken away, and reads the
/// consumer lag from librdkafka's statistics.
pub struct GroupContext {
    metrics: Metrics,
    fetch_requests: RequestCount,
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
        self.metrics.set_lag(lag);
        // Bootstrap entries have no node id; a broker the cluster named, in state UP, answers.
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.metrics.set_broker_up(up);
        self.metrics
            .fetch_requests(self.fetch_requests.since_last(&statistics, "Fetch"));
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                tracing::info!(partitions = %describe(partitions), "partitions revoked, committing handled offsets");
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    // Nothing stored since the last commit is the common case.
                    Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                    Err(e) => {
                        self.metrics.commit_error();
                        tracing::warn!(error = %e, "commit on revoke failed; the next member may see those messages again");
                    }
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.metrics.set_group_member(false);
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                self.metrics.set_group_member(true);
                tracing::info!(partitions = %describe(partitions), "partitions assigned");
            }
            Rebalance::Revoke(_) => {
                self.metrics.set_group_member(false);
            }
            Rebalance::Error(_) => {}
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(offsets = %describe(offsets), "offsets committed"),
            // Nothing stored since the last commit: not an error.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.commit_error();
                tracing::warn!(error = %e, offsets = %describe(offsets), "offset commit failed");
            }
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

/// The group consumer, subscribed. Offsets are stored by the loop only after a message was
/// handled (`enable.auto.offset.store=false`) and committed in the background.
pub fn consumer(settings: &Settings, metrics: &Metrics) -> anyhow::Result<GroupConsumer> {
    let k = &settings.kafka;
    let statistics = if settings.admin_addr.is_some() {
        STATISTICS_INTERVAL_MS
    } else {
        0
    };
    let defaults = [
        ("group.id", k.group_id.clone()),
        ("auto.offset.reset", "earliest".to_string()),
        ("enable.auto.commit", "true".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        (
            "auto.commit.interval.ms",
            AUTO_COMMIT_INTERVAL_MS.to_string(),
        ),
        ("session.timeout.ms", k.session_timeout_ms.to_string()),
        ("heartbeat.interval.ms", HEARTBEAT_INTERVAL_MS.to_string()),
        ("statistics.interval.ms", statistics.to_string()),
    ];
    let consumer: GroupConsumer = k
        .client("", defaults)
        .map_err(anyhow::Error::msg)?
        .create_with_context(GroupContext {
            metrics: metrics.clone(),
            fetch_requests: RequestCount::default(),
        })
        .context("creating the consumer")?;
    consumer.subscribe(&[&k.topic]).context("subscribing")?;
    Ok(consumer)
}

pub fn dead_letter_producer(settings: &Settings) -> anyhow::Result<FutureProducer> {
    let k = &settings.kafka;
    let defaults = [
        ("enable.idempotence", "true".to_string()),
        ("acks", "all".to_string()),
        ("message.timeout.ms", DEAD_LETTER_TIMEOUT_MS.to_string()),
    ];
    k.client("-dlq", defaults)
        .map_err(anyhow::Error::msg)?
        .create()
        .context("creating the dead-letter producer")
}
