//! The publishing pipeline of one leadership term, in explicit states:
//!
//! - **streaming**: two batches in flight at once. While one awaits its acknowledgements, one
//!   statement deletes what was acknowledged and reads the next batch, which is sent at once.
//!   The read skips only the rows in flight, never "everything up to the last id read": a row
//!   with a lower id may commit later, and it is then read next, while no later event of its
//!   order can be in flight yet (that event's transaction locks the order after this one
//!   committed).
//! - **recovering**: after any failure, one batch at a time until one succeeds.
//! - **isolating**: after the broker refused a batch for good, batches of one row, so that the
//!   row it refuses is known; that row is parked with every later row of its order, and the
//!   other orders go on at once.
//!
//! Any failure stops everything in flight: the rows acknowledged before it are deleted, every
//! row from it on is read again from the database, in id order, by a new producer, so a later
//! event of an order never overtakes an earlier one. A batch that gets no acknowledgement for
//! the stall timeout ends the leadership term (the broker may be reachable from another
//! replica); the leader's connection gets a heartbeat while it waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, Producer, PurgeConfig};
use service_runtime::Backoff;
use tokio_util::sync::CancellationToken;

use super::batch::{Acknowledged, Batch, SHUTDOWN_GRACE};
use super::failure::{Failure, Verdict};
use super::leadership::Leader;
use super::{ProducerStats, Relay};
use crate::outbox::store::{self, Row};

/// How often the parked rows are counted for their gauge while the relay is idle.
const PARKED_RECOUNT: Duration = Duration::from_secs(10);
/// How often the leader measures the outbox backlog for its gauges (scrapes run no query).
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Streaming,
    Recovering,
    Isolating,
}

impl Mode {
    fn batches_in_flight(self) -> usize {
        match self {
            Self::Streaming => 2,
            Self::Recovering | Self::Isolating => 1,
        }
    }

    fn batch_size(self, configured: i64) -> i64 {
        match self {
            Self::Isolating => 1,
            Self::Streaming | Self::Recovering => configured,
        }
    }
}

pub struct Pipeline<'r> {
    relay: &'r Relay,
    producer: FutureProducer<ProducerStats>,
    in_flight: VecDeque<Batch>,
    done: Acknowledged,
    mode: Mode,
    backoff: Backoff,
    parked_counted: Instant,
    backlog_measured: Option<Instant>,
    /// A batch stopped enqueueing at a row: no later batch may be sent before that failure is
    /// handled, or rows after that row could overtake it.
    halted: bool,
}

impl<'r> Pipeline<'r> {
    pub fn new(relay: &'r Relay) -> anyhow::Result<Self> {
        Ok(Self {
            producer: producer(relay)?,
            in_flight: VecDeque::new(),
            done: Acknowledged::default(),
            mode: Mode::Streaming,
            backoff: relay.backoff(),
            parked_counted: Instant::now(),
            backlog_measured: None,
            halted: false,
            relay,
        })
    }

    /// Relays until shutdown (Ok) or until the connection fails or publishing stalls (Err).
    pub async fn run(
        mut self,
        leader: &mut Leader,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let result = self.stream(leader, shutdown).await;
        match result {
            Ok(()) => self.finish(leader, shutdown).await,
            Err(e) => {
                // What is in flight may still land within the grace (the database, not Kafka,
                // may be what failed): its rows stay in the outbox and are resent by the next
                // leader, a duplicate rather than a wait. Flushing and destroying a producer
                // whose broker does not answer blocks, so not on the runtime's threads.
                let producer = self.producer;
                tokio::task::spawn_blocking(move || {
                    let _ = producer.flush(SHUTDOWN_GRACE);
                    producer.purge(PurgeConfig::default().queue().inflight());
                });
                Err(e)
            }
        }
    }

