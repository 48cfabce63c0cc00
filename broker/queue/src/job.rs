//! A job's record in the queue and its state: what is stored per job, kept
//! compact because a broker holds millions of them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::JobRecord;
use super::names::NameId;
use crate::Timestamp;

/// The queue's internal key of a job: its enqueue sequence number. Unique for
/// the life of the broker and increasing, so it also orders jobs by creation.
pub type Seq = u64;

/// Where a job is in its life. See `sluice.v1.JobState`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting for its `run_at`.
    Scheduled,
    /// Due, waiting for a consumer.
    Ready,
    /// Held by a consumer under a lease.
    Leased,
    /// An attempt was acknowledged.
    Succeeded,
    /// Out of attempts, or failed as dead.
    Dead,
    /// Cancelled by an operator.
    Cancelled,
}

impl JobState {
    /// Every state, in the order of [`JobState::index`].
    pub const ALL: [JobState; 6] = [
        JobState::Scheduled,
        JobState::Ready,
        JobState::Leased,
        JobState::Succeeded,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// A dense index, for per-state counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name a store keeps this state under (a PostgreSQL column, a
    /// Redis field and key): lower case, and one definition for every store.
    pub const fn stored_name(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Ready => "ready",
            JobState::Leased => "leased",
            JobState::Succeeded => "succeeded",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state a store's `name` stands for ([`JobState::stored_name`]).
    pub fn from_stored_name(name: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.stored_name() == name)
    }

    /// A job in this state will run again without an operator's help.
    pub const fn is_unfinished(self) -> bool {
        matches!(
            self,
            JobState::Scheduled | JobState::Ready | JobState::Leased
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            JobState::Scheduled => "SCHEDULED",
            JobState::Ready => "READY",
            JobState::Leased => "LEASED",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Dead => "DEAD",
            JobState::Cancelled => "CANCELLED",
        };
        f.write_str(name)
    }
}

/// The consumer (open Lease stream) a job was handed to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerId(pub(crate) u64);

/// The lease of a job in [`JobState::Leased`].
#[derive(Debug, Clone)]
pub struct Lease {
    /// Names this lease; any other id is stale.
    pub id: Uuid,
    /// The stream it was handed out on; its slot frees when the lease ends.
    pub consumer: ConsumerId,
    /// Who holds it, shared with the consumer record.
    pub worker_id: Arc<str>,
    /// When the attempt fails unless resolved or extended.
    pub expires_at: Timestamp,
    /// The length asked for; an Extend without a length extends by it.
    pub duration: Duration,
    /// When it was handed out.
    pub leased_at: Timestamp,
}

/// One job as stored, kept small because a broker holds millions: the
/// rarely present parts (headers, an error, the keys) share one
/// box, and a plain job pays one word for all of them.
#[derive(Debug)]
pub(crate) struct Job {
    pub queue: NameId,
    pub job_type: NameId,
    pub state: JobState,
    pub cancel_requested: bool,
    pub priority: i32,
    /// Attempts started: 0 before the first lease; never above max_attempts.
    pub attempt: u16,
    /// At most [`sluice_limits::MAX_ATTEMPTS`].
    pub max_attempts: u16,
    /// Per-attempt run limit in milliseconds (at most 24h, validated).
    pub timeout_ms: u32,
    pub payload: Bytes,
    pub created_at: Timestamp,
    /// When the job is next due (SCHEDULED) or became due; READY jobs run in
    /// this order within a priority, so a job given back keeps its place.
    pub run_at: Timestamp,
    /// When it finished; [`Timestamp::default`] while it has not.
    pub finished_at: Timestamp,
    pub lease: Option<Box<Lease>>,
    pub extras: Option<Box<Extras>>,
}

impl Job {
    /// The job `record` describes, in the queue and of the type it names
    /// (interned by the caller): not leased, not cancel-requested, and not
    /// yet counted in any state, so [`JobState::Scheduled`] until the queue
    /// places it (`Queue::admit` or `Queue::count_new`). Enqueue builds
    /// the record of a new job; restoring reads it from the store.
    pub fn from_record(record: JobRecord, queue: NameId, job_type: NameId) -> Job {
        let max_attempts = record.max_attempts.clamp(1, sluice_limits::MAX_ATTEMPTS);
        Job {
            queue,
            job_type,
            state: JobState::Scheduled,
            cancel_requested: false,
            priority: record.priority,
            attempt: u16::try_from(record.attempt).unwrap_or(u16::MAX),
            max_attempts: u16::try_from(max_attempts).unwrap_or(u16::MAX),
            timeout_ms: millis_u32(record.timeout),
            payload: record.payload,
            created_at: record.created_at,
            run_at: record.run_at,
            finished_at: record.finished_at.unwrap_or_default(),
            lease: None,
            extras: Extras {
                headers: record.headers,
                last_error: record.last_error.map(String::into_boxed_str),
                idempotency_key: record.idempotency_key.map(String::into_boxed_str),
                key: record.key.map(Arc::from),
                progress: record.progress.map(|p| *p),
                result: record.result,
            }
            .boxed_if_any(),
        }
    }
}

/// How far a running job has come, as its worker reported it (see
/// `sluice.v1.JobProgress`): it names the attempt it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// 0 to [`sluice_limits::MAX_PROGRESS_PERCENT`].
    pub percent: u32,
    /// At most [`sluice_limits::MAX_PROGRESS_MESSAGE_BYTES`].
    pub message: String,
    /// The attempt that reported it.
    pub attempt: u32,
    /// When the broker took the report.
    pub updated_at: Timestamp,
}

