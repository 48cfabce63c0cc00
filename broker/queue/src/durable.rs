//! The queue's durable view: what must survive a restart, the changes to it
//! in the order they happened, and rebuilding a queue from it.
//!
//! The queue never calls a store. With [`Queue::track_changes`] on, it notes
//! every job and queue it touches; the service layer takes those notes with
//! [`Queue::take_changes`] after each operation, under the same lock, and
//! hands them to the store, so the store sees changes in queue order. On
//! start, a [`Restorer`] rebuilds the queue from what the store read back.
//!
//! Leases are not durable: a leased job is recorded as it was before its
//! lease (READY, that attempt not counted), so after a crash it runs again
//! without the broker's failure costing it an attempt.

use std::time::Duration;

use bytes::Bytes;

use super::job::{Headers, Job, JobState, Progress, Seq};
use super::{IdSecret, Queue, QueueConfig, QueueLimits, Secrets};
use crate::QueueError;
use crate::Timestamp;

/// A job as it must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job's seq: the low half of its id.
    pub seq: Seq,
    /// Queue name.
    pub queue: String,
    /// Job type name.
    pub job_type: String,
    /// Stored once, with the job's first record.
    pub payload: Bytes,
    /// Headers, if any.
    pub headers: Headers,
    /// Higher runs first.
    pub priority: i32,
    /// Never LEASED.
    pub state: JobState,
    /// Attempts started (a leased job's current one not counted).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Per-attempt run limit.
    pub timeout: Duration,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it is next due, or became due.
    pub run_at: Timestamp,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// Error of the last failed attempt.
    pub last_error: Option<String>,
    /// Deduplicates enqueues within the queue.
    pub idempotency_key: Option<String>,
    /// The flow-control key.
    pub key: Option<String>,
    /// An operator cancelled it while it was leased.
    pub cancel_requested: bool,
    /// The last progress reported, as of this record (boxed: rare, and a
    /// record travels in every [`Change::Put`]).
    pub progress: Option<Box<Progress>>,
    /// What the successful attempt's Ack carried.
    pub result: Option<Bytes>,
}

/// One change to the durable view.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The job's record is now this. `new`: it was just enqueued, so its
    /// payload is not stored yet (records of known jobs leave it alone).
    Put {
        /// The job as it is now.
        record: JobRecord,
        /// Just enqueued: the payload is to be stored too.
        new: bool,
    },
    /// The job is gone.
    Delete {
        /// Its seq.
        seq: Seq,
    },
    /// A queue was paused or resumed.
    Paused {
        /// Queue name.
        queue: String,
        /// Paused now.
        paused: bool,
    },
    /// A queue's limits were set (empty: cleared).
    Limits {
        /// Queue name.
        queue: String,
        /// Its limits now.
        limits: QueueLimits,
    },
    /// A schedule was written or deleted. The queue never makes this
    /// change: the broker's schedules pass through the same group commit,
    /// as bytes the store does not read.
    Schedule {
        /// The schedule's name.
        name: String,
        /// Its encoded record; `None` when deleted.
        record: Option<Vec<u8>>,
    },
    /// A row of a source group was written or deleted: bytes the store
    /// does not read, as a schedule's.
    Source {
        /// The source group.
        group: String,
        /// The row's key in it.
        key: String,
        /// Its encoded record; `None` when deleted.
        record: Option<Vec<u8>>,
    },
}

/// What a store keeps besides its jobs, given back on start.
#[derive(Debug, Default)]
pub struct StoreMeta {
    /// The secret of the store's job ids; `None` for a new store.
    pub ids: Option<IdSecret>,
    /// Above every seq ever handed out.
    pub next_seq: Seq,
    /// Paused queues.
    pub paused: Vec<String>,
    /// Queues' limits.
    pub limits: Vec<(String, QueueLimits)>,
    /// Every schedule's encoded record (see [`Change::Schedule`]), by name.
    pub schedules: Vec<(String, Vec<u8>)>,
    /// Every source row's encoded record (see [`Change::Source`]), by
    /// group and key.
    pub sources: Vec<(String, String, Vec<u8>)>,
}

/// Rebuilds a queue from a store, one job at a time, so that recovery
/// never holds every record at once beside the queue.
#[derive(Debug)]
pub struct Restorer {
    queue: Queue,
    /// Unfinished jobs cancelled while leased: CANCELLED once all are in.
    cancelled: Vec<Seq>,
    now: Timestamp,
}

impl Restorer {
    /// Starts rebuilding, at `now`, a queue with `config` whose lease ids
    /// and jitter come from `secrets` (its job ids' secret is the store's,
    /// given to [`Restorer::finish`]).
    pub fn new(config: QueueConfig, secrets: impl Into<Secrets>, now: Timestamp) -> Self {
        Self {
            queue: Queue::new(config, secrets),
            cancelled: Vec::new(),
            now,
        }
    }

