//! The internal steps every queue operation is made of: finding a job by
//! its lease, ending leases, failing and finishing attempts, moving jobs
//! between states and indexes with their counts, and logging transitions.
//! Nothing here is called from outside the queue.

use std::time::Duration;

use rand::Rng;
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::job::{JobState, JobView, Lease, Seq};
use super::names::NameId;
use sluice_limits::MAX_ERROR_BYTES;

use super::{
    AfterFailure, Failure, FailureOutcome, JobEvent, LOG_TARGET, LogLevel, Queue, QueueState,
    after_failure, check_room,
};
use crate::QueueError;
use crate::Timestamp;

impl Queue {
    /// The job `job_id` if `lease_id` is its current lease.
    pub(super) fn leased(&self, job_id: Uuid, lease_id: Uuid) -> Result<Seq, QueueError> {
        let seq = self.seq_of(job_id)?;
        let job = &self.jobs[seq];
        match &job.lease {
            Some(lease) if lease.id == lease_id => Ok(seq),
            _ => Err(QueueError::StaleLease {
                job_id,
                lease_id,
                state: job.state,
            }),
        }
    }

    /// Takes the lease off a leased job; the caller then gives it a new state
    /// and frees the consumer's slot.
    pub(super) fn end_lease(&mut self, seq: Seq, now: Timestamp) -> Box<Lease> {
        let job = self.jobs.get_mut_untracked(seq).expect("job is known");
        let lease = job.lease.take().expect("job is leased");
        self.leases.remove(&(lease.expires_at, seq));
        self.flow_lease_ended(seq, now);
        lease
    }

    /// After a failed attempt: SCHEDULED for a retry, or DEAD, or CANCELLED
    /// if an operator asked for it.
    pub(super) fn fail_attempt(
        &mut self,
        seq: Seq,
        lease: &Lease,
        failure: Failure,
        now: Timestamp,
    ) -> FailureOutcome {
        let error = truncate_error(failure.error);
        self.jobs
            .change_extras(seq, true, |e| e.last_error = Some(error));
        let job = &self.jobs[seq];
        let unit = self.rng.random::<f64>();
        let after = after_failure(
            u32::from(job.attempt),
            u32::from(job.max_attempts),
            job.cancel_requested,
            failure.dead,
            failure.retry_after,
            &self.config.backoff,
            unit,
        );
        let delay = match after {
            AfterFailure::Cancelled => {
                self.log_job(seq, Some(lease), LogLevel::Debug, "job cancelled");
                self.observe(seq, JobEvent::Cancelled);
                self.finish(seq, JobState::Cancelled, now);
                return FailureOutcome {
                    state: JobState::Cancelled,
                    next_attempt_at: None,
                };
            }
            AfterFailure::Dead => {
                self.queue_state(seq).counters.dead += 1;
                self.log_job(seq, Some(lease), LogLevel::Warn, "job dead");
                self.record_failure(seq, lease, true, now);
                self.observe(seq, JobEvent::DeadLettered);
                self.finish(seq, JobState::Dead, now);
                return FailureOutcome {
                    state: JobState::Dead,
                    next_attempt_at: None,
                };
            }
            AfterFailure::Retry(delay) => delay,
        };
        self.log_job(seq, Some(lease), LogLevel::Warn, "job attempt failed");
        self.record_failure(seq, lease, false, now);
        let at = now.saturating_add(delay);
        if delay.is_zero() {
            self.jobs.get_mut(seq).expect("job is known").run_at = now;
            self.make_ready(seq, now);
            // It may have been leased again at once; it was READY when due.
            return FailureOutcome {
                state: JobState::Ready,
                next_attempt_at: Some(now),
            };
        }
        self.schedule(seq, at);
        FailureOutcome {
            state: JobState::Scheduled,
            next_attempt_at: Some(at),
        }
    }

    pub(super) fn schedule(&mut self, seq: Seq, at: Timestamp) {
        self.jobs.get_mut(seq).expect("job is known").run_at = at;
        self.set_state(seq, JobState::Scheduled);
        self.scheduled.insert((at, seq));
    }

