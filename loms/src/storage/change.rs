//! OrderPay's and OrderCancel's batches: one read of the batch's orders, then one call of
//! `change_orders` (see its migration), one commit, for many requests. Each request is decided
//! in arrival order against its order as the requests before it in the batch left it; an order
//! that another batch or replica changed after the read is decided again from a fresh read.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use sqlx::PgPool;
use tokio::sync::oneshot;

use super::settle::{Batches, Committed, Pending};
use crate::domain::{Action, Line, Status, StockEffect, Transition};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::outbox::{Change, Facts, Outbox, Rows};

/// A pay or cancel request waiting for its batch.
pub(super) struct PendingChange {
    pub(super) order_id: i64,
    pub(super) action: Action,
    pub(super) facts: Facts<'static>,
    /// The request's span: its trace context goes with the event.
    pub(super) span: tracing::Span,
    /// Whether the order changed (`false`: it was already as asked).
    pub(super) reply: oneshot::Sender<Result<bool, Error>>,
}

pub(super) struct ChangeBatches {
    pub(super) pool: PgPool,
    pub(super) outbox: Outbox,
    pub(super) metrics: Metrics,
}

/// The one call for a batch's changes; it returns the orders found stale.
pub const CHANGE_ORDERS: &str = "SELECT change_orders($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// An order's row as read before its batch's call.
#[derive(sqlx::FromRow)]
struct OrderRow {
    id: i64,
    user_id: i64,
    status: Status,
    event_seq: i64,
    skus: Vec<i64>,
    counts: Vec<i64>,
}

/// A batch's changes as `change_orders` takes them: one array per column, one event per order.
#[derive(Default)]
struct ChangeColumns {
    ids: Vec<i64>,
    seen_seqs: Vec<i64>,
    statuses: Vec<&'static str>,
    unreserve: Vec<bool>,
    write_off: Vec<bool>,
    events: Rows,
}

/// One order's change, its event built, for `change_orders`.
struct Write {
    order_id: i64,
    seen_seq: i64,
    status: Status,
    effect: StockEffect,
    rows: Rows,
}

impl Pending for PendingChange {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl Batches for ChangeBatches {
    type Item = PendingChange;

    async fn commit(&self, changes: Vec<PendingChange>) -> Committed<PendingChange> {
        self.metrics.change_batch(changes.len());
        let orders = match self.read(&changes).await {
            Ok(orders) => orders,
            Err(e) => return Err((changes, e)),
        };
        let (outcomes, writes) = self.decide(&changes, orders);
        let written = writes.len();
        let stale = if written == 0 {
            HashSet::new()
        } else {
            match self.call(writes).await {
                Ok(stale) => stale,
                Err(e) => return Err((changes, e)),
            }
        };
        if written > stale.len() {
            self.outbox.written.notify_one();
        }
        let mut again = Vec::new();
        for (change, outcome) in changes.into_iter().zip(outcomes) {
            if stale.contains(&change.order_id) {
                again.push(change);
            } else {
                let _ = change.reply.send(outcome);
            }
        }
        Ok(again)
    }
}

impl ChangeBatches {
    /// The batch's orders as they are now, by id; no lock is taken (the call checks them).
    async fn read(&self, changes: &[PendingChange]) -> Result<HashMap<i64, OrderRow>, sqlx::Error> {
        let ids: Vec<i64> = changes.iter().map(|c| c.order_id).collect();
        let rows: Vec<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, event_seq, skus, counts FROM orders WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| (row.id, row)).collect())
    }

    /// Each request's answer, in arrival order, and the changes to write. A request whose
    /// order changes is answered only if its order is not found stale.
    fn decide(
        &self,
        changes: &[PendingChange],
        mut orders: HashMap<i64, OrderRow>,
    ) -> (Vec<Result<bool, Error>>, Vec<Write>) {
        let at = SystemTime::now();
        let mut writes = Vec::new();
        let outcomes = changes
            .iter()
            .map(|c| {
                let order = orders
                    .get_mut(&c.order_id)
                    .ok_or(Error::OrderNotFound(c.order_id))?;
                let write = match order.status.apply(c.action) {
                    Ok(Transition::Unchanged) => return Ok(false),
                    Ok(Transition::To(status, effect)) => c
                        .span
                        .in_scope(|| self.write(order, status, effect, c, at))?,
                    Err(_) => {
                        return Err(Error::WrongStatus {
                            order_id: c.order_id,
                            status: order.status,
                            action: c.action,
                        })
                    }
                };
                // Payed and cancelled are final: an order is written at most once a batch.
                order.status = write.status;
                order.event_seq += 1;
                writes.push(write);
                Ok(true)
            })
            .collect();
        (outcomes, writes)
    }

    /// `order`'s change to `status`, with its event (in the current span's trace).
    fn write(
        &self,
        order: &OrderRow,
        status: Status,
        effect: StockEffect,
        request: &PendingChange,
        at: SystemTime,
    ) -> Result<Write, Error> {
        let lines: Vec<Line> = super::lines_of(&order.skus, &order.counts);
        let change = Change {
            order_id: order.id,
            user_id: order.user_id,
            status,
            previous: Some(order.status),
            sequence: order.event_seq + 1,
            lines: &lines,
            facts: request.facts,
            reason: None,
        };
        Ok(Write {
            order_id: order.id,
            seen_seq: order.event_seq,
            status,
            effect,
            rows: self.outbox.rows(&[change], at)?,
        })
    }

    /// One call of `change_orders` for `writes`; the orders it found changed since the read.
    async fn call(&self, writes: Vec<Write>) -> Result<HashSet<i64>, sqlx::Error> {
        let mut c = ChangeColumns::default();
        for w in writes {
            c.ids.push(w.order_id);
            c.seen_seqs.push(w.seen_seq);
            c.statuses.push(w.status.as_str());
            c.unreserve.push(!matches!(w.effect, StockEffect::Nothing));
            c.write_off.push(matches!(w.effect, StockEffect::WriteOff));
            c.events.keys.extend(w.rows.keys);
            c.events.payloads.extend(w.rows.payloads);
            c.events.headers.extend(w.rows.headers);
        }
        let stale: Vec<i64> = sqlx::query_scalar(CHANGE_ORDERS)
            .bind(c.ids)
            .bind(c.seen_seqs)
            .bind(c.statuses)
            .bind(c.unreserve)
            .bind(c.write_off)
            .bind(&self.outbox.topic)
            .bind(c.events.keys)
            .bind(c.events.payloads)
            .bind(c.events.headers)
            .fetch_one(&self.pool)
            .await?;
        if !stale.is_empty() {
            tracing::info!(orders = ?stale, "orders changed by another batch meanwhile: decided again");
        }
        Ok(stale.into_iter().collect())
    }
}
