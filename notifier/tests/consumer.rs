//! The notifier as processes in a consumer group, on the real broker.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use prost::Message as _;
use rdkafka::Offset;
use serde_json::Value;
use testkit::eventually;
use testkit::kafka;
use testkit::process::{NotifierOptions, NotifierProcess};

/// How long the group may take to deliver what a test waits for.
const PATIENCE: Duration = Duration::from_secs(90);

fn start(topic: &str, group: &str) -> NotifierProcess {
    NotifierOptions::new(topic, group).start()
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    eventually(what, PATIENCE, || std::future::ready(check())).await;
}

/// Produces `n` events for orders `first..first + n`; returns their ids.
async fn produce_events(topic: &str, first: i64, n: i64) -> Vec<String> {
    kafka::produce_events(topic, first..first + n).await
}

fn logged(notifiers: &[&NotifierProcess]) -> Vec<String> {
    notifiers
        .iter()
        .flat_map(|n| n.events())
        .map(|(id, _, _)| id)
        .collect()
}

fn all_logged(notifiers: &[&NotifierProcess], ids: &[String]) -> bool {
    let seen: HashSet<String> = logged(notifiers).into_iter().collect();
    ids.iter().all(|id| seen.contains(id))
}

/// Waits until the group settled with all three members: two hold a partition each, one none.
async fn settled(group: &[NotifierProcess; 3]) {
    wait_until("the group settles", || {
        let assignments: Vec<Option<String>> =
            group.iter().map(NotifierProcess::assignment).collect();
        assignments.iter().all(Option::is_some)
            && assignments
                .iter()
                .filter(|a| a.as_deref() == Some("none"))
                .count()
                == 1
    })
    .await;
}

#[tokio::test]
async fn three_members_two_receive_each_event_logged_once_and_sigterm_hands_over() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = format!("notifier-test-{}", uuid::Uuid::now_v7().simple());
    let mut members = [
        start(&topic, &group),
        start(&topic, &group),
        start(&topic, &group),
    ];
    settled(&members).await;

    let ids = produce_events(&topic, 1, 200).await;
    wait_until("every event is logged", || {
        all_logged(&[&members[0], &members[1], &members[2]], &ids)
    })
    .await;
    let all = logged(&[&members[0], &members[1], &members[2]]);
    assert_eq!(all.len(), ids.len(), "every event logged exactly once");
    let receiving: Vec<usize> = (0..3)
        .filter(|&i| !members[i].events().is_empty())
        .collect();
    assert_eq!(receiving.len(), 2, "two of three members receive");

    // SIGTERM to an active member: it exits 0, the idle one takes its partition, nothing is lost.
    let active = receiving[0];
    assert_eq!(members[active].process.terminate().await.code(), Some(0));
    let log = members[active].process.log_text();
    assert!(
        log.contains("offsets committed") && log.contains("leaving the group"),
        "{log}"
    );
    let idle = (0..3).find(|i| !receiving.contains(i)).unwrap();
    wait_until("the idle member takes a partition", || {
        members[idle].assignment().is_some_and(|a| a != "none")
    })
    .await;
    let more = produce_events(&topic, 1_000, 100).await;
    let survivors: Vec<&NotifierProcess> = (0..3)
        .filter(|&i| i != active)
        .map(|i| &members[i])
        .collect();
    wait_until("the later events are logged", || {
        all_logged(&survivors, &more)
    })
    .await;
    let all = logged(&[&members[0], &members[1], &members[2]]);
    assert_eq!(
        all.len(),
        ids.len() + more.len(),
        "nothing logged twice across the hand-over"
    );
}

#[tokio::test]
async fn sigkill_mid_stream_skips_nothing() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = format!("notifier-test-{}", uuid::Uuid::now_v7().simple());
    let ids = produce_events(&topic, 1, 3_000).await;
    let mut first = start(&topic, &group);
    wait_until("some events are logged", || first.events().len() >= 300).await;
    first.process.kill();
    let before = first.events().len();
    let second = start(&topic, &group);
    wait_until("every event is logged", || {
        all_logged(&[&first, &second], &ids)
    })
    .await;
    let total = logged(&[&first, &second]).len();
    println!(
        "killed after {before} events; {} logged again after the restart",
        total - ids.len()
    );
    assert!(total >= ids.len());
}

