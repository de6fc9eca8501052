//! The relay draining a full outbox, beside the raw producer with the relay's settings sending
//! the same payloads.

use loms::domain::Status;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Instant;
use systest::{load_database, FIRST_LOAD_SKU};
use testkit::kafka::fresh_topic;
use testkit::stack::brokers;

/// 3. A full outbox drained by the relay of a fresh loms; and the raw producer on the same data.
pub async fn run(events: i64) -> (f64, f64, usize) {
    let db = load_database("bench_drain").await;
    let pool = testkit::db::migrated(&db).await;
    let topic = fresh_topic("bench.drain", 2).await;
    testkit::db::fill_outbox(&pool, &topic, 1..=events, FIRST_LOAD_SKU, &[Status::New]).await;
    let payloads: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT key, payload FROM outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let size = payloads.first().map_or(0, |p| p.1.len());

    let started = Instant::now();
    let _loms = systest::loms(&db, &topic, &crate::out_dir().join("loms-drain.log"))
        .start()
        .await;
    testkit::db::wait_for_empty_outbox(&pool).await;
    let drain = events as f64 / started.elapsed().as_secs_f64();

    let raw_topic = fresh_topic("bench.raw", 2).await;
    let mut config = loms::relay::producer_config(&loms::config::KafkaSettings {
        brokers: brokers(),
        ..Default::default()
    })
    .unwrap();
    let producer: FutureProducer = testkit::stack::with_kafka_security(&mut config)
        .create()
        .unwrap();
    let started = Instant::now();
    let deliveries: Vec<_> = payloads
        .iter()
        .map(|(key, payload)| {
            producer
                .send_result(FutureRecord::to(&raw_topic).key(key).payload(payload))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    for d in deliveries {
        d.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    let raw = payloads.len() as f64 / started.elapsed().as_secs_f64();
    (drain, raw, size)
}
