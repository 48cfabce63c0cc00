//! `sluice-broker`: reads flags (each also an environment variable), loads
//! the TLS files and the token file (refusing to start if they are wrong),
//! sets up logging and signals (SIGHUP reloads both), and runs
//! [`sluice_broker::server::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use humantime::Duration as Human;
use sluice_broker::auth::{Authorizer, ReflectionAccess};
use sluice_broker::backend::postgres::PostgresSettings;
use sluice_broker::backend::redis::RedisSettings;
use sluice_broker::config::{Config, DEFAULT_ADDR, StoreConfig};
use sluice_broker::exposure::{self, Exposure};
use sluice_broker::http::hosts::AllowedHost;
use sluice_broker::memory_limit;
use sluice_broker::server::Listeners;
use sluice_broker::tls::{TlsFiles, TlsSettings};
use sluice_process::LogFormat;
use sluice_queue::{Backoff, QueueConfig};
use tokio::signal::unix::SignalKind;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// tonic allocates and frees codec buffers for every call; with mimalloc the
/// broker spends about 10% less CPU per job than with glibc's malloc
/// (34 vs 38 µs per unary job, `sluice-bench load --api unary`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The defaults of every flag: the broker's and the queue's `Default`s, so
/// that a default is written once (the README's tables are checked against
/// `--help` by a test).
fn defaults() -> Config {
    Config::default()
}