#[tokio::test]
async fn poison_messages_are_logged_dead_lettered_and_passed() {
    let topic = kafka::fresh_topic("loms.order-events.test", 1).await;
    let dlq = format!("{topic}.dlq");
    kafka::create_topic(&dlq, 1).await;
    let group = format!("notifier-test-{}", uuid::Uuid::now_v7().simple());
    let producer = kafka::producer();
    let mut good = Vec::new();
    let poison: [&[u8]; 3] = [
        b"\xff\xfe garbage",
        b"",
        &events_proto::Item { sku: 1, count: 2 }.encode_to_vec(),
    ];
    for (i, bad) in poison.iter().enumerate() {
        let e = kafka::new_order_event(i as i64 + 1);
        kafka::produce(&producer, &topic, "1", &e.encode_to_bytes()).await;
        good.push(e.event_id);
        kafka::produce(&producer, &topic, &format!("poison-{i}"), bad).await;
    }
    let mut notifier = start(&topic, &group);
    let errors = |n: &NotifierProcess| -> Vec<Value> {
        n.process
            .json_lines()
            .into_iter()
            .filter(|l| l["level"] == "ERROR")
            .collect()
    };
    // The last poison message comes after the last good event: both are awaited.
    wait_until("the good events and the poison messages are logged", || {
        all_logged(&[&notifier], &good) && errors(&notifier).len() >= 3
    })
    .await;
    let errors = errors(&notifier);
    assert_eq!(errors.len(), 3, "{errors:?}");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["key"], format!("poison-{i}"));
        assert_eq!(e["offset"], 2 * i as i64 + 1);
        assert!(e["partition"].is_number() && e["hex_prefix"].is_string());
    }
    let dead = kafka::consume_until(&dlq, PATIENCE, |m| m.len() >= 3).await;
    let payloads: Vec<&[u8]> = dead.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads, poison.to_vec());
    assert_eq!(dead[0].headers["source-topic"], topic);
    assert!(notifier.process.alive(), "the consumer goes on");
    // And after the poison, new events are still handled.
    let later = produce_events(&topic, 50, 5).await;
    wait_until("later events are logged", || {
        all_logged(&[&notifier], &later)
    })
    .await;
}

#[tokio::test]
async fn committed_offsets_after_a_clean_stop_match_the_log() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = format!("notifier-test-{}", uuid::Uuid::now_v7().simple());
    let ids = produce_events(&topic, 1, 500).await;
    let mut notifier = start(&topic, &group);
    wait_until("every event is logged", || all_logged(&[&notifier], &ids)).await;
    assert_eq!(notifier.process.terminate().await.code(), Some(0));

    let mut next_per_partition: BTreeMap<i32, i64> = BTreeMap::new();
    for (_, partition, offset) in notifier.events() {
        let next = next_per_partition.entry(partition as i32).or_default();
        *next = (*next).max(offset + 1);
    }
    let committed = kafka::committed_offsets(&topic, &group, 2);
    for (partition, next) in next_per_partition {
        assert_eq!(
            committed[&partition],
            Offset::Offset(next),
            "partition {partition}"
        );
    }
}

/// Nobody reads its logs any more (the reader of its stdout and stderr pipe is gone): the
/// notifier goes on consuming, and SIGTERM still stops it cleanly.
#[tokio::test]
async fn a_dead_log_reader_neither_hangs_nor_crashes_the_notifier() {
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let group = format!("notifier-test-{}", testkit::unique());
    let mut notifier = NotifierOptions::new(&topic, &group).through_pipe().start();
    notifier.joined().await;
    notifier.process.kill_log_reader();
    // Each event is a log line that cannot be written.
    produce_events(&topic, 1, 50).await;
    let committed = || {
        kafka::committed_offsets(&topic, &group, 2)
            .values()
            .map(|o| o.to_raw().unwrap_or(0).max(0))
            .sum::<i64>()
    };
    // It handles (and commits) every event although none of its lines reach anyone.
    wait_until("every event is handled and committed", || committed() == 50).await;
    assert_eq!(notifier.process.terminate().await.code(), Some(0));
}

