//! Judging what reached the topic.

use std::collections::{BTreeMap, HashSet};

use events_proto::OrderEvent;

use crate::kafka::Consumed;

pub fn decode(m: &Consumed) -> OrderEvent {
    m.event().expect("every message decodes as an OrderEvent")
}

/// Per order: its distinct events in topic order, after checking that each order kept to one
/// partition, that its key is its id, that the headers name the event, and that its sequence
/// numbers run 1, 2, 3... without a gap or a reordering. Also returns how many messages were
/// duplicates of an event already seen (allowed: delivery is at least once).
pub fn by_order(messages: &[Consumed]) -> (BTreeMap<i64, Vec<OrderEvent>>, usize) {
    let mut orders: BTreeMap<i64, Vec<(i32, OrderEvent)>> = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for m in messages {
        let event = decode(m);
        assert_eq!(
            m.key.as_deref(),
            Some(event.order_id.to_string().as_str()),
            "key is the order id"
        );
        assert_eq!(m.headers.get("event-id"), Some(&event.event_id));
        assert_eq!(
            m.headers.get("message-type").map(String::as_str),
            Some(events_proto::MESSAGE_TYPE)
        );
        assert_eq!(
            m.headers.get("content-type").map(String::as_str),
            Some(events_proto::CONTENT_TYPE)
        );
        if !seen.insert(event.event_id.clone()) {
            duplicates += 1;
            continue;
        }
        orders
            .entry(event.order_id)
            .or_default()
            .push((m.partition, event));
    }
    let orders = orders
        .into_iter()
        .map(|(id, events)| {
            assert!(
                events.iter().all(|(p, _)| *p == events[0].0),
                "order {id} spans partitions"
            );
            let sequences: Vec<i64> = events.iter().map(|(_, e)| e.sequence).collect();
            assert_eq!(
                sequences,
                (1..=events.len() as i64).collect::<Vec<_>>(),
                "order {id}: lost or out of order"
            );
            (id, events.into_iter().map(|(_, e)| e).collect())
        })
        .collect();
    (orders, duplicates)
}

/// Checks that every order committed in the database has exactly its events on the topic.
pub fn assert_all_published(
    committed: &BTreeMap<i64, usize>,
    orders: &BTreeMap<i64, Vec<OrderEvent>>,
) {
    for (id, n) in committed {
        assert_eq!(
            orders.get(id).map_or(0, Vec::len),
            *n,
            "events of order {id}"
        );
    }
}
