//! The connection options (`--broker`, `--tls-ca`, `--tls-cert`,
//! `--tls-key`, `--token-file`, `SLUICE_TOKEN`), named, defaulted and
//! checked exactly as the `sluice-worker` binary's: the TLS material and
//! the token are loaded by the worker library's own code
//! ([`sluice_worker::client::security`]), and the endpoint and bearer
//! interceptor are the worker's ([`sluice_worker::client::endpoint`]).
//!
//! Connecting is eager: a broker that cannot be reached is one clear
//! [`CliError::Unreachable`] before any command runs, instead of a
//! transport error out of the first call.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use sluice_proto::Bearer;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_worker::WorkerError;
use sluice_worker::client::security::Security;
use sluice_worker::defaults;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::CliError;

/// Longest one call may take; the CLI never waits on a broker for longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest message accepted from the broker (a page of jobs with payloads).
const MAX_MESSAGE: usize = 256 << 20;

/// How to reach the broker: the worker's options, global to every command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The broker's URL.
    #[arg(long, global = true, env = "SLUICE_BROKER", default_value = defaults::BROKER_URL)]
    pub broker: String,
    /// PEM file of the CA certificates to trust for the broker's certificate,
    /// instead of the system's roots (needs an https:// --broker).
    #[arg(long, global = true, env = "SLUICE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// PEM file of a client certificate, for a broker that requires one
    /// (mTLS); with --tls-key.
    #[arg(
        long,
        global = true,
        env = "SLUICE_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the private key of --tls-cert.
    #[arg(
        long,
        global = true,
        env = "SLUICE_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// File whose one line is the token sent to the broker (else the
    /// SLUICE_TOKEN environment variable, if set).
    #[arg(long, global = true, env = "SLUICE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// A channel with the token on every call.
pub type Authed = InterceptedService<Channel, Bearer>;

/// The broker's two services over one connection.
#[derive(Clone)]
pub struct Connection {
    /// `sluice.v1.Admin`.
    pub admin: AdminClient<Authed>,
    /// `sluice.v1.Broker`.
    pub broker: BrokerClient<Authed>,
}

impl Connection {
    /// Admin.Stats.
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn stats(&mut self) -> Result<pb::StatsResponse, CliError> {
        self.admin
            .stats(pb::StatsRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| CliError::from_status(&s))
    }

    /// Admin.ListWorkers: the open lease streams.
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn workers(&mut self) -> Result<Vec<pb::WorkerInfo>, CliError> {
        self.admin
            .list_workers(pb::ListWorkersRequest {})
            .await
            .map(|r| r.into_inner().workers)
            .map_err(|s| CliError::from_status(&s))
    }

    /// Admin.ListJobs: the first `n` jobs running now (LEASED), of every queue.
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn running_jobs(&mut self, n: u32) -> Result<Vec<pb::Job>, CliError> {
        self.admin
            .list_jobs(pb::ListJobsRequest {
                state: pb::JobState::Leased.into(),
                page_size: n,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().jobs)
            .map_err(|s| CliError::from_status(&s))
    }

    /// Admin.ListSchedules: the `n` schedules that fire soonest.
    ///
    /// # Errors
    /// The broker's refusal.
    pub async fn soonest_schedules(&mut self, n: u32) -> Result<Vec<pb::Schedule>, CliError> {
        self.admin
            .list_schedules(pb::ListSchedulesRequest { soonest: n })
            .await
            .map(|r| r.into_inner().schedules)
            .map_err(|s| CliError::from_status(&s))
    }
}

/// Settings that cannot work are a usage error, named as the worker names them.
fn usage(e: WorkerError) -> CliError {
    CliError::Usage(e.to_string())
}

/// Connects to the broker of `args`.
///
/// # Errors
/// [`CliError::Usage`] for unusable TLS files, token or URL;
/// [`CliError::Unreachable`] when no connection can be made.
pub async fn connect(args: &ConnectArgs) -> Result<Connection, CliError> {
    let security = Security::from_options(
        &args.broker,
        args.tls_ca.clone(),
        args.tls_cert.clone().zip(args.tls_key.clone()),
        args.token_file.as_deref(),
    )
    .map_err(usage)?;
    if let Some(warning) = security.token_in_the_clear(&args.broker) {
        eprintln!("sluice: warning: {warning}");
    }
    let endpoint = sluice_worker::client::endpoint(&args.broker, &security)
        .map_err(usage)?
        .timeout(CALL_TIMEOUT);
    let bearer = sluice_worker::client::bearer(&security).map_err(usage)?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| CliError::Unreachable {
            url: args.broker.clone(),
            reason: reason(&e),
        })?;
    Ok(Connection {
        admin: AdminClient::with_interceptor(channel.clone(), bearer.clone())
            .max_decoding_message_size(MAX_MESSAGE),
        broker: BrokerClient::with_interceptor(channel, bearer)
            .max_decoding_message_size(MAX_MESSAGE),
    })
}

/// Why a connection failed, in a few lowercase words: the I/O error's kind
/// when there is one (`connection refused`), else the innermost cause.
fn reason(error: &tonic::transport::Error) -> String {
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        innermost = source;
    }
    innermost.to_string()
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset".to_owned(),
        K::TimedOut => "timed out".to_owned(),
        K::AddrNotAvailable => "address not available".to_owned(),
        _ => io.to_string(),
    }
}
