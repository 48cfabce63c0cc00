//! Why an RPC was refused, and the one mapping of every refusal to a gRPC
//! status: [`RequestError`] adds what the service refuses before it reaches
//! the backend (bad fields, credentials, stream caps) to the backend's own
//! [`BackendError`] (draining, the queue's refusals, an unreachable or
//! failed store). `impl From<RequestError> for Status` is the only place
//! that picks status codes; [`item_status`] and [`status_item`] put a
//! status in an item of a batch or a stream's result.

use sluice_queue::QueueError;

use crate::auth::AuthError;
use crate::backend::BackendError;
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
    /// CreateSchedule without upsert named a schedule that exists.
    #[error("schedule {name:?} exists (upsert replaces it)")]
    ScheduleExists {
        /// Its name.
        name: String,
    },
    /// No schedule of that name (or none the credential covers).
    #[error("no schedule {name:?}")]
    UnknownSchedule {
        /// The name asked for.
        name: String,
    },
    /// Other writers changed the schedule every time it was read.
    #[error("schedule {name:?} is being changed by other calls; try again")]
    ScheduleBusy {
        /// Its name.
        name: String,
    },
    /// A commit's partition changed hands or was moved since the member
    /// claimed it.
    #[error(
        "partition {partition} of {stream:?} moved on in source group {group:?} (another holder or a reset): claim again and start from its position"
    )]
    PartitionMoved {
        /// The group.
        group: String,
        /// The stream.
        stream: String,
        /// The partition.
        partition: i32,
    },
    /// Other writers changed the group's rows every time they were read.
    #[error("source group {group:?} is being changed by other calls; try again")]
    SourceBusy {
        /// The group.
        group: String,
    },
    /// A source group outside a scoped credential's queues.
    #[error(
        "the credential may not use source group {group:?}: a credential scoped to queues covers the source groups named as its queues are"
    )]
    GroupOutOfScope {
        /// The group.
        group: String,
    },
    /// A call that moves a group's positions, by a credential scoped to
    /// some queues (a group is not a queue's).
    #[error("{what} needs a credential of every queue")]
    NeedsEveryQueue {
        /// The call.
        what: &'static str,
    },
    /// The backend refused it, or could not do it.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A stream's opening message could not be received: the status its
    /// receiving gave (DEADLINE_EXCEEDED past `--request-timeout`, a
    /// message that does not decode, a reset).
    #[error("{}", .0.message())]
    Receiving(Status),
}

impl From<QueueError> for RequestError {
    fn from(err: QueueError) -> Self {
        Self::Backend(BackendError::Queue(err))
    }
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
            RequestError::ScheduleExists { .. } => Code::AlreadyExists,
            RequestError::UnknownSchedule { .. } => Code::NotFound,
            RequestError::ScheduleBusy { .. } | RequestError::SourceBusy { .. } => Code::Aborted,
            RequestError::PartitionMoved { .. } => Code::FailedPrecondition,
            RequestError::NeedsEveryQueue { .. } | RequestError::GroupOutOfScope { .. } => {
                Code::PermissionDenied
            }
            RequestError::Backend(
                BackendError::ShuttingDown(_)
                | BackendError::Unavailable(_)
                | BackendError::Failed(_),
            ) => Code::Unavailable,
            RequestError::Backend(BackendError::Internal) => Code::Internal,
            RequestError::Backend(BackendError::StoreFull(_)) => Code::ResourceExhausted,
            RequestError::Receiving(status) => status.code(),
            RequestError::Backend(BackendError::Queue(q)) => match q {
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

/// A per-item status of a batch, as its unary call would have answered.
pub(super) fn item_status(result: Result<(), RequestError>) -> (i32, String) {
    match result {
        Ok(()) => (0, String::new()),
        Err(err) => status_item(&Status::from(err)),
    }
}

/// `status` as an item's code and message (a status that answers several
/// items of a batch or stream at once).
pub(super) fn status_item(status: &Status) -> (i32, String) {
    (status.code() as i32, status.message().to_owned())
}
