use clap::{Parser, Subcommand};
use loms::config::{Overrides, Settings};
use tokio_util::sync::CancellationToken;

/// LOMS: the order service.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP and relay the outbox (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(&cli.overrides, None)?;
    let telemetry = service_runtime::telemetry::init(&service_runtime::telemetry::Options {
        service: "loms",
        json: settings.log.json,
        filter: &settings.log.filter,
        otlp_endpoint: settings.log.otlp_endpoint.as_deref(),
    });
    tracing::info!(?settings, "configuration");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            let pool = loms::startup::connect(&settings.database).await?;
            loms::startup::migrate(&pool).await?;
            tracing::info!("migrations applied");
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
