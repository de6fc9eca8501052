//! A leader that went silent without closing its connection (a cut network, a frozen host)
//! cannot hold the relay's lock for the OS's keepalive time: a follower terminates a session
//! that has held the lock idle for longer than the lease, and takes over. On a real PostgreSQL
//! and Kafka broker.

use sqlx::{Connection, PgConnection};
use testkit::app::{settings, TestApp};
use testkit::db::{fill_outbox, migrated, wait_for_empty_outbox};
use testkit::kafka;

#[tokio::test]
async fn a_silent_lock_holder_is_replaced_after_the_lease() {
    let db = testkit::db::fresh_database().await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let pool = migrated(&db).await;
    let mut s = settings(&db, &topic, true);
    s.relay.heartbeat_ms = 300;
    s.relay.call_timeout_ms = 1_000;
    s.relay.lease_ms = 2_000;
    // A "leader" that took the lock and then never said another word.
    let mut silent = PgConnection::connect(&db).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(s.relay.lock_key)
        .execute(&mut silent)
        .await
        .unwrap();
    fill_outbox(
        &pool,
        &topic,
        1..=50,
        1076963,
        loms::domain::Status::AwaitingPayment.history(),
    )
    .await;
    let app = TestApp::start(s, &db).await;
    wait_for_empty_outbox(&pool).await;
    assert!(
        sqlx::query("SELECT 1").execute(&mut silent).await.is_err(),
        "the silent session was terminated"
    );
    let events =
        kafka::consume_until(&topic, testkit::db::DRAIN_PATIENCE, |m| m.len() >= 100).await;
    assert!(events.len() >= 100);
    app.stop().await;
}
