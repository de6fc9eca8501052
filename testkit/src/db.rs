//! Databases of their own, the outbox, and what committed.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

/// How long the outbox may take to drain before a test fails.
pub const DRAIN_PATIENCE: Duration = Duration::from_secs(180);

/// Creates a database `name` on the stack's server (dropping one left by an earlier run) and
/// returns its URL.
pub async fn create_database(name: &str) -> String {
    let server = crate::stack::database_url();
    // Its parameters (sslmode, the certificates) carry over to the new database's URL.
    let (address, query) = server
        .split_once('?')
        .map_or((&*server, None), |(a, q)| (a, Some(q)));
    let (base, _) = address
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let admin = PgPool::connect(&server)
        .await
        .expect("connect to the stack's PostgreSQL");
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&statement)
            .execute(&admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    admin.close().await;
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// A database of its own for one test, not yet migrated (loms migrates at start).
pub async fn fresh_database() -> String {
    create_database(&format!("loms_test_{}", crate::unique())).await
}

/// A pool on `url` with the migrations applied.
pub async fn migrated(url: &str) -> PgPool {
    let pool = PgPool::connect(url).await.expect("connect to the database");
    loms::database::migrate(&pool).await.expect("migrations");
    pool
}

pub async fn outbox_rows(pool: &PgPool) -> i64 {
    count(pool, "outbox").await
}

/// Rows the relay parked (events no retry can publish), waiting for an operator.
pub async fn parked_rows(pool: &PgPool) -> i64 {
    count(pool, "outbox_parked").await
}

pub async fn count(pool: &PgPool, table: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count rows");
    n
}

/// Waits until the relay has published and deleted every outbox row.
pub async fn wait_for_empty_outbox(pool: &PgPool) {
    crate::eventually("the outbox is empty", DRAIN_PATIENCE, || async {
        outbox_rows(pool).await == 0
    })
    .await;
}

/// Every order's committed event count, from the database: order id → event_seq.
pub async fn committed_events(pool: &PgPool) -> BTreeMap<i64, usize> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT id, event_seq FROM orders")
        .fetch_all(pool)
        .await
        .expect("read orders");
    rows.into_iter().map(|(id, n)| (id, n as usize)).collect()
}

/// Stock rows as (sku, total_count, reserved), by sku.
pub async fn stocks(pool: &PgPool) -> Vec<(i64, i64, i64)> {
    sqlx::query_as("SELECT sku, total_count, reserved FROM stocks ORDER BY sku")
        .fetch_all(pool)
        .await
        .expect("read stocks")
}

/// Orders written to the outbox per transaction by [`fill_outbox`].
const FILL_CHUNK: usize = 1_000;

/// An outbox writing events for `topic` as a loms replica named `instance` does.
pub fn outbox(topic: &str, instance: &str) -> loms::outbox::Outbox {
    loms::outbox::Outbox {
        topic: topic.into(),
        instance: instance.into(),
        written: Default::default(),
        max_event_bytes: loms::config::KafkaSettings::default().max_event_bytes,
    }
}

/// Writes the events of `orders` (each through the statuses of `history`, one unit of `sku`)
/// straight to the outbox for `topic`, as loms writes them: a backlog for the relay to drain.
pub async fn fill_outbox(
    pool: &PgPool,
    topic: &str,
    orders: std::ops::RangeInclusive<i64>,
    sku: i64,
    history: &[loms::domain::Status],
) {
    use loms::outbox::Change;
    let outbox = outbox(topic, "testkit");
    let lines = [loms::domain::Line { sku, count: 1 }];
    let orders: Vec<i64> = orders.collect();
    for chunk in orders.chunks(FILL_CHUNK) {
        let changes: Vec<Change> = chunk
            .iter()
            .flat_map(|&order_id| {
                history
                    .iter()
                    .enumerate()
                    .map(move |(i, &status)| (order_id, i, status))
            })
            .map(|(order_id, i, status)| Change {
                order_id,
                user_id: 1,
                status,
                previous: i.checked_sub(1).map(|p| history[p]),
                sequence: i as i64 + 1,
                lines: &lines,
                facts: &[],
                reason: None,
            })
            .collect();
        let mut tx = pool.begin().await.expect("begin");
        write_events(&mut tx, &outbox, &changes).await;
        tx.commit().await.expect("commit");
    }
}

/// Inserts the events of `changes`, in that order, into the outbox of `tx`, as loms's order
/// batches do.
pub async fn write_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    outbox: &loms::outbox::Outbox,
    changes: &[loms::outbox::Change<'_>],
) {
    let rows = outbox
        .rows(changes, std::time::SystemTime::now())
        .expect("events that fit");
    sqlx::query(
        "INSERT INTO outbox (topic, key, payload, headers)
         SELECT $1, k, p, h FROM unnest($2::text[], $3::bytea[], $4::jsonb[]) WITH ORDINALITY AS u(k, p, h, n)
         ORDER BY n",
    )
    .bind(&outbox.topic)
    .bind(&rows.keys)
    .bind(&rows.payloads)
    .bind(&rows.headers)
    .execute(&mut **tx)
    .await
    .expect("write the outbox");
}