/// The Sluice job broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SLUICE_ADDR", default_value_t = DEFAULT_ADDR)]
    addr: SocketAddr,
    /// Serve Prometheus metrics at GET /metrics, the dashboard at / and its JSON API at /api/v1/ on this address (HTTPS with --tls-cert; off when unset).
    #[arg(long, env = "SLUICE_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// Host names (NAME or NAME:PORT, comma-separated) the HTTP listener answers to, besides its own address and localhost; any other Host gets 403.
    #[arg(long, env = "SLUICE_HTTP_ALLOWED_HOSTS", value_delimiter = ',', value_parser = AllowedHost::parse)]
    http_allowed_hosts: Vec<AllowedHost>,
    /// Attempts for a job that does not set max_attempts (the first try plus retries).
    #[arg(long, env = "SLUICE_MAX_ATTEMPTS", default_value_t = defaults().queue.max_attempts,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(sluice_limits::MAX_ATTEMPTS)))]
    max_attempts: u32,
    /// Per-attempt run limit for a job that does not set timeout.
    #[arg(long, env = "SLUICE_DEFAULT_TIMEOUT", default_value_t = Human::from(defaults().queue.default_timeout))]
    default_timeout: Human,
    /// Lease length for a Lease stream that does not set lease_duration.
    #[arg(long, env = "SLUICE_LEASE_DURATION", default_value_t = Human::from(defaults().queue.lease_duration))]
    lease_duration: Human,
    /// Retry delay after the first failed attempt; doubles per failure.
    #[arg(long, env = "SLUICE_BACKOFF_INITIAL", default_value_t = Human::from(defaults().queue.backoff.initial))]
    backoff_initial: Human,
    /// Longest retry delay, before jitter.
    #[arg(long, env = "SLUICE_BACKOFF_MAX", default_value_t = Human::from(defaults().queue.backoff.max))]
    backoff_max: Human,
    /// Retry delays are spread by up to this fraction either way.
    #[arg(long, env = "SLUICE_BACKOFF_JITTER", default_value_t = defaults().queue.backoff.jitter)]
    backoff_jitter: f64,
    /// How long SUCCEEDED and CANCELLED jobs stay visible.
    #[arg(long, env = "SLUICE_RETENTION", default_value_t = Human::from(defaults().queue.retention))]
    retention: Human,
    /// Most SUCCEEDED and CANCELLED jobs kept at once; the oldest are forgotten first.
    #[arg(long, env = "SLUICE_MAX_RETAINED", default_value_t = defaults().queue.max_retained as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_retained: u64,
    /// Most unfinished (scheduled, ready, leased) jobs per queue; unbounded if unset.
    #[arg(long, env = "SLUICE_MAX_QUEUE_SIZE")]
    max_queue_size: Option<u64>,
    /// Most bytes the jobs may hold (payloads, headers and a fixed cost per
    /// job), e.g. 512MiB or 2GiB; past it Enqueue and RetryJob are refused
    /// with RESOURCE_EXHAUSTED. Default: half the memory limit of the
    /// broker's cgroup, or of the machine.
    #[arg(long, env = "SLUICE_MAX_MEMORY", value_parser = memory_limit::parse_bytes)]
    max_memory: Option<u64>,
    /// Largest payload accepted, in bytes.
    #[arg(long, env = "SLUICE_MAX_PAYLOAD", default_value_t = defaults().max_payload)]
    max_payload: usize,
    /// How long a drain (SIGTERM/SIGINT) waits for leased jobs to be resolved.
    #[arg(long, env = "SLUICE_DRAIN_TIMEOUT", default_value_t = Human::from(defaults().drain_timeout))]
    drain_timeout: Human,
    /// Keep jobs in this directory (created if missing) so that they survive
    /// a restart or a crash; every acknowledged change is fsynced first.
    /// Without it the broker is memory-only.
    #[arg(long, env = "SLUICE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where jobs live: `embedded` (this broker's own queue, on disk with
    /// --data-dir), a PostgreSQL URL, `postgres://user:password@host:port/db`
    /// (`?sslmode=require`, or `verify-full&sslrootcert=ca.pem`, for TLS),
    /// or a Redis URL, `redis://[:password@]host:port/db` (`rediss://` and
    /// `?sslrootcert=ca.pem` for TLS), shared by every broker given the
    /// same URL.
    #[arg(long, env = "SLUICE_STORE", default_value = "embedded")]
    store: String,
    /// With --store redis://: refuse to start unless Redis fsyncs every
    /// write before it answers (appendonly yes, appendfsync always).
    #[arg(long, env = "SLUICE_REDIS_REQUIRE_FSYNC")]
    redis_require_fsync: bool,
    /// Connections each broker keeps to PostgreSQL (with --store postgres://).
    #[arg(long, env = "SLUICE_STORE_POOL_SIZE", default_value_t = 16)]
    store_pool_size: usize,
    /// Serve TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "SLUICE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "SLUICE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM): mutual TLS.
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Require a credential from this file (`ROLE TOKEN [QUEUES]` per line)
    /// on every Broker and Admin call; SIGHUP re-reads it.
    #[arg(long, env = "SLUICE_AUTH_TOKENS")]
    auth_tokens: Option<PathBuf>,
    /// Who may use gRPC reflection.
    #[arg(long, env = "SLUICE_REFLECTION", value_enum, default_value_t = ReflectionAccess::Open)]
    reflection: ReflectionAccess,
    /// HTTP/2 streams (calls) open at once on one connection.
    #[arg(long, env = "SLUICE_MAX_CONCURRENT_STREAMS", default_value_t = defaults().max_concurrent_streams,
          value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: u32,
    /// Lease, LeaseBatches and Work streams open at once, over all connections.
    #[arg(long, env = "SLUICE_MAX_LEASE_STREAMS", default_value_t = defaults().max_lease_streams as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_lease_streams: u64,
    /// Lease, LeaseBatches and Work streams of one credential open at once (with --auth-tokens).
    #[arg(long, env = "SLUICE_MAX_LEASE_STREAMS_PER_CREDENTIAL", default_value_t = defaults().max_lease_streams_per_credential as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_lease_streams_per_credential: u64,
    /// Largest HTTP/2 header list (a call's metadata) accepted, in bytes.
    #[arg(long, env = "SLUICE_MAX_HEADER_LIST_SIZE", default_value_t = defaults().max_header_list_size,
          value_parser = clap::value_parser!(u32).range(1024..))]
    max_header_list_size: u32,
    /// How long a call's request may take to arrive, from its headers; past it, DEADLINE_EXCEEDED.
    #[arg(long, env = "SLUICE_REQUEST_TIMEOUT", default_value_t = Human::from(defaults().request_timeout))]
    request_timeout: Human,
    /// Connections open at once, over the gRPC and HTTP listeners; past it, new ones are closed.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS", default_value_t = defaults().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Connections open at once from one client address; past it, its new ones are closed.
    #[arg(long, env = "SLUICE_MAX_CONNECTIONS_PER_IP", default_value_t = defaults().max_connections_per_ip as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_ip: u64,
    /// Refuse to start (or to reload on SIGHUP) when the token file or the TLS key is readable by other users (a mode wider than 0640), instead of warning.
    #[arg(long, env = "SLUICE_STRICT_PERMISSIONS")]
    strict_permissions: bool,
    /// Log format.
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.backoff_jitter),
            "--backoff-jitter must be between 0 and 1, got {}",
            self.backoff_jitter
        );
        anyhow::ensure!(
            *self.backoff_initial <= *self.backoff_max,
            "--backoff-initial must not exceed --backoff-max"
        );
        anyhow::ensure!(
            !self.request_timeout.is_zero(),
            "--request-timeout must be more than 0"
        );
        for (flag, d) in [
            ("--lease-duration", self.lease_duration),
            ("--default-timeout", self.default_timeout),
        ] {
            if let Err(reason) = sluice_limits::check_run_limit(*d) {
                anyhow::bail!("{flag} {reason}, got {d}");
            }
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsSettings::load(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: self.tls_client_ca.clone(),
                })
                .context("loading the TLS certificate")?,
            ),
            (None, None) if self.tls_client_ca.is_some() => {
                anyhow::bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        let auth = match &self.auth_tokens {
            Some(path) => Authorizer::load(path)?,
            None => Authorizer::open(),
        };
        let reflection = match self.reflection {
            ReflectionAccess::Admin if !auth.is_enabled() => {
                anyhow::bail!("--reflection admin needs --auth-tokens (who is an admin?)")
            }
            access => access,
        };
        let store = match self.store.as_str() {
            _ if self.redis_require_fsync && !self.store.starts_with("redis") => {
                anyhow::bail!("--redis-require-fsync is for --store redis:// or rediss://")
            }
            "embedded" => StoreConfig::Local {
                data_dir: self.data_dir.clone(),
            },
            _ if self.data_dir.is_some() => {
                anyhow::bail!(
                    "--data-dir is for the embedded store: a shared store keeps jobs in its database (give one or the other)"
                )
            }
            url if url.starts_with("redis://") || url.starts_with("rediss://") => {
                StoreConfig::Redis(Box::new(
                    RedisSettings::new(url, self.redis_require_fsync)
                        .map_err(anyhow::Error::msg)?,
                ))
            }
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                if self.store_pool_size == 0 {
                    anyhow::bail!("--store-pool-size must be at least 1");
                }
                StoreConfig::Postgres(Box::new(
                    PostgresSettings::new(url, self.store_pool_size).map_err(anyhow::Error::msg)?,
                ))
            }
            _ => anyhow::bail!(
                "--store must be `embedded`, a postgres:// URL or a redis:// URL (the URL is not repeated here: it may hold a password)"
            ),
        };
        Ok(Config {
            queue: QueueConfig {
                max_attempts: self.max_attempts,
                default_timeout: self.default_timeout.into(),
                lease_duration: self.lease_duration.into(),
                backoff: Backoff {
                    initial: self.backoff_initial.into(),
                    max: self.backoff_max.into(),
                    jitter: self.backoff_jitter,
                },
                retention: self.retention.into(),
                max_retained: usize::try_from(self.max_retained).unwrap_or(usize::MAX),
                max_queue_size: self.max_queue_size,
                max_memory: self.max_memory.or_else(|| {
                    memory_limit::detect().map(memory_limit::MemoryLimit::default_max_memory)
                }),
            },
            max_payload: self.max_payload,
            drain_timeout: self.drain_timeout.into(),
            store,
            auth,
            tls,
            reflection,
            max_concurrent_streams: self.max_concurrent_streams,
            max_lease_streams: usize::try_from(self.max_lease_streams).unwrap_or(usize::MAX),
            max_lease_streams_per_credential: usize::try_from(
                self.max_lease_streams_per_credential,
            )
            .unwrap_or(usize::MAX),
            max_header_list_size: self.max_header_list_size,
            request_timeout: self.request_timeout.into(),
            http_allowed_hosts: self.http_allowed_hosts.clone(),
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            max_connections_per_ip: usize::try_from(self.max_connections_per_ip)
                .unwrap_or(usize::MAX),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Before anything creates a file: nothing the broker writes (its data
    // file, for an instant, before its mode is set) is ever readable by
    // others.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    // Dropped at the end of main: flushes the spans still queued for export.
    let _export = match sluice_process::init_tracing(args.log_format, "sluice-broker") {
        Ok(export) => export,
        Err(e) => {
            eprintln!("sluice-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = format!("{e:#}"), "broker failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args.config()?;
    check_secrets(&config, args.strict_permissions)?;
    raise_file_limit(config.max_connections);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("listening on {}", args.addr))?;
    let http = match args.http_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listening on --http-addr {addr}"))?,
        ),
        None => None,
    };
    let shutdown = CancellationToken::new();
    sluice_process::watch_signals(shutdown.clone()).context("installing signal handlers")?;
    // A write past the file-size limit (RLIMIT_FSIZE) raises SIGXFSZ, which
    // kills a process mid-write by default. Handled (and ignored), the write
    // fails with EFBIG instead and the store stops the broker cleanly, as
    // PostgreSQL does.
    let _file_size_signal = tokio::signal::unix::signal(SignalKind::from_raw(
        nix::sys::signal::Signal::SIGXFSZ as i32,
    ))
    .context("installing the SIGXFSZ handler")?;
    match config.queue.max_memory {
        Some(max_memory) => info!(max_memory, "jobs may hold up to --max-memory bytes"),
        None => {
            warn!("no memory limit found for the --max-memory default: jobs may use all memory")
        }
    }
    watch_reload(&config, args.strict_permissions).context("installing the SIGHUP handler")?;
    let exposure = Exposure {
        addr: args.addr,
        tls: config.tls.is_some(),
        client_certs: config.tls.as_ref().is_some_and(TlsSettings::mutual),
        tokens: config.auth.is_enabled(),
    };
    for warning in exposure.warnings() {
        warn!(addr = %args.addr, "{warning}");
    }
    info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "sluice broker listening");
    let listeners = Listeners {
        grpc: listener,
        http,
    };
    sluice_broker::server::run(listeners, config, shutdown).await?;
    Ok(())
}

/// The secret files of `config` (the token file, the TLS key) whose mode
/// lets other users read them: warned about, or with `strict` refused.
///
/// # Errors
/// With `strict`, when one is readable by others.
fn check_secrets(config: &Config, strict: bool) -> anyhow::Result<()> {
    let loose = exposure::loose_secrets(secret_files(config));
    if strict && !loose.is_empty() {
        let all: Vec<String> = loose.iter().map(ToString::to_string).collect();
        anyhow::bail!("--strict-permissions: {}", all.join("; "));
    }
    for file in loose {
        warn!("{file}");
    }
    Ok(())
}

fn secret_files(config: &Config) -> Vec<(&'static str, &std::path::Path)> {
    let mut files = Vec::new();
    if let Some(path) = config.auth.path() {
        files.push(("--auth-tokens", path));
    }
    if let Some(tls) = &config.tls {
        files.push(("--tls-key", tls.key_path()));
    }
    files
}

/// Descriptors the broker needs besides its connections: the listeners,
/// the data file, PostgreSQL connections, logs.
const SPARE_FILES: u64 = 256;

/// Raises the soft limit on open files to the hard one (as Go's runtime
/// does), so that `--max-connections` can be reached where the default
/// soft limit (often 1024) is lower; warns if even the hard limit is.
fn raise_file_limit(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let wanted = u64::try_from(max_connections)
        .unwrap_or(u64::MAX)
        .saturating_add(SPARE_FILES);
    if limit < wanted {
        warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is below --max-connections plus {SPARE_FILES}: raise it (LimitNOFILE=) or lower --max-connections"
        );
    }
}

/// On SIGHUP, re-reads the token file and the TLS files: new requests and
/// connections use them; a failed reload keeps the old ones and says why.
/// The files' modes are checked again first: with `strict`, a secret file
/// others may read is not reloaded.
fn watch_reload(config: &Config, strict: bool) -> std::io::Result<()> {
    let mut hangup = tokio::signal::unix::signal(SignalKind::hangup())?;
    let config = config.clone();
    tokio::spawn(async move {
        let (auth, tls) = (&config.auth, &config.tls);
        while hangup.recv().await.is_some() {
            if let Err(e) = check_secrets(&config, strict) {
                warn!(error = %e, "SIGHUP: nothing reloaded, the old credentials and certificate stay");
                continue;
            }
            if auth.is_enabled() {
                match auth.reload() {
                    Ok(credentials) => info!(credentials, "SIGHUP: token file reloaded"),
                    Err(e) => {
                        warn!(error = %e, "SIGHUP: token file not reloaded, the old credentials stay")
                    }
                }
            }
            if let Some(tls) = tls {
                match tls.reload() {
                    Ok(()) => info!("SIGHUP: TLS certificate reloaded; new connections use it"),
                    Err(e) => {
                        warn!(error = %e, "SIGHUP: TLS certificate not reloaded, the old one stays")
                    }
                }
            }
            if !auth.is_enabled() && tls.is_none() {
                info!("SIGHUP: nothing to reload (no --auth-tokens, no TLS)");
            }
        }
    });
    Ok(())
}
