//! The shutdown signal: the first SIGTERM or SIGINT cancels the token, a second one stops the
//! process at once (an operator pressing Ctrl-C twice means it).

use tokio_util::sync::CancellationToken;

/// Exit code after a second signal: interrupted.
const HARD_STOP_EXIT_CODE: i32 = 130;

/// Watches for SIGTERM and SIGINT in a task of its own and cancels `shutdown` on the first.
pub fn cancel_on_signal(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("signal handlers could not be installed; stop with SIGKILL");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Cancel first: stopping never depends on a log line being written.
        shutdown.cancel();
        tracing::info!(
            signal = name,
            "shutting down; a second signal stops at once"
        );
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "second signal: stopping now");
        std::process::exit(HARD_STOP_EXIT_CODE);
    })
}
