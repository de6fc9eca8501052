//! The order batches on a real PostgreSQL: OrderCreate's, and OrderPay's and OrderCancel's.
//! Requests that wait behind a busy batch worker are committed together, each decided as if it
//! were alone, in arrival order; a batch whose call fails is run again without applying anything
//! twice; an order that changed after its batch read it is decided again.

use std::time::Duration;

use events_proto::OrderEvent;
use loms::batcher::Shape;
use loms::domain::{Action, NewOrder, OrderId, OrderRequest, Status};
use loms::error::Error;
use loms::metrics::Metrics;
use loms::storage::Storage;
use prost::Message;
use sqlx::PgPool;
use tokio::task::JoinHandle;

/// Skus of the test's own, apart from the seed's.
const SCARCE: i64 = 800_000_001;
const PLENTY: i64 = 800_000_002;

async fn setup() -> (PgPool, Storage, Metrics) {
    let db = testkit::db::fresh_database().await;
    let settings = testkit::app::settings(&db, "loms.order-events.unused", false);
    let pool = loms::database::connect(&settings.database).await.unwrap();
    loms::database::migrate(&pool).await.unwrap();
    sqlx::query("INSERT INTO stocks VALUES ($1, 3, 0), ($2, 100, 0)")
        .bind(SCARCE)
        .bind(PLENTY)
        .execute(&pool)
        .await
        .unwrap();
    let shape = Shape {
        max_batch: 64,
        workers: 1,
    };
    let metrics = Metrics::default();
    let outbox = testkit::db::outbox(&settings.kafka.topic, "batching");
    let storage = Storage::new(pool.clone(), outbox, shape, metrics.clone());
    (pool, storage, metrics)
}

fn order(user_id: i64, lines: &[(i64, u32)]) -> NewOrder {
    let request = OrderRequest {
        user_id,
        items: lines.to_vec(),
    };
    NewOrder::parse(&request, lines.len()).expect("a valid order")
}

fn create(storage: &Storage, order: NewOrder) -> JoinHandle<Result<i64, Error>> {
    let storage = storage.clone();
    tokio::spawn(async move { storage.create_order(order, &[("rpc", "test")]).await })
}

/// Polls `condition` until it holds: the state awaited is in another process or task.
async fn until<F: std::future::Future<Output = bool>>(what: &str, condition: impl Fn() -> F) {
    for _ in 0..2_000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// Pays or cancels `order_id` on a task of its own.
fn change(storage: &Storage, order_id: i64, action: Action) -> JoinHandle<Result<bool, Error>> {
    let storage = storage.clone();
    let order_id = OrderId::parse("order_id", order_id).unwrap();
    tokio::spawn(async move { storage.apply(order_id, action, &[("rpc", "test")]).await })
}

/// The backend of a call of `function` waiting for a row lock.
async fn blocked_call(pool: &PgPool, function: &str) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '(%'",
    )
    .bind(function)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Holds the row that `lock` selects locked, then runs `start`, a request that a batch worker
/// takes alone and whose call of `function` waits for the lock.
async fn hold<T>(
    pool: &PgPool,
    lock: &str,
    function: &str,
    start: impl FnOnce() -> JoinHandle<T>,
) -> (sqlx::Transaction<'static, sqlx::Postgres>, JoinHandle<T>) {
    let mut held = pool.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *held).await.unwrap();
    let first = start();
    until("the first request's call waits for the lock", || async {
        blocked_call(pool, function).await.is_some()
    })
    .await;
    (held, first)
}

/// Ends the backend of the call of `function` that waits for a lock, and waits until the call
/// runs again on another connection, where it waits for the lock anew.
async fn cut_the_blocked_call(pool: &PgPool, function: &str) {
    let pid = blocked_call(pool, function).await.unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(terminated);
    until("the call runs again", || async {
        blocked_call(pool, function)
            .await
            .is_some_and(|again| again != pid)
    })
    .await;
}

/// Waits until `n` requests wait for a batch worker.
async fn queued(waiting: impl Fn() -> usize, n: usize) {
    until("the request queued", || async { waiting() == n }).await;
}

/// Holds `sku`'s stock row locked, so that the batch worker's next call waits for it, and starts
/// an order that the worker takes alone and that waits there.
async fn hold_the_worker(
    pool: &PgPool,
    storage: &Storage,
    sku: i64,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    JoinHandle<Result<i64, Error>>,
) {
    let lock = format!("SELECT 1 FROM stocks WHERE sku = {sku} FOR UPDATE");
    hold(pool, &lock, "create_orders", || {
        create(storage, order(1, &[(sku, 1)]))
    })
    .await
}

