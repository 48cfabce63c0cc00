//! The queue state machine: every job, its state, its deadlines, and which
//! open Lease stream ("consumer") holds it.
//!
//! Synchronous and pure: no tonic, no tasks, no I/O, no clock. Every
//! time-dependent call takes `now`; randomness (ids, jitter) comes from a
//! seeded generator, so tests are deterministic and never sleep.
//!
//! Delivery is pushed: whenever a job becomes ready, a consumer frees a slot,
//! a consumer opens or a queue resumes, the queue leases jobs to consumers
//! with free slots on the spot and records each as a [`Delivery`] that the
//! service layer drains with [`Queue::drain_deliveries`] and sends. The
//! invariant: no consumer with a free slot accepts a ready job of an unpaused
//! queue.
//!
//! Cost: every operation on the data path is O(log n) in the number of jobs
//! (ordered sets keyed by priority or deadline, one set of ready jobs per
//! queue and job type, so a type filter never scans other types), plus
//! O(consumers of the queue) to find a free slot.

mod admin;
mod backoff;
mod config;
mod consumers;
mod durable;
mod error;
mod flow;
mod ids;
mod job;
mod job_table;
mod lanes;
mod memory;
mod names;
mod observer;
mod policy;
mod queue_flow;
mod ready_set;
mod scope;
mod snapshot;
#[cfg(test)]
mod tests;
mod time;
mod transitions;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand::rngs::StdRng;

use uuid::Uuid;

pub use self::admin::{Counters, JobFilter, ListPage, QueueStats, WorkerInfo};
pub use self::backoff::Backoff;
pub use self::config::QueueConfig;
use self::consumers::Consumer;
pub use self::consumers::ConsumerSpec;
pub use self::durable::{Change, JobRecord, Restorer, StoreMeta};
pub use self::error::QueueError;
use self::flow::Flow;
pub use self::flow::{
    Bucket, Hold, HoldReason, KeyOverride, QueueLimits, RateLimit, key_hold, queue_hold,
};
use self::ids::JobIds;
pub use self::ids::{IdSecret, Secrets};
pub use self::job::{ConsumerId, Headers, JobState, JobView, Lease, Progress};
use self::job::{Job, Seq};
use self::job_table::JobTable;
use self::lanes::{KeyTag, Lanes};
pub use self::memory::JOB_OVERHEAD;
use self::names::{NameId, Names};
use self::observer::Failures;
pub use self::observer::{FailedAttempt, JobEvent, JobLabels, Observer, RECENT_FAILURES};
pub use self::policy::{Action, AfterFailure, after_failure, check_room};
pub use self::queue_flow::{FlowStats, KeyStats, TOP_KEYS, busiest_first};
pub use self::scope::{QueuePattern, QueueScope};
pub use self::snapshot::{JobSnapshot, LeaseSnapshot};
pub use self::time::Timestamp;
pub use self::transitions::truncate_error;

/// The target of the queue's tracing events: the broker's own, so that
/// `RUST_LOG=sluice_broker=debug` shows every job transition, as the README
/// documents, although the queue is a crate of its own.
const LOG_TARGET: &str = "sluice_broker::queue";

/// The error recorded when a lease runs out.
pub const LEASE_EXPIRED: &str = "lease expired";

/// A job to enqueue, validated by the caller.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    /// Queue name.
    pub queue: String,
    /// Job type name.
    pub job_type: String,
    /// Opaque payload.
    pub payload: Bytes,
    /// Headers, if any.
    pub headers: Headers,
    /// Higher runs first.
    pub priority: i32,
    /// `None` for the configured default.
    pub max_attempts: Option<u32>,
    /// `None` for the configured default.
    pub timeout: Option<Duration>,
    /// `None` or a past time for "now".
    pub run_at: Option<Timestamp>,
    /// Deduplicates enqueues within the queue.
    pub idempotency_key: Option<String>,
    /// The flow-control key (a customer, a tenant): the queue's key limits
    /// and fair dispatch count jobs by it (see `flow.rs`).
    pub key: Option<String>,
    /// Arrives DEAD with this reason as its last error, never run: a
    /// record a source could not turn into a runnable job, kept where
    /// operators look for failures. It holds no idempotency key and takes
    /// no room in its queue (it is not unfinished).
    pub dead_letter: Option<String>,
}