    /// Adds one stored job: it keeps its id, state, attempts, error,
    /// schedule and idempotency key, and a finished job its retention.
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] if the store holds more names than the
    /// broker allows.
    pub fn add(&mut self, record: JobRecord) -> Result<(), QueueError> {
        let seq = record.seq;
        if record.state.is_unfinished() && record.cancel_requested {
            self.cancelled.push(seq);
        }
        self.queue.next_seq = self.queue.next_seq.max(seq + 1);
        self.queue.restore_job(record, self.now)
    }

    /// The rebuilt queue, tracking changes: `meta` applied, jobs cancelled
    /// while leased CANCELLED, and retention trimmed to `max_retained`.
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] for a paused queue past the limit.
    pub fn finish(self, meta: StoreMeta) -> Result<Queue, QueueError> {
        let Restorer {
            mut queue,
            cancelled,
            now,
        } = self;
        if let Some(ids) = meta.ids {
            queue.ids = super::JobIds::new(ids);
        }
        queue.next_seq = queue.next_seq.max(meta.next_seq);
        for name in &meta.paused {
            queue.pause(name)?;
        }
        for (name, limits) in meta.limits {
            queue.set_limits(&name, limits, now)?;
        }
        // What changes from here on must reach the store too.
        queue.track_changes();
        for seq in cancelled {
            queue.finish(seq, JobState::Cancelled, now);
        }
        queue.trim_retained(now);
        Ok(queue)
    }
}

impl Queue {
    fn restore_job(&mut self, r: JobRecord, now: Timestamp) -> Result<(), QueueError> {
        let (queue, job_type) = self.take_names(&r.queue, &r.job_type)?;
        let seq = r.seq;
        self.queues.entry(queue).or_default();
        if let Some(key) = &r.idempotency_key {
            self.idempotency.insert((queue, key.as_str().into()), seq);
        }
        let (state, cancel_requested) = (r.state, r.cancel_requested);
        self.jobs.insert(seq, Job::from_record(r, queue, job_type));
        match state {
            // Finished by `Restorer::finish` once it tracks changes.
            _ if state.is_unfinished() && cancel_requested => {
                self.count_new(seq, JobState::Scheduled);
            }
            JobState::Scheduled | JobState::Ready | JobState::Leased => self.admit(seq, now),
            JobState::Succeeded | JobState::Cancelled => {
                self.count_new(seq, state);
                self.retain(seq);
            }
            JobState::Dead => self.count_new(seq, JobState::Dead),
        }
        Ok(())
    }

    /// From now on, notes every change for [`Queue::take_changes`].
    pub fn track_changes(&mut self) {
        self.jobs.track_changes();
    }

    /// Notes that queue `id` was paused or resumed.
    pub(super) fn note_paused(&mut self, id: super::names::NameId) {
        if self.jobs.is_tracking() {
            self.paused_changed.push(self.names.shared(id));
        }
    }

    /// Moves the changes noted since the last call to `out`.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        for (seq, new) in self.jobs.take_changes() {
            match self.record(seq) {
                Some(record) => out.push(Change::Put { record, new }),
                // Enqueued and gone before it was ever stored.
                None if new => {}
                None => out.push(Change::Delete { seq }),
            }
        }
        for queue in std::mem::take(&mut self.paused_changed) {
            let paused = self
                .names
                .get(&queue)
                .and_then(|id| self.queues.get(&id))
                .is_some_and(|qs| qs.paused);
            out.push(Change::Paused {
                queue: queue.to_string(),
                paused,
            });
        }
        for queue in std::mem::take(&mut self.limits_changed) {
            out.push(Change::Limits {
                queue: queue.to_string(),
                limits: self.limits(&queue),
            });
        }
    }

    /// The secret of this queue's job ids, for its store to keep.
    pub fn id_secret(&self) -> IdSecret {
        self.ids.secret()
    }

    /// The durable view of job `seq`.
    fn record(&self, seq: Seq) -> Option<JobRecord> {
        let job = self.jobs.get(seq)?;
        let (state, attempt) = match job.state {
            JobState::Leased => (JobState::Ready, job.attempt.saturating_sub(1)),
            state => (state, job.attempt),
        };
        let extras = job.extras.as_deref();
        Some(JobRecord {
            seq,
            queue: self.names.name(job.queue).to_owned(),
            job_type: self.names.name(job.job_type).to_owned(),
            payload: job.payload.clone(),
            headers: job.headers().to_vec(),
            priority: job.priority,
            state,
            attempt: u32::from(attempt),
            max_attempts: u32::from(job.max_attempts),
            timeout: Duration::from_millis(u64::from(job.timeout_ms)),
            created_at: job.created_at,
            run_at: job.run_at,
            finished_at: job.finished(),
            last_error: job.last_error().map(str::to_owned),
            idempotency_key: extras.and_then(|e| e.idempotency_key.as_deref().map(str::to_owned)),
            key: job.key().map(|k| k.to_string()),
            cancel_requested: job.cancel_requested,
            progress: job.progress().cloned().map(Box::new),
            result: job.result().cloned(),
        })
    }
}