    /// Makes a job READY in its key's lane, and leases it at once if no
    /// limit holds it and a consumer has a free slot for it.
    pub(super) fn make_ready(&mut self, seq: Seq, now: Timestamp) {
        self.set_state(seq, JobState::Ready);
        let key_open = self.flow_ready(seq, now);
        let job = &self.jobs[seq];
        let (queue, job_type, key) = (job.queue, job.job_type, job.key().cloned());
        let ready_key = job.ready_key(seq);
        let qs = self.queues.get_mut(&queue).expect("job's queue is known");
        qs.ready
            .entry(job_type)
            .or_default()
            .insert(&key, ready_key, key_open);
        if key_open
            && !qs.flow.held
            && let Some(consumer) = self.consumer_with_slot_for(queue, job_type)
        {
            self.lease_to(consumer, seq, now);
        }
    }

    /// SUCCEEDED, DEAD or CANCELLED: no lease, no deadline but retention.
    pub(super) fn finish(&mut self, seq: Seq, state: JobState, now: Timestamp) {
        self.set_state(seq, state);
        let job = self.jobs.get_mut(seq).expect("job is known");
        job.finished_at = now;
        if state != JobState::Dead {
            self.retain(seq);
            self.trim_retained(now);
        }
    }

    /// Forgets the oldest retained jobs beyond `max_retained`.
    pub(super) fn trim_retained(&mut self, now: Timestamp) {
        while self.retained.len() > self.config.max_retained {
            if let Some(&(_, oldest)) = self.retained.first() {
                // Takes it out of the retention set too (`unindex`).
                self.remove_job(oldest, now);
            }
        }
    }

    /// Counts a new job in its first state: SCHEDULED until its `run_at`,
    /// else READY (and leased at once if a consumer has room).
    pub(super) fn admit(&mut self, seq: Seq, now: Timestamp) {
        let run_at = self.jobs[seq].run_at;
        if run_at > now {
            self.count_new(seq, JobState::Scheduled);
            self.scheduled.insert((run_at, seq));
        } else {
            // Counted as READY, which make_ready keeps it.
            self.count_new(seq, JobState::Ready);
            self.make_ready(seq, now);
        }
    }

    /// Counts a new job that arrives DEAD (see [`crate::NewJob::dead_letter`]).
    pub(super) fn bury_new(&mut self, seq: Seq, reason: Box<str>, now: Timestamp) {
        self.count_new(seq, JobState::Dead);
        self.jobs
            .change_extras(seq, true, |e| e.last_error = Some(reason));
        self.queue_state(seq).counters.dead += 1;
        self.log_job(seq, None, LogLevel::Warn, "job dead on arrival");
        self.observe(seq, JobEvent::DeadLettered);
        self.jobs.get_mut(seq).expect("job is known").finished_at = now;
    }

    /// Forgets a job that is not leased, with every index entry it has.
    pub(super) fn remove_job(&mut self, seq: Seq, now: Timestamp) {
        if !self.jobs.contains(seq) {
            return;
        }
        self.log_job(seq, None, LogLevel::Debug, "job forgotten");
        self.unindex(seq, now);
        let job = self.jobs.remove(seq).expect("just checked");
        debug_assert!(job.lease.is_none(), "leased jobs are never removed");
        if let Some(key) = job.extras.and_then(|e| e.idempotency_key) {
            self.idempotency.remove(&(job.queue, key));
        }
        let qs = self
            .queues
            .get_mut(&job.queue)
            .expect("job's queue is known");
        qs.counts[job.state.index()] -= 1;
        self.names.release(job.queue);
        self.names.release(job.job_type);
    }

    /// Takes job `seq` out of the index of its state: the scheduled set,
    /// its ready set, or the retained set. Its state and counts stay as
    /// they are; the caller moves it on. (A lease is ended by `end_lease`;
    /// DEAD jobs are in no index.)
    pub(super) fn unindex(&mut self, seq: Seq, now: Timestamp) {
        let job = &self.jobs[seq];
        match job.state {
            JobState::Scheduled => {
                self.scheduled.remove(&(job.run_at, seq));
            }
            JobState::Ready => {
                let (job_type, ready_key) = (job.job_type, job.ready_key(seq));
                let key = job.key().cloned();
                let qs = self
                    .queues
                    .get_mut(&job.queue)
                    .expect("job's queue is known");
                // A type's lanes are dropped when they empty, so that
                // consumers without a type filter skip them.
                if let Some(lanes) = qs.ready.get_mut(&job_type) {
                    lanes.remove(&key, &ready_key);
                    if lanes.is_empty() {
                        qs.ready.remove(&job_type);
                    }
                }
                self.flow_unready(seq, now);
            }
            JobState::Succeeded | JobState::Cancelled => self.unretain(seq),
            JobState::Leased | JobState::Dead => {}
        }
    }

