//! The application under test: the very code `main` runs, on free ports and a fresh database.

use std::net::SocketAddr;

use loms::config::{Overrides, Settings};
use loms::startup::Application;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::kafka;

pub struct TestApp {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub pool: PgPool,
    pub database_url: String,
    pub topic: String,
    pub metrics: loms::metrics::Metrics,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// A database of its own: `DATABASE_URL` names the server of the stack.
pub async fn fresh_database() -> String {
    let server = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL must name the test database (run `make test`)");
    let (base, _) = server
        .rsplit_once('/')
        .expect("DATABASE_URL has a database name");
    let name = format!("loms_test_{}", uuid::Uuid::now_v7().simple());
    let admin = PgPool::connect(&server)
        .await
        .expect("connect to the test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .expect("create database");
    admin.close().await;
    format!("{base}/{name}")
}

pub fn settings(database_url: &str, topic: &str, relay: bool) -> Settings {
    let mut settings =
        Settings::load(&Overrides::default(), Some(Default::default())).expect("default settings");
    settings.grpc_addr = "127.0.0.1:0".into();
    settings.http_addr = "127.0.0.1:0".into();
    settings.database.url = database_url.into();
    settings.kafka.brokers = kafka::brokers();
    settings.kafka.topic = topic.into();
    settings.relay.enabled = relay;
    settings
}

impl TestApp {
    /// loms with its relay off: for tests of the API alone.
    pub async fn spawn() -> Self {
        let db = fresh_database().await;
        Self::start(settings(&db, "loms.order-events.unused", false)).await
    }

    /// loms publishing to a topic of the test's own.
    pub async fn spawn_with_relay() -> Self {
        let db = fresh_database().await;
        let topic = kafka::fresh_topic("loms.order-events.test", 2).await;
        Self::start(settings(&db, &topic, true)).await
    }

    pub async fn start(settings: Settings) -> Self {
        let database_url = settings.database.url.clone();
        let topic = settings.kafka.topic.clone();
        let app = Application::build(settings)
            .await
            .expect("build the application");
        let (grpc, http, metrics) = (app.grpc_addr(), app.http_addr(), app.metrics());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        let pool = PgPool::connect(&database_url)
            .await
            .expect("connect to the test database");
        Self {
            grpc,
            http,
            pool,
            database_url,
            topic,
            metrics,
            shutdown,
            handle,
        }
    }

    pub async fn client(&self) -> api::LomsClient<tonic::transport::Channel> {
        api::LomsClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("gRPC connect")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// Stock rows as (sku, total_count, reserved), by sku.
    pub async fn stocks(&self) -> Vec<(i64, i64, i64)> {
        sqlx::query_as("SELECT sku, total_count, reserved FROM stocks ORDER BY sku")
            .fetch_all(&self.pool)
            .await
            .expect("read stocks")
    }

    pub async fn count(&self, table: &str) -> i64 {
        let (n,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .expect("count");
        n
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("join")
            .expect("application ended cleanly");
    }
}