/// What [`Queue::enqueue`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the first job's, for a duplicate).
    pub job_id: Uuid,
    /// The idempotency key matched a known job; nothing was added.
    pub duplicate: bool,
}

/// A failed attempt, as reported by Nack.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// Why it failed.
    pub error: String,
    /// Overrides the backoff.
    pub retry_after: Option<Duration>,
    /// No more attempts.
    pub dead: bool,
    /// Holds every job of the job's key this long (see [`Queue::hold_key`]).
    pub key_delay: Duration,
}

/// Where a job went when its lease ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// READY or SCHEDULED (to run again), DEAD or CANCELLED.
    pub state: JobState,
    /// When it runs again, if it does.
    pub next_attempt_at: Option<Timestamp>,
}

/// The state of a lease after [`Queue::extend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended {
    /// The new expiry.
    pub expires_at: Timestamp,
    /// An operator cancelled the job.
    pub cancel_requested: bool,
}

/// A job just leased to a consumer, for the service layer to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The stream to send it on.
    pub consumer: ConsumerId,
    seq: Seq,
    lease_id: Uuid,
}

/// How loud a job transition is: debug for the data path, info for
/// operator actions, warn for failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogLevel {
    Debug,
    Info,
    Warn,
}

use self::job::ReadyKey;

/// What the queue keeps per queue name.
#[derive(Debug, Default)]
struct QueueState {
    /// PauseQueue was called: no job of this queue is leased until
    /// ResumeQueue, while enqueues still land.
    paused: bool,
    /// Jobs in each state, by [`JobState::index`]: Stats and the
    /// `--max-queue-size` check read them in O(1) instead of scanning.
    counts: [u64; 6],
    /// Lifetime totals (enqueued, acked, nacked, expired, dead) for Stats.
    counters: admin::Counters,
    /// Ready jobs by type, so a consumer's type filter looks only at its
    /// types, and by key within a type (see `lanes.rs`); a type's lanes
    /// are removed when they empty, so consumers without a filter skip them.
    ready: HashMap<NameId, Lanes>,
    /// Its limits, what is in flight, and its keys (see `flow.rs`).
    flow: Flow,
    /// Consumers listening on this queue, tried round-robin from `cursor`
    /// so that streams share its jobs.
    consumers: Vec<ConsumerId>,
    /// Where the next round-robin search for a free slot starts.
    cursor: usize,
}

impl QueueState {
    fn unfinished(&self) -> u64 {
        JobState::ALL
            .iter()
            .filter(|s| s.is_unfinished())
            .map(|s| self.counts[s.index()])
            .sum()
    }
}

