//! The database: how loms connects (session settings, TLS, patience at start) and migrates,
//! how the domain's values are stored (`codec`), and what its errors mean (`failure`).

mod codec;
pub mod failure;

use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;

use crate::config::DatabaseSettings;
use failure::DbFailure;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub fn connect_options(db: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let mut options: PgConnectOptions = db
        .url
        .expose_secret()
        .parse()
        .context("database.url is not a PostgreSQL URL")?;
    let tls = &db.tls;
    if let Some(mode) = &tls.mode {
        options = options.ssl_mode(mode.parse().map_err(|_| {
            anyhow::anyhow!("database.tls.mode {mode:?}: not one of disable, allow, prefer, require, verify-ca, verify-full")
        })?);
    }
    if let Some(root) = &tls.root_cert {
        options = options.ssl_root_cert(root);
    }
    if let Some(cert) = &tls.cert {
        options = options.ssl_client_cert(cert);
    }
    if let Some(key) = &tls.key {
        options = options.ssl_client_key(key);
    }
    // Keepalives and a user timeout on the server's side of every session: a client that
    // vanished without closing (a cut network, a frozen host) is dropped within about half a
    // minute, and with it its locks, the relay's advisory lock among them.
    Ok(options
        .application_name("loms")
        .options([
            ("statement_timeout", db.statement_timeout_ms.to_string()),
            ("tcp_keepalives_idle", "10".to_string()),
            ("tcp_keepalives_interval", "5".to_string()),
            ("tcp_keepalives_count", "3".to_string()),
            ("tcp_user_timeout", "25000".to_string()),
            // A client that went silent inside a transaction (its locks held: stock rows, an
            // order) is rolled back by the server instead of blocking every order of those skus.
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT_MS.to_string(),
            ),
        ])
        .options(PLANNER_SETTINGS))
}

/// How loms's sessions plan. Each prepared statement (and each statement of `create_orders`) is
/// planned once per session: left to choose, PostgreSQL planned OrderCreate's statement at every
/// call on some statistics (250-450 us of planning per order, more than executing it takes), and
/// on others kept a generic plan with two sequential scans of `stocks` (sizes of its array
/// parameters unknown). loms's rows are read by key from pages in memory, where a random read
/// costs what a sequential one does: at the default 4.0, a catalogue of 1,000 skus (16 pages) was
/// scanned whole for every order instead of through its primary key. Public so that the bench
/// runs loms's SQL bare under the same settings.
pub const PLANNER_SETTINGS: [(&str, &str); 2] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("random_page_cost", "1.1"),
];

/// loms's transactions have no pauses of their own between statements: one idle this long is a
/// client that is gone.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: u64 = 5_000;

/// Where `options` connect to, without the password.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or_default()
    )
}

/// How long start-up waits for the database: in compose it may still be starting.
const CONNECT_PATIENCE: Duration = Duration::from_secs(30);
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// Opens what `open` opens, retrying while the database cannot be reached (in compose it may
/// still be starting), but not when it answered with a refusal a retry cannot change: TLS (a
/// wrong CA or host name, a server without TLS) or authentication.
async fn with_patience<T, F, Fut>(options: &PgConnectOptions, open: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err(e) if retryable(&e) && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, database = describe(options), "database not reachable yet, retrying");
                tokio::time::sleep(CONNECT_RETRY).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("connecting to {}", describe(options)))
            }
        }
    }
}

fn retryable(error: &sqlx::Error) -> bool {
    // At the start a TLS error is a wrong CA, host name or server, not a network that failed.
    !matches!(error, sqlx::Error::Tls(_) | sqlx::Error::Configuration(_))
        && DbFailure::of(error) != DbFailure::Refused
}

/// Connects, retrying for a while.
pub async fn connect(db: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = connect_options(db)?;
    with_patience(&options, || {
        PgPoolOptions::new()
            .max_connections(db.max_connections)
            // sqlx tests every connection it hands back to the pool with a round trip; a
            // second one before each use would make every query three round trips. A
            // connection that died idle in the pool fails one request (Unavailable), and goes.
            .test_before_acquire(false)
            .acquire_timeout(Duration::from_millis(db.acquire_timeout_ms))
            .connect_with(options.clone())
    })
    .await
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("running migrations")
}

/// Applies the migrations on a connection of their own: without the requests' statement
/// timeout (a long migration is not cancelled half way and retried at every start), with a lock
/// timeout (a migration that would wait behind live traffic gives up and says so).
pub async fn migrate_safely(db: &DatabaseSettings) -> anyhow::Result<()> {
    let options = connect_options(db)?.options([
        ("statement_timeout", "0".to_string()),
        ("lock_timeout", db.migration_lock_timeout_ms.to_string()),
    ]);
    let mut conn = with_patience(&options, || sqlx::PgConnection::connect_with(&options)).await?;
    MIGRATOR
        .run(&mut conn)
        .await
        .context("running migrations")?;
    let _ = conn.close().await;
    Ok(())
}
