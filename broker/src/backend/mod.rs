//! The backend seam: where jobs live. The gRPC services ([`crate::service`])
//! validate and translate requests, then call one [`Backend`]; they hold
//! no queue rule and never know which backend serves them.
//!
//! Implementations:
//! - [`local`]: the in-memory [`sluice_queue::Queue`] of one broker, kept
//!   on disk with `--data-dir` (the default);
//! - [`postgres`]: several stateless brokers over one PostgreSQL database
//!   (`--store postgres://...`);
//! - [`mod@redis`]: several stateless brokers over one Redis or Valkey
//!   server (`--store redis://...`).
//!
//! The seam belongs to this layer, below the services: its data is owned
//! and the contract's messages never cross it (a job is a
//! [`JobSnapshot`], a failed attempt a [`FailedAttempt`]); its errors are
//! [`BackendError`] and [`OpenError`], which the service and the server
//! map in their one place each; the rules every backend applies alike
//! (what a failed attempt leads to, which states an action takes, a
//! queue's room) are the queue crate's pure functions. Nothing here names
//! the service, the server or the contract: `tests.rs` fails if it does.
//!
//! Another backend is one more module implementing [`Backend`] and one
//! more arm in [`open`]: a Lease stream is a [`LeaseFeed`] (a channel of
//! leased jobs and a [`FeedCloser`] that gives back what was never sent),
//! every other operation is one async method. ARCHITECTURE.md says more.

mod cluster;
mod error;
pub mod local;
pub mod postgres;
pub mod redis;
mod schedule_store;
mod source_store;
mod store_tls;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_queue::{
    ConsumerSpec, Enqueued, Extended, FailedAttempt, Failure, FailureOutcome, JobFilter,
    JobSnapshot, JobState, KeyStats, NewJob, Observer, QueueConfig, QueueError, QueueLimits,
    QueueStats, Timestamp, WorkerInfo,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use error::{BackendError, OpenError};
pub use schedule_store::{Expect, Fired, Millis, ScheduleStore, StoredSchedule, TickFire};
pub use source_store::{RowWrite, SourceCommit, SourceCommitted, SourceRow, SourceStore};

use crate::fatal::Fatal;
use crate::storage::StoreStats;

/// The answer to each item of a batch, in its order.
pub type Batch<T> = Vec<Result<T, QueueError>>;

/// A job's lease, as a worker names it: the job and the lease it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRef {
    /// The job.
    pub job_id: Uuid,
    /// The lease the worker holds on it.
    pub lease_id: Uuid,
}

impl LeaseRef {
    /// The lease of a leased job; `None` if it holds none.
    pub fn of(job: &JobSnapshot) -> Option<Self> {
        Some(Self {
            job_id: job.id,
            lease_id: job.lease.as_ref()?.lease_id,
        })
    }
}

/// An Ack: the lease it resolves, and the result the job keeps (at most
/// [`sluice_limits::MAX_RESULT_BYTES`], checked by the service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The lease the attempt ran under.
    pub lease: LeaseRef,
    /// What the attempt produced, if anything.
    pub result: Option<Bytes>,
}

/// A running job's progress, as a worker reports it (checked by the
/// service: at most [`sluice_limits::MAX_PROGRESS_PERCENT`] and
/// [`sluice_limits::MAX_PROGRESS_MESSAGE_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressReport {
    /// 0 to 100.
    pub percent: u32,
    /// A short text or a small JSON document.
    pub message: String,
}

/// One page of ListJobs.
#[derive(Debug, Default)]
pub struct JobPage {
    /// The jobs, oldest first.
    pub jobs: Vec<JobSnapshot>,
    /// Where the next page starts, if there is one.
    pub next: Option<u64>,
}

/// What Stats and the rate sampler read: each queue's figures, the recent
/// failed attempts, and the time they were read at.
#[derive(Debug, Default, Clone)]
pub struct StatsReading {
    /// One entry per queue.
    pub queues: Vec<QueueStats>,
    /// The last failed attempts, newest last.
    pub recent_failures: Vec<FailedAttempt>,
    /// When they were read (the database's clock on PostgreSQL).
    pub now: Timestamp,
}

