//! Orders and stock in PostgreSQL. Each operation on an order is one transaction that locks the
//! order row first, then the stock rows in sku order (so concurrent orders cannot deadlock), and
//! writes its events to the outbox before it commits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use sqlx::{PgPool, Postgres, Transaction};

use crate::domain::{Action, Line, NewOrder, Status, StockEffect, Transition};
use crate::error::Error;
use crate::outbox::{Change, Facts, Outbox};

const NOT_ENOUGH_STOCK: &str = "not enough stock";
/// Order ids taken from the sequence at once: one round trip serves this many orders.
const ORDER_ID_BLOCK: i64 = 100;

#[derive(Clone)]
pub struct Storage {
    pool: PgPool,
    outbox: Outbox,
    ids: Arc<IdBlock>,
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

fn columns(lines: &[Line]) -> (Vec<i64>, Vec<i64>) {
    lines.iter().map(|l| (l.sku, l.count)).unzip()
}

fn lines_of(skus: &[i64], counts: &[i64]) -> Vec<Line> {
    skus.iter()
        .zip(counts)
        .map(|(&sku, &count)| Line { sku, count })
        .collect()
}

/// OrderCreate's one statement (see [`Storage::create_order`]); public so that the bench can
/// measure it bare, beside the service.
pub const CREATE_ORDER: &str = "WITH req AS (
         SELECT * FROM unnest($2::bigint[], $3::bigint[]) AS r(sku, count)
     ), locked AS (
         SELECT sku, total_count - reserved AS available FROM stocks
         WHERE sku = ANY($2) ORDER BY sku FOR UPDATE
     ), verdict AS (
         SELECT NOT EXISTS (
             SELECT 1 FROM req LEFT JOIN locked l USING (sku)
             WHERE l.available IS NULL OR l.available < req.count
         ) AS ok
     ), reserve AS (
         UPDATE stocks s SET reserved = s.reserved + req.count
         FROM req, verdict WHERE verdict.ok AND s.sku = req.sku
     ), new_order AS (
         INSERT INTO orders (id, user_id, status, event_seq, skus, counts)
         SELECT $7, $1, CASE WHEN ok THEN $4 ELSE $5 END, $6, $2, $3 FROM verdict
         RETURNING id
     ), events AS (
         INSERT INTO outbox (topic, key, payload, headers)
         SELECT $8, e.k, e.p, e.h FROM new_order, verdict,
             unnest($9::text[],
                    CASE WHEN verdict.ok THEN $10::bytea[] ELSE $12::bytea[] END,
                    CASE WHEN verdict.ok THEN $11::jsonb[] ELSE $13::jsonb[] END)
                 WITH ORDINALITY AS e(k, p, h, n)
         ORDER BY e.n
     )
     SELECT verdict.ok,
            COALESCE((SELECT array_agg(sku ORDER BY sku) FROM locked), '{}'),
            COALESCE((SELECT array_agg(available ORDER BY sku) FROM locked), '{}')
     FROM verdict";

impl Storage {
    pub fn new(pool: PgPool, outbox: Outbox) -> Self {
        Self {
            pool,
            outbox,
            ids: Arc::default(),
        }
    }

    /// One round trip, one statement committing on its own: it locks the stock rows (in sku
    /// order), decides, reserves all or nothing, stores the order with its outcome and items,
    /// and writes the outcome's pair of events, which are built here beforehand for both
    /// outcomes. The order id comes from a block taken from the sequence ahead of time. No other
    /// transaction can see the order before its events are written. A `failed` order is stored
    /// and its events written, then reported as `NotEnoughStock`.
    pub async fn create_order(&self, order: &NewOrder, facts: Facts<'_>) -> Result<i64, Error> {
        let order_id = self.ids.next(&self.pool).await?;
        let (skus, counts) = columns(&order.lines);
        let (reserved_status, failed_status) = (Status::created(true), Status::created(false));
        // Both outcomes have the same number of events: `new`, then the outcome.
        let event_seq = reserved_status.history().len() as i64;
        let change = |status, previous, sequence, reason| Change {
            order_id,
            user_id: order.user_id,
            status,
            previous,
            sequence,
            lines: &order.lines,
            facts,
            reason,
        };
        let at = SystemTime::now();
        let outcome = |status, reason| {
            self.outbox.rows(
                &[
                    change(Status::New, None, 1, None),
                    change(status, Some(Status::New), event_seq, reason),
                ],
                at,
            )
        };
        let reserved_rows = outcome(reserved_status, None)?;
        // The event is built before the statement decides, so it names what could not be
        // reserved as a whole; the reply names the sku short and the counts, read back.
        let failed_rows = outcome(failed_status, Some(unreservable(&order.lines)))?;
        let (reserved, locked_skus, available): (bool, Vec<i64>, Vec<i64>) =
            sqlx::query_as(CREATE_ORDER)
                .bind(order.user_id)
                .bind(&skus)
                .bind(&counts)
                .bind(reserved_status)
                .bind(failed_status)
                .bind(event_seq)
                .bind(order_id)
                .bind(&self.outbox.topic)
                .bind(&reserved_rows.keys)
                .bind(&reserved_rows.payloads)
                .bind(&reserved_rows.headers)
                .bind(&failed_rows.payloads)
                .bind(&failed_rows.headers)
                .fetch_one(&self.pool)
                .await?;
        self.outbox.written.notify_one();
        if reserved {
            return Ok(order_id);
        }
        let available: Vec<(i64, i64)> = locked_skus.into_iter().zip(available).collect();
        let shortage = shortage(&order.lines, &available).unwrap_or_else(|| {
            // The database is the judge; this only explains its verdict.
            tracing::warn!(
                order_id,
                "order failed although the stock read back covers it"
            );
            NOT_ENOUGH_STOCK.to_string()
        });
        Err(Error::NotEnoughStock { order_id, shortage })
    }

    /// The order with its lines: one row, by its primary key.
    pub async fn order(&self, order_id: i64) -> Result<OrderView, Error> {
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
        order_id: i64,
        action: Action,
        facts: Facts<'_>,
    ) -> Result<bool, Error> {
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
    pub async fn available(&self, sku: i64) -> Result<u32, Error> {
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
    let mut named: Vec<String> = lines
        .iter()
        .take(REASON_LINES)
        .map(|l| format!("sku {} x {}", l.sku, l.count))
        .collect();
    if lines.len() > REASON_LINES {
        named.push(format!("and {} more", lines.len() - REASON_LINES));
    }
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
