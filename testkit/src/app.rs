//! loms in the test's own process: the very code `main` runs, on free ports and a fresh
//! database.

use std::net::SocketAddr;

use loms::config::{Overrides, Settings};
use loms::startup::Application;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    pub pool: PgPool,
    pub topic: String,
    pub metrics: loms::metrics::Metrics,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Settings for a loms on free ports, `database_url` and `topic`, relay on or off.
pub fn settings(database_url: &str, topic: &str, relay: bool) -> Settings {
    let mut settings =
        Settings::load(&Overrides::default(), Some(Default::default())).expect("default settings");
    settings.grpc_addr = "127.0.0.1:0".into();
    settings.http_addr = "127.0.0.1:0".into();
    settings.admin_addr = "127.0.0.1:0".into();
    settings.database.url = database_url.into();
    settings.kafka.brokers = crate::stack::brokers();
    settings.kafka.topic = topic.into();
    settings.relay.enabled = relay;
    // In-process tests stop at once; the drain delay is for load balancers.
    settings.shutdown_drain_ms = 0;
    settings
}

/// Topic name of an application whose relay is off: nothing is ever sent to it.
const UNUSED_TOPIC: &str = "loms.order-events.unused";

impl TestApp {
    /// loms with its relay off: for tests of the API alone.
    pub async fn spawn() -> Self {
        let db = crate::db::fresh_database().await;
        Self::start(settings(&db, UNUSED_TOPIC, false), &db).await
    }

    /// loms publishing to a topic of the test's own.
    pub async fn spawn_with_relay() -> Self {
        let db = crate::db::fresh_database().await;
        let topic = crate::kafka::fresh_topic("loms.order-events.test", 2).await;
        Self::start(settings(&db, &topic, true), &db).await
    }

    pub async fn start(settings: Settings, database_url: &str) -> Self {
        let topic = settings.kafka.topic.clone();
        let app = Application::build(settings)
            .await
            .expect("build the application");
        let (grpc, http, admin) = (app.grpc_addr(), app.http_addr(), app.admin_addr());
        let metrics = app.metrics();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        let pool = PgPool::connect(database_url)
            .await
            .expect("connect to the test database");
        Self {
            grpc,
            http,
            admin,
            pool,
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
        crate::db::stocks(&self.pool).await
    }

    pub async fn count(&self, table: &str) -> i64 {
        crate::db::count(&self.pool, table).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("join")
            .expect("application ended cleanly");
    }
}
