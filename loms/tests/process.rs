//! loms as a process: SIGTERM under load, SIGKILL while the outbox drains, two replicas with
//! one relay. Real PostgreSQL, real broker.

use std::sync::Arc;
use std::time::Duration;

use api::loms::*;
use loms::domain::Status;
use testkit::checks::{assert_all_published, by_order};
use testkit::db::{
    committed_events, fill_outbox, fresh_database, migrated, outbox_rows, wait_for_empty_outbox,
};
use testkit::eventually;
use testkit::kafka;
use testkit::process::{relay_leaders, LomsOptions};
use tonic::Code;

const SKU_BIG: i64 = 139275865;

#[tokio::test]
async fn sigterm_during_a_burst_completes_or_refuses_every_request() {
    let db = fresh_database().await;
    let pool = migrated(&db).await;
    let mut loms = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .start()
        .await;
    let grpc = Arc::new(loms.grpc.clone());
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = (0..300).map(|i| {
        let (grpc, done) = (grpc.clone(), done.clone());
        tokio::spawn(async move {
            let result = match api::LomsClient::connect(format!("http://{grpc}")).await {
                Ok(mut c) => c
                    .order_create(OrderCreateRequest {
                        user_id: i + 1,
                        items: vec![Item {
                            sku: SKU_BIG,
                            count: 1,
                        }],
                    })
                    .await
                    .map(|r| r.get_ref().order_id),
                Err(_) => Err(tonic::Status::unavailable("connection refused")),
            };
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            result
        })
    });
    let requests: Vec<_> = requests.collect();
    eventually("some requests completed", Duration::from_secs(30), || {
        let done = done.clone();
        async move { done.load(std::sync::atomic::Ordering::SeqCst) >= 30 }
    })
    .await;
    loms.process.signal("TERM");
    let results: Vec<_> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let status = loms.process.wait().await;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    let mut created = Vec::new();
    for r in &results {
        match r {
            Ok(id) => created.push(*id),
            Err(s) => assert!(
                matches!(
                    s.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown
                ),
                "{s:?}"
            ),
        }
    }
    println!(
        "{} completed, {} refused",
        created.len(),
        results.len() - created.len()
    );
    // Every completed request left a whole order; no order is half-made.
    let (orders, reserved): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM orders WHERE status = $2), \
         (SELECT reserved FROM stocks WHERE sku = $1)",
    )
    .bind(SKU_BIG)
    .bind(Status::AwaitingPayment)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(orders >= created.len() as i64);
    assert_eq!(reserved, orders, "one unit reserved per order");
    let (others,): (i64,) = sqlx::query_as("SELECT count(*) FROM orders WHERE status <> $1")
        .bind(Status::AwaitingPayment)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(others, 0);
}

#[tokio::test]
async fn sigkill_while_draining_loses_nothing() {
    let db = fresh_database().await;
    let pool = migrated(&db).await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    // 10,000 events waiting: 5,000 orders of two events each, written as loms writes them.
    fill_outbox(
        &pool,
        &topic,
        1..=5_000,
        SKU_BIG,
        Status::AwaitingPayment.history(),
    )
    .await;
    assert_eq!(outbox_rows(&pool).await, 10_000);

    let mut first = LomsOptions::new(&db, &topic)
        .env("LOMS_RELAY__BATCH_SIZE", "50")
        .start()
        .await;
    eventually("1,000 events published", Duration::from_secs(60), || {
        std::future::ready(kafka::message_count(&topic) >= 1_000)
    })
    .await;
    first.process.kill();
    let left = outbox_rows(&pool).await;
    println!("killed with {left} events still in the outbox");
    assert!(
        left > 0,
        "the kill came after the drain: nothing was tested"
    );

    let second = LomsOptions::new(&db, &topic).start().await;
    wait_for_empty_outbox(&pool).await;
    let messages = kafka::consume_all(&topic).await;
    let (orders, duplicates) = by_order(&messages);
    println!(
        "{} messages for 10000 events: {duplicates} duplicates",
        messages.len()
    );
    assert_eq!(orders.len(), 5_000);
    assert!(
        orders.values().all(|events| events.len() == 2),
        "an event is missing"
    );
    drop(second);
}

/// Creates and pays orders `users` through the given replicas, round robin, 8 at a time.
async fn load(addresses: &[String], users: std::ops::Range<i64>) {
    let addresses = Arc::new(addresses.to_vec());
    let workers = (0..8).map(|w| {
        let (addresses, users) = (addresses.clone(), users.clone());
        tokio::spawn(async move {
            for user_id in users.skip(w).step_by(8) {
                let address = &addresses[user_id as usize % addresses.len()];
                let mut c = api::LomsClient::connect(format!("http://{address}"))
                    .await
                    .unwrap();
                let items = vec![Item {
                    sku: SKU_BIG,
                    count: 1,
                }];
                let order_id = c
                    .order_create(OrderCreateRequest { user_id, items })
                    .await
                    .unwrap()
                    .get_ref()
                    .order_id;
                c.order_pay(OrderPayRequest { order_id }).await.unwrap();
            }
        })
    });
    for w in futures::future::join_all(workers).await {
        w.unwrap();
    }
}

