//! Orders and stock in PostgreSQL. Every change of orders is made by a batch: concurrent
//! requests are committed together, one commit for many (one round trip for OrderCreate's, two
//! for OrderPay's and OrderCancel's), each decided exactly as if it ran alone in arrival order
//! (see [`crate::batcher`] and the migrations' functions).
//! Orders are locked before stock rows, and stock rows in sku order, by every writer, so
//! concurrent batches cannot deadlock; each change writes its events to the outbox before it
//! commits.

mod change;
mod create;
mod ids;
mod settle;

use std::sync::Arc;
use std::time::SystemTime;

use sqlx::PgPool;
use tokio::sync::oneshot;

use crate::batcher::{Batcher, Shape};
use crate::domain::{Action, Line, NewOrder, OrderId, Sku, Status};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::outbox::{Change, Facts, Outbox};
pub use change::CHANGE_ORDERS;
use change::{ChangeBatches, PendingChange};
pub use create::CREATE_ORDERS;
use create::{CreateBatches, PendingOrder};
use ids::IdBlock;

const NOT_ENOUGH_STOCK: &str = "not enough stock";

/// Events a new order gets: `new`, then its outcome (`awaiting payment` or `failed`).
const EVENTS_PER_NEW_ORDER: i64 = 2;
/// Requests waiting for a batch; the requests in flight are bounded before this anyway.
const QUEUE_CAPACITY: usize = 4_096;

#[derive(Clone)]
pub struct Storage {
    pool: PgPool,
    outbox: Outbox,
    ids: Arc<IdBlock>,
    creates: Batcher<PendingOrder>,
    changes: Batcher<PendingChange>,
}

#[derive(Debug)]
pub struct OrderView {
    pub status: Status,
    pub user_id: i64,
    pub lines: Vec<Line>,
}

fn lines_of(skus: &[i64], counts: &[i64]) -> Vec<Line> {
    skus.iter()
        .zip(counts)
        .map(|(&sku, &count)| Line { sku, count })
        .collect()
}

impl Storage {
    /// Starts the batchers' workers (see [`crate::batcher`]): `shape` for OrderCreate's, and as
    /// many again for OrderPay's and OrderCancel's.
    pub fn new(pool: PgPool, outbox: Outbox, shape: Shape, metrics: Metrics) -> Self {
        let creates = Arc::new(CreateBatches {
            pool: pool.clone(),
            topic: outbox.topic.clone(),
            written: outbox.written.clone(),
            metrics: metrics.clone(),
        });
        let changes = Arc::new(ChangeBatches {
            pool: pool.clone(),
            outbox: outbox.clone(),
            metrics,
        });
        Self {
            pool,
            outbox,
            ids: Arc::default(),
            creates: spawn(shape, creates),
            changes: spawn(shape, changes),
        }
    }

    /// Stores a new order, reserving its lines all or nothing, with its `new` event and the
    /// outcome's. The events are built here for both outcomes (so an event too large is refused
    /// before anything is written); the order goes to the batcher, which commits it with the
    /// others waiting in one call of `create_orders` (see its migration), and answers once that
    /// committed. The order id comes from a block taken from the sequence ahead of time. A
    /// `failed` order is stored and its events written, then reported as `NotEnoughStock`.
    pub async fn create_order(&self, order: NewOrder, facts: Facts<'_>) -> Result<i64, Error> {
        let order_id = self.ids.next(&self.pool).await?;
        let (reserved_status, failed_status) = (Status::created(true), Status::created(false));
        let change = |status, previous, sequence, reason| Change {
            order_id,
            user_id: order.user_id().get(),
            status,
            previous,
            sequence,
            lines: order.lines(),
            facts,
            reason,
        };
        let at = SystemTime::now();
        let outcome = |status: Status, reason| {
            self.outbox.rows(
                &[
                    change(Status::New, None, 1, None),
                    change(status, Some(Status::New), EVENTS_PER_NEW_ORDER, reason),
                ],
                at,
            )
        };
        let reserved_rows = outcome(reserved_status, None)?;
        // The event is built before the batch decides, so it names what could not be reserved
        // as a whole; the reply names the sku short and the counts, read back.
        let failed_rows = outcome(failed_status, Some(unreservable(order.lines())))?;
        let (reply, decided) = oneshot::channel();
        let pending = PendingOrder {
            order_id,
            order,
            reserved_rows,
            failed_rows,
            reply,
        };
        self.creates.submit(pending).await.map_err(|_| stopped())?;
        let (order, decided) = decided.await.map_err(|_| stopped())??;
        if decided.reserved {
            return Ok(order_id);
        }
        let shortage = decided
            .available
            .and_then(|available| shortage(order.lines(), &available))
            .unwrap_or_else(|| {
                // The database is the judge; this only explains its verdict.
                tracing::warn!(
                    order_id,
                    "order failed although the stock read back covers it"
                );
                NOT_ENOUGH_STOCK.to_string()
            });
        Err(Error::NotEnoughStock { order_id, shortage })
    }