/// The parts of a job that most jobs do not have.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    pub headers: Headers,
    pub last_error: Option<Box<str>>,
    pub idempotency_key: Option<Box<str>>,
    /// The flow-control key, shared with its queue's key state.
    pub key: Option<Arc<str>>,
    pub progress: Option<Progress>,
    /// What the successful attempt's Ack carried.
    pub result: Option<Bytes>,
}

impl Extras {
    /// The box of a job that has any of these; `None` for a plain job.
    pub fn boxed_if_any(self) -> Option<Box<Extras>> {
        let any = !self.headers.is_empty()
            || self.last_error.is_some()
            || self.idempotency_key.is_some()
            || self.key.is_some()
            || self.progress.is_some()
            || self.result.is_some();
        any.then(|| Box::new(self))
    }

    /// The bytes of these that `max_memory` counts.
    pub(crate) fn held_bytes(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        headers
            + self.last_error.as_deref().map_or(0, str::len)
            + 2 * self.idempotency_key.as_deref().map_or(0, str::len)
            + self.key.as_deref().map_or(0, str::len)
            + self.progress.as_ref().map_or(0, |p| p.message.len())
            + self.result.as_ref().map_or(0, Bytes::len)
    }
}

/// A per-attempt run limit as stored in a job: whole milliseconds (the
/// service allows at most 24h, far below `u32::MAX` ms).
fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl Job {
    pub fn headers(&self) -> &[(String, String)] {
        self.extras.as_deref().map_or(&[], |e| e.headers.as_slice())
    }

    pub fn last_error(&self) -> Option<&str> {
        self.extras.as_deref().and_then(|e| e.last_error.as_deref())
    }

    pub fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_default()
    }

    /// Its flow-control key, if it has one.
    pub fn key(&self) -> Option<&Arc<str>> {
        self.extras.as_deref().and_then(|e| e.key.as_ref())
    }

    pub fn progress(&self) -> Option<&Progress> {
        self.extras.as_deref().and_then(|e| e.progress.as_ref())
    }

    pub fn result(&self) -> Option<&Bytes> {
        self.extras.as_deref().and_then(|e| e.result.as_ref())
    }

    /// Its key in the retention set: when a finished job is forgotten.
    pub fn retention_key(&self, seq: Seq, retention: Duration) -> (Timestamp, Seq) {
        (self.finished_at.saturating_add(retention), seq)
    }

    /// Its place among the ready jobs of its queue and type.
    pub fn ready_key(&self, seq: Seq) -> ReadyKey {
        ReadyKey::new(self.priority, self.run_at, seq)
    }

    pub fn finished(&self) -> Option<Timestamp> {
        (self.finished_at != Timestamp::default()).then_some(self.finished_at)
    }
}

