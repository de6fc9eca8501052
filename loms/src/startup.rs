//! Builds the application from settings; `main` and the tests run the very same code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{redact_url, DatabaseSettings, Settings};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::relay::Relay;
use crate::service::LomsService;
use crate::storage::Storage;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub struct Application {
    settings: Settings,
    pool: PgPool,
    grpc: TcpListener,
    http: TcpListener,
    metrics: Metrics,
}

pub fn connect_options(db: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = db
        .url
        .parse()
        .context("database.url is not a PostgreSQL URL")?;
    Ok(options
        .application_name("loms")
        .options([("statement_timeout", db.statement_timeout_ms.to_string())]))
}

/// Connects, retrying for a while: in compose the database may still be starting.
pub async fn connect(db: &DatabaseSettings) -> anyhow::Result<PgPool> {
    let options = connect_options(db)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(db.max_connections)
            .acquire_timeout(Duration::from_millis(db.acquire_timeout_ms))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, url = redact_url(&db.url), "database not reachable yet, retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("connecting to {}", redact_url(&db.url)))
            }
        }
    }
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("running migrations")
}

impl Application {
    /// Connects to the database, migrates it, and binds both listeners (port 0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = connect(&settings.database).await?;
        migrate(&pool).await?;
        let grpc = TcpListener::bind(&settings.grpc_addr)
            .await
            .with_context(|| format!("binding {}", settings.grpc_addr))?;
        let http = TcpListener::bind(&settings.http_addr)
            .await
            .with_context(|| format!("binding {}", settings.http_addr))?;
        Ok(Self {
            settings,
            pool,
            grpc,
            http,
            metrics: Metrics::default(),
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

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown`: then health turns NOT_SERVING, the listeners close, in-flight
    /// requests finish, and only then the relay finishes its batch and flushes the producer.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            settings,
            pool,
            grpc,
            http,
            metrics,
        } = self;
        let wake = Arc::new(Notify::new());
        let outbox = Outbox {
            topic: settings.kafka.topic.clone(),
            instance: settings.instance_id.clone(),
            written: wake.clone(),
        };
        let service = LomsService::new(Storage::new(pool.clone(), outbox), metrics.clone());

        let relay_stop = CancellationToken::new();
        let relay = settings.relay.enabled.then(|| {
            let relay = Relay {
                connect: connect_options(&settings.database).expect("parsed at start"),
                settings: settings.relay.clone(),
                kafka: settings.kafka.clone(),
                metrics: metrics.clone(),
                wake,
            };
            tokio::spawn(relay.run(relay_stop.clone()))
        });

        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<api::LomsServer<LomsService>>().await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        tracing::info!(grpc = %grpc.local_addr()?, http = %http.local_addr()?, instance = %settings.instance_id, "loms serving");

        let grpc_stop = shutdown.clone();
        let grpc_health = health.clone();
        let grpc_server = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(api::LomsServer::new(service.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc),
                async move {
                    grpc_stop.cancelled().await;
                    grpc_health
                        .set_not_serving::<api::LomsServer<LomsService>>()
                        .await;
                },
            );
        let router = crate::http::router(
            service,
            metrics,
            pool.clone(),
            settings.http_body_limit_bytes,
        );
        let http_stop = shutdown.clone();
        let http_server = axum::serve(http, router)
            .with_graceful_shutdown(async move { http_stop.cancelled().await });

        let servers = async {
            tokio::try_join!(async { grpc_server.await.context("gRPC server") }, async {
                http_server.await.context("HTTP server")
            })
        };
        tokio::pin!(servers);
        let grace = Duration::from_millis(settings.shutdown_timeout_ms);
        let served = tokio::select! {
            r = &mut servers => r.map(drop),
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "requests still in flight after the shutdown timeout; leaving them");
                Ok(())
            }
        };
        tracing::info!("listeners closed, stopping the relay");
        relay_stop.cancel();
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        pool.close().await;
        served
    }
}
