//! loms as a process: SIGTERM under load, SIGKILL while the outbox drains, two replicas with
//! one relay. Real PostgreSQL, real broker.

mod common;

use std::sync::Arc;
use std::time::Duration;

use api::loms::*;
use common::app::fresh_database;
use common::checks::{by_order, committed_events};
use common::kafka;
use common::process::LomsProcess;
use loms::domain::{Line, Status};
use loms::outbox::{Change, Outbox};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use tonic::Code;

const SKU_BIG: i64 = 139275865;

async fn migrated_pool(url: &str) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    loms::startup::migrate(&pool).await.unwrap();
    pool
}

async fn wait_for_empty_outbox(pool: &sqlx::PgPool) {
    wait_until("the outbox is empty", Duration::from_secs(120), || {
        let pool = pool.clone();
        async move { outbox_rows(&pool).await == 0 }
    })
    .await;
}

async fn outbox_rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
        .0
}

async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn messages_on(topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka::brokers())
        .create()
        .unwrap();
    (0..2)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(l, h)| h - l)
                .unwrap_or(0)
        })
        .sum()
}

#[tokio::test]
async fn sigterm_during_a_burst_completes_or_refuses_every_request() {
    let db = fresh_database().await;
    let pool = migrated_pool(&db).await;
    let loms = Arc::new(
        LomsProcess::start(
            &db,
            "loms.order-events.unused",
            &[("LOMS_RELAY__ENABLED", "false")],
        )
        .await,
    );
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = (0..300).map(|i| {
        let (loms, done) = (loms.clone(), done.clone());
        tokio::spawn(async move {
            let result = match loms.client().await {
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
    wait_until("some requests completed", Duration::from_secs(30), || {
        let done = done.clone();
        async move { done.load(std::sync::atomic::Ordering::SeqCst) >= 30 }
    })
    .await;
    loms.signal("TERM");
    let results: Vec<_> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let status = Arc::into_inner(loms).unwrap().wait().await;
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
        "SELECT (SELECT count(*) FROM orders WHERE status = 'awaiting payment'), \
         (SELECT reserved FROM stocks WHERE sku = $1)",
    )
    .bind(SKU_BIG)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(orders >= created.len() as i64);
    assert_eq!(reserved, orders, "one unit reserved per order");
    let (others,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM orders WHERE status <> 'awaiting payment'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(others, 0);
}

#[tokio::test]
async fn sigkill_while_draining_loses_nothing() {
    let db = fresh_database().await;
    let pool = migrated_pool(&db).await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    // 10,000 events waiting: 5,000 orders of two events each, written as loms writes them.
    let outbox = Outbox {
        topic: topic.clone(),
        instance: "test".into(),
        written: Default::default(),
    };
    let lines = [Line {
        sku: SKU_BIG,
        count: 1,
    }];
    for chunk in (1..=5_000i64).collect::<Vec<_>>().chunks(500) {
        let mut tx = pool.begin().await.unwrap();
        let mut changes = Vec::new();
        for &order_id in chunk {
            for (sequence, status, previous) in [
                (1, Status::New, None),
                (2, Status::AwaitingPayment, Some(Status::New)),
            ] {
                changes.push(Change {
                    order_id,
                    user_id: 1,
                    status,
                    previous,
                    sequence,
                    lines: &lines,
                    rpc: "test",
                    reason: None,
                });
            }
        }
        outbox.write(&mut tx, &changes).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(outbox_rows(&pool).await, 10_000);

    let small_batches = [("LOMS_RELAY__BATCH_SIZE", "50")];
    let first = LomsProcess::start(&db, &topic, &small_batches).await;
    wait_until("1,000 events published", Duration::from_secs(60), || {
        let topic = topic.clone();
        async move { messages_on(&topic) >= 1_000 }
    })
    .await;
    first.signal("KILL");
    first.wait().await;
    let left = outbox_rows(&pool).await;
    println!("killed with {left} events still in the outbox");
    assert!(
        left > 0,
        "the kill came after the drain: nothing was tested"
    );

    let second = LomsProcess::start(&db, &topic, &[]).await;
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

async fn leaders(replicas: &[&LomsProcess]) -> Vec<usize> {
    let mut leaders = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        if r.is_relay_leader().await {
            leaders.push(i);
        }
    }
    leaders
}

#[tokio::test]
async fn two_replicas_one_relay_and_a_takeover() {
    let db = fresh_database().await;
    let pool = migrated_pool(&db).await;
    let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
    let a = LomsProcess::start(&db, &topic, &[]).await;
    let b = LomsProcess::start(&db, &topic, &[]).await;
    wait_until(
        "one replica leads the relay",
        Duration::from_secs(30),
        || async { !leaders(&[&a, &b]).await.is_empty() },
    )
    .await;
    let (leader, follower) = if leaders(&[&a, &b]).await == [0] {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(
        leaders(&[&leader, &follower]).await,
        [0],
        "exactly one relay is active"
    );

    load(&[leader.grpc.clone(), follower.grpc.clone()], 1..201).await;
    leader.signal("KILL");
    leader.wait().await;
    load(std::slice::from_ref(&follower.grpc), 201..401).await;
    wait_until(
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
    for (id, n) in committed {
        assert_eq!(
            orders.get(&id).map_or(0, Vec::len),
            n,
            "events of order {id}"
        );
    }
}
