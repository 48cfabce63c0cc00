//! `sluice-kafka`: reads Kafka topics into Sluice jobs, exactly once.
//!
//! - `sluice-kafka run --config FILE`: a member of the config's source
//!   group (run several: they share the partitions);
//! - `sluice-kafka reset --config FILE --topic T --to earliest|latest|TIME`:
//!   moves the group's positions in T's partitions (replay or skip);
//! - `sluice-kafka check --config FILE`: checks the file and exits.
//!
//! The broker connection's options are the worker's and the CLI's
//! (`--broker`, `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`,
//! `SLUICE_TOKEN`); Kafka's are in the file. The README's Kafka section
//! says more.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use prometheus_client::registry::Registry;
use sluice_process::LogFormat;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_worker::client::security::Security;
use sluice_worker::defaults;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use sluice_kafka::config::{self, Checked};
use sluice_kafka::kafka;
use sluice_kafka::metrics::{self, SourceMetrics};
use sluice_kafka::source::Source;

#[derive(Debug, Parser)]
#[command(
    name = "sluice-kafka",
    version,
    about = "Reads Kafka topics into Sluice jobs, exactly once"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a member of the config's source group until SIGTERM or SIGINT.
    Run(RunArgs),
    /// Moves the group's positions in a topic's partitions (replay or skip).
    Reset(ResetArgs),
    /// Checks the config file and exits.
    Check {
        /// The config file (TOML).
        #[arg(long, env = "SLUICE_KAFKA_CONFIG")]
        config: PathBuf,
    },
}