#[tokio::test]
async fn two_replicas_one_relay_and_a_takeover() {
    let db = fresh_database().await;
    let pool = migrated(&db).await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let a = LomsOptions::new(&db, &topic).start().await;
    let b = LomsOptions::new(&db, &topic).start().await;
    let admin = [a.admin.clone(), b.admin.clone()];
    eventually(
        "one replica leads the relay",
        Duration::from_secs(30),
        || async { !relay_leaders(&admin).await.is_empty() },
    )
    .await;
    let (mut leader, follower) = if relay_leaders(&admin).await == [0] {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        relay_leaders(&[leader.admin.clone(), follower.admin.clone()]).await,
        [0],
        "exactly one relay is active"
    );

    load(&[leader.grpc.clone(), follower.grpc.clone()], 1..201).await;
    leader.process.kill();
    load(std::slice::from_ref(&follower.grpc), 201..401).await;
    eventually(
        "the other replica takes over the relay",
        Duration::from_secs(30),
        || follower.is_relay_leader(),
    )
    .await;
    wait_for_empty_outbox(&pool).await;

    let messages = kafka::consume_all(&topic).await;
    let (orders, duplicates) = by_order(&messages);
    println!("{} messages, {duplicates} duplicates", messages.len());
    let committed = committed_events(&pool).await;
    assert_eq!(committed.len(), 400);
    assert_all_published(&committed, &orders);
}

/// Nobody reads its logs any more (the reader of its stdout and stderr pipe is gone): loms
/// still serves, and SIGTERM still stops it cleanly.
#[tokio::test]
async fn a_dead_log_reader_neither_hangs_nor_crashes_loms() {
    let db = fresh_database().await;
    let mut loms = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .through_pipe()
        .start()
        .await;
    loms.process.kill_log_reader();
    // Requests log a line each: every one of them now fails to be written.
    let mut client = loms.client().await.unwrap();
    for user_id in 1..=20 {
        let items = vec![Item {
            sku: SKU_BIG,
            count: 1,
        }];
        client
            .order_create(OrderCreateRequest { user_id, items })
            .await
            .expect("served with its log lines dropped");
    }
    assert_eq!(loms.process.terminate().await.code(), Some(0));
}

/// Health follows PostgreSQL: with loms's path to it frozen (a Toxiproxy stopped: nothing
/// passes, nothing closes), gRPC health and `/readyz` say NOT_SERVING / 503 within seconds, and
/// SERVING / 200 again once it answers; `/livez` says 200 throughout.
#[tokio::test]
async fn health_follows_postgres() {
    use testkit::toxiproxy::{host_port, url_through, Toxiproxy};
    let db = testkit::db::fresh_database().await;
    testkit::db::migrated(&db).await;
    let proxy = Toxiproxy::start().await;
    let listen = proxy.proxy("pg", &host_port(&db)).await;
    let loms = LomsOptions::new(&url_through(&db, &listen), "loms.order-events.unused")
        .relay(false)
        .start()
        .await;
    let state = || async {
        let ready = reqwest::get(format!("http://{}/readyz", loms.admin))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let live = reqwest::get(format!("http://{}/livez", loms.admin))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        (
            ready,
            live,
            testkit::process::health_status(&loms.grpc).await,
        )
    };
    let patience = Duration::from_secs(30);
    testkit::eventually("ready", patience, || async {
        state().await == (200, 200, Some(true))
    })
    .await;
    proxy.process.signal("STOP");
    testkit::eventually(
        "not ready while PostgreSQL is cut off",
        patience,
        || async { state().await == (503, 200, Some(false)) },
    )
    .await;
    proxy.process.signal("CONT");
    testkit::eventually("ready again", patience, || async {
        state().await == (200, 200, Some(true))
    })
    .await;
}

/// On SIGTERM health turns NOT_SERVING while the listeners still answer (the drain delay), and
/// only then does loms close them and exit 0.
#[tokio::test]
async fn sigterm_turns_health_off_before_the_listeners_close() {
    let db = testkit::db::fresh_database().await;
    let mut loms = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .env("LOMS_SHUTDOWN_DRAIN_MS", "3000")
        .start()
        .await;
    assert_eq!(
        testkit::process::health_status(&loms.grpc).await,
        Some(true)
    );
    loms.process.signal("TERM");
    testkit::eventually(
        "NOT_SERVING while still listening",
        Duration::from_secs(10),
        || {
            let grpc = loms.grpc.clone();
            async move { testkit::process::health_status(&grpc).await == Some(false) }
        },
    )
    .await;
    assert_eq!(loms.process.wait().await.code(), Some(0));
}

/// Its log reader stalls (stopped, not dead: the pipe fills and takes no more): requests are
/// still served at once, the lines that do not fit are dropped and counted, and once the reader
/// reads again loms logs again.
#[tokio::test]
async fn a_stalled_log_reader_does_not_hold_requests() {
    let db = fresh_database().await;
    let loms = LomsOptions::new(&db, "loms.order-events.unused")
        .relay(false)
        .through_pipe()
        .start()
        .await;
    loms.process.pause_log_reader(true);
    let mut client = loms.client().await.unwrap();
    // About 200 bytes a line: far more than a pipe (64 KiB) and the writer's buffer hold.
    for order_id in 1..=8_000 {
        let reply = client.order_info(OrderInfoRequest { order_id }).await;
        assert_eq!(reply.unwrap_err().code(), Code::NotFound);
    }
    let metrics = reqwest::get(format!("http://{}/metrics", loms.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("loms_log_lines_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{metrics}");
    loms.process.pause_log_reader(false);
    let before = loms.process.log_text().len();
    client
        .order_info(OrderInfoRequest { order_id: 1 })
        .await
        .unwrap_err();
    testkit::eventually("it logs again", Duration::from_secs(30), || {
        std::future::ready(loms.process.log_text().len() > before)
    })
    .await;
}