/// A ready job's place: highest priority first, then earliest due, then
/// first enqueued, packed into 16 bytes (priority 32 bits, due time in
/// milliseconds 42 bits, until the year 2109; seq 54 bits) because the
/// ready index holds one per ready job.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ReadyKey(u128);

impl ReadyKey {
    const SEQ_BITS: u32 = 54;
    const TIME_BITS: u32 = 42;

    pub fn new(priority: i32, run_at: Timestamp, seq: Seq) -> Self {
        // Order-preserving i32 -> u32, inverted so the highest comes first.
        let priority = !((priority as u32) ^ 0x8000_0000);
        let millis = (run_at.as_micros() / 1000).min((1 << Self::TIME_BITS) - 1);
        let seq = seq & ((1 << Self::SEQ_BITS) - 1);
        Self(
            (u128::from(priority) << (Self::TIME_BITS + Self::SEQ_BITS))
                | (u128::from(millis) << Self::SEQ_BITS)
                | u128::from(seq),
        )
    }

    pub fn seq(self) -> Seq {
        (self.0 & ((1 << Self::SEQ_BITS) - 1)) as Seq
    }

    /// When the job became due, to the millisecond.
    pub fn due(self) -> Timestamp {
        let millis = (self.0 >> Self::SEQ_BITS) & ((1 << Self::TIME_BITS) - 1);
        Timestamp::from_micros(millis as u64 * 1000)
    }

    /// The smallest key of the next lower priority, `None` below the lowest:
    /// every key of this key's priority sorts before it.
    pub fn next_priority(self) -> Option<Self> {
        let band = self.0 >> (Self::TIME_BITS + Self::SEQ_BITS);
        (band < u128::from(u32::MAX))
            .then(|| Self((band + 1) << (Self::TIME_BITS + Self::SEQ_BITS)))
    }
}

/// Job headers, in the order the producer sent them.
pub type Headers = Vec<(String, String)>;

/// A read-only view of a job with its names resolved, for the service layer.
#[derive(Debug, Clone, Copy)]
pub struct JobView<'a> {
    /// The job's public id.
    pub id: Uuid,
    /// Queue name.
    pub queue: &'a str,
    /// Job type name.
    pub job_type: &'a str,
    /// The flow-control key, if any.
    pub key: Option<&'a str>,
    /// Current state.
    pub state: JobState,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// An operator asked to cancel it while leased.
    pub cancel_requested: bool,
    /// Per-attempt run limit.
    pub timeout: Duration,
    /// Opaque payload.
    pub payload: &'a Bytes,
    /// Headers, empty if none.
    pub headers: &'a [(String, String)],
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it is next due, or became due.
    pub run_at: Timestamp,
    /// When it finished, if it did.
    pub finished_at: Option<Timestamp>,
    /// Error of the last failed attempt.
    pub last_error: Option<&'a str>,
    /// The current lease, while leased.
    pub lease: Option<&'a Lease>,
    /// The last progress a worker reported.
    pub progress: Option<&'a Progress>,
    /// What the successful attempt's Ack carried.
    pub result: Option<&'a Bytes>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_keys_order_by_priority_then_due_time_then_seq() {
        let t = |ms: u64| Timestamp::from_micros(ms * 1000);
        let mut keys = [
            (ReadyKey::new(0, t(5), 1), "p0 late"),
            (ReadyKey::new(0, t(1), 9), "p0 early"),
            (ReadyKey::new(-3, t(0), 0), "negative"),
            (ReadyKey::new(i32::MAX, t(9), 7), "max"),
            (ReadyKey::new(0, t(1), 10), "p0 early, later seq"),
            (ReadyKey::new(i32::MIN, t(0), 0), "min"),
            (ReadyKey::new(1, t(1_800_000_000_000), 3), "p1 in 2027"),
        ];
        keys.sort();
        let order: Vec<&str> = keys.iter().map(|k| k.1).collect();
        assert_eq!(
            order,
            [
                "max",
                "p1 in 2027",
                "p0 early",
                "p0 early, later seq",
                "p0 late",
                "negative",
                "min"
            ]
        );
        assert_eq!(ReadyKey::new(7, t(3), (1 << 54) - 1).seq(), (1 << 54) - 1);
    }
}
