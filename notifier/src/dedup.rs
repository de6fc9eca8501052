//! Recognises events already handled: by their id, within a bounded window (oldest forgotten
//! first), and by their order's sequence. An event whose order already had a later event
//! handled here is a redelivery: the relay publishes the events of an order in sequence, and the
//! group commits an offset only after its message was handled, so a member that sees sequence N
//! of an order was either given the earlier ones first or starts after them, handled by another
//! member. Such a stale copy (a resend after a lost acknowledgement, behind a newer event) must
//! not be logged as if the order had gone back.

use std::collections::{HashMap, HashSet, VecDeque};

pub struct RecentIds {
    capacity: usize,
    order: VecDeque<String>,
    ids: HashSet<String>,
    /// The highest sequence handled per order, for the orders of the window.
    sequences: HashMap<i64, i64>,
    orders: VecDeque<i64>,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            ids: HashSet::new(),
            sequences: HashMap::new(),
            orders: VecDeque::new(),
        }
    }

    /// Remembers event `id`, number `sequence` of order `order_id`; false if it was handled
    /// already: its id is in the window, or its order had a later event handled.
    pub fn insert(&mut self, id: &str, order_id: i64, sequence: i64) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.sequences.get(&order_id).is_some_and(|&s| s > sequence) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        if self.sequences.insert(order_id, sequence).is_none() {
            if self.orders.len() == self.capacity {
                if let Some(oldest) = self.orders.pop_front() {
                    self.sequences.remove(&oldest);
                }
            }
            self.orders.push_back(order_id);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut ids = RecentIds::new(2);
        assert!(ids.insert("a", 1, 1));
        assert!(!ids.insert("a", 1, 1));
        assert!(ids.insert("b", 2, 1));
        assert!(ids.insert("c", 3, 1)); // forgets a, and order 1
        assert!(ids.insert("a", 1, 1));
        assert!(!ids.insert("c", 3, 1));
    }

    #[test]
    fn an_earlier_event_after_a_later_one_is_a_redelivery() {
        let mut ids = RecentIds::new(10);
        assert!(ids.insert("third", 7, 3));
        assert!(!ids.insert("first", 7, 1), "sequence 1 after 3");
        assert!(!ids.insert("second", 7, 2));
        assert!(ids.insert("fourth", 7, 4));
        assert!(ids.insert("other", 8, 1), "other orders are not affected");
    }
}
