//! The one error of the broker link, in async-nats's `Error<Kind>` style: a
//! kind to match on and a message for people. Callers decide on
//! [`BrokerErrorKind`], never on the message or on gRPC status codes, which
//! are classified once, in the gRPC link.

use std::fmt;

/// A call to the broker failed; [`BrokerError::kind`] says what follows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BrokerError {
    kind: BrokerErrorKind,
    message: String,
}

/// What a failed call to the broker means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerErrorKind {
    /// The lease is stale or its job is gone (the lease expired, the broker
    /// restarted): the job is someone else's now.
    LeaseLost,
    /// The broker refused the call (bad argument, permission, ...): no retry
    /// can cure it.
    Refused,
    /// The broker could not be reached or did not answer in time: a retry,
    /// over a new connection if need be, may succeed.
    Unavailable,
}

impl BrokerError {
    /// An error of `kind`.
    pub fn new(kind: BrokerErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What the failure means for the caller.
    pub fn kind(&self) -> BrokerErrorKind {
        self.kind
    }

    /// The broker's (or the transport's) own words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BrokerErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::LeaseLost => "lease lost",
            Self::Refused => "refused by the broker",
            Self::Unavailable => "broker unavailable",
        })
    }
}