    /// OrderCreate requests waiting for a batch worker.
    pub fn orders_waiting(&self) -> usize {
        self.creates.waiting()
    }

    /// The order with its lines: one row, by its primary key.
    pub async fn order(&self, order_id: OrderId) -> Result<OrderView, Error> {
        let order_id = order_id.get();
        let row: Option<(i64, Status, Vec<i64>, Vec<i64>)> =
            sqlx::query_as("SELECT user_id, status, skus, counts FROM orders WHERE id = $1")
                .bind(order_id)
                .fetch_optional(&self.pool)
                .await?;
        let (user_id, status, skus, counts) = row.ok_or(Error::OrderNotFound(order_id))?;
        Ok(OrderView {
            status,
            user_id,
            lines: lines_of(&skus, &counts),
        })
    }

    /// Pays or cancels an order as its status allows; `Ok(false)` when it was already done.
    /// The request goes to the batcher, which decides it with the others waiting and commits
    /// their changes in one call of `change_orders` (see its migration); it is answered once
    /// that committed.
    pub async fn apply(
        &self,
        order_id: OrderId,
        action: Action,
        facts: Facts<'static>,
    ) -> Result<bool, Error> {
        let (reply, answered) = oneshot::channel();
        let pending = PendingChange {
            order_id: order_id.get(),
            action,
            facts,
            span: tracing::Span::current(),
            reply,
        };
        self.changes.submit(pending).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }

    /// OrderPay and OrderCancel requests waiting for a batch worker.
    pub fn changes_waiting(&self) -> usize {
        self.changes.waiting()
    }

    /// Units of `sku` that can still be bought.
    pub async fn available(&self, sku: Sku) -> Result<u32, Error> {
        let sku = sku.get();
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT GREATEST(total_count - reserved, 0) FROM stocks WHERE sku = $1")
                .bind(sku)
                .fetch_optional(&self.pool)
                .await?;
        let (count,) = row.ok_or(Error::SkuNotFound(sku))?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }
}

/// Starts the workers of one kind of batch.
fn spawn<B: settle::Batches + 'static>(shape: Shape, batches: Arc<B>) -> Batcher<B::Item> {
    Batcher::spawn(shape, QUEUE_CAPACITY, move |items| {
        let batches = batches.clone();
        async move { settle::settle(&*batches, items).await }
    })
}

fn stopped() -> Error {
    Error::Internal(anyhow::anyhow!("the batcher has stopped"))
}

/// Lines a `failed` order's reason names; the rest are counted.
const REASON_LINES: usize = 20;

/// The reason a `failed` order's event gives: the lines that could not all be reserved (the
/// event carries every line anyway).
fn unreservable(lines: &[Line]) -> String {
    let named = service_runtime::abridged::first_and_rest(
        lines,
        REASON_LINES,
        |l| format!("sku {} x {}", l.sku, l.count),
        |rest| format!("and {rest} more"),
    );
    format!("{NOT_ENOUGH_STOCK} for all of: {}", named.join(", "))
}

/// Why the stock cannot cover `lines`, if it cannot. `available` is sorted by sku.
fn shortage(lines: &[Line], available: &[(i64, i64)]) -> Option<String> {
    lines.iter().find_map(
        |line| match available.binary_search_by_key(&line.sku, |(sku, _)| *sku) {
            Err(_) => Some(format!("sku {} has no stock", line.sku)),
            Ok(i) if available[i].1 < line.count => Some(format!(
                "sku {}: {} requested, {} available",
                line.sku,
                line.count,
                available[i].1.max(0)
            )),
            Ok(_) => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_orders_reason_is_bounded() {
        let lines: Vec<Line> = (1..=500).map(|sku| Line { sku, count: 1 }).collect();
        let reason = unreservable(&lines);
        assert!(reason.ends_with("sku 20 x 1, and 480 more"), "{reason}");
        assert_eq!(
            unreservable(&lines[..1]),
            "not enough stock for all of: sku 1 x 1"
        );
    }

    #[test]
    fn shortage_names_the_first_missing_sku() {
        let lines = [Line { sku: 1, count: 2 }, Line { sku: 3, count: 5 }];
        assert_eq!(shortage(&lines, &[(1, 2), (3, 5)]), None);
        assert_eq!(
            shortage(&lines, &[(1, 2), (3, 4)]).unwrap(),
            "sku 3: 5 requested, 4 available"
        );
        assert_eq!(shortage(&lines, &[(3, 9)]).unwrap(), "sku 1 has no stock");
        assert_eq!(
            shortage(&lines[..1], &[(1, -1)]).unwrap(),
            "sku 1: 2 requested, 0 available"
        );
    }
}