/// What the scrape-time gauges read, without waiting.
#[derive(Debug, Default, Clone)]
pub struct GaugeReading {
    /// Each queue's figures.
    pub stats: StatsReading,
    /// The open Lease streams.
    pub workers: Vec<WorkerInfo>,
    /// Bytes the jobs hold, and of those the retained ones (local only).
    pub held: Option<(u64, u64)>,
    /// The data directory's figures (`--data-dir` only).
    pub store: Option<StoreStats>,
}

/// The jobs of one Lease stream or Work session: the backend sends each
/// job it leases to `jobs`; [`FeedCloser::set_window`] changes how many
/// it may hold (a session's credit); when the stream ends,
/// [`FeedCloser::close`] gets back every job that was taken but never sent.
pub struct LeaseFeed {
    /// Leased jobs (each with its lease), in the order leased.
    pub jobs: mpsc::Receiver<JobSnapshot>,
    /// Steers and ends the stream's consumer (shared by a Work session's
    /// reports, which set its window).
    pub closer: Arc<dyn FeedCloser>,
}

/// Steers and ends a Lease stream's consumer in its backend.
pub trait FeedCloser: Send + Sync {
    /// The consumer may hold at most `window` unresolved jobs from now on
    /// (at most its opening `max_in_flight`, which its channel is sized
    /// to): more are leased to it at once if that leaves room; a lower
    /// window takes none back.
    fn set_window(&self, window: u32);

    /// The stream is gone: take no more jobs for it, and make the jobs of
    /// `unsent` (leased to it, never sent) ready again with no attempt used.
    /// Called once, when the stream is dropped.
    fn close(&self, unsent: Vec<LeaseRef>);
}

/// Where jobs live; see the module doc. Every method that changes a job
/// returns once the change is durable (or, for a memory-only broker,
/// made). Refusals carry the queue's own [`QueueError`], so every backend
/// answers with the same statuses. Schedules and source groups are kept
/// through the supertraits [`ScheduleStore`] and [`SourceStore`].
#[tonic::async_trait]
pub trait Backend: ScheduleStore + SourceStore + Send + Sync + 'static {
    /// Adds `jobs`, each answered on its own. While draining, the whole
    /// call is refused with [`BackendError::ShuttingDown`] saying `what`.
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, BackendError>;

    /// Opens a Lease stream's consumer.
    async fn open_feed(&self, spec: ConsumerSpec) -> Result<LeaseFeed, BackendError>;

    /// Acknowledges each lease, keeping its result with the job.
    async fn ack(&self, acks: Vec<Ack>) -> Result<Batch<()>, BackendError>;

    /// Fails the attempt of `lease`.
    async fn nack(&self, lease: LeaseRef, failure: Failure)
    -> Result<FailureOutcome, BackendError>;

    /// Extends `lease` by `by` (the stream's lease duration if `None`).
    async fn extend(&self, lease: LeaseRef, by: Option<Duration>)
    -> Result<Extended, BackendError>;

    /// Records the progress of the attempt under `lease` (the lease is not
    /// extended); answers whether an operator asked to cancel the job.
    async fn progress(&self, lease: LeaseRef, report: ProgressReport)
    -> Result<bool, BackendError>;

    /// Gives the job of `lease` back, ready again after `delay`, holding
    /// every job of its key for `key_delay` first (flow control).
    async fn release(
        &self,
        lease: LeaseRef,
        delay: Duration,
        key_delay: Duration,
    ) -> Result<JobState, BackendError>;

    /// Each known job among `ids` with its queue (unknown ones are left
    /// out), for checking a scoped credential.
    async fn queues_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, BackendError>;

    /// One job.
    async fn job(&self, id: Uuid) -> Result<JobSnapshot, BackendError>;

    /// Jobs matching `filter`, after the page token `after`.
    async fn list(
        &self,
        filter: JobFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<JobPage, BackendError>;

    /// Every queue's figures.
    async fn stats(&self) -> Result<StatsReading, BackendError>;

    /// Every queue's lifetime counters, for the rates of Stats (sampled
    /// every few seconds); the counts by state may be left out.
    async fn counters(&self) -> Result<StatsReading, BackendError> {
        self.stats().await
    }

    /// The open Lease streams (of every broker, on a shared backend).
    async fn workers(&self) -> Result<Vec<WorkerInfo>, BackendError>;

    /// Makes a DEAD or CANCELLED job ready again.
    async fn retry(&self, id: Uuid) -> Result<(), BackendError>;

    /// Cancels a job, or asks its worker to stop it if leased.
    async fn cancel(&self, id: Uuid) -> Result<JobState, BackendError>;

    /// Deletes the jobs of `queue` in `state`; returns how many.
    async fn purge(&self, queue: String, state: JobState) -> Result<u64, BackendError>;

    /// Stops leasing the jobs of `queue`.
    async fn pause(&self, queue: String) -> Result<(), BackendError>;

    /// Leases the jobs of `queue` again.
    async fn resume(&self, queue: String) -> Result<(), BackendError>;

    /// Sets the flow-control limits of `queue` (empty limits clear them),
    /// kept in the store and applied at once on every broker.
    async fn set_limits(&self, queue: String, limits: QueueLimits) -> Result<(), BackendError>;

    /// The limits of `queue` (empty if none).
    async fn limits(&self, queue: String) -> Result<QueueLimits, BackendError>;

    /// The keys of `queue` with jobs in flight or ready, or held back:
    /// most jobs first, at most `limit`.
    async fn keys(&self, queue: String, limit: usize) -> Result<Vec<KeyStats>, BackendError>;

    /// Refuses new work from now on and ends every Lease stream of this
    /// broker; leased jobs can still be resolved.
    fn begin_drain(&self);

    /// Waits until this broker's streams hold no lease, or `deadline`.
    /// Returns the count still leased.
    async fn leases_resolved(&self, deadline: tokio::time::Instant) -> usize;

    /// Jobs scheduled, ready or leased, and whether they outlive this
    /// process (kept on disk or in the database).
    async fn unfinished(&self) -> (u64, bool);

    /// Why the broker failed, if it did.
    fn failure(&self) -> Option<Arc<str>>;

    /// Starts the backend's own tasks (deadlines, wake-ups, heartbeats),
    /// which stop when `stop` is cancelled.
    fn spawn_tasks(&self, tasks: &TaskTracker, stop: CancellationToken);

    /// Whether the backend can serve now; health follows it.
    fn serving(&self) -> watch::Receiver<bool>;

    /// Feeds job transitions to `observer` (the job metrics).
    fn observe(&self, observer: Box<dyn Observer>);

    /// What the gauges read at scrape time; `None` once failed.
    fn gauges(&self) -> Option<GaugeReading>;

    /// Writes what is pending and closes, after the drain.
    async fn close(&self);
}