/// Starts `orders` one after another, each queued before the next is started.
async fn queue(storage: &Storage, orders: Vec<NewOrder>) -> Vec<JoinHandle<Result<i64, Error>>> {
    let mut started = Vec::new();
    for (n, order) in orders.into_iter().enumerate() {
        started.push(create(storage, order));
        queued(|| storage.orders_waiting(), n + 1).await;
    }
    started
}

/// The statuses of `order_id`'s events in the outbox, in order.
async fn event_statuses(pool: &PgPool, order_id: i64) -> Vec<String> {
    let payloads: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE key = $1 ORDER BY id")
            .bind(order_id.to_string())
            .fetch_all(pool)
            .await
            .unwrap();
    payloads
        .iter()
        .map(|p| OrderEvent::decode(p.as_slice()).unwrap().status)
        .collect()
}

#[tokio::test]
async fn orders_of_one_batch_race_for_the_last_units_in_arrival_order() {
    let (pool, storage, _) = setup().await;
    let (lock, first) = hold_the_worker(&pool, &storage, SCARCE).await;
    // 2 units of SCARCE are left behind the first order; these four wait for one batch.
    let racing = queue(
        &storage,
        vec![
            order(2, &[(SCARCE, 1)]),
            order(3, &[(SCARCE, 1), (PLENTY, 1)]),
            order(4, &[(SCARCE, 1), (PLENTY, 5)]),
            order(5, &[(SCARCE, 1)]),
        ],
    )
    .await;
    lock.rollback().await.unwrap();
    let first = first.await.unwrap().unwrap();
    let mut outcomes = Vec::new();
    for order in racing {
        outcomes.push(order.await.unwrap());
    }

    let won: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    assert_eq!(
        won.len(),
        2,
        "as many as there were units left: {outcomes:?}"
    );
    assert!(
        outcomes[0].is_ok() && outcomes[1].is_ok(),
        "the first to arrive win"
    );
    let lost: Vec<i64> = outcomes[2..]
        .iter()
        .map(|o| match o {
            Err(Error::NotEnoughStock { order_id, shortage }) => {
                assert_eq!(shortage, &format!("sku {SCARCE}: 1 requested, 0 available"));
                *order_id
            }
            other => panic!("a loser is told the stock ran out: {other:?}"),
        })
        .collect();
    let stocks = testkit::db::stocks(&pool).await;
    let reserved = |sku| stocks.iter().find(|s| s.0 == sku).unwrap().2;
    assert_eq!(reserved(SCARCE), 3, "every unit sold, none twice");
    assert_eq!(
        reserved(PLENTY),
        1,
        "the two-line loser keeps no half reservation"
    );
    for order_id in &lost {
        assert_eq!(event_statuses(&pool, *order_id).await, ["new", "failed"]);
    }
    for order_id in &won {
        assert_eq!(
            event_statuses(&pool, *order_id).await,
            ["new", "awaiting payment"]
        );
    }
    // One transaction made the four (they share its start time), another the first.
    let batches: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE id = ANY($1) GROUP BY created_at ORDER BY 1",
    )
    .bind([&won[..], &lost[..], &[first]].concat())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(batches, [1, 4]);
}

#[tokio::test]
async fn a_batch_whose_connection_is_cut_is_run_again_and_applied_once() {
    let (pool, storage, metrics) = setup().await;
    let (lock, first) = hold_the_worker(&pool, &storage, SCARCE).await;
    cut_the_blocked_call(&pool, "create_orders").await;
    lock.rollback().await.unwrap();
    let order_id = first.await.unwrap().expect("the order is made");
    assert_eq!(testkit::db::count(&pool, "orders").await, 1);
    assert_eq!(
        event_statuses(&pool, order_id).await,
        ["new", "awaiting payment"]
    );
    let stocks = testkit::db::stocks(&pool).await;
    assert_eq!(stocks.iter().find(|s| s.0 == SCARCE).unwrap().2, 1);
    assert!(
        metrics.render().contains("loms_order_batch_size_count 2"),
        "two calls of one batch"
    );
}

