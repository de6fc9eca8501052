//! The consumer loop: at least once. Offsets are stored only after a message was handled
//! (`enable.auto.offset.store=false`), committed in the background, on partition revoke and on
//! shutdown; after a crash the group resumes at the first message not handled.

use anyhow::Context;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::Message;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dead_letter::DeadLetters;
use crate::dedup::RecentIds;
use crate::handler::Handler;
use crate::kafka::GroupConsumer;
use crate::metrics::Metrics;

pub struct Notifier {
    consumer: GroupConsumer,
    handler: Handler,
    settings: Settings,
    metrics: Metrics,
}

impl Notifier {
    pub fn new(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let consumer = crate::kafka::consumer(&settings, &metrics)?;
        let handler = Handler::new(
            DeadLetters::new(settings.clone(), metrics.clone())
                .context("the dead-letter writer")?,
            RecentIds::new(settings.dedup_window),
            metrics.clone(),
        );
        Ok(Self {
            consumer,
            handler,
            settings,
            metrics,
        })
    }

    /// Consumes until `shutdown`; the message in hand is finished, offsets committed, and the
    /// group left (when the consumer is dropped) so another member takes over at once.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            consumer,
            mut handler,
            settings,
            metrics,
        } = self;
        tracing::info!(topic = %settings.kafka.topic, group = %settings.kafka.group_id, "notifier consuming");
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
                // The broker going away shows here, one queued event per failed reconnect, and
                // librdkafka reconnects by itself at its own pace. Waiting here would only let
                // those events pile up and put the consumer behind them once the broker is back.
                Err(e) => tracing::warn!(error = %e, "consume error"),
            }
        }
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            // The background commit already took everything handled.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                tracing::info!("offsets committed (nothing new since the last commit)")
            }
            Err(e) => {
                metrics.commit_error();
                tracing::warn!(error = %e, "final commit failed; the next member resumes from the last commit")
            }
        }
        consumer.unsubscribe();
        tracing::info!("unsubscribed; leaving the group");
        Ok(())
    }
}
