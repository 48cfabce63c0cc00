//! The broker's errors, and their one mapping to gRPC statuses.
//!
//! [`QueueError`] is what the queue state machine refuses; [`RequestError`]
//! adds what the service layer refuses before it reaches the queue (bad
//! fields, draining). `impl From<RequestError> for Status` is the only place
//! that picks status codes.

use tonic::{Code, Status};
use uuid::Uuid;

use crate::queue::JobState;

/// Why the queue refused an operation. Nothing changed when it did.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QueueError {
    /// No job with this id is known (never was, purged, or retention ended).
    #[error("job {job_id} not found")]
    UnknownJob {
        /// The id asked for.
        job_id: Uuid,
    },
    /// The lease named is not the job's current one: it expired, was
    /// resolved already, or the job was leased again since.
    #[error("lease {lease_id} is not the current lease of job {job_id} (the job is {state})")]
    StaleLease {
        /// The job.
        job_id: Uuid,
        /// The lease named in the request.
        lease_id: Uuid,
        /// The job's state now.
        state: JobState,
    },
    /// The operation does not apply to a job in this state.
    #[error("job {job_id} is {state}: {action} applies only to {allowed} jobs")]
    WrongState {
        /// The job.
        job_id: Uuid,
        /// The job's state now.
        state: JobState,
        /// What was asked.
        action: &'static str,
        /// The states it applies to.
        allowed: &'static str,
    },
    /// The queue holds `limit` unfinished jobs already.
    #[error("queue {queue:?} is full: it holds {limit} unfinished jobs (--max-queue-size)")]
    QueueFull {
        /// The queue.
        queue: String,
        /// The configured limit.
        limit: u64,
    },
    /// No job was ever enqueued to this queue, nor was it paused.
    #[error("queue {queue:?} not found")]
    UnknownQueue {
        /// The queue asked for.
        queue: String,
    },
    /// Too many distinct queue names and job types.
    #[error("the broker holds {limit} distinct queue names and job types already")]
    TooManyNames {
        /// The limit.
        limit: usize,
    },
    /// Leased jobs belong to their worker until resolved or expired.
    #[error("state: leased jobs are never purged")]
    PurgeLeased,
}

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
    /// The queue refused it.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The change could not be made durable: the data directory failed and
    /// the broker is stopping.
    #[error("the broker could not make this change durable ({0}); it is stopping")]
    StoreFailed(std::sync::Arc<str>),
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
            RequestError::ShuttingDown(_) | RequestError::StoreFailed(_) => Code::Unavailable,
            RequestError::Queue(q) => match q {
                QueueError::UnknownJob { .. } | QueueError::UnknownQueue { .. } => Code::NotFound,
                QueueError::StaleLease { .. } | QueueError::WrongState { .. } => {
                    Code::FailedPrecondition
                }
                QueueError::QueueFull { .. } | QueueError::TooManyNames { .. } => {
                    Code::ResourceExhausted
                }
                QueueError::PurgeLeased => Code::InvalidArgument,
            },
        };
        Status::new(code, err.to_string())
    }
}

/// Why the server could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not read the descriptors.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The serving task panicked or was cancelled.
    #[error("serving task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The server stopped without being asked to.
    #[error("the server stopped before shutdown was requested")]
    StoppedEarly,
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    /// The data directory holds what the queue cannot take back.
    #[error("restoring the data directory: {0}")]
    Restore(QueueError),
    /// The data directory failed while serving.
    #[error("the data directory failed: {0}")]
    StoreFailed(std::sync::Arc<str>),
}
