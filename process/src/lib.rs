//! What `sluice-broker` and `sluice-worker` share as processes: the log
//! setup behind `--log-format` (with the OTLP exporter when asked for), and the signal policy (the first SIGTERM or
//! SIGINT drains, the second exits at once).

use std::io::IsTerminal as _;

pub use sluice_trace::export::ExportGuard;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to standard error in `format`, at the level `RUST_LOG` sets
/// (default `info`), and exports job spans over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see [`sluice_trace::export`]),
/// naming the service `service_name` unless `OTEL_SERVICE_NAME` does. Must
/// be called inside a tokio runtime; keep the guard until exit.
///
/// # Errors
/// When the OTLP exporter cannot be built from its variables.
pub fn init_tracing(
    format: LogFormat,
    service_name: &'static str,
) -> Result<Option<ExportGuard>, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (export, guard) = match sluice_trace::export::layer(service_name)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(export)
        .init();
    if guard.is_some() {
        info!("exporting job spans over OTLP");
    }
    Ok(guard)
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
