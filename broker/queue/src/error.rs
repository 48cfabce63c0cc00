//! Why the queue refused an operation. The queue's own error: it knows
//! nothing of gRPC or storage; the service maps it to a status.

use uuid::Uuid;

use crate::JobState;

/// Why the queue refused an operation. Nothing changed when it did.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
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
    /// Too many distinct queue names and job types in use.
    #[error(
        "the broker holds {limit} distinct queue names and job types in use already (a name is free again once no job, pause or Lease stream uses it)"
    )]
    TooManyNames {
        /// The limit.
        limit: usize,
    },
    /// Too many queues (a shared store's cap, counted in the store).
    #[error(
        "{limit} queues exist already, the most allowed (a queue's place is free again once it holds no job and is not paused)"
    )]
    TooManyQueues {
        /// The limit.
        limit: usize,
    },
    /// The jobs held would pass `max_memory` even with every retained
    /// (SUCCEEDED or CANCELLED) job forgotten.
    #[error(
        "the broker is over --max-memory: its jobs hold {held} of {limit} bytes and this needs {needed} more; retry later"
    )]
    OverMemory {
        /// Bytes the jobs hold now.
        held: u64,
        /// Bytes the refused job would add (0 for RetryJob, whose job is held already).
        needed: u64,
        /// The configured limit.
        limit: u64,
    },
    /// Leased jobs belong to their worker until resolved or expired.
    #[error("state: leased jobs are never purged")]
    PurgeLeased,
}
