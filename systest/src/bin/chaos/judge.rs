//! The judgement of a scenario: what committed (from the database) against what reached the
//! topic and what the notifiers logged.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::SystemTime;

use loms::domain::Status;
use serde_json::Value;

#[derive(Debug, Default)]
pub struct Verdict {
    pub events_expected: usize,
    pub lost: usize,
    pub reordered: usize,
    pub phantom: usize,
    pub duplicated: usize,
    /// Log lines of unseen events the notifier marked as out of order (logged behind a later
    /// event of their order): sightings, not reorderings.
    pub out_of_order: usize,
}

/// (order id, sequence, status, event id, marked out of order by the notifier) of an event.
pub type Seen = (i64, i64, String, String, bool);

/// Per order, the statuses of its events in sequence.
pub type Committed = HashMap<i64, &'static [Status]>;

/// The topic's events, partition after partition, each in offset order.
pub async fn read_topic(topic: &str) -> Vec<Seen> {
    let mut messages = testkit::kafka::consume_all(topic).await;
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
        .iter()
        .filter_map(|m| m.event())
        .map(|e| (e.order_id, e.sequence, e.status, e.event_id, false))
        .collect()
}

/// The JSON log lines of each `notifier-*` file of `dir`.
fn notifier_logs(dir: &Path) -> Vec<Vec<Value>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the run's folder") {
        let path = entry.expect("a folder entry").path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("notifier-") {
            let lines = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                .collect();
            files.push(lines);
        }
    }
    files
}

fn notifier_lines(dir: &Path) -> Vec<Value> {
    notifier_logs(dir).into_iter().flatten().collect()
}

/// Events the notifiers logged, in log order per `notifier-*` file of `dir`.
pub fn read_logs(dir: &Path) -> Vec<Vec<Seen>> {
    let mut files = Vec::new();
    for lines in notifier_logs(dir) {
        let seen = lines
            .into_iter()
            .filter(|v| {
                v["message"] == "order event"
                    || v["message"] == "duplicate order event, already logged"
            })
            // Redeliveries are logged without their sequence (-1 here): not judged for order.
            .map(|v| {
                (
                    v["order_id"].as_i64().unwrap_or(0),
                    v["sequence"].as_i64().unwrap_or(-1),
                    v["status"].as_str().unwrap_or_default().to_string(),
                    v["event_id"].as_str().unwrap_or_default().to_string(),
                    v["out_of_order"] == true,
                )
            })
            .collect();
        files.push(seen);
    }
    files
}

/// The longest wait, in milliseconds, from an event's `occurred_at` to a notifier's log line of
/// it, over the events that occurred between `begin` and `end`.
pub fn longest_wait_ms(dir: &Path, begin: SystemTime, end: SystemTime) -> f64 {
    let time = |v: &Value| {
        let text = v.as_str()?;
        let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(SystemTime::from(at))
    };
    notifier_lines(dir)
        .iter()
        .filter(|v| v["message"] == "order event")
        .filter_map(|v| Some((time(&v["occurred_at"])?, time(&v["timestamp"])?)))
        .filter(|(occurred, _)| *occurred >= begin && *occurred <= end)
        .filter_map(|(occurred, logged)| logged.duration_since(occurred).ok())
        .map(|wait| wait.as_secs_f64() * 1e3)
        .fold(0.0, f64::max)
}

/// Judges sightings (the topic, or each notifier's log) against what committed.
pub fn judge_streams(
    streams: &[Vec<Seen>],
    committed: &Committed,
    verdict: &mut Verdict,
    count_duplicates: bool,
) {
    let mut first_seen: HashMap<String, (i64, i64)> = HashMap::new();
    let mut sightings = 0;
    for stream in streams {
        let mut last_sequence: HashMap<i64, i64> = HashMap::new();
        for (order, sequence, status, event_id, out_of_order) in stream {
            // A line the notifier itself marks as a redelivery (logged without a sequence)
            // claims no change of the order: it is judged neither for order nor as a sighting.
            if *sequence < 0 {
                continue;
            }
            sightings += 1;
            let (order, sequence) = *first_seen
                .entry(event_id.clone())
                .or_insert((*order, *sequence));
            let committed_status = committed
                .get(&order)
                .and_then(|history| history.get(usize::try_from(sequence - 1).ok()?));
            if committed_status.is_none_or(|s| s.as_str() != status) {
                verdict.phantom += 1;
            }
            // Order within one stream: a first sighting of a lower sequence after a higher one.
            let last = last_sequence.entry(order).or_insert(0);
            if *out_of_order {
                verdict.out_of_order += 1;
            } else if sequence < *last && !redelivery(stream, order, sequence, event_id) {
                verdict.reordered += 1;
            }
            *last = (*last).max(sequence);
        }
    }
    let distinct: HashSet<(i64, i64)> = first_seen.values().copied().collect();
    for (order, history) in committed {
        for sequence in 1..=history.len() as i64 {
            if !distinct.contains(&(*order, sequence)) {
                verdict.lost += 1;
            }
        }
    }
    if count_duplicates {
        verdict.duplicated += sightings - first_seen.len();
    }
}

