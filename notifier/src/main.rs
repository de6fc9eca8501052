use clap::Parser;
use notifier::config::{Flags, Settings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load(&Flags::parse(), None)?;
    let telemetry = service_runtime::telemetry::init(&service_runtime::telemetry::Options {
        service: "notifier",
        json: settings.log_json,
        filter: &settings.log_filter,
        otlp_endpoint: settings.otlp_endpoint.as_deref(),
        // The event line is the delivery: a stalled reader holds consumption back.
        logging: service_runtime::telemetry::Logging::InLine,
    });
    tracing::info!(?settings, "configuration");

    let shutdown = CancellationToken::new();
    service_runtime::shutdown::cancel_on_signal(shutdown.clone());
    let metrics = notifier::metrics::Metrics::default();
    if let Some(addr) = settings.metrics_addr.clone() {
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
