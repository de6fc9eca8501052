//! Order events as outbox rows, written in the transaction of the change they describe.

pub mod store;

use std::sync::Arc;
use std::time::SystemTime;

use events_proto::{headers, OrderEvent};
use tokio::sync::Notify;

use crate::domain::{Line, Status};
use crate::error::Error;

/// What every event written by this replica shares.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub topic: String,
    pub instance: String,
    /// Wakes this replica's relay once a transaction that wrote events has committed.
    pub written: Arc<Notify>,
    /// Largest event (payload, key and headers) that may be written: no larger one could be
    /// published, and it would hold back its order's later events.
    pub max_event_bytes: usize,
}

/// Further facts the caller records with an event, in its metadata (e.g. which API call).
pub type Facts<'a> = &'a [(&'a str, &'a str)];

/// One status change of an order.
pub struct Change<'a> {
    pub order_id: i64,
    pub user_id: i64,
    pub status: Status,
    pub previous: Option<Status>,
    /// Per-order number of this event: 1 for the first.
    pub sequence: i64,
    pub lines: &'a [Line],
    pub facts: Facts<'a>,
    pub reason: Option<String>,
}

/// Outbox rows ready to insert, as the arrays a statement binds: keys, payloads, headers.
#[derive(Debug, Default)]
pub struct Rows {
    pub keys: Vec<String>,
    pub payloads: Vec<Vec<u8>>,
    pub headers: Vec<serde_json::Value>,
}

impl Outbox {
    /// The event of `change`, which happened `at` (the time its transaction is sent).
    pub fn event(&self, change: &Change<'_>, at: SystemTime) -> OrderEvent {
        let mut metadata: std::collections::HashMap<String, String> = change
            .facts
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metadata.insert("instance".into(), self.instance.clone());
        if let Some(reason) = &change.reason {
            metadata.insert("reason".into(), reason.clone());
        }
        OrderEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            order_id: change.order_id,
            status: change.status.as_str().into(),
            occurred_at: Some(prost_types::Timestamp::from(at)),
            metadata,
            user_id: change.user_id,
            previous_status: change
                .previous
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            sequence: change.sequence,
            items: change
                .lines
                .iter()
                .map(|l| events_proto::Item {
                    sku: l.sku,
                    count: u32::try_from(l.count).unwrap_or(u32::MAX),
                })
                .collect(),
        }
    }

    /// The outbox rows of `changes`, in that order; refused as invalid if an event would be
    /// larger than the topic takes.
    pub fn rows(&self, changes: &[Change<'_>], at: SystemTime) -> Result<Rows, Error> {
        let mut rows = Rows::default();
        // The context of the request that made the change travels with its events.
        let trace = service_runtime::telemetry::trace_headers(&tracing::Span::current());
        for change in changes {
            let event = self.event(change, at);
            rows.keys.push(event.order_id.to_string());
            let mut headers = serde_json::json!({
                headers::EVENT_ID: event.event_id,
                headers::MESSAGE_TYPE: events_proto::MESSAGE_TYPE,
                headers::CONTENT_TYPE: events_proto::CONTENT_TYPE,
            });
            for (name, value) in &trace {
                headers[name] = serde_json::Value::String(value.clone());
            }
            let payload = event.encode_to_bytes();
            let bytes =
                payload.len() + event.order_id.to_string().len() + headers.to_string().len();
            if bytes > self.max_event_bytes {
                return Err(Error::invalid(format!(
                    "order too large: its {} event would be {bytes} bytes, the most is {}; fewer items would fit",
                    event.status, self.max_event_bytes
                )));
            }
            rows.headers.push(headers);
            rows.payloads.push(payload);
        }
        Ok(rows)
    }
}
