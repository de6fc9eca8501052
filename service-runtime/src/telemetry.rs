//! Logging: readable lines by default, JSON lines by a switch; `RUST_LOG` overrides the filter.
//!
//! A log line that cannot be written (the reader of stdout is gone, the disk is full) is dropped
//! and counted, never reported as an error: tracing-subscriber would report it on stderr, often
//! the same dead pipe, and that report panics the task that was logging. Nothing in a service may
//! hang or crash because nobody reads its logs.

use std::io::Write;
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

static DROPPED_LINES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Registers the count of log lines dropped because stdout could not take them.
pub fn register_dropped_lines(registry: &mut Registry, prefix: &str) {
    registry.register(
        format!("{prefix}_log_lines_dropped"),
        "Log lines dropped because stdout could not take them.",
        DROPPED_LINES.clone(),
    );
}

/// Stdout that drops what it cannot write.
#[derive(Clone, Copy, Default)]
pub struct DroppingStdout;

impl Write for DroppingStdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // One formatted event arrives as one buffer: it is written whole or dropped whole.
        if std::io::stdout().lock().write_all(buf).is_err() {
            DROPPED_LINES.inc();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stdout().lock().flush();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for DroppingStdout {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        *self
    }
}

pub fn init(json: bool, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .log_internal_errors(false)
        .with_writer(DroppingStdout);
    // try_init: a second call (several tests in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