/// The broker's jobs and consumers. See the module docs.
#[derive(Debug)]
pub struct Queue {
    /// The rules (attempts, timeouts, backoff, retention, limits) set by flags.
    config: QueueConfig,
    /// Lease ids and backoff jitter: ChaCha12, seeded by the owner from
    /// the operating system's generator (tests seed it to be reproducible).
    rng: StdRng,
    /// Interned queue names and job types: jobs and filters hold 4-byte ids.
    names: Names,
    /// The seq of the next job: seqs grow with creation, so they order
    /// ListJobs and PurgeQueue, and never repeat (restored from the store).
    next_seq: Seq,
    /// Every known job, in creation order (ListJobs pages through it).
    jobs: JobTable,
    /// Job ids from seqs and back (see `ids.rs`): an id leads to its job
    /// without a map of ids, and tells nothing of another.
    ids: JobIds,
    /// Per queue name: pause flag, counts, ready jobs and consumers.
    queues: HashMap<NameId, QueueState>,
    /// SCHEDULED jobs by due time: `expire` promotes those that are due.
    scheduled: BTreeSet<(Timestamp, Seq)>,
    /// LEASED jobs by lease expiry: `expire` fails those that ran out.
    leases: BTreeSet<(Timestamp, Seq)>,
    /// SUCCEEDED and CANCELLED jobs by the end of their retention: `expire`
    /// forgets them then, and `max_retained` drops the oldest first.
    retained: BTreeSet<(Timestamp, Seq)>,
    /// The bytes of the jobs in `retained`: what forgetting them all frees.
    retained_bytes: u64,
    /// Every known job that has an idempotency key, by (queue, key), so
    /// that a repeated Enqueue finds the first job instead of adding another.
    idempotency: HashMap<(NameId, Box<str>), Seq>,
    /// Open Lease streams: their filters, free slots and held jobs.
    consumers: BTreeMap<ConsumerId, Consumer>,
    /// The id of the next consumer; never reused, so a late message for a
    /// closed stream cannot reach a new one.
    next_consumer: u64,
    /// Jobs leased since the service last drained them, to send on their
    /// streams (the queue does no I/O).
    outbox: Vec<Delivery>,
    /// Queues paused or resumed since the last `take_changes`, for the
    /// store (by name: an id may be reclaimed meanwhile).
    paused_changed: Vec<std::sync::Arc<str>>,
    /// Queues whose limits were set since the last `take_changes`.
    limits_changed: Vec<std::sync::Arc<str>>,
    /// When a held key (or a queue, with no key) may be dealt again.
    flow_wakeups: BTreeSet<(Timestamp, NameId, KeyTag)>,
    /// Queues a freed limit lets deal, to offer to their consumers.
    to_pump: Vec<NameId>,
    /// Names that open consumers filter on and no job uses yet, with the
    /// consumers waiting for each: resolved when the name is interned.
    waiting: HashMap<std::sync::Arc<str>, Vec<(ConsumerId, consumers::Filter)>>,
    /// Told of every job transition (the broker's metrics), if set.
    observer: Option<Box<dyn Observer>>,
    /// The latest failed attempts, oldest first.
    failures: Failures,
}

impl Queue {
    /// An empty queue whose lease ids, jitter and job ids come from
    /// `secrets` (drawn from the operating system's generator by the
    /// owner; a `u64` derives them, for tests).
    pub fn new(config: QueueConfig, secrets: impl Into<Secrets>) -> Self {
        let secrets = secrets.into();
        Self {
            config,
            rng: StdRng::from_seed(secrets.seed),
            names: Names::default(),
            next_seq: 0,
            jobs: JobTable::default(),
            ids: JobIds::new(secrets.ids),
            queues: HashMap::new(),
            scheduled: BTreeSet::new(),
            leases: BTreeSet::new(),
            retained: BTreeSet::new(),
            retained_bytes: 0,
            idempotency: HashMap::new(),
            consumers: BTreeMap::new(),
            next_consumer: 0,
            outbox: Vec::new(),
            paused_changed: Vec::new(),
            limits_changed: Vec::new(),
            flow_wakeups: BTreeSet::new(),
            to_pump: Vec::new(),
            waiting: HashMap::new(),
            observer: None,
            failures: Failures::new(),
        }
    }

    /// The public id of job `seq`.
    fn job_id(&self, seq: Seq) -> Uuid {
        self.ids.id(seq)
    }

    /// The seq of a known job with id `job_id`.
    fn seq_of(&self, job_id: Uuid) -> Result<Seq, QueueError> {
        match self.ids.seq(job_id) {
            Some(seq) if seq < self.next_seq && self.jobs.contains(seq) => Ok(seq),
            _ => Err(QueueError::UnknownJob { job_id }),
        }
    }

    /// Interns and retains `name` (see `names.rs`): a reclaimed id is
    /// forgotten first, and consumers waiting for a new name get it.
    fn take_name(&mut self, name: &str) -> Result<NameId, QueueError> {
        let interned = self.names.intern(name)?;
        if interned.reclaimed {
            self.forget_name(interned.id);
        }
        self.names.retain(interned.id);
        if interned.new {
            self.resolve_waiting(interned.id);
        }
        Ok(interned.id)
    }