    /// Refuses new work for a queue that holds `max_queue_size` unfinished jobs.
    pub(super) fn check_room(&self, queue: NameId) -> Result<(), QueueError> {
        let unfinished = self.queues.get(&queue).map_or(0, QueueState::unfinished);
        check_room(
            self.names.name(queue),
            unfinished,
            self.config.max_queue_size,
        )
    }

    /// Records a new job's first state in its queue's counts.
    pub(super) fn count_new(&mut self, seq: Seq, state: JobState) {
        let job = self.jobs.get_mut(seq).expect("job is known");
        job.state = state;
        let qs = self
            .queues
            .get_mut(&job.queue)
            .expect("job's queue is known");
        qs.counts[state.index()] += 1;
    }

    /// Moves a job to `state`, keeping its queue's counts.
    pub(super) fn set_state(&mut self, seq: Seq, state: JobState) {
        self.jobs.note_changed(seq);
        self.set_state_untracked(seq, state);
    }

    /// [`Queue::set_state`] for a move the durable view does not show
    /// (READY to LEASED: a lease is not durable).
    pub(super) fn set_state_untracked(&mut self, seq: Seq, state: JobState) {
        let job = self.jobs.get_mut_untracked(seq).expect("job is known");
        let qs = self
            .queues
            .get_mut(&job.queue)
            .expect("job's queue is known");
        qs.counts[job.state.index()] -= 1;
        qs.counts[state.index()] += 1;
        job.state = state;
    }

    pub(super) fn queue_state(&mut self, seq: Seq) -> &mut QueueState {
        let queue = self.jobs[seq].queue;
        self.queues.get_mut(&queue).expect("job's queue is known")
    }

    pub(super) fn new_uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    pub(super) fn view(&self, seq: Seq) -> JobView<'_> {
        let job = &self.jobs[seq];
        JobView {
            id: self.job_id(seq),
            queue: self.names.name(job.queue),
            job_type: self.names.name(job.job_type),
            key: job.key().map(|k| &**k),
            state: job.state,
            priority: job.priority,
            attempt: u32::from(job.attempt),
            max_attempts: u32::from(job.max_attempts),
            cancel_requested: job.cancel_requested,
            timeout: Duration::from_millis(u64::from(job.timeout_ms)),
            payload: &job.payload,
            headers: job.headers(),
            created_at: job.created_at,
            run_at: job.run_at,
            finished_at: job.finished(),
            last_error: job.last_error(),
            lease: job.lease.as_deref(),
            progress: job.progress(),
            result: job.result(),
        }
    }

    /// Logs a transition of job `seq`, with the lease it concerns if any
    /// (and the job's last error at [`LogLevel::Warn`]).
    pub(super) fn log_job(
        &self,
        seq: Seq,
        lease: Option<&Lease>,
        level: LogLevel,
        message: &'static str,
    ) {
        // Resolving the view costs more than a disabled event: skip both.
        let enabled = match level {
            LogLevel::Debug => tracing::enabled!(target: LOG_TARGET, tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(target: LOG_TARGET, tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(target: LOG_TARGET, tracing::Level::WARN),
        };
        if !enabled {
            return;
        }
        let job = self.view(seq);
        let worker_id = lease.map(|l| &*l.worker_id);
        let lease_id = lease.map(|l| tracing::field::display(l.id));
        match level {
            LogLevel::Debug => {
                debug!(target: LOG_TARGET, job_id = %job.id, job_type = job.job_type, queue = job.queue,
                attempt = job.attempt, worker_id, lease_id, "{message}")
            }
            LogLevel::Info => {
                info!(target: LOG_TARGET, job_id = %job.id, job_type = job.job_type, queue = job.queue,
                attempt = job.attempt, worker_id, lease_id, "{message}")
            }
            LogLevel::Warn => {
                warn!(target: LOG_TARGET, job_id = %job.id, job_type = job.job_type, queue = job.queue,
                attempt = job.attempt, worker_id, lease_id, error = job.last_error, "{message}")
            }
        }
    }
}

/// Keeps at most [`MAX_ERROR_BYTES`] of an error: its end, on a char boundary.
pub fn truncate_error(error: String) -> Box<str> {
    if error.len() <= MAX_ERROR_BYTES {
        return error.into_boxed_str();
    }
    let mut start = error.len() - MAX_ERROR_BYTES;
    while !error.is_char_boundary(start) {
        start += 1;
    }
    error[start..].into()
}
