//! The notifier in the test's own process: the very code `main` runs, its admin listener on a
//! free port.

use std::net::SocketAddr;

use notifier::config::{Flags, Settings};
use notifier::startup::Application;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestNotifier {
    pub admin: SocketAddr,
    pub metrics: notifier::metrics::Metrics,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Settings as `main` loads them (the stack's security through the environment layer), for
/// `topic` and `group` on the stack's brokers, the admin listener on a free port.
pub fn settings(topic: &str, group: &str) -> Settings {
    let env = crate::stack::security_env("NOTIFIER", &crate::stack::kafka_security())
        .into_iter()
        .collect();
    let flags = Flags {
        kafka_brokers: Some(crate::stack::brokers()),
        kafka_topic: Some(topic.into()),
        group_id: Some(group.into()),
        dlq_topic: Some(format!("{topic}.dlq")),
        admin_addr: Some("127.0.0.1:0".into()),
        ..Flags::default()
    };
    let mut settings = Settings::load(&flags, Some(env)).expect("notifier settings");
    // The broker's minimum: a member that vanished hands its partitions on sooner.
    settings.kafka.session_timeout_ms = 6_000;
    settings
}

impl TestNotifier {
    pub async fn start(settings: Settings) -> Self {
        let app = Application::build(settings)
            .await
            .expect("build the notifier");
        let admin = app.admin_addr().expect("an admin listener");
        let metrics = app.metrics();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run(shutdown.clone()));
        Self {
            admin,
            metrics,
            shutdown,
            handle,
        }
    }

    /// `GET path` on the admin listener: the status and the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin listener answers");
        let status = response.status().as_u16();
        (status, response.text().await.expect("admin body"))
    }

    /// Stops it as SIGTERM does, and returns how its run ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("join")
    }
}
