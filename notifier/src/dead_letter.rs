//! The dead-letter writer: a message that does not decode is copied, with where it came from and
//! why, to the dead-letter topic, retried until acknowledged: it is never dropped silently.

use std::time::Duration;

use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::metrics::Metrics;

/// How long one dead-letter write may wait in the producer before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct DeadLetters {
    producer: FutureProducer,
    settings: Settings,
    metrics: Metrics,
}

impl DeadLetters {
    pub fn new(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        Ok(Self {
            producer: crate::kafka::dead_letter_producer(&settings)?,
            settings,
            metrics,
        })
    }

    pub fn dlq_topic(&self) -> &str {
        &self.settings.kafka.dlq_topic
    }

    /// Copies `message` to the dead-letter topic; false only if shutdown came first.
    pub async fn write(
        &self,
        message: &BorrowedMessage<'_>,
        error: &str,
        trace_id: &str,
        shutdown: &CancellationToken,
    ) -> bool {
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
        let payload = message.payload().unwrap_or_default();
        let mut backoff = self.settings.backoff();
        loop {
            let mut record = FutureRecord::to(self.dlq_topic())
                .payload(payload)
                .headers(headers.clone());
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            let delay = match self.producer.send(record, WRITE_TIMEOUT).await {
                Ok(_) => {
                    self.metrics.dlq_write();
                    return true;
                }
                Err((e, _)) => {
                    self.metrics.dlq_retry();
                    let delay = backoff.advance();
                    tracing::warn!(error = %e, retry_in = ?delay, trace_id, "dead-letter write failed; retrying");
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }
}