#[tokio::test]
async fn a_batch_committed_before_is_reported_not_applied_again() {
    let (pool, storage, _) = setup().await;
    let order_id = storage
        .create_order(order(1, &[(SCARCE, 1)]), &[("rpc", "test")])
        .await
        .unwrap();
    let (outbox_before, stocks_before) = (
        testkit::db::outbox_rows(&pool).await,
        testkit::db::stocks(&pool).await,
    );
    // The same call again, as after a commit whose acknowledgement was lost.
    let again: (Vec<bool>, Vec<Option<i64>>) = sqlx::query_as(loms::storage::CREATE_ORDERS)
        .bind([order_id])
        .bind([1_i64])
        .bind([1_i32])
        .bind([SCARCE])
        .bind([1_i64])
        .bind("awaiting payment")
        .bind("failed")
        .bind(2_i64)
        .bind("loms.order-events.unused")
        .bind([order_id.to_string(), order_id.to_string()])
        .bind([vec![0_u8], vec![0]])
        .bind([serde_json::json!({}), serde_json::json!({})])
        .bind([vec![1_u8], vec![1]])
        .bind([serde_json::json!({}), serde_json::json!({})])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(again, (vec![true], vec![]));
    assert_eq!(testkit::db::outbox_rows(&pool).await, outbox_before);
    assert_eq!(testkit::db::stocks(&pool).await, stocks_before);
    assert_eq!(testkit::db::count(&pool, "orders").await, 1);
}

/// Holds `order_id`'s row locked, so that the change worker's next call waits for it, and starts
/// paying it: the worker takes that alone, and its call waits there.
async fn hold_the_change_worker(
    pool: &PgPool,
    storage: &Storage,
    order_id: i64,
) -> (
    sqlx::Transaction<'static, sqlx::Postgres>,
    JoinHandle<Result<bool, Error>>,
) {
    let lock = format!("SELECT 1 FROM orders WHERE id = {order_id} FOR UPDATE");
    hold(pool, &lock, "change_orders", || {
        change(storage, order_id, Action::Pay)
    })
    .await
}

/// New orders awaiting payment, one for each count of PLENTY.
async fn awaiting_payment(storage: &Storage, counts: &[u32]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (user, &count) in (1..).zip(counts) {
        let made = storage.create_order(order(user, &[(PLENTY, count)]), &[("rpc", "test")]);
        ids.push(made.await.unwrap());
    }
    ids
}

fn plenty(stocks: &[(i64, i64, i64)]) -> (i64, i64) {
    let s = stocks.iter().find(|s| s.0 == PLENTY).unwrap();
    (s.1, s.2)
}

#[tokio::test]
async fn pays_and_cancels_of_one_batch_are_decided_in_arrival_order() {
    let (pool, storage, metrics) = setup().await;
    let [a, b, c, d] = awaiting_payment(&storage, &[1, 2, 3, 4]).await[..] else {
        unreachable!()
    };
    let missing = d + 1_000;
    let (lock, first) = hold_the_change_worker(&pool, &storage, a).await;
    let requests = [
        (b, Action::Cancel),
        (c, Action::Pay),
        (d, Action::Pay),
        (missing, Action::Pay),
        (b, Action::Pay),
        (c, Action::Cancel),
        (d, Action::Pay),
    ];
    let mut racing = Vec::new();
    for (n, &(order_id, action)) in requests.iter().enumerate() {
        racing.push(change(&storage, order_id, action));
        queued(|| storage.changes_waiting(), n + 1).await;
    }
    lock.rollback().await.unwrap();
    assert!(first.await.unwrap().unwrap(), "the held order is paid");
    let mut outcomes = Vec::new();
    for request in racing {
        outcomes.push(request.await.unwrap());
    }

    let wrong = |order_id, status, action| {
        format!(
            "{:?}",
            Err::<bool, _>(Error::WrongStatus {
                order_id,
                status,
                action
            })
        )
    };
    let outcomes: Vec<String> = outcomes.iter().map(|o| format!("{o:?}")).collect();
    assert_eq!(
        outcomes,
        [
            "Ok(true)".to_string(),
            "Ok(true)".to_string(),
            "Ok(true)".to_string(),
            format!("{:?}", Err::<bool, _>(Error::OrderNotFound(missing))),
            wrong(b, Status::Cancelled, Action::Pay),
            wrong(c, Status::Payed, Action::Cancel),
            "Ok(false)".to_string(),
        ],
        "each request answered as if alone, after those before it"
    );
    let outcome = ["new", "awaiting payment"];
    assert_eq!(
        event_statuses(&pool, a).await,
        [&outcome[..], &["payed"]].concat()
    );
    assert_eq!(
        event_statuses(&pool, b).await,
        [&outcome[..], &["cancelled"]].concat()
    );
    assert_eq!(
        event_statuses(&pool, c).await,
        [&outcome[..], &["payed"]].concat()
    );
    assert_eq!(
        event_statuses(&pool, d).await,
        [&outcome[..], &["payed"]].concat(),
        "paid twice, changed once"
    );
    // 10 units were reserved: 8 paid (written off), 2 returned by the cancel.
    assert_eq!(plenty(&testkit::db::stocks(&pool).await), (92, 0));
    let batches: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT updated_at) FROM orders WHERE id = ANY($1)")
            .bind([b, c, d])
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(batches, 1, "one transaction changed the three");
    let text = metrics.render();
    assert!(text.contains("loms_change_batch_size_count 2"), "{text}");
    assert!(text.contains("loms_change_batch_size_sum 8"), "{text}");
}

