//! What the queue tells an observer (the broker's metrics) about each job
//! transition, and the short history of failed attempts kept for operators.
//!
//! The queue calls [`Observer::job_event`] synchronously under its caller's
//! lock, with the names both as strings and as stable interned ids, so that
//! an observer can cache its per-label handles by id and spend no
//! allocation per event. Without an observer, an event costs one branch.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::Duration;

use uuid::Uuid;

use super::job::{Lease, Seq};
use super::{Queue, Timestamp};

/// How many failed attempts [`Queue::recent_failures`] remembers.
pub const RECENT_FAILURES: usize = 50;

/// A job transition, as counted by metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JobEvent {
    /// A new job was accepted.
    Enqueued,
    /// An Enqueue named a known idempotency key: no job was added.
    Duplicate,
    /// Handed to a worker after waiting `waited` since it became due.
    Leased {
        /// From due (READY) to leased.
        waited: Duration,
    },
    /// The attempt succeeded after running `ran` under its lease.
    Acked {
        /// From lease to resolution.
        ran: Duration,
    },
    /// The attempt failed by Nack after `ran`; another attempt follows
    /// unless a [`JobEvent::DeadLettered`] comes with it.
    Nacked {
        /// From lease to resolution.
        ran: Duration,
    },
    /// The attempt's lease ran out after `ran` (the worker died or hung).
    Expired {
        /// From lease to expiry.
        ran: Duration,
    },
    /// Out of attempts (or failed as dead): the job is DEAD.
    DeadLettered,
    /// Given back by its worker without using an attempt.
    Released,
    /// CANCELLED, by an operator or by a worker resolving a cancel request.
    Cancelled,
    /// An operator sent a DEAD or CANCELLED job back to READY.
    Retried,
    /// An operator deleted the job with PurgeQueue.
    Purged,
}

/// A job's labels: its queue and type, by name and by interned id. An id
/// names one name until [`Observer::name_forgotten`] says it is gone; it
/// may then name another.
#[derive(Debug, Clone, Copy)]
pub struct JobLabels<'a> {
    /// The queue's interned id.
    pub queue_id: u32,
    /// The queue's name.
    pub queue: &'a str,
    /// The job type's interned id.
    pub job_type_id: u32,
    /// The job type.
    pub job_type: &'a str,
}

/// Receives every [`JobEvent`]; must be cheap, it runs on the data path.
pub trait Observer: Send + Debug {
    /// `event` happened to a job with `labels`.
    fn job_event(&mut self, labels: JobLabels<'_>, event: JobEvent);

    /// The name with interned id `id` is forgotten (nothing referred to
    /// it and a new name took its place): what is kept under the id is
    /// stale.
    fn name_forgotten(&mut self, _id: u32) {}
}

/// One failed attempt, for [`Queue::recent_failures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// The job's id.
    pub job_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its type.
    pub job_type: String,
    /// The attempt that failed, from 1.
    pub attempt: u32,
    /// The worker's error, or [`crate::LEASE_EXPIRED`].
    pub error: String,
    /// When it failed.
    pub failed_at: Timestamp,
    /// The job went DEAD with it.
    pub dead: bool,
    /// Who held the lease.
    pub worker_id: String,
}

impl Queue {
    /// Sends every later [`JobEvent`] to `observer`.
    pub fn set_observer(&mut self, observer: Box<dyn Observer>) {
        self.observer = Some(observer);
    }

    /// The latest failed attempts, newest first, at most [`RECENT_FAILURES`].
    pub fn recent_failures(&self) -> impl Iterator<Item = &FailedAttempt> {
        self.failures.iter().rev()
    }

    /// Tells the observer, if any, that `event` happened to job `seq`.
    pub(super) fn observe(&mut self, seq: Seq, event: JobEvent) {
        let Some(observer) = self.observer.as_mut() else {
            return;
        };
        let job = &self.jobs[seq];
        let labels = JobLabels {
            queue_id: job.queue.get(),
            queue: self.names.name(job.queue),
            job_type_id: job.job_type.get(),
            job_type: self.names.name(job.job_type),
        };
        observer.job_event(labels, event);
    }

    /// Remembers a failed attempt of job `seq` under `lease`, whose error is
    /// already recorded on the job.
    pub(super) fn record_failure(&mut self, seq: Seq, lease: &Lease, dead: bool, now: Timestamp) {
        let job = self.view(seq);
        let failure = FailedAttempt {
            job_id: job.id,
            queue: job.queue.to_owned(),
            job_type: job.job_type.to_owned(),
            attempt: job.attempt,
            error: job.last_error.unwrap_or_default().to_owned(),
            failed_at: now,
            dead,
            worker_id: lease.worker_id.to_string(),
        };
        if self.failures.len() == RECENT_FAILURES {
            self.failures.pop_front();
        }
        self.failures.push_back(failure);
    }
}

/// Where the failed attempts are kept: a bounded queue, oldest first.
pub(super) type Failures = VecDeque<FailedAttempt>;
