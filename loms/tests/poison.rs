//! An event the broker refuses for good holds back its own order only: it is parked with the
//! order's later events, every other order's events go on, and an operator can put the order
//! back (after fixing the cause) or discard it. On the real PostgreSQL and Kafka broker.

use std::collections::BTreeMap;

use testkit::app::{settings, TestApp};
use testkit::db::{fill_outbox, migrated, wait_for_empty_outbox};
use testkit::{eventually, kafka};

use loms::domain::Status;
use loms::outbox::store;

const SKU: i64 = 1076963;
/// The topic's limit in this test: a record above it is refused by the broker (librdkafka,
/// whose own limit is 1,000,000 bytes, sends it).
const TOPIC_LIMIT: &str = "20000";

/// Writes an outbox row for `key` whose payload is `bytes` long, as a change of an order would.
async fn write_row(pool: &sqlx::PgPool, topic: &str, key: i64, bytes: usize) {
    sqlx::query("INSERT INTO outbox (topic, key, payload, headers) VALUES ($1, $2, $3, '{}')")
        .bind(topic)
        .bind(key.to_string())
        .bind(vec![7u8; bytes])
        .execute(pool)
        .await
        .expect("write an outbox row");
}

/// Per key, the (sequence) of the events on the topic, in offset order.
async fn topic_sequences(topic: &str) -> BTreeMap<String, Vec<i64>> {
    let mut messages = kafka::consume_all(topic).await;
    messages.sort_by_key(|m| (m.partition, m.offset));
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in messages {
        let sequence = m.event().map_or(-1, |e| e.sequence);
        by_key
            .entry(m.key.unwrap_or_default())
            .or_default()
            .push(sequence);
    }
    by_key
}

#[tokio::test]
async fn an_event_the_broker_refuses_parks_only_its_order_until_an_operator_acts() {
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic_with(
        "loms.order-events.test",
        2,
        &[("max.message.bytes", TOPIC_LIMIT)],
    )
    .await;
    let pool = migrated(&db).await;
    let history = Status::AwaitingPayment.history();
    // Orders 1-6 and 8-20 are ordinary; order 7's first event is refused by the broker, order
    // 12's is larger than librdkafka takes at all; each has its second event behind it.
    fill_outbox(&pool, &topic, 1..=6, SKU, history).await;
    write_row(&pool, &topic, 7, 50_000).await;
    fill_outbox(&pool, &topic, 7..=7, SKU, &history[1..]).await;
    fill_outbox(&pool, &topic, 8..=11, SKU, history).await;
    write_row(&pool, &topic, 12, 1_100_000).await;
    fill_outbox(&pool, &topic, 12..=12, SKU, &history[1..]).await;
    fill_outbox(&pool, &topic, 13..=20, SKU, history).await;

    let app = TestApp::start(settings(&db, &topic, true), &db).await;
    wait_for_empty_outbox(&pool).await;
    let parked = store::parked(&pool).await.unwrap();
    let parked_keys: Vec<(&str, i64)> = parked.iter().map(|p| (p.key.as_str(), p.id)).collect();
    assert_eq!(parked.len(), 4, "{parked:?}");
    for key in ["7", "12"] {
        let of_key: Vec<_> = parked.iter().filter(|p| p.key == key).collect();
        assert_eq!(of_key.len(), 2, "{parked_keys:?}");
        assert!(of_key[0].id < of_key[1].id);
        assert!(
            of_key[0].error.contains("too large") || of_key[0].error.contains("Message size"),
            "{}",
            of_key[0].error
        );
        assert!(of_key[1].error.starts_with("behind"), "{}", of_key[1].error);
    }
    let published = topic_sequences(&topic).await;
    let expected: Vec<String> = (1..=20)
        .filter(|o| *o != 7 && *o != 12)
        .map(|o| o.to_string())
        .collect();
    assert_eq!(
        published
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.iter().cloned().collect(),
        "every other order's events, and none of the parked orders'"
    );
    // Resent after each failure (at least once), but each event first seen in order.
    for key in &expected {
        let sequences = &published[key];
        let mut first_sightings: Vec<i64> = Vec::new();
        for s in sequences {
            if !first_sightings.contains(s) {
                first_sightings.push(*s);
            }
        }
        assert_eq!(first_sightings, vec![1, 2], "{key}: {sequences:?}");
    }
    let text = app.metrics.render();
    assert!(text.contains("loms_events_parked_total 4"), "{text}");
    assert!(
        text.contains("loms_outbox_parked_rows 2") || text.contains("loms_outbox_parked_rows 4")
    );

    // The operator drops order 12 and, having raised the topic's limit, retries order 7: its
    // events go out, in order, and nothing is left parked.
    let dropped = store::drop_parked(&pool, "12").await.unwrap();
    assert_eq!(dropped.len(), 2);
    kafka::alter_topic(&topic, &[("max.message.bytes", "2000000")]).await;
    assert_eq!(store::retry(&pool, "7").await.unwrap(), 2);
    wait_for_empty_outbox(&pool).await;
    eventually(
        "order 7's events are on the topic",
        testkit::db::DRAIN_PATIENCE,
        || async {
            topic_sequences(&topic)
                .await
                .get("7")
                .is_some_and(|s| s.len() >= 2)
        },
    )
    .await;
    let seven = &topic_sequences(&topic).await["7"];
    assert_eq!(
        seven[0], -1,
        "the large event first (it is not an OrderEvent)"
    );
    assert!(
        seven[1..].iter().all(|s| *s > 0),
        "then its next event: {seven:?}"
    );
    assert!(store::parked(&pool).await.unwrap().is_empty());
    assert!(!topic_sequences(&topic).await.contains_key("12"));
    app.stop().await;
}

