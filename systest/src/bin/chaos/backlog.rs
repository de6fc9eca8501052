//! `backlog_drain`: the broker away for a long while under steady load, so that the outbox grows,
//! then back while the load goes on. Measures how fast the relay drains the backlog, OrderCreate's
//! latency before, during and after the drain (the relay must not starve the request path), and
//! the outbox's dead rows and when autovacuum cleared them.

use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use sqlx::PgPool;
use testkit::stack::stack;

use crate::scenarios::Fault;

/// The goals: requests' p99 during the drain at most this many times the p99 before the outage,
/// and at least this many events a second drained.
const P99_GOAL_RATIO: f64 = 2.0;
const DRAIN_GOAL_PER_S: f64 = 20_000.0;
/// How long the load goes on after the drain, for the "after" figures.
const AFTER: Duration = Duration::from_secs(5);

/// (rows, events ever written) of the outbox.
async fn outbox(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT (SELECT count(*) FROM outbox), (SELECT last_value FROM outbox_id_seq)")
        .fetch_one(pool)
        .await
        .expect("read the outbox")
}

async fn dead_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'outbox'")
        .fetch_one(pool)
        .await
        .expect("read the outbox's statistics")
}

/// p50 and p99, in ms, of the OrderCreate calls answered OK between `from` and `to`.
fn latency(f: &Fault, from: SystemTime, to: SystemTime) -> Value {
    let mut took: Vec<f64> = f
        .tally
        .creates
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.ok && c.at >= from && c.at < to)
        .map(|c| c.took.as_secs_f64() * 1e3)
        .collect();
    took.sort_by(f64::total_cmp);
    json!({
        "calls": took.len(),
        "p50_ms": systest::percentile(&took, 0.5),
        "p99_ms": systest::percentile(&took, 0.99),
    })
}

pub async fn backlog_drain(f: Fault) {
    let pool = PgPool::connect(&f.run.lock().await.db)
        .await
        .expect("connect");
    let before = SystemTime::now();
    tokio::time::sleep(crate::scenarios::WARM_UP).await;
    f.begin();
    let away = SystemTime::now();
    stack("kafka-stop");
    tokio::time::sleep(f.secs(30, 120)).await;
    let starting = tokio::task::spawn_blocking(|| stack("kafka-start"));
    let (back, back_at) = (SystemTime::now(), Instant::now());
    let drain = Drain::watch(&pool, back_at).await;
    starting.await.expect("kafka-start");
    let drained = SystemTime::now();
    let (_, written_drained) = outbox(&pool).await;
    f.end();
    let (backlog, reconnect_secs, drained_in) =
        (drain.backlog, drain.reconnect_secs, drain.drained_in);
    let events = backlog + (written_drained - drain.written_then);
    let per_s = events as f64 / drained_in.as_secs_f64().max(1e-3);
    tokio::time::sleep(AFTER).await;
    let after = SystemTime::now();
    let (cleared_in, peak_dead) = vacuum_clears(&f, &pool, backlog, drain.peak_dead).await;
    let (p_before, p_during, p_after) = (
        latency(&f, before, away),
        latency(&f, back, drained.max(back + Duration::from_secs(1))),
        latency(&f, drained, after),
    );
    let ratio = p_during["p99_ms"].as_f64().unwrap_or(0.0)
        / p_before["p99_ms"].as_f64().unwrap_or(1.0).max(1e-3);
    f.note("backlog_events", json!(backlog));
    f.note("drained_events", json!(events));
    f.note("relay_back_after_s", json!(reconnect_secs));
    f.note("drain_secs", json!(drained_in.as_secs_f64()));
    f.note("drain_events_per_s", json!(per_s));
    f.note("create_latency_before", p_before);
    f.note("create_latency_during_drain", p_during);
    f.note("create_latency_after", p_after);
    f.note("p99_during_vs_before", json!(ratio));
    f.note("outbox_dead_rows_peak", json!(peak_dead));
    f.note("autovacuum_cleared_after_s", json!(cleared_in));
    f.note(
        "goals",
        json!({
            "p99_during_drain_within_2x": ratio <= P99_GOAL_RATIO,
            "drain_at_least_20000_per_s": per_s >= DRAIN_GOAL_PER_S,
        }),
    );
}

/// The outbox's drain once the broker is back.
struct Drain {
    /// Rows waiting when they first fell, and rows written by then.
    backlog: i64,
    written_then: i64,
    /// From their first fall to an empty outbox.
    drained_in: Duration,
    /// From the broker's start to their first fall.
    reconnect_secs: f64,
    peak_dead: i64,
}

impl Drain {
    /// Rows only grow while the broker starts; the drain is timed from their first fall, with
    /// what was waiting then and what arrived until the outbox was empty.
    async fn watch(pool: &PgPool, back_at: Instant) -> Self {
        let mut peak_dead = 0;
        let (mut most, mut draining) = (outbox(pool).await, None);
        let drained_in = loop {
            let (rows, written) = outbox(pool).await;
            if rows < most.0 && draining.is_none() {
                draining = Some((Instant::now(), most));
            }
            if rows >= most.0 {
                most = (rows, written);
            }
            peak_dead = peak_dead.max(dead_rows(pool).await);
            if rows == 0 {
                break draining.map_or(Duration::ZERO, |(at, _)| at.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (backlog, written_then) = draining.map_or(most, |(_, at_fall)| at_fall);
        Self {
            backlog,
            written_then,
            drained_in,
            reconnect_secs: draining.map_or(0.0, |(at, _)| (at - back_at).as_secs_f64()),
            peak_dead,
        }
    }
}

/// How long autovacuum takes to clear the drained rows' dead tuples (to a tenth of the
/// backlog), if it does within its time; and the most dead rows seen.
async fn vacuum_clears(
    f: &Fault,
    pool: &PgPool,
    backlog: i64,
    mut peak_dead: i64,
) -> (Option<f64>, i64) {
    let vacuumed = Instant::now();
    let cleared_in = loop {
        let dead = dead_rows(pool).await;
        peak_dead = peak_dead.max(dead);
        if dead < backlog / 10 {
            break Some(vacuumed.elapsed().as_secs_f64());
        }
        if vacuumed.elapsed() > f.secs(15, 120) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    (cleared_in, peak_dead)
}
