//! Errors of the worker library: [`WorkerError`], why a worker or an exec
//! handler could not be built, or a worker could not run. Failed calls to the broker are the client's
//! [`BrokerError`]; this error carries one only when it ends the run.

use crate::client::BrokerError;

/// Why a worker or an exec handler could not be built, or a worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker address is not a URI.
    #[error("broker URL {url:?}: {reason}")]
    BrokerUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No handler was registered, so there is nothing to lease.
    #[error("no handlers registered: a worker needs at least one job type to run")]
    NoHandlers,
    /// The broker refused the Lease request for a reason no retry can cure
    /// (its kind is not [`crate::client::BrokerErrorKind::Unavailable`]).
    #[error("the broker refused the lease stream: {}", .0.message())]
    Refused(BrokerError),
    /// An exec handler was built before
    /// [`crate::supervisor::run_if_requested`] ran: every job would start
    /// the embedding program again instead of a supervisor.
    #[error(
        "exec handlers need `sluice_worker::supervisor::run_if_requested()` called first in \
         main: the program serves as each job's supervisor, and without that call every job \
         would start the program itself again"
    )]
    SupervisorNotInstalled,
    /// The worker could not close itself to its handlers.
    #[error("{reason}")]
    Hardening {
        /// What failed.
        reason: String,
    },
    /// Exec handlers were asked for on a system other than Linux.
    #[error(
        "exec handlers need Linux: their supervisor relies on PR_SET_PDEATHSIG, a child \
         subreaper and waitid to kill a job's processes when the worker dies"
    )]
    ExecNeedsLinux,
    /// The current executable, which supervises exec handlers, cannot be found.
    #[error("cannot locate this executable, which supervises exec handlers: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// A setting is out of range.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The builder setting or flag.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS settings were given with a broker URL that is not `https://`.
    #[error(
        "broker URL {url:?}: TLS settings (a CA or a client certificate) need an https:// URL; \
         use https://, or drop the TLS settings to connect in plaintext"
    )]
    TlsNeedsHttps {
        /// What was given.
        url: String,
    },
    /// A TLS file cannot be read, or holds no usable certificate or key.
    #[error("TLS {what} {file}: {reason}")]
    TlsFile {
        /// Which file: `CA certificate`, `client certificate` or `client key`.
        what: &'static str,
        /// Its path (or that the PEM was given in memory).
        file: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be had: two were given, or its file is unreadable
    /// (the error never shows it).
    #[error("{reason}")]
    TokenSource {
        /// What is wrong.
        reason: String,
    },
    /// The token cannot be sent as a bearer token (the error never shows it).
    #[error("bad token: {reason}; a token is visible ASCII without whitespace")]
    BadToken {
        /// What is wrong with it.
        reason: String,
    },
}
