//! A job as it crosses the backend seam: owned, so that any store can
//! build it (the local queue from a [`JobView`], a database from a row),
//! and the service turns it into the contract's message in one place.

use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use crate::{Headers, JobState, JobView, Progress, Timestamp};

/// One job, with its lease while leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSnapshot {
    /// The job's public id.
    pub id: Uuid,
    /// Queue name.
    pub queue: String,
    /// Job type name.
    pub job_type: String,
    /// The flow-control key (a customer, a tenant), if any.
    pub key: Option<String>,
    /// Current state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far (a release gives its attempt back).
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// An operator asked to cancel it while leased.
    pub cancel_requested: bool,
    /// Per-attempt run limit.
    pub timeout: Duration,
    /// Opaque payload.
    pub payload: Bytes,
    /// Headers, sorted by name.
    pub headers: Headers,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it is next due, or became due.
    pub run_at: Timestamp,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// The current lease, while leased.
    pub lease: Option<LeaseSnapshot>,
    /// The last progress a worker reported.
    pub progress: Option<Progress>,
    /// What the successful attempt's Ack carried.
    pub result: Option<Bytes>,
}

/// The lease of a leased job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSnapshot {
    /// What the worker names it by in Ack, Nack, Extend and Release.
    pub lease_id: Uuid,
    /// Who holds it.
    pub worker_id: String,
    /// When it runs out unless extended.
    pub expires_at: Timestamp,
}

impl From<JobView<'_>> for JobSnapshot {
    fn from(job: JobView<'_>) -> Self {
        Self {
            id: job.id,
            queue: job.queue.to_owned(),
            job_type: job.job_type.to_owned(),
            key: job.key.map(str::to_owned),
            state: job.state,
            priority: job.priority,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            cancel_requested: job.cancel_requested,
            timeout: job.timeout,
            payload: job.payload.clone(),
            headers: job.headers.to_vec(),
            created_at: job.created_at,
            run_at: job.run_at,
            finished_at: job.finished_at,
            last_error: job.last_error.map(str::to_owned),
            lease: job.lease.map(|lease| LeaseSnapshot {
                lease_id: lease.id,
                worker_id: lease.worker_id.to_string(),
                expires_at: lease.expires_at,
            }),
            progress: job.progress.cloned(),
            result: job.result.cloned(),
        }
    }
}