#[tokio::test]
async fn a_change_batch_whose_connection_is_cut_is_run_again_and_applied_once() {
    let (pool, storage, metrics) = setup().await;
    let [a] = awaiting_payment(&storage, &[1]).await[..] else {
        unreachable!()
    };
    let (lock, first) = hold_the_change_worker(&pool, &storage, a).await;
    cut_the_blocked_call(&pool, "change_orders").await;
    lock.rollback().await.unwrap();
    assert!(first.await.unwrap().unwrap(), "the order is paid");
    assert_eq!(
        event_statuses(&pool, a).await,
        ["new", "awaiting payment", "payed"]
    );
    assert_eq!(plenty(&testkit::db::stocks(&pool).await), (99, 0));
    assert!(
        metrics.render().contains("loms_change_batch_size_count 2"),
        "two runs of one batch"
    );
}

#[tokio::test]
async fn an_order_changed_after_its_batch_read_it_is_decided_again() {
    let (pool, storage, metrics) = setup().await;
    let [a] = awaiting_payment(&storage, &[1]).await[..] else {
        unreachable!()
    };
    let (mut lock, paying) = hold_the_change_worker(&pool, &storage, a).await;
    // Another replica cancels the order while the batch's call waits for it.
    sqlx::query("UPDATE orders SET status = 'cancelled', event_seq = event_seq + 1 WHERE id = $1")
        .bind(a)
        .execute(&mut *lock)
        .await
        .unwrap();
    sqlx::query("UPDATE stocks SET reserved = reserved - 1 WHERE sku = $1")
        .bind(PLENTY)
        .execute(&mut *lock)
        .await
        .unwrap();
    lock.commit().await.unwrap();

    match paying.await.unwrap() {
        Err(Error::WrongStatus { status, .. }) => assert_eq!(status, Status::Cancelled),
        other => panic!("the pay is decided against the cancelled order: {other:?}"),
    }
    assert_eq!(
        event_statuses(&pool, a).await,
        ["new", "awaiting payment"],
        "no payed event"
    );
    assert_eq!(
        plenty(&testkit::db::stocks(&pool).await),
        (100, 0),
        "nothing written off"
    );
    assert!(
        metrics.render().contains("loms_change_batch_size_count 2"),
        "read and decided twice"
    );
}

#[tokio::test]
async fn a_change_committed_before_is_not_applied_again() {
    let (pool, storage, _) = setup().await;
    let [a] = awaiting_payment(&storage, &[1]).await[..] else {
        unreachable!()
    };
    let order_id = OrderId::parse("order_id", a).unwrap();
    assert!(storage
        .apply(order_id, Action::Pay, &[("rpc", "test")])
        .await
        .unwrap());
    let (outbox_before, stocks_before) = (
        testkit::db::outbox_rows(&pool).await,
        testkit::db::stocks(&pool).await,
    );
    // The same call again, as after a commit whose acknowledgement was lost.
    let stale: Vec<i64> = sqlx::query_scalar(loms::storage::CHANGE_ORDERS)
        .bind([a])
        .bind([2_i64])
        .bind(["payed"])
        .bind([true])
        .bind([true])
        .bind("loms.order-events.unused")
        .bind([a.to_string()])
        .bind([vec![0_u8]])
        .bind([serde_json::json!({})])
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stale, [a], "reported as changed since");
    assert_eq!(testkit::db::outbox_rows(&pool).await, outbox_before);
    assert_eq!(testkit::db::stocks(&pool).await, stocks_before);
}