    /// A job's queue and type names, both retained, or neither.
    fn take_names(&mut self, queue: &str, job_type: &str) -> Result<(NameId, NameId), QueueError> {
        let queue = self.take_name(queue)?;
        match self.take_name(job_type) {
            Ok(job_type) => Ok((queue, job_type)),
            Err(e) => {
                self.names.release(queue);
                Err(e)
            }
        }
    }

    /// Drops what is kept under a name's id once a new name took its
    /// place: nothing referred to it, so its queue holds no job, no pause
    /// and no consumer; only its counters go.
    fn forget_name(&mut self, id: NameId) {
        if let Some(qs) = self.queues.remove(&id) {
            debug_assert!(
                qs.consumers.is_empty()
                    && !qs.paused
                    && qs.flow.limits.is_empty()
                    && qs.unfinished() == 0
            );
        }
        if let Some(observer) = self.observer.as_mut() {
            observer.name_forgotten(id.get());
        }
    }

    /// Adds a job: READY now, or SCHEDULED when `run_at` is in the future.
    ///
    /// # Errors
    /// [`QueueError::QueueFull`] when the queue holds `max_queue_size`
    /// unfinished jobs; [`QueueError::OverMemory`] when the job would take
    /// the jobs past `max_memory` even with retained jobs forgotten;
    /// [`QueueError::TooManyNames`] for a new name past the limit.
    pub fn enqueue(&mut self, new: NewJob, now: Timestamp) -> Result<Enqueued, QueueError> {
        let (queue, job_type) = self.take_names(&new.queue, &new.job_type)?;
        let enqueued = self.enqueue_named(new, queue, job_type, now);
        // A new job keeps the references to its names; anything else gives
        // them back.
        if !matches!(
            enqueued,
            Ok(Enqueued {
                duplicate: false,
                ..
            })
        ) {
            self.names.release(queue);
            self.names.release(job_type);
        }
        enqueued
    }

    /// [`Queue::enqueue`] once the job's names are interned and retained.
    fn enqueue_named(
        &mut self,
        new: NewJob,
        queue: NameId,
        job_type: NameId,
        now: Timestamp,
    ) -> Result<Enqueued, QueueError> {
        if let Some(key) = &new.idempotency_key
            && let Some(seq) = self.idempotency.get(&(queue, key.as_str().into()))
        {
            let (seq, job_id) = (*seq, self.job_id(*seq));
            self.observe(seq, JobEvent::Duplicate);
            return Ok(Enqueued {
                job_id,
                duplicate: true,
            });
        }
        if new.dead_letter.is_none() {
            self.check_room(queue)?;
        }
        let seq = self.next_seq;
        // 2^54 jobs (the ready key's seq bits): 570 years at a million a second.
        assert!(seq < 1 << 54, "job sequence space exhausted");
        let run_at = new.run_at.map_or(now, |t| t.max(now));
        let dead_letter = new.dead_letter.map(truncate_error);
        let idempotency_key = new.idempotency_key.filter(|_| dead_letter.is_none());
        let key = idempotency_key.as_deref().map(Box::<str>::from);
        let record = JobRecord {
            seq,
            queue: new.queue,
            job_type: new.job_type,
            payload: new.payload,
            headers: new.headers,
            priority: new.priority,
            state: JobState::Scheduled,
            attempt: 0,
            max_attempts: new.max_attempts.unwrap_or(self.config.max_attempts),
            timeout: new.timeout.unwrap_or(self.config.default_timeout),
            created_at: now,
            run_at,
            finished_at: None,
            last_error: None,
            idempotency_key,
            key: new.key,
            cancel_requested: false,
            progress: None,
            result: None,
        };
        let job = Job::from_record(record, queue, job_type);
        self.make_room(job.held_bytes(), None, now)?;
        // Up to here only names were interned: a refusal leaves no other trace.
        self.queues.entry(queue).or_default().counters.enqueued += 1;
        self.next_seq += 1;
        if let Some(key) = key {
            self.idempotency.insert((queue, key), seq);
        }
        let id = self.job_id(seq);
        self.jobs.insert(seq, job);
        self.log_job(seq, None, LogLevel::Debug, "job enqueued");
        self.observe(seq, JobEvent::Enqueued);
        match dead_letter {
            None => self.admit(seq, now),
            Some(reason) => self.bury_new(seq, reason, now),
        }
        Ok(Enqueued {
            job_id: id,
            duplicate: false,
        })
    }

