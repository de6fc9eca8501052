//! Recognises events already handled, by their id, within a bounded window (oldest forgotten
//! first), and tells apart an unseen event that arrives after a later one of its order.
//!
//! Only an id already handled is a duplicate. An unseen event whose order already had a later
//! event handled here is still logged: it may be the only copy anyone will ever log (a producer
//! that lost an earlier message and resent it behind a later one), so it is reported as out of
//! order rather than dropped.

use std::collections::{HashMap, HashSet, VecDeque};

/// What an event is, given what was handled before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First sighting, in sequence.
    New,
    /// First sighting, but its order already had a later event handled (the highest given).
    OutOfOrder { after: i64 },
    /// Its id was handled already.
    Duplicate,
}

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

    /// Remembers event `id`, number `sequence` of order `order_id`, and says what it is.
    pub fn insert(&mut self, id: &str, order_id: i64, sequence: i64) -> Seen {
        if self.ids.contains(id) {
            return Seen::Duplicate;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.order.push_back(id.to_string());
        self.ids.insert(id.to_string());
        match self.sequences.get_mut(&order_id) {
            Some(highest) if *highest > sequence => Seen::OutOfOrder { after: *highest },
            Some(highest) => {
                *highest = sequence;
                Seen::New
            }
            None => {
                if self.orders.len() == self.capacity {
                    if let Some(oldest) = self.orders.pop_front() {
                        self.sequences.remove(&oldest);
                    }
                }
                self.sequences.insert(order_id, sequence);
                self.orders.push_back(order_id);
                Seen::New
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_window() {
        let mut ids = RecentIds::new(2);
        assert_eq!(ids.insert("a", 1, 1), Seen::New);
        assert_eq!(ids.insert("a", 1, 1), Seen::Duplicate);
        assert_eq!(ids.insert("b", 2, 1), Seen::New);
        assert_eq!(ids.insert("c", 3, 1), Seen::New); // forgets a, and order 1
        assert_eq!(ids.insert("a", 1, 1), Seen::New);
        assert_eq!(ids.insert("c", 3, 1), Seen::Duplicate);
    }

    #[test]
    fn an_unseen_earlier_event_after_a_later_one_is_out_of_order_not_a_duplicate() {
        let mut ids = RecentIds::new(10);
        assert_eq!(ids.insert("second", 7, 2), Seen::New);
        assert_eq!(ids.insert("first", 7, 1), Seen::OutOfOrder { after: 2 });
        assert_eq!(ids.insert("second", 7, 2), Seen::Duplicate);
        assert_eq!(ids.insert("first", 7, 1), Seen::Duplicate);
        assert_eq!(ids.insert("third", 7, 3), Seen::New);
        assert_eq!(
            ids.insert("other", 8, 1),
            Seen::New,
            "other orders unaffected"
        );
    }
}