/// An event from a newer writer, with a field today's schema does not know, is read by today's
/// notifier without error and logged.
#[tokio::test]
async fn an_event_with_an_unknown_field_is_logged() {
    use prost_reflect::{DynamicMessage, Value};
    let released = &build_support::schema::RELEASED[1];
    let root = testkit::stack::root().join(released.root);
    let today = std::fs::read_to_string(root.join(released.file)).unwrap();
    // A test-only extension: a field added after the last one.
    let extended = today.replacen(
        "repeated Item items = 9;",
        "repeated Item items = 9;\n  string channel = 100;",
        1,
    );
    assert_ne!(extended, today);
    let imports = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(released.root);
    let pool = build_support::schema::compile_text(released.file, &extended, &imports).unwrap();
    let mut event = DynamicMessage::new(
        pool.get_message_by_name(events_proto::MESSAGE_TYPE)
            .unwrap(),
    );
    let event_id = testkit::unique();
    event.set_field_by_name("event_id", Value::String(event_id.clone()));
    event.set_field_by_name("order_id", Value::I64(77));
    event.set_field_by_name(
        "status",
        Value::String(testkit::Status::New.as_str().into()),
    );
    event.set_field_by_name("sequence", Value::I64(1));
    event.set_field_by_name("channel", Value::String("web".into()));

    let topic = kafka::fresh_topic("loms.order-events.test", 1).await;
    kafka::produce(&kafka::producer(), &topic, "77", &event.encode_to_vec()).await;
    let group = format!("notifier-test-{}", testkit::unique());
    let notifier = start(&topic, &group);
    wait_until("the event is logged", || {
        all_logged(&[&notifier], std::slice::from_ref(&event_id))
    })
    .await;
    let errors = notifier
        .process
        .json_lines()
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .count();
    assert_eq!(errors, 0, "{}", notifier.process.log_text());
}

/// A producer that lost an order's first event and resent it behind the second leaves the
/// partition with sequence 2, then 1 (distinct ids): both are logged in full, the late one at
/// WARN and marked out of order, and nothing is dropped as a duplicate.
#[tokio::test]
async fn an_unseen_earlier_event_after_a_later_one_is_logged_in_full() {
    let topic = kafka::fresh_topic("loms.order-events.test", 1).await;
    let group = format!("notifier-test-{}", testkit::unique());
    let producer = kafka::producer();
    let first = kafka::new_order_event(41);
    let mut second = kafka::new_order_event(41);
    second.sequence = 2;
    second.status = testkit::Status::AwaitingPayment.as_str().into();
    second.previous_status = testkit::Status::New.as_str().into();
    for event in [&second, &first] {
        kafka::produce(&producer, &topic, "41", &event.encode_to_bytes()).await;
    }
    let notifier = start(&topic, &group);
    let ids = [second.event_id.clone(), first.event_id.clone()];
    wait_until("both events are logged", || all_logged(&[&notifier], &ids)).await;
    let lines = notifier.process.json_lines();
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "order event" && l["event_id"] == id)
            .cloned()
            .unwrap()
    };
    let late = line(&first.event_id);
    assert_eq!(late["level"], "WARN");
    assert_eq!(late["out_of_order"], true);
    assert_eq!(late["after_sequence"], 2);
    assert_eq!(late["sequence"], 1);
    assert_eq!(late["status"], "new");
    assert!(late["items"].is_string() && late["occurred_at"].is_string());
    assert_eq!(line(&second.event_id)["level"], "INFO");
    assert!(
        !lines
            .iter()
            .any(|l| l["message"] == "duplicate order event, already logged"),
        "{}",
        notifier.process.log_text()
    );
}
