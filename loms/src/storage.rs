//! Orders and stock in PostgreSQL. Each operation on an order is one transaction that locks the
//! order row first, then the stock rows in sku order (so concurrent orders cannot deadlock), and
//! writes its events to the outbox before it commits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{oneshot, Notify};

use crate::batcher::{Batcher, Shape};
use crate::database::failure::DbFailure;
use crate::domain::{Action, Line, NewOrder, OrderId, Sku, Status, StockEffect, Transition};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::outbox::{Change, Facts, Outbox, Rows};

const NOT_ENOUGH_STOCK: &str = "not enough stock";
/// Order ids taken from the sequence at once: one round trip serves this many orders.
const ORDER_ID_BLOCK: i64 = 100;

/// Events a new order gets: `new`, then its outcome (`awaiting payment` or `failed`).
const EVENTS_PER_NEW_ORDER: i64 = 2;
/// Orders waiting for a batch; the requests in flight are bounded before this anyway.
const QUEUE_CAPACITY: usize = 4_096;
/// Runs of a batch whose connection broke mid-call (its commit may or may not have happened:
/// `create_orders` reports a batch committed before, rather than applying it twice).
const LOST_RETRIES: u32 = 1;
/// Runs of a batch that lost a serialization or lock conflict, before it is split.
const CONFLICT_RETRIES: u32 = 3;

#[derive(Clone)]
pub struct Storage {
    pool: PgPool,
    outbox: Outbox,
    ids: Arc<IdBlock>,
    creates: Batcher<PendingOrder>,
}

/// An order waiting for its batch, its events built for either outcome.
struct PendingOrder {
    order_id: i64,
    order: NewOrder,
    reserved_rows: Rows,
    failed_rows: Rows,
    reply: oneshot::Sender<Result<(NewOrder, Decided), Error>>,
}

/// How its batch decided an order.
struct Decided {
    reserved: bool,
    /// (sku, units available when the order was decided) for each line whose sku has stock;
    /// unknown when the batch had been committed by an earlier call.
    available: Option<Vec<(i64, i64)>>,
}

/// OrderCreate's batches: one call of `create_orders`, one commit, for many orders.
struct CreateBatches {
    pool: PgPool,
    topic: String,
    written: Arc<Notify>,
    metrics: Metrics,
}

/// What to do with a batch whose call failed.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Run it again as it is.
    Retry,
    /// Run each half on its own, the first half first, until the order at fault is alone.
    Split,
    /// Give every order in it the error.
    Answer,
}

fn next_step(failure: DbFailure, runs: u32, orders: usize) -> Next {
    match failure {
        DbFailure::Lost if runs <= LOST_RETRIES => Next::Retry,
        DbFailure::Conflict if runs <= CONFLICT_RETRIES => Next::Retry,
        // The database itself is away: splitting would only fail more often.
        DbFailure::Lost | DbFailure::Unreachable | DbFailure::Refused => Next::Answer,
        DbFailure::Conflict | DbFailure::Timeout | DbFailure::Other if orders > 1 => Next::Split,
        DbFailure::Conflict | DbFailure::Timeout | DbFailure::Other => Next::Answer,
    }
}

/// OrderCreate's one call for a batch; public so that the bench can run it bare.
pub const CREATE_ORDERS: &str = "SELECT outcomes, line_available FROM create_orders(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

impl CreateBatches {
    /// Commits `orders` and answers each, whatever happens: a failure of the batch's call is
    /// retried or split so that each order gets the answer it would have got alone, and never
    /// reported as a business outcome.
    async fn settle(&self, orders: Vec<PendingOrder>) {
        let mut work = VecDeque::from([(orders, 1)]);
        while let Some((orders, runs)) = work.pop_front() {
            // A client that gave up (its request timed out, told to retry) is not applied.
            let mut orders: Vec<PendingOrder> = orders
                .into_iter()
                .filter(|o| !o.reply.is_closed())
                .collect();
            if orders.is_empty() {
                continue;
            }
            self.metrics.order_batch(orders.len());
            let failure = match self.commit(&orders).await {
                Ok(decided) => {
                    self.written.notify_one();
                    for (order, decided) in orders.into_iter().zip(decided) {
                        let _ = order.reply.send(Ok((order.order, decided)));
                    }
                    continue;
                }
                Err(e) => e,
            };
            let kind = DbFailure::of(&failure);
            let next = next_step(kind, runs, orders.len());
            tracing::warn!(orders = orders.len(), runs, error = %failure, ?kind, ?next, "an order batch failed");
            match next {
                Next::Retry => work.push_front((orders, runs + 1)),
                Next::Split => {
                    let second = orders.split_off(orders.len() / 2);
                    work.push_front((second, 1));
                    work.push_front((orders, 1));
                }
                Next::Answer => {
                    let failure = Arc::new(failure);
                    for order in orders {
                        let _ = order.reply.send(Err(Error::shared(failure.clone())));
                    }
                }
            }
        }
    }

