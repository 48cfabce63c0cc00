//! Why an RPC was refused, and the one mapping of every refusal to a gRPC
//! status: [`RequestError`] adds what the service refuses before it reaches
//! the queue (bad fields, draining, a failed store) to the queue's own
//! [`QueueError`]. `impl From<RequestError> for Status` is the only place
//! that picks status codes.

use sluice_queue::QueueError;

use crate::auth::AuthError;
use tonic::{Code, Status};

/// Why an RPC was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// A field of the request is out of its documented range.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field, as named in the .proto file.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The broker is draining for shutdown and takes no new work.
    #[error("the broker is shutting down: {0}")]
    ShuttingDown(&'static str),
    /// The caller is unknown, or its credential lacks the right.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// As many Lease streams are open as a cap allows.
    #[error("{limit} Lease streams are open {whose}, the most allowed ({flag})")]
    TooManyLeaseStreams {
        /// The limit.
        limit: usize,
        /// Its flag.
        flag: &'static str,
        /// Whose streams it counts.
        whose: &'static str,
    },
    /// The queue refused it.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The backend cannot serve now (its database is unreachable); the
    /// broker goes on and recovers by itself.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The broker failed (its data directory, or a panic in the queue; see
    /// `crate::fatal`) and is stopping: the change was not acknowledged.
    #[error("the broker could not make this change durable ({0}); it is stopping")]
    Failed(std::sync::Arc<str>),
}

impl RequestError {
    /// An [`RequestError::InvalidArgument`] for `field`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl From<RequestError> for Status {
    fn from(err: RequestError) -> Self {
        let code = match &err {
            RequestError::InvalidArgument { .. } => Code::InvalidArgument,
            RequestError::Auth(a) if a.is_unauthenticated() => Code::Unauthenticated,
            RequestError::Auth(_) => Code::PermissionDenied,
            RequestError::TooManyLeaseStreams { .. } => Code::ResourceExhausted,
            RequestError::ShuttingDown(_)
            | RequestError::Unavailable(_)
            | RequestError::Failed(_) => Code::Unavailable,
            RequestError::Queue(q) => match q {
                QueueError::UnknownJob { .. } | QueueError::UnknownQueue { .. } => Code::NotFound,
                QueueError::StaleLease { .. } | QueueError::WrongState { .. } => {
                    Code::FailedPrecondition
                }
                QueueError::QueueFull { .. }
                | QueueError::TooManyNames { .. }
                | QueueError::TooManyQueues { .. }
                | QueueError::OverMemory { .. } => Code::ResourceExhausted,
                QueueError::PurgeLeased => Code::InvalidArgument,
            },
        };
        Status::new(code, err.to_string())
    }
}
