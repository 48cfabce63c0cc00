//! Errors of the worker library: [`WorkerError`], why a worker could not
//! be built or could not run. Failed calls to the broker are the client's
//! [`BrokerError`]; this error carries one only when it ends the run.

use crate::client::BrokerError;

/// Why a worker could not be built or could not run.
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
    /// A setting is out of range.
    #[error("{setting}: {reason}")]
    InvalidSetting {
        /// The builder setting or flag.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}
