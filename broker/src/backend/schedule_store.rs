//! The seam for schedules: every backend keeps each schedule as one
//! [`StoredSchedule`] (its name, a revision, its next tick, and a body
//! the backend does not read), ordered by next tick, and changes it only
//! by compare-and-set on the revision ([`Expect`]). What a schedule means
//! and when it fires is `crate::schedules`' business; here a backend only
//! keeps the rows, so every store does the same with the fewest rules.
//!
//! Concurrency: every write names the revision it read (or that none
//! exists), so two brokers changing one schedule at once cannot lose an
//! update: one wins, the other reads again. Writes are durable before
//! they return, as a job's are.

use bytes::Bytes;
use sluice_queue::{Enqueued, NewJob, QueueError};

use super::BackendError;

/// Milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// One schedule as a backend keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchedule {
    /// Unique; the schedule's handle.
    pub name: String,
    /// Bumped by each write (1 for a new schedule).
    pub revision: u64,
    /// When it is next due; `None` while paused or once ended (never due).
    pub next_fire: Option<Millis>,
    /// The definition and its state, encoded by `crate::schedules`.
    pub body: Bytes,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No schedule of that name.
    Absent,
    /// The schedule at this revision.
    Revision(u64),
}

/// Where schedules live; see the module doc.
#[tonic::async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Every schedule, by name.
    async fn schedules(&self) -> Result<Vec<StoredSchedule>, BackendError>;

    /// One schedule.
    async fn schedule(&self, name: &str) -> Result<Option<StoredSchedule>, BackendError>;

    /// At most `limit` schedules due at `until` or before, earliest first:
    /// read from the order by next tick, never by scanning every schedule.
    async fn due_schedules(
        &self,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, BackendError>;

    /// The earliest next tick of any schedule.
    async fn next_schedule_fire(&self) -> Result<Option<Millis>, BackendError>;

    /// Writes `schedule` if the store holds what `expect` says; returns
    /// whether it did.
    async fn put_schedule(
        &self,
        schedule: StoredSchedule,
        expect: Expect,
    ) -> Result<bool, BackendError>;

    /// Deletes a schedule; returns whether it existed.
    async fn delete_schedule(&self, name: &str) -> Result<bool, BackendError>;

    /// Writes each schedule the store holds at the revision paired with
    /// it (the firing loop's second write, of many schedules at once);
    /// whether each was written, in order. The schedules are different
    /// ones.
    async fn put_schedules(
        &self,
        writes: Vec<(StoredSchedule, u64)>,
    ) -> Result<Vec<bool>, BackendError>;

    /// Fires ticks of different schedules. For each, if the store holds
    /// its schedule at revision `expect`, enqueues its job and writes its
    /// schedule in one atomic step (one transaction, one script, one
    /// commit), so that however many brokers fire a tick at once, one job
    /// is added; a backend may commit several ticks together. The answers
    /// are in the order of `ticks`: `None` when the revision differs
    /// (nothing done); the enqueue's own answer otherwise, and the
    /// schedule is written only if the job was added or its idempotency
    /// key already held. Refused while draining, as Enqueue is.
    async fn fire_schedules(
        &self,
        ticks: Vec<TickFire>,
    ) -> Result<Vec<Option<Fired>>, BackendError>;
}

/// One tick to fire; see [`ScheduleStore::fire_schedules`].
#[derive(Debug, Clone)]
pub struct TickFire {
    /// The schedule as it is once the tick fired.
    pub schedule: StoredSchedule,
    /// The revision it was read at.
    pub expect: u64,
    /// The tick's job.
    pub job: NewJob,
}

/// What a tick's enqueue answered.
pub type Fired = Result<Enqueued, QueueError>;

/// Whether a row at `current` (`None`: absent) meets `expect`.
pub fn expected(current: Option<u64>, expect: Expect) -> bool {
    match expect {
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current == Some(r),
    }
}
