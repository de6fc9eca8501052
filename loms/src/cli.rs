//! The command line: serving (the default), migrating, and the operator's outbox commands.

use clap::{Parser, Subcommand};

use crate::config::Overrides;

/// LOMS: the order service.
#[derive(Parser)]
#[command(version)]
pub struct Cli {
    #[command(flatten)]
    pub overrides: Overrides,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
    /// Serve gRPC and HTTP and relay the outbox (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// The outbox's parked events: those the broker refused for good, with their orders'
    /// later events behind them.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// List the parked events.
    Parked,
    /// Put an order's parked events back into the outbox, in their order.
    Retry { order_id: i64 },
    /// Discard an order's parked events (each is logged).
    Drop { order_id: i64 },
}

/// Runs an operator's outbox command against `pool`, printing what it lists.
pub async fn outbox(pool: &sqlx::PgPool, command: OutboxCommand) -> anyhow::Result<()> {
    use crate::outbox::store;
    match command {
        OutboxCommand::Parked => {
            let parked = store::parked(pool).await?;
            println!("outbox_id\torder_id\tevent_id\tbytes\tcreated_at\tparked_at\terror");
            for p in &parked {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.id,
                    p.key,
                    p.event_id.as_deref().unwrap_or("-"),
                    p.bytes,
                    p.created_at.to_rfc3339(),
                    p.parked_at.to_rfc3339(),
                    p.error
                );
            }
            tracing::info!(parked = parked.len(), "parked events listed");
        }
        OutboxCommand::Retry { order_id } => {
            let queued = store::retry(pool, &order_id.to_string()).await?;
            tracing::info!(
                order_id,
                queued,
                "parked events put back into the outbox, in order"
            );
        }
        OutboxCommand::Drop { order_id } => {
            let dropped = store::drop_parked(pool, &order_id.to_string()).await?;
            for p in &dropped {
                tracing::warn!(order_id, outbox_id = p.id, event_id = p.event_id.as_deref().unwrap_or("-"), error = %p.error, "parked event discarded");
            }
            tracing::info!(order_id, dropped = dropped.len(), "parked events discarded");
        }
    }
    Ok(())
}
