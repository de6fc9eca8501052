//! The local stack is real: PostgreSQL stores a row, the broker carries a message on
//! `loms.order-events`, and that topic has the two partitions the system is built for.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use testkit::kafka;
use testkit::stack::brokers;

#[tokio::test]
async fn postgres_stores_and_returns_a_row() {
    let url = testkit::db::fresh_database().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO probe VALUES (1, 'written')")
        .execute(&pool)
        .await
        .unwrap();
    let (note,): (String,) = sqlx::query_as("SELECT note FROM probe WHERE id = 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(note, "written");
    let (version,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(version.starts_with("15"), "PostgreSQL {version}");
}

#[tokio::test]
async fn order_events_topic_has_two_partitions_and_carries_messages() {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(events_proto::TOPIC), Duration::from_secs(10))
        .unwrap();
    let topic = &metadata.topics()[0];
    assert!(topic.error().is_none(), "{:?}", topic.error());
    assert_eq!(topic.partitions().len(), 2);
    assert!(
        topic.partitions().iter().all(|p| p.replicas().len() == 1),
        "replication factor 1"
    );

    // A message produced now is read back (readers of this topic skip what they cannot decode).
    let marker = format!("stack-probe-{}", uuid::Uuid::now_v7());
    let before: Vec<(i64, i64)> = (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks(events_proto::TOPIC, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect();
    kafka::produce(
        &kafka::producer(),
        events_proto::TOPIC,
        &marker,
        marker.as_bytes(),
    )
    .await;
    let seen = kafka::consume_until(events_proto::TOPIC, Duration::from_secs(60), |m| {
        m.iter().any(|m| m.key.as_deref() == Some(marker.as_str()))
    })
    .await;
    let probe = seen
        .iter()
        .find(|m| m.key.as_deref() == Some(marker.as_str()))
        .unwrap();
    assert_eq!(probe.payload, marker.as_bytes());
    assert!(probe.offset >= before[probe.partition as usize].1);
}

/// `deploy/kafka-init.sh`, run by the stack as by the compose file: idempotent, and a topic of
/// another partition count is an error rather than a silent pass.
#[tokio::test]
async fn kafka_init_is_idempotent_and_refuses_a_wrong_partition_count() {
    let init = |topic: &str| {
        std::process::Command::new("bash")
            .arg(testkit::stack::root().join("deploy/local/stack.sh"))
            .arg("init")
            .env("ORDER_EVENTS_TOPIC", topic)
            .env("DLQ_TOPIC", format!("{topic}.dlq"))
            .output()
            .expect("run kafka-init")
    };
    let partitions = |topic: &str| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata.topics()[0].partitions().len()
    };
    let fresh = format!("init-test.{}", uuid::Uuid::now_v7().simple());
    for _ in 0..2 {
        let out = init(&fresh);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(partitions(&fresh), 2);
    }
    let wrong = kafka::fresh_topic("init-test.wrong", 3).await;
    let out = init(&wrong);
    assert!(!out.status.success(), "a 3-partition topic passed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 3 partitions, expected 2"));
}