    async fn stream(
        &mut self,
        leader: &mut Leader,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let settings = &self.relay.settings;
        self.count_parked(leader).await?;
        while !shutdown.is_cancelled() {
            if self
                .backlog_measured
                .is_none_or(|at| at.elapsed() >= BACKLOG_EVERY)
            {
                self.measure_backlog(leader).await?;
            }
            if !self.halted && self.in_flight.len() < self.mode.batches_in_flight() {
                let sending: Vec<i64> = self.in_flight.iter().flat_map(Batch::ids).collect();
                let read_at = Instant::now();
                let limit = self.mode.batch_size(settings.batch_size);
                let rows = self.delete_and_read(leader, &sending, limit).await?;
                let rows = self.park_blocked(leader, rows).await?;
                if !rows.is_empty() {
                    let batch = Batch::send(&self.producer, rows, read_at);
                    self.halted = batch.enqueue_error.is_some();
                    self.in_flight.push_back(batch);
                    if !self.halted {
                        continue; // read the next one while this one flies
                    }
                }
                if self.in_flight.is_empty() {
                    if self.parked_counted.elapsed() >= PARKED_RECOUNT {
                        self.count_parked(leader).await?;
                    }
                    // Idle, but never silent for longer than a heartbeat.
                    let nap = settings.poll_interval().min(settings.heartbeat());
                    tokio::select! {
                        _ = self.relay.wake.notified() => {}
                        _ = tokio::time::sleep(nap) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            }
            let Some(batch) = self.in_flight.pop_front() else {
                continue;
            };
            match self.acknowledged(leader, batch, shutdown).await? {
                None => {
                    self.backoff.reset();
                    self.mode = Mode::Streaming;
                }
                Some(failure) => self.failed(leader, failure, shutdown).await?,
            }
        }
        Ok(())
    }

    /// Waits for `batch`'s acknowledgements, with a heartbeat on the leader's connection, and
    /// gives up the term when none comes within the stall timeout.
    async fn acknowledged(
        &mut self,
        leader: &mut Leader,
        batch: Batch,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Failure>> {
        let settings = &self.relay.settings;
        let rows = batch.rows.len();
        let acks = batch.acknowledged(shutdown, &self.relay.metrics, &mut self.done);
        tokio::pin!(acks);
        let stall = tokio::time::sleep(settings.stall_timeout());
        tokio::pin!(stall);
        let mut beat = tokio::time::interval(settings.heartbeat());
        beat.tick().await;
        loop {
            tokio::select! {
                failure = &mut acks => return Ok(failure),
                _ = beat.tick() => leader.heartbeat().await?,
                _ = &mut stall, if !shutdown.is_cancelled() => anyhow::bail!(
                    "relay: a batch of {rows} got no acknowledgement within {:?}; stepping down so that a replica that reaches the broker can publish",
                    settings.stall_timeout()
                ),
            }
        }
    }

    /// Stops everything in flight, deletes what was acknowledged, and goes on from the failed
    /// row: parked if the broker refused it alone for good, sent alone if it refused its batch
    /// for good, resent after a back-off otherwise.
    async fn failed(
        &mut self,
        leader: &mut Leader,
        failure: Failure,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let metrics = &self.relay.metrics;
        metrics.delivery_error();
        let verdict = failure.verdict(self.mode == Mode::Isolating);
        let Failure { row, error, .. } = failure;
        // Nothing queued in the old producer may overtake the resend.
        self.in_flight.clear();
        self.halted = false;
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        self.delete_acknowledged(leader).await?;
        let pause = match verdict {
            Verdict::Park => {
                self.park(leader, &row, &error).await?;
                self.mode = Mode::Recovering;
                None
            }
            Verdict::Isolate => {
                tracing::warn!(outbox_id = row.id, key = %row.key, %error,
                    "relay: the broker refused a batch for good; sending one row at a time to find the row it refuses");
                self.mode = Mode::Isolating;
                None
            }
            Verdict::Retry => {
                tracing::warn!(outbox_id = row.id, key = %row.key, %error,
                    "relay: delivery failed, resending from the database after a back-off");
                self.mode = Mode::Recovering;
                Some(self.backoff.advance())
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        self.producer = producer(self.relay)?;
        Ok(())
    }

    /// Parks `row`, which the broker refuses for good, with every other row of its order.
    async fn park(&mut self, leader: &mut Leader, row: &Row, error: &str) -> anyhow::Result<()> {
        let (key, first) = (row.key.as_str(), row.id);
        let ids = leader
            .call("parking an order's events", |c| {
                store::park_order(c, key, first, error)
            })
            .await?;
        tracing::error!(outbox_id = row.id, key = %row.key, bytes = row.payload.len(), %error,
            "relay: event parked: the broker refuses it for good; its order's events wait in outbox_parked (loms outbox parked | retry | drop), every other order goes on");
        for id in ids.iter().filter(|id| **id != row.id) {
            tracing::error!(outbox_id = id, key = %row.key, behind = row.id, "relay: event parked behind a parked event of its order");
        }
        self.relay.metrics.parked(ids.len() as u64);
        self.count_parked(leader).await
    }

    /// Parks the rows read as blocked (their orders have parked events); returns the others.
    async fn park_blocked(
        &mut self,
        leader: &mut Leader,
        rows: Vec<Row>,
    ) -> anyhow::Result<Vec<Row>> {
        if !rows.iter().any(|r| r.blocked) {
            return Ok(rows);
        }
        let (blocked, free): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.blocked);
        let ids: Vec<i64> = blocked.iter().map(|r| r.id).collect();
        let moved = leader
            .call("parking events behind parked ones", |c| {
                store::park_behind(c, &ids)
            })
            .await?;
        for row in blocked.iter().filter(|r| moved.contains(&r.id)) {
            tracing::error!(outbox_id = row.id, key = %row.key, "relay: event parked behind a parked event of its order");
        }
        self.relay.metrics.parked(moved.len() as u64);
        self.count_parked(leader).await?;
        Ok(free)
    }

    async fn measure_backlog(&mut self, leader: &mut Leader) -> anyhow::Result<()> {
        let (rows, age) = leader
            .call("measuring the outbox backlog", store::backlog)
            .await?;
        self.relay.metrics.set_backlog(rows, age);
        self.backlog_measured = Some(Instant::now());
        Ok(())
    }

    async fn count_parked(&mut self, leader: &mut Leader) -> anyhow::Result<()> {
        let n = leader
            .call("counting parked events", store::parked_count)
            .await?;
        self.relay.metrics.set_parked_rows(n);
        self.parked_counted = Instant::now();
        Ok(())
    }

    async fn delete_and_read(
        &mut self,
        leader: &mut Leader,
        sending: &[i64],
        limit: i64,
    ) -> anyhow::Result<Vec<Row>> {
        let done = &self.done.ids;
        let rows = leader
            .call("deleting published rows and reading the outbox", |c| {
                store::delete_and_read(c, done, sending, limit)
            })
            .await?;
        self.done.deleted(&self.relay.metrics);
        for row in &rows {
            self.relay.metrics.outbox_wait(row.waited);
        }
        Ok(rows)
    }

    async fn delete_acknowledged(&mut self, leader: &mut Leader) -> anyhow::Result<()> {
        if !self.done.ids.is_empty() {
            let done = &self.done.ids;
            leader
                .call("deleting published rows", |c| store::delete(c, done))
                .await?;
            self.done.deleted(&self.relay.metrics);
        }
        Ok(())
    }

    /// At shutdown: what is still in flight may be acknowledged within the grace; what is, is
    /// deleted.
    async fn finish(
        mut self,
        leader: &mut Leader,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        for batch in std::mem::take(&mut self.in_flight) {
            if batch
                .acknowledged(shutdown, &self.relay.metrics, &mut self.done)
                .await
                .is_some()
            {
                break;
            }
        }
        self.delete_acknowledged(leader).await?;
        let _ = self.producer.flush(SHUTDOWN_GRACE);
        Ok(())
    }
}

fn producer(relay: &Relay) -> anyhow::Result<FutureProducer<ProducerStats>> {
    use anyhow::Context;
    super::producer_config(&relay.kafka)?
        .create_with_context(ProducerStats::new(relay.metrics.clone()))
        .context("relay: creating the producer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_failure_one_batch_flies_and_isolation_sends_one_row() {
        assert_eq!(Mode::Streaming.batches_in_flight(), 2);
        assert_eq!(Mode::Recovering.batches_in_flight(), 1);
        assert_eq!(Mode::Isolating.batches_in_flight(), 1);
        assert_eq!(Mode::Isolating.batch_size(1_000), 1);
        assert_eq!(Mode::Recovering.batch_size(1_000), 1_000);
    }
}