    /// One call of `create_orders` for `orders`, in their order.
    async fn commit(&self, orders: &[PendingOrder]) -> Result<Vec<Decided>, sqlx::Error> {
        let c = Columns::of(orders);
        let (reserved, available): (Vec<bool>, Vec<Option<i64>>) = sqlx::query_as(CREATE_ORDERS)
            .bind(&c.ids)
            .bind(&c.user_ids)
            .bind(&c.line_ends)
            .bind(&c.skus)
            .bind(&c.counts)
            .bind(Status::created(true))
            .bind(Status::created(false))
            .bind(EVENTS_PER_NEW_ORDER)
            .bind(&self.topic)
            .bind(&c.keys)
            .bind(&c.reserved_payloads)
            .bind(&c.reserved_headers)
            .bind(&c.failed_payloads)
            .bind(&c.failed_headers)
            .fetch_one(&self.pool)
            .await?;
        if reserved.len() != orders.len() {
            return Err(sqlx::Error::Decode(
                format!(
                    "create_orders decided {} orders of {}",
                    reserved.len(),
                    orders.len()
                )
                .into(),
            ));
        }
        Ok(c.decided(reserved, available))
    }
}

/// A batch of orders as `create_orders` takes it: one array per column, the lines of all
/// orders one after another (`line_ends` marks where each order's end).
struct Columns {
    ids: Vec<i64>,
    user_ids: Vec<i64>,
    line_ends: Vec<i32>,
    skus: Vec<i64>,
    counts: Vec<i64>,
    keys: Vec<String>,
    reserved_payloads: Vec<Vec<u8>>,
    reserved_headers: Vec<serde_json::Value>,
    failed_payloads: Vec<Vec<u8>>,
    failed_headers: Vec<serde_json::Value>,
}

impl Columns {
    fn of(orders: &[PendingOrder]) -> Self {
        let n = orders.len();
        let events = n * EVENTS_PER_NEW_ORDER as usize;
        let mut c = Self {
            ids: Vec::with_capacity(n),
            user_ids: Vec::with_capacity(n),
            line_ends: Vec::with_capacity(n),
            skus: Vec::new(),
            counts: Vec::new(),
            keys: Vec::with_capacity(events),
            reserved_payloads: Vec::with_capacity(events),
            reserved_headers: Vec::with_capacity(events),
            failed_payloads: Vec::with_capacity(events),
            failed_headers: Vec::with_capacity(events),
        };
        for o in orders {
            c.ids.push(o.order_id);
            c.user_ids.push(o.order.user_id().get());
            for line in o.order.lines() {
                c.skus.push(line.sku);
                c.counts.push(line.count);
            }
            c.line_ends
                .push(i32::try_from(c.skus.len()).unwrap_or(i32::MAX));
            c.keys.extend_from_slice(&o.reserved_rows.keys);
            c.reserved_payloads
                .extend_from_slice(&o.reserved_rows.payloads);
            c.reserved_headers
                .extend_from_slice(&o.reserved_rows.headers);
            c.failed_payloads.extend_from_slice(&o.failed_rows.payloads);
            c.failed_headers.extend_from_slice(&o.failed_rows.headers);
        }
        c
    }

    /// Each order's outcome, with the units left of its skus when they were read back (not
    /// when the batch had been committed before: then nothing is).
    fn decided(&self, reserved: Vec<bool>, available: Vec<Option<i64>>) -> Vec<Decided> {
        let read_back = available.len() == self.skus.len();
        let mut first = 0;
        reserved
            .into_iter()
            .zip(&self.line_ends)
            .map(|(reserved, &end)| {
                let end = end as usize;
                let available = read_back.then(|| {
                    self.skus[first..end]
                        .iter()
                        .zip(&available[first..end])
                        .filter_map(|(&sku, units)| units.map(|units| (sku, units)))
                        .collect()
                });
                first = end;
                Decided {
                    reserved,
                    available,
                }
            })
            .collect()
    }
}

/// Order ids taken from the orders' sequence in blocks. Ids stay unique (the sequence hands
/// them out); an order may get a lower id than one created just before it on another replica,
/// and a block left unused at shutdown is a gap, as a rolled-back insert always was.
#[derive(Default)]
struct IdBlock {
    ids: std::sync::Mutex<VecDeque<i64>>,
}