/// The operator's commands, as the binary runs them: `loms outbox parked` lists a parked row,
/// `loms outbox drop` discards it.
#[tokio::test]
async fn the_outbox_commands_list_and_drop_parked_rows() {
    let db = testkit::db::fresh_database().await;
    let pool = migrated(&db).await;
    sqlx::query(
        "INSERT INTO outbox_parked (id, topic, key, payload, headers, created_at, error)
         VALUES (41, 't', '77', '\\x00', '{\"event-id\": \"e-41\"}', now(), 'Broker: Message size too large')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let loms = |args: &[&str]| {
        let out = std::process::Command::new(testkit::process::bin_dir().join("loms"))
            .args(["--database-url", &db, "outbox"])
            .args(args)
            .env("LOMS_LOG__FILTER", "warn")
            .output()
            .expect("run loms");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = loms(&["parked"]);
    assert!(
        listed.contains("41\t77\te-41\t1\t") && listed.contains("Message size too large"),
        "{listed}"
    );
    loms(&["drop", "77"]);
    assert!(store::parked(&pool).await.unwrap().is_empty());
    assert_eq!(loms(&["parked"]).lines().count(), 1, "only the heading");
}

/// A row the producer refuses mid-stream, with batches read after its own: no row behind it
/// may be sent before the refusal is handled, so its order's later event is parked, not
/// published, and every other order's events are published in order.
#[tokio::test]
async fn nothing_read_after_a_refused_row_overtakes_it() {
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let pool = migrated(&db).await;
    let history = Status::AwaitingPayment.history();
    fill_outbox(&pool, &topic, 1..=4, SKU, history).await;
    write_row(&pool, &topic, 12, 1_100_000).await;
    fill_outbox(&pool, &topic, 30..=30, SKU, history).await;
    fill_outbox(&pool, &topic, 12..=12, SKU, &history[1..]).await;
    fill_outbox(&pool, &topic, 13..=16, SKU, history).await;
    let mut s = settings(&db, &topic, true);
    // Small batches, two in flight: the refused row ends one, the next is read at once.
    s.relay.batch_size = 3;
    let app = TestApp::start(s, &db).await;
    wait_for_empty_outbox(&pool).await;
    let parked: Vec<String> = store::parked(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(parked, ["12", "12"]);
    let published = topic_sequences(&topic).await;
    assert!(!published.contains_key("12"), "{published:?}");
    for order in [1, 2, 3, 4, 30, 13, 14, 15, 16] {
        let sequences = &published[&order.to_string()];
        assert_eq!(sequences.first(), Some(&1), "{order}: {sequences:?}");
    }
    app.stop().await;
}