    /// The attempt under `lease_id` succeeded: the job is SUCCEEDED.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn ack(&mut self, job_id: Uuid, lease_id: Uuid, now: Timestamp) -> Result<(), QueueError> {
        self.ack_with_result(job_id, lease_id, None, now)
    }

    /// [`Queue::ack`], keeping `result` with the SUCCEEDED job (the service
    /// caps it at [`sluice_limits::MAX_RESULT_BYTES`]).
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn ack_with_result(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        result: Option<Bytes>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        if result.is_some() {
            // Before `finish`, so that retention counts its bytes.
            self.jobs.change_extras(seq, true, |e| e.result = result);
        }
        let lease = self.end_lease(seq, now);
        self.queue_state(seq).counters.acked += 1;
        self.log_job(seq, Some(&lease), LogLevel::Debug, "job acked");
        let ran = now.saturating_since(lease.leased_at);
        self.observe(seq, JobEvent::Acked { ran });
        self.finish(seq, JobState::Succeeded, now);
        self.free_slot(lease.consumer, now);
        Ok(())
    }

    /// The attempt under `lease_id` failed: the job runs again after a
    /// backoff while attempts remain, else it is DEAD.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn nack(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        failure: Failure,
        now: Timestamp,
    ) -> Result<FailureOutcome, QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        // Before the job may run again.
        self.hold_key_of(seq, failure.key_delay, now);
        let lease = self.end_lease(seq, now);
        self.queue_state(seq).counters.nacked += 1;
        let ran = now.saturating_since(lease.leased_at);
        self.observe(seq, JobEvent::Nacked { ran });
        let outcome = self.fail_attempt(seq, &lease, failure, now);
        self.free_slot(lease.consumer, now);
        Ok(outcome)
    }

    /// Heartbeat: the lease now expires at `now + by`, or `now` plus the
    /// length it was granted with when `by` is `None`.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn extend(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        by: Option<Duration>,
        now: Timestamp,
    ) -> Result<Extended, QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        let job = self.jobs.get_mut_untracked(seq).expect("leased() found it");
        let lease = job.lease.as_mut().expect("leased() checked the lease");
        let expires_at = now.saturating_add(by.unwrap_or(lease.duration));
        self.leases.remove(&(lease.expires_at, seq));
        self.leases.insert((expires_at, seq));
        lease.expires_at = expires_at;
        Ok(Extended {
            expires_at,
            cancel_requested: job.cancel_requested,
        })
    }

    /// Records how far the attempt under `lease_id` has come, replacing
    /// what it reported before; answers whether an operator asked to cancel
    /// the job. The lease is not extended. Not noted for the store: a
    /// progress report is not worth a disk write of its own, so it reaches
    /// `--data-dir` with the job's next change (its Ack, Nack or Release),
    /// and a restart, which runs the attempt again, forgets it.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn progress(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        percent: u32,
        message: String,
        now: Timestamp,
    ) -> Result<bool, QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        let job = &self.jobs[seq];
        let progress = Progress {
            percent,
            message,
            attempt: u32::from(job.attempt),
            updated_at: now,
        };
        let cancel_requested = job.cancel_requested;
        self.jobs
            .change_extras(seq, false, |e| e.progress = Some(progress));
        Ok(cancel_requested)
    }

    /// Gives the job back without using an attempt; due again after `delay`.
    /// A job an operator cancelled becomes CANCELLED instead.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn release(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        delay: Duration,
        now: Timestamp,
    ) -> Result<JobState, QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        self.observe(seq, JobEvent::Released);
        Ok(self.give_back(seq, delay, now))
    }

    /// Ends the lease of leased job `seq` without using an attempt: READY
    /// (due after `delay`), or CANCELLED if an operator asked for it.
    fn give_back(&mut self, seq: Seq, delay: Duration, now: Timestamp) -> JobState {
        let lease = self.end_lease(seq, now);
        self.log_job(seq, Some(&lease), LogLevel::Debug, "job released");
        let job = self.jobs.get_mut(seq).expect("leased() found it");
        job.attempt -= 1;
        let state = if job.cancel_requested {
            self.observe(seq, JobEvent::Cancelled);
            self.finish(seq, JobState::Cancelled, now);
            JobState::Cancelled
        } else if delay.is_zero() {
            // Keeps its run_at, and so its place among the ready jobs.
            self.make_ready(seq, now);
            JobState::Ready
        } else {
            self.schedule(seq, now.saturating_add(delay));
            JobState::Scheduled
        };
        self.free_slot(lease.consumer, now);
        state
    }

    /// Promotes due scheduled jobs, fails expired leases and forgets jobs
    /// whose retention ended, all as of `now`.
    pub fn expire(&mut self, now: Timestamp) {
        while let Some(&(at, seq)) = self.scheduled.first() {
            if at > now {
                break;
            }
            self.scheduled.pop_first();
            self.log_job(seq, None, LogLevel::Debug, "job due");
            self.make_ready(seq, now);
        }
        while let Some(&(at, seq)) = self.leases.first() {
            if at > now {
                break;
            }
            let lease = self.end_lease(seq, now);
            self.queue_state(seq).counters.expired += 1;
            let ran = now.saturating_since(lease.leased_at);
            self.observe(seq, JobEvent::Expired { ran });
            let failure = Failure {
                error: LEASE_EXPIRED.to_owned(),
                ..Failure::default()
            };
            self.fail_attempt(seq, &lease, failure, now);
            self.free_slot(lease.consumer, now);
        }
        while let Some(&(at, seq)) = self.retained.first() {
            if at > now {
                break;
            }
            self.remove_job(seq, now);
        }
        self.wake_flow(now);
        self.pump(now);
    }

    /// The earliest time at which [`Queue::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        [&self.scheduled, &self.leases, &self.retained]
            .iter()
            .filter_map(|set| set.first().map(|&(at, _)| at))
            .chain(self.flow_wakeups.first().map(|(at, _, _)| *at))
            .min()
    }

    /// Moves the deliveries made since the last call into `out`.
    pub fn drain_deliveries(&mut self, out: &mut Vec<Delivery>) {
        out.append(&mut self.outbox);
    }

    /// The job of a delivery, as leased.
    pub fn delivered_job(&self, delivery: Delivery) -> JobView<'_> {
        self.view(delivery.seq)
    }

    /// A delivery could not be sent (its stream is gone): if its lease is
    /// still current, the job is ready again in its old place, with no
    /// attempt used. A delivery whose lease ended meanwhile is ignored.
    pub fn return_undelivered(&mut self, delivery: Delivery, now: Timestamp) {
        // Not a release by a worker: no event (it was counted as leased,
        // and its next lease counts again).
        if self.is_current(delivery) {
            self.give_back(delivery.seq, Duration::ZERO, now);
        }
    }

    /// Like [`Queue::return_undelivered`], for a delivery named by its job
    /// and lease ids (as its message carries them). Unknown ids, or a lease
    /// that ended meanwhile, are ignored.
    pub fn return_unsent(&mut self, job_id: Uuid, lease_id: Uuid, now: Timestamp) {
        let Ok(seq) = self.seq_of(job_id) else { return };
        let Some(consumer) = self
            .jobs
            .get(seq)
            .and_then(|job| job.lease.as_ref())
            .map(|l| l.consumer)
        else {
            return;
        };
        self.return_undelivered(
            Delivery {
                consumer,
                seq,
                lease_id,
            },
            now,
        );
    }

    /// Whether the lease of a delivery is still the job's current one.
    pub fn is_current(&self, delivery: Delivery) -> bool {
        self.jobs
            .get(delivery.seq)
            .and_then(|job| job.lease.as_ref())
            .is_some_and(|l| l.id == delivery.lease_id)
    }

    /// Jobs currently leased.
    pub fn leased_count(&self) -> usize {
        self.leases.len()
    }

    /// Jobs that are scheduled, ready or leased.
    pub fn unfinished_count(&self) -> u64 {
        self.queues.values().map(QueueState::unfinished).sum()
    }
}
