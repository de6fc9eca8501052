use clap::Parser;
use loms::cli::{Cli, Command};
use loms::config::Settings;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.overrides, None)?;
    // Request lines are diagnostics: never worth a request's time.
    let telemetry = service_runtime::telemetry::init(
        &settings
            .log
            .options("loms", service_runtime::telemetry::Logging::OffThePath),
    );
    tracing::info!(?settings, "configuration");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            loms::database::migrate_safely(&settings.database).await?;
            tracing::info!("migrations applied");
        }
        Command::Outbox { command } => {
            let pool = loms::database::connect(&settings.database).await?;
            loms::cli::outbox(&pool, command).await?;
        }
        Command::Serve => {
            let app = loms::startup::Application::build(settings).await?;
            let shutdown = CancellationToken::new();
            service_runtime::shutdown::cancel_on_signal(shutdown.clone());
            app.run(shutdown).await?;
            tracing::info!("stopped");
        }
    }
    telemetry.shutdown();
    Ok(())
}
