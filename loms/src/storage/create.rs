//! OrderCreate's batches: one call of `create_orders` (see its migration), one commit, for many
//! orders.

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{oneshot, Notify};

use super::settle::{Batches, Committed, Pending};
use super::EVENTS_PER_NEW_ORDER;
use crate::domain::{NewOrder, Status};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::outbox::Rows;

/// An order waiting for its batch, its events built for either outcome.
pub(super) struct PendingOrder {
    pub(super) order_id: i64,
    pub(super) order: NewOrder,
    pub(super) reserved_rows: Rows,
    pub(super) failed_rows: Rows,
    pub(super) reply: oneshot::Sender<Result<(NewOrder, Decided), Error>>,
}

/// How its batch decided an order.
pub(super) struct Decided {
    pub(super) reserved: bool,
    /// (sku, units available when the order was decided) for each line whose sku has stock;
    /// unknown when the batch had been committed by an earlier call.
    pub(super) available: Option<Vec<(i64, i64)>>,
}

/// OrderCreate's batches: one call of `create_orders`, one commit, for many orders.
pub(super) struct CreateBatches {
    pub(super) pool: PgPool,
    pub(super) topic: String,
    pub(super) written: Arc<Notify>,
    pub(super) metrics: Metrics,
}

/// OrderCreate's one call for a batch; public so that the bench can run it bare.
pub const CREATE_ORDERS: &str = "SELECT outcomes, line_available FROM create_orders(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

impl Pending for PendingOrder {
    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn fail(self, error: Error) {
        let _ = self.reply.send(Err(error));
    }
}

impl Batches for CreateBatches {
    type Item = PendingOrder;

    async fn commit(&self, orders: Vec<PendingOrder>) -> Committed<PendingOrder> {
        self.metrics.order_batch(orders.len());
        match self.call(&orders).await {
            Ok(decided) => {
                self.written.notify_one();
                for (order, decided) in orders.into_iter().zip(decided) {
                    let _ = order.reply.send(Ok((order.order, decided)));
                }
                Ok(Vec::new())
            }
            Err(e) => Err((orders, e)),
        }
    }
}

impl CreateBatches {
    /// One call of `create_orders` for `orders`, in their order.
    async fn call(&self, orders: &[PendingOrder]) -> Result<Vec<Decided>, sqlx::Error> {
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