/// Whether this very event was already sighted earlier in the stream (a redelivery, not a
/// reordering).
fn redelivery(stream: &[Seen], order: i64, sequence: i64, event_id: &str) -> bool {
    let first = stream.iter().position(|s| s.3 == event_id);
    let later_higher = stream.iter().position(|s| s.0 == order && s.1 > sequence);
    matches!((first, later_higher), (Some(f), Some(h)) if f < h)
}

/// What committed, from the database: per order, the statuses its events must carry.
pub async fn committed(db: &str) -> Committed {
    let pool = sqlx::PgPool::connect(db).await.expect("connect");
    let rows: Vec<(i64, Status, i64)> = sqlx::query_as("SELECT id, status, event_seq FROM orders")
        .fetch_all(&pool)
        .await
        .expect("read orders");
    rows.into_iter()
        .map(|(id, status, events)| {
            let history = status.history();
            assert_eq!(
                history.len() as i64,
                events,
                "order {id}: status {status} with {events} events"
            );
            (id, history)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(order: i64, sequence: i64, status: Status, id: &str) -> Seen {
        (order, sequence, status.as_str().into(), id.into(), false)
    }

    #[test]
    fn lost_reordered_phantom_and_duplicates_are_told_apart() {
        let committed: Committed = [(1, Status::Payed.history()), (2, Status::Failed.history())]
            .into_iter()
            .collect();
        let stream = vec![
            seen(1, 1, Status::New, "a"),
            seen(1, 3, Status::Payed, "c"),
            seen(1, 2, Status::AwaitingPayment, "b"), // after 3: reordered
            seen(1, 3, Status::Payed, "c"),           // again: a duplicate
            seen(2, 1, Status::New, "d"),             // order 2 misses its `failed`: lost
            seen(3, 1, Status::New, "e"),             // never committed: phantom
        ];
        let mut verdict = Verdict::default();
        judge_streams(&[stream], &committed, &mut verdict, true);
        assert_eq!(
            (
                verdict.lost,
                verdict.reordered,
                verdict.phantom,
                verdict.duplicated
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn a_redelivery_the_notifier_marked_is_not_a_reordering() {
        let committed: Committed = [(1, Status::Payed.history())].into_iter().collect();
        // One member logged the first two events; another, given the partition later, the
        // third, then the resent first two, which it marks as redeliveries.
        let first = vec![
            seen(1, 1, Status::New, "a"),
            seen(1, 2, Status::AwaitingPayment, "b"),
        ];
        let second = vec![
            seen(1, 3, Status::Payed, "c"),
            (1, -1, Status::New.as_str().into(), "a".into(), false),
            (
                1,
                -1,
                Status::AwaitingPayment.as_str().into(),
                "b".into(),
                false,
            ),
        ];
        for streams in [[first.clone(), second.clone()], [second, first]] {
            let mut verdict = Verdict::default();
            judge_streams(&streams, &committed, &mut verdict, false);
            let found = (verdict.lost, verdict.reordered, verdict.phantom);
            assert_eq!(found, (0, 0, 0));
        }
    }

    #[test]
    fn a_late_event_the_notifier_marked_out_of_order_is_seen_not_reordered() {
        let committed: Committed = [(1, Status::AwaitingPayment.history())]
            .into_iter()
            .collect();
        let log = vec![
            seen(1, 2, Status::AwaitingPayment, "b"),
            (1, 1, Status::New.as_str().into(), "a".into(), true),
        ];
        let mut verdict = Verdict::default();
        judge_streams(&[log], &committed, &mut verdict, false);
        let found = (verdict.lost, verdict.reordered, verdict.out_of_order);
        assert_eq!(found, (0, 0, 1));
    }
}
