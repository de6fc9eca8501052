//! Builds the application from settings; `main` and the tests run the very same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batcher::Shape;
use crate::config::{DatabaseSettings, Settings};
use crate::grpc::serve_grpc;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::service::{Limits, LomsService};
use crate::storage::Storage;
use service_runtime::listener::Guard;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub struct Application {
    settings: Settings,
    pool: PgPool,
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    metrics: Metrics,
}

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
    match error {
        sqlx::Error::Tls(_) | sqlx::Error::Configuration(_) => false,
        // 28000 invalid authorization, 28P01 wrong password, 3D000 no such database.
        sqlx::Error::Database(e) => {
            !matches!(e.code().as_deref(), Some("28000" | "28P01" | "3D000"))
        }
        _ => true,
    }
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

impl Application {
    /// Migrates the database (unless told not to), connects, and binds both listeners (port 0
    /// picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings
            .validate()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        // The relay's producer is built from the settings before anything else, so that a
        // setting librdkafka refuses fails the start with its reason, not a relay loop.
        if settings.relay.enabled {
            let checked: rdkafka::producer::BaseProducer =
                crate::relay::producer_config(&settings.kafka)?
                    .create()
                    .context("the Kafka producer cannot be built from kafka settings")?;
            drop(checked);
        }
        if settings.database.migrate_on_start {
            migrate_safely(&settings.database).await?;
        }
        let pool = connect(&settings.database).await?;
        let grpc = TcpListener::bind(&settings.grpc_addr)
            .await
            .with_context(|| format!("binding {}", settings.grpc_addr))?;
        let http = TcpListener::bind(&settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        let admin = TcpListener::bind(&settings.admin_addr)
            .await
            .with_context(|| format!("binding {}", settings.admin_addr))?;
        let metrics = Metrics::default();
        metrics.watch_pool(pool.clone());
        Ok(Self {
            settings,
            pool,
            grpc,
            http,
            admin,
            metrics,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown`: then health turns NOT_SERVING, the listeners close a drain delay
    /// later, in-flight requests finish, and only then the relay finishes its batch and flushes
    /// the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            pool,
            grpc,
            http,
            admin,
            metrics,
        } = self;
        // Read before anything serves: a certificate that cannot be read fails the start.
        let (grpc_tls, http_tls) = match &settings.tls {
            Some(tls) => (Some(crate::tls::grpc(tls)?), Some(crate::tls::http(tls)?)),
            None => (None, None),
        };
        let wake = Arc::new(Notify::new());
        let outbox = Outbox {
            topic: settings.kafka.topic.clone(),
            instance: settings.instance_id.clone(),
            written: wake.clone(),
            max_event_bytes: settings.kafka.max_event_bytes,
        };
        let limits = Limits {
            max_order_lines: settings.max_order_lines,
            max_concurrent_requests: settings.max_concurrent_requests,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
        };
        let batches = Shape {
            max_batch: settings.database.order_batch_max,
            workers: settings.database.order_batch_workers,
        };
        let storage = Storage::new(pool.clone(), outbox, batches, metrics.clone());
        let service = LomsService::new(storage, metrics.clone(), limits);
        let relay_stop = CancellationToken::new();
        let relay = if settings.relay.enabled {
            let relay = Relay {
                connect: connect_options(&settings.database)?,
                settings: settings.relay.clone(),
                kafka: settings.kafka.clone(),
                metrics: metrics.clone(),
                wake,
            };
            Some(tokio::spawn(relay.run(relay_stop.clone())))
        } else {
            None
        };

        tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, admin = %admin.local_addr()?, instance = %settings.instance_id, "loms serving");
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = crate::health::Readiness::default();
        let health =
            crate::health::watch(pool.clone(), reporter, readiness.clone(), shutdown.clone()).await;
        // The listeners close a drain delay after the signal; health said NOT_SERVING at once.
        let listeners_stop = CancellationToken::new();
        let drain_delay = Duration::from_millis(settings.shutdown_drain_ms);
        tokio::spawn({
            let (shutdown, listeners_stop) = (shutdown.clone(), listeners_stop.clone());
            async move {
                shutdown.cancelled().await;
                tokio::time::sleep(drain_delay).await;
                listeners_stop.cancel();
            }
        });
        let api_guard = api_guard(&settings);
        let idle_timeout = api_guard.idle_timeout;
        let listener_metrics = metrics.listeners();
        let guarded = |listener, name, guard| {
            service_runtime::listener::incoming(listener, name, guard, listener_metrics.clone())
        };
        let timeouts = settings.connections.timeouts();
        let grpc_server = serve_grpc(
            guarded(grpc, "grpc", api_guard),
            service.clone(),
            health_service,
            settings.grpc_max_message_bytes,
            grpc_tls,
            timeouts,
            listeners_stop.clone(),
        )?;
        let router = crate::http::router(service, settings.http_body_limit_bytes)
            .map_err(anyhow::Error::msg)
            .context("HTTP gateway")?;
        let http_server = async {
            service_runtime::http::serve(
                guarded(http, "http", api_guard),
                router,
                http_tls,
                timeouts,
                listeners_stop.clone(),
            )
            .await;
            Ok(())
        };
        let admin_server = async {
            let status = crate::admin::LomsStatus { metrics, readiness };
            service_runtime::admin::serve(
                admin,
                status,
                idle_timeout,
                listener_metrics.clone(),
                timeouts,
                listeners_stop.clone(),
            )
            .await;
            Ok(())
        };
        let grace = Duration::from_millis(settings.shutdown_timeout_ms);
        let served = drain(
            async { tokio::try_join!(grpc_server, http_server, admin_server).map(drop) },
            &listeners_stop,
            grace,
        )
        .await;
        let _ = health.await;

        tracing::info!("listeners closed, stopping the relay");
        relay_stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        pool.close().await;
        served
    }
}

/// Descriptors kept for what is not a client connection: Kafka's sockets, files, the runtime.
const OTHER_DESCRIPTORS: u64 = 64;

/// The API listeners' guard, its bound lowered to what the file-descriptor limit leaves after
/// the database, the admin listener and the rest: a flood of connections then meets refusals,
/// not a process that cannot open a file.
fn api_guard(settings: &Settings) -> Guard {
    let wanted = settings.connections.max_per_listener;
    let idle_timeout = Duration::from_millis(settings.connections.idle_timeout_ms);
    // The request pool, and as many again for the relay and migrations at worst.
    let database = 2 * u64::from(settings.database.max_connections);
    let reserved = database + service_runtime::admin::CONNECTIONS as u64 + OTHER_DESCRIPTORS;
    let max_connections = match service_runtime::listener::descriptor_limit() {
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(reserved) / 2).unwrap_or(usize::MAX);
            let allowed = wanted.min(room.max(1));
            if allowed < wanted {
                tracing::warn!(
                    wanted,
                    allowed,
                    descriptor_limit = limit,
                    "connections.max_per_listener lowered to what the file-descriptor limit leaves room for (raise it with ulimit -n)"
                );
            }
            allowed
        }
        None => wanted,
    };
    Guard {
        max_connections,
        idle_timeout,
    }
}

/// Runs `servers` to their end, or leaves what is still in flight `grace` after `shutdown`.
async fn drain(
    servers: impl std::future::Future<Output = anyhow::Result<()>>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    tokio::select! {
        r = servers => r,
        _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "requests still in flight after the shutdown timeout; leaving them");
            Ok(())
        }
    }
}
