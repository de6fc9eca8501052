//! Builds the application from settings; `main` and the tests run the very same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::batcher::Shape;
use crate::config::Settings;
use crate::grpc::serve_grpc;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::service::{Limits, LomsService};
use crate::storage::Storage;
use service_runtime::listener::Guard;

pub struct Application {
    settings: Settings,
    pool: PgPool,
    listeners: Listeners,
    metrics: Metrics,
}

impl Application {
    /// Migrates the database (unless told not to), connects, and binds both listeners (port 0
    /// picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        service_runtime::config::check(&settings)?;
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
            crate::database::migrate_safely(&settings.database).await?;
        }
        let pool = crate::database::connect(&settings.database).await?;
        let listeners = Listeners::bind(&settings).await?;
        let metrics = Metrics::default();
        metrics.watch_pool(pool.clone());
        Ok(Self {
            settings,
            pool,
            listeners,
            metrics,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.listeners
            .grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listeners
            .http
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.listeners
            .admin
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
            listeners,
            metrics,
        } = self;
        // Read before anything serves: a certificate that cannot be read fails the start.
        let tls = Tls::read(&settings)?;
        let wake = Arc::new(Notify::new());
        let service = service(&settings, &pool, &metrics, wake.clone());
        let relay_stop = CancellationToken::new();
        let relay = spawn_relay(&settings, &metrics, wake, &relay_stop)?;
        tracing::info!(grpc = %listeners.grpc.local_addr()?, http = %listeners.http.local_addr()?, admin = %listeners.admin.local_addr()?, instance = %settings.instance_id, "loms serving");
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = crate::health::Readiness::default();
        let health =
            crate::health::watch(pool.clone(), reporter, readiness.clone(), shutdown.clone()).await;
        let listeners_stop = after_drain_delay(&shutdown, &settings);
        let status = crate::admin::LomsStatus { metrics, readiness };
        let servers = listeners.serve(
            &settings,
            service,
            health_service,
            status,
            tls,
            &listeners_stop,
        );
        let grace = Duration::from_millis(settings.shutdown_timeout_ms);
        let served = drain(servers, &listeners_stop, grace).await;
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

/// The certificates of the API's listeners, when TLS is configured.
struct Tls {
    grpc: Option<tonic::transport::ServerTlsConfig>,
    http: Option<Arc<rustls::ServerConfig>>,
}

impl Tls {
    fn read(settings: &Settings) -> anyhow::Result<Self> {
        Ok(match &settings.tls {
            Some(tls) => Self {
                grpc: Some(crate::tls::grpc(tls)?),
                http: Some(crate::tls::http(tls)?),
            },
            None => Self {
                grpc: None,
                http: None,
            },
        })
    }
}

struct Listeners {
    grpc: TcpListener,
    http: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(settings: &Settings) -> anyhow::Result<Self> {
        let bind = |addr: &str| {
            let addr = addr.to_string();
            async move {
                TcpListener::bind(&addr)
                    .await
                    .with_context(|| format!("binding {addr}"))
            }
        };
        Ok(Self {
            grpc: bind(&settings.grpc_addr).await?,
            http: bind(&settings.http_addr).await?,
            admin: bind(&settings.admin_addr).await?,
        })
    }

    /// The gRPC server, the HTTP gateway and the admin listener, until `stop`; the API's two
    /// behind their guard.
    fn serve(
        self,
        settings: &Settings,
        service: LomsService,
        health: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        status: crate::admin::LomsStatus,
        tls: Tls,
        stop: &CancellationToken,
    ) -> impl std::future::Future<Output = anyhow::Result<()>> {
        let guard = api_guard(settings);
        let listener_metrics = status.metrics.listeners();
        let timeouts = settings.connections.timeouts();
        let guarded = |listener, name| {
            service_runtime::listener::incoming(listener, name, guard, listener_metrics.clone())
        };
        let grpc = serve_grpc(
            guarded(self.grpc, "grpc"),
            service.clone(),
            health,
            settings.grpc_max_message_bytes,
            tls.grpc,
            timeouts,
            stop.clone(),
        );
        let router = crate::http::router(service, settings.http_body_limit_bytes)
            .map_err(anyhow::Error::msg)
            .context("HTTP gateway");
        let http = guarded(self.http, "http");
        let (admin, stop) = (self.admin, stop.clone());
        async move {
            let (grpc, router) = (grpc?, router?);
            let http = service_runtime::http::serve(http, router, tls.http, timeouts, stop.clone());
            let admin = service_runtime::admin::serve(
                admin,
                status,
                guard.idle_timeout,
                listener_metrics,
                timeouts,
                stop.clone(),
            );
            // One that fails stops the others.
            tokio::try_join!(grpc, ok(http), ok(admin)).map(drop)
        }
    }
}

async fn ok(served: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    served.await;
    Ok(())
}

/// The API's service over the storage, with its limits.
fn service(
    settings: &Settings,
    pool: &PgPool,
    metrics: &Metrics,
    wake: Arc<Notify>,
) -> LomsService {
    let outbox = Outbox {
        topic: settings.kafka.topic.clone(),
        instance: settings.instance_id.clone(),
        written: wake,
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
    LomsService::new(storage, metrics.clone(), limits)
}

/// The relay, when this replica runs one, until `stop`.
fn spawn_relay(
    settings: &Settings,
    metrics: &Metrics,
    wake: Arc<Notify>,
    stop: &CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if !settings.relay.enabled {
        return Ok(None);
    }
    let relay = Relay {
        connect: crate::database::connect_options(&settings.database)?,
        settings: settings.relay.clone(),
        kafka: settings.kafka.clone(),
        metrics: metrics.clone(),
        wake,
    };
    Ok(Some(tokio::spawn(relay.run(stop.clone()))))
}

/// A token cancelled a drain delay after `shutdown`: health says NOT_SERVING at once, and the
/// listeners close that much later, once load balancers moved traffic away.
fn after_drain_delay(shutdown: &CancellationToken, settings: &Settings) -> CancellationToken {
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
    listeners_stop
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
