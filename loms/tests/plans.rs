//! PostgreSQL plans each of loms's statements once per session, not at every call, and those
//! plans (and those of `create_orders`' own statements) read stock rows through their key. On a real PostgreSQL, through the very connection
//! settings the service uses.

use loms::batcher::Shape;
use loms::domain::{Action, NewOrder, OrderId, OrderRequest, Sku};
use loms::metrics::Metrics;
use loms::storage::Storage;
use testkit::app::settings;

const SKU_A: i64 = 1076963;
const SKU_B: i64 = 1148162;
/// More calls than the plan cache's five custom plans before it weighs a generic one.
const CALLS: i64 = 8;
/// A catalogue as large as the bench's: on a table of a page or two a scan is the cheaper read.
const SKUS: i64 = 1_000;
const FIRST_SKU: i64 = 900_000_000;

#[tokio::test]
async fn every_statement_is_planned_once_per_session() {
    let db = testkit::db::fresh_database().await;
    let mut settings = settings(&db, "loms.order-events.unused", false);
    // One session: the one whose prepared statements the test reads.
    settings.database.max_connections = 1;
    let pool = loms::database::connect(&settings.database).await.unwrap();
    loms::database::migrate(&pool).await.unwrap();
    sqlx::query("INSERT INTO stocks SELECT s, 100, 0 FROM generate_series($1, $2) s")
        .bind(FIRST_SKU)
        .bind(FIRST_SKU + SKUS - 1)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ANALYZE stocks").execute(&pool).await.unwrap();
    let (seq_before, index_before) = stock_scans(&pool).await;
    let outbox = testkit::db::outbox(&settings.kafka.topic, "plans");
    let shape = Shape {
        max_batch: 64,
        workers: 1,
    };
    let storage = Storage::new(pool.clone(), outbox, shape, Metrics::default());
    let facts = &[("rpc", "test")];
    for i in 0..CALLS {
        let request = OrderRequest {
            user_id: i + 1,
            items: vec![(SKU_A, 1), (SKU_B, 1 + i as u32)],
        };
        let order = NewOrder::parse(&request, 2).unwrap();
        let id = storage.create_order(order, facts).await.unwrap();
        let id = OrderId::parse("order_id", id).unwrap();
        storage.order(id).await.unwrap();
        storage
            .available(Sku::parse("sku", SKU_A).unwrap())
            .await
            .unwrap();
        let action = if i % 2 == 0 {
            Action::Pay
        } else {
            Action::Cancel
        };
        assert!(storage.apply(id, action, facts).await.unwrap());
    }
    let plans: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")
            .fetch_all(&pool)
            .await
            .unwrap();
    let create = plans
        .iter()
        .find(|(statement, ..)| statement == loms::storage::CREATE_ORDERS)
        .expect("OrderCreate's statement prepared in the session");
    assert_eq!(
        create.1, CALLS,
        "OrderCreate's statement ran on its generic plan"
    );
    let replanned: Vec<_> = plans.iter().filter(|(_, _, custom)| *custom > 0).collect();
    assert!(replanned.is_empty(), "planned per call: {replanned:#?}");
    let (seq_after, index_after) = stock_scans(&pool).await;
    assert_eq!(
        seq_after - seq_before,
        0,
        "every statement, create_orders' own among them, reads stock rows by their key"
    );
    let by_key = index_after - index_before;
    assert!(by_key >= CALLS, "{by_key} reads by key");
}

/// Scans of `stocks` by this session so far: sequential, by index. The session's counters are
/// flushed when it next goes idle, once asked to.
async fn stock_scans(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_as(
        "SELECT seq_scan, COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'stocks'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}
