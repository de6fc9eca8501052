//! Log lines that never hold the service: stdout that drops what it cannot write, and a bounded
//! buffer in front of it for the services whose lines must stay off the request path.

use std::io::Write;
use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tracing_subscriber::fmt::MakeWriter;

static DROPPED_LINES: LazyLock<Counter> = LazyLock::new(Counter::default);
/// The off-the-path writer's count of lines its full buffer turned away, once there is one.
static BUFFER_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Log lines dropped: stdout could not take them, or the buffer in front of it was full.
#[derive(Debug)]
struct DroppedLines;

impl prometheus_client::metrics::TypedMetric for DroppedLines {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Counter;
}

impl prometheus_client::encoding::EncodeMetric for DroppedLines {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let full = BUFFER_DROPS.get().map_or(0, |c| c.dropped_lines() as u64);
        encoder.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &(DROPPED_LINES.get() + full),
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Counter
    }
}

/// Registers the count of log lines dropped because stdout could not take them.
pub fn register_dropped_lines(registry: &mut Registry, prefix: &str) {
    registry.register(
        format!("{prefix}_log_lines_dropped"),
        "Log lines dropped because stdout (or the buffer in front of it) could not take them.",
        DroppedLines,
    );
}

/// Lines the off-the-path writer holds at most before it drops.
const LOG_BUFFER_LINES: usize = 4_096;

/// How a service's log lines reach stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logging {
    /// Written by the thread that logs: a stalled reader holds it.
    InLine,
    /// Written by a thread of its own through a bounded buffer; dropped and counted when full.
    OffThePath,
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

/// Where log lines go: stdout in line, or through a bounded buffer that drops when full.
pub(super) fn log_writer(
    logging: Logging,
) -> (
    tracing_subscriber::fmt::writer::BoxMakeWriter,
    Option<tracing_appender::non_blocking::WorkerGuard>,
) {
    match logging {
        Logging::InLine => (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(DroppingStdout),
            None,
        ),
        Logging::OffThePath => {
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(true)
                .buffered_lines_limit(LOG_BUFFER_LINES)
                .thread_name("log-writer")
                .finish(DroppingStdout);
            let _ = BUFFER_DROPS.set(writer.error_counter());
            (
                tracing_subscriber::fmt::writer::BoxMakeWriter::new(writer),
                Some(guard),
            )
        }
    }
}
