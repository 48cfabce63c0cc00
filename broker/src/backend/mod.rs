//! The backend seam: where jobs live. The gRPC services ([`crate::service`])
//! validate and translate requests, then call one [`Backend`]; they hold
//! no queue rule and never know which backend serves them.
//!
//! Two implementations:
//! - [`local`]: the in-memory [`sluice_queue::Queue`] of one broker, kept
//!   on disk with `--data-dir` (the default);
//! - [`postgres`]: several stateless brokers over one PostgreSQL database
//!   (`--store postgres://...`).
//!
//! Another backend (Redis, say) is one more module implementing [`Backend`]
//! and one more arm in [`open`]: a Lease stream is a [`LeaseFeed`] (a
//! channel of leased jobs and a [`FeedCloser`] that gives back what was
//! never sent), every other operation is one async method whose errors are
//! the service's own [`RequestError`].

pub mod local;
pub mod postgres;

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_queue::{
    ConsumerSpec, Enqueued, Extended, Failure, FailureOutcome, JobFilter, JobState, NewJob,
    Observer, QueueError, QueueStats, Timestamp, WorkerInfo,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::{Config, StoreConfig};
use crate::fatal::Fatal;
use crate::server::ServerError;
use crate::service::RequestError;
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
    /// The lease a leased-job message carries; `None` if its ids do not
    /// parse (a message this broker made always does).
    pub fn of(message: &pb::LeasedJob) -> Option<Self> {
        Some(Self {
            job_id: Uuid::parse_str(&message.job.as_ref()?.id).ok()?,
            lease_id: Uuid::parse_str(&message.lease_id).ok()?,
        })
    }
}

/// One page of ListJobs.
#[derive(Debug, Default)]
pub struct JobPage {
    /// The jobs, oldest first.
    pub jobs: Vec<pb::Job>,
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
    pub recent_failures: Vec<pb::FailedAttempt>,
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

/// The jobs of one Lease stream: the backend sends each job it leases to
/// `jobs`; when the stream ends, [`FeedCloser::close`] gets back every job
/// that was taken but never sent.
pub struct LeaseFeed {
    /// Leased jobs, in the order leased.
    pub jobs: mpsc::Receiver<pb::LeasedJob>,
    /// Ends the stream's consumer.
    pub closer: Box<dyn FeedCloser>,
}

/// Ends a Lease stream's consumer in its backend.
pub trait FeedCloser: Send {
    /// The stream is gone: take no more jobs for it, and make `unsent`
    /// (leased to it, never sent) ready again with no attempt used.
    fn close(self: Box<Self>, unsent: Vec<pb::LeasedJob>);
}

/// Where jobs live; see the module doc. Every method that changes a job
/// returns once the change is durable (or, for a memory-only broker,
/// made). Refusals are [`RequestError`]s with the queue's own
/// [`QueueError`] inside, so every backend answers with the same statuses.
#[tonic::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Adds `jobs`, each answered on its own. While draining, the whole
    /// call is refused with [`RequestError::ShuttingDown`] saying `what`.
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, RequestError>;

    /// Opens a Lease stream's consumer.
    async fn open_feed(&self, spec: ConsumerSpec) -> Result<LeaseFeed, RequestError>;

    /// Acknowledges each lease.
    async fn ack(&self, leases: Vec<LeaseRef>) -> Result<Batch<()>, RequestError>;

    /// Fails the attempt of `lease`.
    async fn nack(&self, lease: LeaseRef, failure: Failure)
    -> Result<FailureOutcome, RequestError>;

    /// Extends `lease` by `by` (the stream's lease duration if `None`).
    async fn extend(&self, lease: LeaseRef, by: Option<Duration>)
    -> Result<Extended, RequestError>;

    /// Gives the job of `lease` back, ready again after `delay`.
    async fn release(&self, lease: LeaseRef, delay: Duration) -> Result<JobState, RequestError>;

    /// Each known job among `ids` with its queue (unknown ones are left
    /// out), for checking a scoped credential.
    async fn queues_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, RequestError>;

    /// One job.
    async fn job(&self, id: Uuid) -> Result<pb::Job, RequestError>;

    /// Jobs matching `filter`, after the page token `after`.
    async fn list(
        &self,
        filter: JobFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<JobPage, RequestError>;

    /// Every queue's figures.
    async fn stats(&self) -> Result<StatsReading, RequestError>;

    /// Every queue's lifetime counters, for the rates of Stats (sampled
    /// every few seconds); the counts by state may be left out.
    async fn counters(&self) -> Result<StatsReading, RequestError> {
        self.stats().await
    }

    /// The open Lease streams (of every broker, on a shared backend).
    async fn workers(&self) -> Result<Vec<WorkerInfo>, RequestError>;

    /// Makes a DEAD or CANCELLED job ready again.
    async fn retry(&self, id: Uuid) -> Result<(), RequestError>;

    /// Cancels a job, or asks its worker to stop it if leased.
    async fn cancel(&self, id: Uuid) -> Result<JobState, RequestError>;

    /// Deletes the jobs of `queue` in `state`; returns how many.
    async fn purge(&self, queue: String, state: JobState) -> Result<u64, RequestError>;

    /// Stops leasing the jobs of `queue`.
    async fn pause(&self, queue: String) -> Result<(), RequestError>;

    /// Leases the jobs of `queue` again.
    async fn resume(&self, queue: String) -> Result<(), RequestError>;

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

/// Opens the backend `config` names: the local queue (restored from
/// `--data-dir` if set) or a PostgreSQL database.
///
/// # Errors
/// When the data directory or the database cannot be opened.
pub async fn open(config: &Config, fatal: &Fatal) -> Result<SharedBackend, ServerError> {
    match &config.store {
        StoreConfig::Local { data_dir } => Ok(Arc::new(
            local::LocalBackend::open(config, data_dir.as_deref(), fatal).await?,
        )),
        StoreConfig::Postgres(settings) => Ok(Arc::new(
            postgres::PostgresBackend::open(config, settings, fatal.clone()).await?,
        )),
    }
}
