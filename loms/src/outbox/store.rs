//! Every statement on the outbox after it was written: the relay's reads, deletes and parking,
//! the backlog figures, and the operator's commands on parked rows. (The rows themselves are
//! written by the transactions of the changes: the order batches' functions, `create_orders`
//! and `change_orders`, in `storage`.)

use sqlx::{PgConnection, PgPool};

/// One outbox row as the relay reads it.
pub struct Row {
    pub id: i64,
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: serde_json::Value,
    /// Seconds since the row was written.
    pub waited: f64,
    /// Its order has parked events: it must not be published before them.
    pub blocked: bool,
}

type RowTuple = (i64, String, String, Vec<u8>, serde_json::Value, f64, bool);

fn row((id, topic, key, payload, headers, waited, blocked): RowTuple) -> Row {
    Row {
        id,
        topic,
        key,
        payload,
        headers,
        waited,
        blocked,
    }
}

/// One round trip: deletes the acknowledged rows `done` and reads up to `limit` rows in id
/// order, skipping those in flight (`sending`) and those just deleted, which the statement's own
/// read still sees. The skipped ids are looked up in a hash (`NOT IN` a subquery), not compared
/// one by one against arrays. Each row says whether its order has parked events.
pub async fn delete_and_read(
    conn: &mut PgConnection,
    done: &[i64],
    sending: &[i64],
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows: Vec<RowTuple> = sqlx::query_as(
        "WITH deleted AS (DELETE FROM outbox WHERE id = ANY($1))
         SELECT id, topic, key, payload, headers,
                EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8,
                EXISTS (SELECT 1 FROM outbox_parked p WHERE p.key = o.key)
         FROM outbox o
         WHERE id NOT IN (SELECT unnest($1::bigint[]) UNION ALL SELECT unnest($2::bigint[]))
         ORDER BY id LIMIT $3",
    )
    .bind(done)
    .bind(sending)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(row).collect())
}

pub async fn delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await
        .map(drop)
}

/// Moves every outbox row of order `key` to the parked rows: `first` with `error`, the others
/// as behind it. Returns the ids moved, in order.
pub async fn park_order(
    conn: &mut PgConnection,
    key: &str,
    first: i64,
    error: &str,
) -> Result<Vec<i64>, sqlx::Error> {
    let moved: Vec<(i64,)> = sqlx::query_as(
        "WITH moved AS (DELETE FROM outbox WHERE key = $1 RETURNING *)
         INSERT INTO outbox_parked (id, topic, key, payload, headers, created_at, error)
         SELECT id, topic, key, payload, headers, created_at,
                CASE WHEN id = $2 THEN $3 ELSE 'behind parked event ' || $2 END
         FROM moved
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(key)
    .bind(first)
    .bind(error)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids: Vec<i64> = moved.into_iter().map(|(id,)| id).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// Moves rows `ids` (read as blocked: their orders have parked events) behind those events.
/// A row an operator's retry took back meanwhile is no longer there and stays unmoved.
pub async fn park_behind(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<i64>, sqlx::Error> {
    let moved: Vec<(i64,)> = sqlx::query_as(
        "WITH moved AS (
             DELETE FROM outbox o WHERE id = ANY($1)
                 AND EXISTS (SELECT 1 FROM outbox_parked p WHERE p.key = o.key)
             RETURNING *
         )
         INSERT INTO outbox_parked (id, topic, key, payload, headers, created_at, error)
         SELECT id, topic, key, payload, headers, created_at, 'behind parked events of its order'
         FROM moved
         ON CONFLICT (id) DO NOTHING
         RETURNING id",
    )
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(moved.into_iter().map(|(id,)| id).collect())
}

pub async fn parked_count(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox_parked")
        .fetch_one(&mut *conn)
        .await?;
    Ok(n)
}

/// The outbox backlog, cheaply: rows estimated as the span of ids between the oldest row and
/// the newest (two ends of the primary key's index: no scan, however large the backlog; ids a
/// rolled-back or parked row took make it an upper bound), and the age in seconds of the oldest
/// row (found by its id).
pub async fn backlog(conn: &mut PgConnection) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(max(id) - min(id) + 1, 0),
                COALESCE((SELECT EXTRACT(EPOCH FROM now() - created_at)::float8
                          FROM outbox ORDER BY id LIMIT 1), 0)
         FROM outbox",
    )
    .fetch_one(conn)
    .await
}

/// A parked row as an operator sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct Parked {
    pub id: i64,
    pub key: String,
    pub event_id: Option<String>,
    pub bytes: i32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub parked_at: chrono::DateTime<chrono::Utc>,
    pub error: String,
}

pub async fn parked(pool: &PgPool) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, key, headers ->> 'event-id' AS event_id, octet_length(payload) AS bytes,
                created_at, parked_at, error
         FROM outbox_parked ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// Puts order `key`'s parked rows back into the outbox, in their order, followed by any of its
/// rows written since (so that none overtakes them); returns how many rows it queued. The
/// order row is locked meanwhile, so no new event of the order commits in between.
pub async fn retry(pool: &PgPool, key: &str) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Ok(order_id) = key.parse::<i64>() {
        sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
    }
    let restored = sqlx::query(
        "WITH parked AS (DELETE FROM outbox_parked WHERE key = $1 RETURNING *),
              pending AS (DELETE FROM outbox WHERE key = $1 RETURNING *),
              queue AS (
                  SELECT 0 AS part, id, topic, key, payload, headers, created_at FROM parked
                  UNION ALL
                  SELECT 1, id, topic, key, payload, headers, created_at FROM pending
              )
         INSERT INTO outbox (topic, key, payload, headers, created_at)
         SELECT topic, key, payload, headers, created_at FROM queue ORDER BY part, id",
    )
    .bind(key)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(restored.rows_affected())
}

/// Discards order `key`'s parked rows; returns them.
pub async fn drop_parked(pool: &PgPool, key: &str) -> Result<Vec<Parked>, sqlx::Error> {
    sqlx::query_as(
        "DELETE FROM outbox_parked WHERE key = $1
         RETURNING id, key, headers ->> 'event-id' AS event_id, octet_length(payload) AS bytes,
                   created_at, parked_at, error",
    )
    .bind(key)
    .fetch_all(pool)
    .await
}
