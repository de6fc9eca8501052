use clap::Parser;
use notifier::config::{Flags, Settings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(&Flags::parse(), None)?;
    // The event line is the delivery: a stalled reader holds consumption back.
    let telemetry = service_runtime::telemetry::init(
        &settings
            .log
            .options("notifier", service_runtime::telemetry::Logging::InLine),
    );
    for (old, new) in &settings.renamed {
        tracing::warn!(
            old,
            new,
            "configuration: {old} is an old name, read as {new}; use {new}"
        );
    }
    tracing::info!(?settings, "configuration");

    let shutdown = CancellationToken::new();
    service_runtime::shutdown::cancel_on_signal(shutdown.clone());
    let metrics = notifier::metrics::Metrics::default();
    if let Some(addr) = settings.admin_addr.clone() {
        let (metrics, shutdown) = (metrics.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = notifier::metrics::serve(&addr, metrics, shutdown).await {
                tracing::error!(error = %e, "metrics server failed");
            }
        });
    }
    notifier::consumer::Notifier::new(settings, metrics)?
        .run(shutdown)
        .await?;
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(())
}