/// How to reach the broker: the worker's options.
#[derive(Debug, Clone, Args)]
struct BrokerArgs {
    /// The broker's URL.
    #[arg(long, env = "SLUICE_BROKER", default_value = defaults::BROKER_URL)]
    broker: String,
    /// PEM file of the CA certificates to trust for the broker (https:// only).
    #[arg(long, env = "SLUICE_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// PEM file of a client certificate (mTLS); with --tls-key.
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
    /// File whose one line is the token (else SLUICE_TOKEN, if set): a
    /// producer's for `run`, an admin's of every queue for `reset`.
    #[arg(long, env = "SLUICE_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The config file (TOML).
    #[arg(long, env = "SLUICE_KAFKA_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    /// This member's id in the group (unique among the running members);
    /// default: host name and process id.
    #[arg(long, env = "SLUICE_KAFKA_MEMBER_ID")]
    member_id: Option<String>,
    /// Serve GET /metrics and GET /healthz here.
    #[arg(long, env = "SLUICE_KAFKA_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// How long the drain may take to finish the commits in flight.
    #[arg(long, env = "SLUICE_KAFKA_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    drain_timeout: Duration,
    /// Log lines as text or JSON.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct ResetArgs {
    /// The config file (TOML): Kafka and the source group.
    #[arg(long, env = "SLUICE_KAFKA_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    broker: BrokerArgs,
    /// The topic whose partitions move (one of the config's).
    #[arg(long)]
    topic: String,
    /// Only these partitions (default: all).
    #[arg(long = "partition")]
    partitions: Vec<i32>,
    /// earliest, latest, or an RFC 3339 time (the first record at or after it).
    #[arg(long)]
    to: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-kafka: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Check { config } => load(&config).map(|c| {
            println!(
                "{}: {} topics, source group {:?}",
                config.display(),
                c.topics.len(),
                c.group
            );
        }),
        Command::Reset(args) => runtime.block_on(reset(args)),
        Command::Run(args) => {
            let export = match runtime
                .block_on(async { sluice_process::init_tracing(args.log_format, "sluice-kafka") })
            {
                Ok(export) => export,
                Err(e) => {
                    eprintln!("sluice-kafka: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(run(args));
            if let Err(e) = &result {
                error!(error = format!("{e:#}"), "sluice-kafka failed");
            }
            drop(export);
            result
        }
    };
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-kafka: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<Checked> {
    config::load(path, |name| std::env::var(name).ok()).map_err(anyhow::Error::msg)
}

/// The broker's channel and bearer, as the worker makes them.
async fn connect(
    args: &BrokerArgs,
) -> anyhow::Result<(tonic::transport::Channel, sluice_proto::Bearer)> {
    let security = Security::from_options(
        &args.broker,
        args.tls_ca.clone(),
        args.tls_cert.clone().zip(args.tls_key.clone()),
        args.token_file.as_deref(),
    )?;
    if let Some(warning) = security.token_in_the_clear(&args.broker) {
        warn!("{warning}");
    }
    let endpoint =
        sluice_worker::client::endpoint(&args.broker, &security)?.timeout(Duration::from_secs(30));
    let bearer = sluice_worker::client::bearer(&security)?;
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to the broker at {}", args.broker))?;
    Ok((channel, bearer))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    let member = args.member_id.unwrap_or_else(default_member_id);
    sluice_limits::check_name(&member).map_err(|e| anyhow::anyhow!("--member-id {e}"))?;
    let kafka = kafka::connect(&config).await?;
    let (channel, bearer) = connect(&args.broker).await?;
    let broker = BrokerClient::with_interceptor(channel, bearer);
    let mut registry = Registry::with_prefix("sluice_kafka");
    let metrics = SourceMetrics::register(&mut registry);
    let stop_http = CancellationToken::new();
    if let Some(addr) = args.http_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on --http-addr {addr}"))?;
        let http_addr = listener.local_addr()?;
        info!(%http_addr, "metrics at GET /metrics, health at GET /healthz");
        let healthy_for = i64::try_from(config.lease.as_millis()).unwrap_or(i64::MAX);
        tokio::spawn(metrics::serve(
            listener,
            registry,
            metrics.clone(),
            healthy_for,
            stop_http.clone(),
        ));
    }
    let shutdown = CancellationToken::new();
    sluice_process::watch_signals(shutdown.clone()).context("installing signal handlers")?;
    let result = Source::new(config, kafka, broker, member, metrics)
        .run(shutdown, args.drain_timeout)
        .await;
    stop_http.cancel();
    result
}

fn default_member_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".to_owned());
    format!("{host}:{}", std::process::id())
}

async fn reset(args: ResetArgs) -> anyhow::Result<()> {
    let config = load(&args.config)?;
    anyhow::ensure!(
        config.topic(&args.topic).is_some(),
        "--topic {:?} is not one of the config's topics",
        args.topic
    );
    let start = config::parse_start(&args.to).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    let kafka = kafka::connect(&config).await?;
    let partitions: Vec<i32> = kafka::partitions(&kafka, &config)
        .await?
        .into_iter()
        .filter(|(t, p)| {
            *t == args.topic && (args.partitions.is_empty() || args.partitions.contains(p))
        })
        .map(|(_, p)| p)
        .collect();
    for p in &args.partitions {
        anyhow::ensure!(
            partitions.contains(p),
            "topic {:?} has no partition {p}",
            args.topic
        );
    }
    let mut positions = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let pc = kafka::partition(&kafka, &args.topic, partition).await?;
        let offset = kafka::start_offset(&pc, start, config.fetch_bytes).await?;
        positions.push(pb::SourcePosition {
            stream: args.topic.clone(),
            partition,
            position: Some(offset),
        });
    }
    let (channel, bearer) = connect(&args.broker).await?;
    let mut admin = AdminClient::with_interceptor(channel, bearer);
    let set = admin
        .set_source_positions(pb::SetSourcePositionsRequest {
            group: config.group.clone(),
            positions,
        })
        .await
        .map_err(|s| anyhow::anyhow!("SetSourcePositions: {}", s.message()))?
        .into_inner();
    for p in set.partitions {
        println!(
            "{} partition {}: position {} (epoch {})",
            p.stream,
            p.partition,
            p.position
                .map_or_else(|| "none".to_owned(), |at| at.to_string()),
            p.epoch
        );
    }
    Ok(())
}
