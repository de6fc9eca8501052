//! Health that follows the dependencies: NOT_SERVING (gRPC health, overall and `loms.Loms`) and
//! 503 on `/readyz` while PostgreSQL does not answer or will not take writes (a standby, or a
//! primary demoted under a stale address), SERVING and 200 again once it does, and
//! NOT_SERVING from the moment shutdown begins, a drain delay before the listeners close.
//! `/livez` says only that the process answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

/// How often PostgreSQL is asked, and how long an answer may take.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this replica can serve, as `/readyz` and gRPC health tell it.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, ready: bool) -> bool {
        self.0.swap(ready, Ordering::Relaxed) != ready
    }
}

async fn publish(reporter: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status("", status).await;
    reporter
        .set_service_status(
            <api::LomsServer<crate::service::LomsService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}

/// Probes PostgreSQL once, so that health is known before the listeners serve, then every
/// second until `shutdown`, after which it reports NOT_SERVING for good.
pub async fn watch(
    pool: PgPool,
    reporter: HealthReporter,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    probe(&pool, &reporter, &readiness, true).await;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PROBE_EVERY);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => probe(&pool, &reporter, &readiness, false).await,
                _ = shutdown.cancelled() => break,
            }
        }
        readiness.set(false);
        publish(&reporter, false).await;
        tracing::info!("health: shutting down; NOT_SERVING");
    })
}

/// Whether a session of `pool` may write: not in recovery, not read-only.
const WRITABLE: &str =
    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off'";

/// Asks PostgreSQL; a change (or, `first`, any answer) is published and logged.
async fn probe(pool: &PgPool, reporter: &HealthReporter, readiness: &Readiness, first: bool) {
    let asked = sqlx::query_scalar::<_, bool>(WRITABLE).fetch_one(pool);
    let answered = matches!(
        tokio::time::timeout(PROBE_TIMEOUT, asked).await,
        Ok(Ok(true))
    );
    if readiness.set(answered) || first {
        publish(reporter, answered).await;
        if answered {
            tracing::info!("health: PostgreSQL answers; SERVING");
        } else {
            tracing::warn!(
                "health: PostgreSQL does not answer, or will not take writes; NOT_SERVING"
            );
        }
    }
}