/// A shared handle to the backend the services call.
pub type SharedBackend = Arc<dyn Backend>;

/// Where jobs live (`--store`, `--data-dir`).
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The broker's own in-memory queue, kept in `data_dir` across
    /// restarts if set (memory only otherwise).
    Local {
        /// `--data-dir`.
        data_dir: Option<PathBuf>,
    },
    /// A PostgreSQL database shared by several brokers.
    Postgres(Box<postgres::PostgresSettings>),
    /// A Redis server shared by several brokers.
    Redis(Box<self::redis::RedisSettings>),
}

impl Default for StoreConfig {
    /// Memory only.
    fn default() -> Self {
        Self::Local { data_dir: None }
    }
}

impl StoreConfig {
    /// The local queue kept in `dir`.
    pub fn data_dir(dir: PathBuf) -> Self {
        Self::Local {
            data_dir: Some(dir),
        }
    }
}

/// Opens the backend `store` names, with the queue's rules `queue`: the
/// local queue (restored from `--data-dir` if set) or a shared store. A
/// failure of the broker while serving goes to `fatal`.
///
/// # Errors
/// [`OpenError`] when the data directory or the store cannot be opened.
pub async fn open(
    store: &StoreConfig,
    queue: &QueueConfig,
    fatal: &Fatal,
) -> Result<SharedBackend, OpenError> {
    match store {
        StoreConfig::Local { data_dir } => Ok(Arc::new(
            local::LocalBackend::open(queue, data_dir.as_deref(), fatal).await?,
        )),
        StoreConfig::Postgres(settings) => Ok(Arc::new(
            postgres::PostgresBackend::open(queue, settings, fatal.clone()).await?,
        )),
        StoreConfig::Redis(settings) => Ok(Arc::new(
            self::redis::RedisBackend::open(queue, settings, fatal.clone()).await?,
        )),
    }
}
