//! What `sluice-broker` and `sluice-worker` share as processes: the log
//! setup behind `--log-format`, and the signal policy (the first SIGTERM or
//! SIGINT drains, the second exits at once).

use std::io::IsTerminal as _;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to standard error in `format`, at the level `RUST_LOG` sets (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The exit status after a second signal: 128 + SIGINT, as shells report an interrupt.
pub const FORCED_EXIT: i32 = 130;

/// Cancels `shutdown` on the first SIGTERM or SIGINT; exits at once with
/// [`FORCED_EXIT`] on the second. Must be called inside a tokio runtime.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn watch_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        for n in 0.. {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            if n == 0 {
                info!(
                    signal = name,
                    "shutdown requested: draining (send again to exit at once)"
                );
                shutdown.cancel();
            } else {
                error!(signal = name, "second signal: exiting without draining");
                std::process::exit(FORCED_EXIT);
            }
        }
    });
    Ok(())
}