impl IdBlock {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<i64>> {
        // A panic while holding it leaves a valid queue.
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn next(&self, pool: &PgPool) -> Result<i64, Error> {
        // Never held across an await: a plain mutex.
        if let Some(id) = self.lock().pop_front() {
            return Ok(id);
        }
        // The sequence named as a constant: looked up once when the statement is planned.
        // `pg_get_serial_sequence` per row cost PostgreSQL ~10 us an id, 20 times nextval's.
        let block: Vec<(i64,)> =
            sqlx::query_as("SELECT nextval('orders_id_seq') FROM generate_series(1, $1)")
                .bind(ORDER_ID_BLOCK)
                .fetch_all(pool)
                .await?;
        let mut ids = self.lock();
        ids.extend(block.into_iter().map(|(id,)| id));
        ids.pop_front()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("the sequence gave no ids")))
    }
}

#[derive(Debug)]
pub struct OrderView {
    pub status: Status,
    pub user_id: i64,
    pub lines: Vec<Line>,
}

/// An order's row as read for a change.
#[derive(sqlx::FromRow)]
struct Locked {
    user_id: i64,
    status: Status,
    event_seq: i64,
    skus: Vec<i64>,
    counts: Vec<i64>,
}

impl Locked {
    fn lines(&self) -> Vec<Line> {
        lines_of(&self.skus, &self.counts)
    }
}

fn lines_of(skus: &[i64], counts: &[i64]) -> Vec<Line> {
    skus.iter()
        .zip(counts)
        .map(|(&sku, &count)| Line { sku, count })
        .collect()
}

impl Storage {
    /// Starts the OrderCreate batcher's workers (see [`crate::batcher`]).
    pub fn new(pool: PgPool, outbox: Outbox, shape: Shape, metrics: Metrics) -> Self {
        let batches = Arc::new(CreateBatches {
            pool: pool.clone(),
            topic: outbox.topic.clone(),
            written: outbox.written.clone(),
            metrics,
        });
        let creates = Batcher::spawn(shape, QUEUE_CAPACITY, move |orders| {
            let batches = batches.clone();
            async move { batches.settle(orders).await }
        });
        Self {
            pool,
            outbox,
            ids: Arc::default(),
            creates,
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
        let stopped = || Error::Internal(anyhow::anyhow!("the order batcher has stopped"));
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
    pub async fn apply(
        &self,
        order_id: OrderId,
        action: Action,
        facts: Facts<'_>,
    ) -> Result<bool, Error> {
        let order_id = order_id.get();
        let mut tx = self.pool.begin().await?;
        let order = lock_order(&mut tx, order_id).await?;
        let (status, effect) = match order.status.apply(action) {
            Ok(Transition::Unchanged) => return Ok(false),
            Ok(Transition::To(status, effect)) => (status, effect),
            Err(_) => {
                return Err(Error::WrongStatus {
                    order_id,
                    status: order.status,
                    action,
                })
            }
        };
        let update = match effect {
            StockEffect::Nothing => None,
            StockEffect::Release => Some("UPDATE stocks s SET reserved = s.reserved - u.count
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(sku, count) WHERE s.sku = u.sku"),
            StockEffect::WriteOff => Some("UPDATE stocks s SET reserved = s.reserved - u.count, total_count = s.total_count - u.count
                 FROM unnest($1::bigint[], $2::bigint[]) AS u(sku, count) WHERE s.sku = u.sku"),
        };
        if let Some(update) = update {
            lock_stocks(&mut tx, &order.skus).await?;
            sqlx::query(update)
                .bind(&order.skus)
                .bind(&order.counts)
                .execute(&mut *tx)
                .await?;
        }
        let sequence = order.event_seq + 1;
        sqlx::query(
            "UPDATE orders SET status = $2, event_seq = $3, updated_at = now() WHERE id = $1",
        )
        .bind(order_id)
        .bind(status)
        .bind(sequence)
        .execute(&mut *tx)
        .await?;
        let lines = order.lines();
        let change = Change {
            order_id,
            user_id: order.user_id,
            status,
            previous: Some(order.status),
            sequence,
            lines: &lines,
            facts,
            reason: None,
        };
        self.outbox.write(&mut tx, &[change]).await?;
        self.commit(tx).await?;
        Ok(true)
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

    async fn commit(&self, tx: Transaction<'_, Postgres>) -> Result<(), Error> {
        tx.commit().await?;
        self.outbox.written.notify_one();
        Ok(())
    }
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

async fn lock_order(tx: &mut Transaction<'_, Postgres>, order_id: i64) -> Result<Locked, Error> {
    sqlx::query_as(
        "SELECT user_id, status, event_seq, skus, counts FROM orders WHERE id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::OrderNotFound(order_id))
}

async fn lock_stocks(tx: &mut Transaction<'_, Postgres>, skus: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT sku FROM stocks WHERE sku = ANY($1) ORDER BY sku FOR UPDATE")
        .bind(skus)
        .execute(&mut **tx)
        .await
        .map(drop)
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
