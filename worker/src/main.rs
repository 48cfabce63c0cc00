//! `sluice-worker`: runs shell commands as handlers (`--exec TYPE=COMMAND`)
//! for jobs leased from a Sluice broker. Reads flags (each also an
//! environment variable), sets up logging and signals, and runs the
//! [`sluice_worker::Worker`].
//!
//! The token comes from the `SLUICE_TOKEN` environment variable (so that it
//! stays out of `ps`) or from `--token-file`; never from a flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::http::header;
use axum::routing::get;
use clap::Parser;
use humantime::Duration as Human;
use prometheus_client::registry::Registry;
use sluice_process::LogFormat;
use sluice_worker::client::security::token_from_env_or_file;
use sluice_worker::exec::ExecHandler;
use sluice_worker::metrics::{OPENMETRICS_CONTENT_TYPE, WorkerMetrics, openmetrics_text};
use sluice_worker::{Worker, defaults, supervisor, timing};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// A Sluice worker that runs a shell command for each job.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    after_help = "The token sent to the broker as `authorization: Bearer TOKEN` is read from \
                  the SLUICE_TOKEN environment variable, or from --token-file; not both."
)]
struct Args {
    /// The broker's URL.
    #[arg(long, env = "SLUICE_BROKER", default_value = defaults::BROKER_URL)]
    broker: String,
    /// Queues to take jobs from, comma-separated.
    #[arg(
        long,
        env = "SLUICE_QUEUES",
        value_delimiter = ',',
        default_value = sluice_limits::DEFAULT_QUEUE
    )]
    queues: Vec<String>,
    /// Jobs run at once.
    #[arg(long, env = "SLUICE_CONCURRENCY", default_value_t = defaults::CONCURRENCY)]
    concurrency: usize,
    /// Lease asked for each job; heartbeats extend it every third of it.
    #[arg(long, env = "SLUICE_LEASE_DURATION", default_value_t = Human::from(defaults::LEASE_DURATION))]
    lease_duration: Human,
    /// How long SIGTERM/SIGINT waits for running jobs before releasing them.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value_t = Human::from(defaults::DRAIN_TIMEOUT))]
    drain_timeout: Human,
    /// Names this worker in the broker (default: hostname-pid).
    #[arg(long, env = "SLUICE_WORKER_ID")]
    worker_id: Option<String>,
    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Runs COMMAND with `sh -c` for each job of TYPE. Repeatable; in the
    /// environment variable, one TYPE=COMMAND per line.
    #[arg(long = "exec", env = "SLUICE_EXEC", value_name = "TYPE=COMMAND", value_delimiter = '\n', value_parser = parse_exec)]
    exec: Vec<(String, String)>,
    /// PEM file of the CA certificates to trust for the broker's certificate,
    /// instead of the system's roots (needs an https:// --broker).
    #[arg(long, env = "SLUICE_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM file of this worker's client certificate, for a broker that
    /// requires one (mTLS); with --tls-key.
    #[arg(
        long,
        env = "SLUICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert.
    #[arg(
        long,
        env = "SLUICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// File whose one line is the token sent to the broker (else the
    /// SLUICE_TOKEN environment variable, if set).
    #[arg(long, env = "SLUICE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve Prometheus metrics at GET /metrics on this address (plain HTTP; off when unset).
    #[arg(long, env = "SLUICE_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
}

fn parse_exec(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((job_type, command)) if !job_type.is_empty() && !command.trim().is_empty() => {
            Ok((job_type.to_owned(), command.to_owned()))
        }
        _ => Err(format!("expected TYPE=COMMAND, got {s:?}")),
    }
}

fn main() -> ExitCode {
    // A handler's supervisor is this same executable: it never returns from
    // here. Exec handlers cannot be built before this call.
    supervisor::run_if_requested();
    // Before the token is read: the handlers run as this user, and must
    // not read it from /proc/PID/environ (see `hardening`).
    if let Err(e) = sluice_worker::hardening::hide_from_handlers() {
        eprintln!("sluice-worker: {e}");
        return ExitCode::FAILURE;
    }
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel lives on the runtime.
    let export = match runtime
        .block_on(async { sluice_process::init_tracing(args.log_format, "sluice-worker") })
    {
        Ok(export) => export,
        Err(e) => {
            eprintln!("sluice-worker: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Flushes the spans still queued, while the runtime still runs.
    drop(export);
    // Bounded: a blocking task (a DNS lookup) must not hold up the exit.
    runtime.shutdown_timeout(timing::EXIT_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "worker failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.exec.is_empty(),
        "no handlers: give at least one --exec TYPE=COMMAND (or SLUICE_EXEC), \
         e.g. --exec 'email=./send-email.sh'; a worker without handlers could run no job"
    );
    let mut builder = Worker::builder(&args.broker)
        .queues(args.queues)
        .concurrency(args.concurrency)
        .lease_duration(args.lease_duration.into())
        .drain_timeout(args.drain_timeout.into());
    if let Some(id) = args.worker_id {
        builder = builder.worker_id(id);
    }
    if let Some(ca) = args.tls_ca {
        builder = builder.tls_ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        builder = builder.tls_identity_files(cert, key);
    }
    if let Some(token) = token_from_env_or_file(args.token_file.as_deref())? {
        builder = builder.token(token);
    }
    for (job_type, command) in args.exec {
        info!(job_type, command, "exec handler");
        let handler = ExecHandler::new(command)
            .with_context(|| format!("the exec handler of {job_type:?}"))?;
        builder = builder.handler(job_type, handler);
    }
    let stop_http = CancellationToken::new();
    if let Some(addr) = args.http_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on --http-addr {addr}"))?;
        let mut registry = Registry::with_prefix("sluice_worker");
        builder = builder.metrics(WorkerMetrics::register(&mut registry));
        let http_addr = listener.local_addr()?;
        if !http_addr.ip().is_loopback() {
            warn!(%http_addr, "serving metrics on a non-loopback address: anyone who can reach it can read them");
        }
        info!(%http_addr, "metrics at GET /metrics");
        tokio::spawn(serve_metrics(listener, registry, stop_http.clone()));
    }
    let worker = builder.build()?;
    let shutdown = CancellationToken::new();
    sluice_process::watch_signals(shutdown.clone()).context("installing signal handlers")?;
    // Metrics stay up through the drain.
    let result = worker.run(shutdown).await;
    stop_http.cancel();
    result?;
    Ok(())
}

/// Serves `registry` as OpenMetrics text at `GET /metrics` until `stop`.
async fn serve_metrics(listener: TcpListener, registry: Registry, stop: CancellationToken) {
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                    openmetrics_text(&registry),
                )
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "the metrics listener failed; jobs go on");
    }
}
