use clap::Parser;
use notifier::config::{Flags, Settings};
use notifier::startup::Application;
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
    settings.warn_renamed();
    tracing::info!(?settings, "configuration");
    let shutdown = CancellationToken::new();
    service_runtime::shutdown::cancel_on_signal(shutdown.clone());
    Application::build(settings).await?.run(shutdown).await?;
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(())
}
