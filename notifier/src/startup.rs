//! Builds the notifier from settings; `main` and the tests run the very same code.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::consumer::Notifier;
use crate::metrics::Metrics;

/// An admin connection from which nothing arrived for this long is closed.
const ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Application {
    notifier: Notifier,
    admin: Option<TcpListener>,
    metrics: Metrics,
}

impl Application {
    /// Checks the settings, builds the consumer and the dead-letter producer (a property
    /// librdkafka refuses fails here, with its reason) and binds the admin listener when one is
    /// configured (port 0 picks a free one; an address that cannot be bound fails the start).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        service_runtime::config::check(&settings)?;
        let admin = match &settings.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the admin listener to {addr}"))?,
            ),
            None => None,
        };
        let metrics = Metrics::default();
        let notifier = Notifier::new(settings, metrics.clone())?;
        Ok(Self {
            notifier,
            admin,
            metrics,
        })
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener has an address"))
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Consumes until `shutdown`, then commits, leaves the group and closes the admin listener.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            notifier,
            admin,
            metrics,
        } = self;
        let admin_stop = CancellationToken::new();
        let admin = admin.map(|listener| {
            tracing::info!(addr = %listener.local_addr().expect("bound listener has an address"), "admin listener serving");
            tokio::spawn(service_runtime::admin::serve(
                listener,
                metrics.clone(),
                ADMIN_IDLE_TIMEOUT,
                metrics.listeners(),
                service_runtime::http::Timeouts::default(),
                admin_stop.clone(),
            ))
        });
        let consumed = notifier.run(shutdown).await;
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        consumed
    }
}
