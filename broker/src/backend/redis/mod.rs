//! The Redis backend: several stateless brokers over one Redis or Valkey
//! server (`--store redis://...`, standalone, with replicas if wanted).
//! Redis holds every job; each transition is one Lua script, atomic and
//! fenced by lease id inside it, on Redis's clock; a broker holds only
//! its open Lease streams (`cluster::Streams`) and its counters.
//!
//! - `lua/`: the key layout (`lib.lua`, every key of a queue under the
//!   hash tag `{queue}`) and one script per operation; `scripts.rs`: the
//!   one way to run them, and the classification of failures; `job.rs`:
//!   a job as the scripts answer it;
//! - `connect.rs`: the URL, TLS, the shared connection and pub/sub;
//! - `durability.rs`: what an acknowledged job survives, read from the
//!   server's settings at startup;
//! - `enqueue.rs`; `claims.rs`: Lease streams opened and filled;
//!   `leases.rs`: Ack, Nack, Extend, Release and expiry; `admin.rs`: the
//!   operator's actions; `reads.rs`: jobs, pages, Stats;
//! - `registry.rs`: the brokers' records (streams, counters) with a TTL;
//! - `tasks.rs`: the subscriber, the claimer, the maintenance loop, the
//!   health check.

mod admin;
mod claims;
mod connect;
mod durability;
mod enqueue;
mod flow;
mod job;
mod leases;
mod reads;
mod registry;
mod schedules;
mod scripts;
mod sources;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use sluice_queue::{
    ConsumerSpec, Enqueued, Extended, Failure, FailureOutcome, JobFilter, JobSnapshot, JobState,
    KeyStats, NewJob, Observer, QueueConfig, QueueLimits, WorkerInfo,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use uuid::Uuid;

use super::cluster::{Counts, Gauges, Health, Streams, timing};
use super::{
    Ack, Backend, BackendError, Batch, Expect, Fired, GaugeReading, JobPage, LeaseFeed, LeaseRef,
    Millis, OpenError, ProgressReport, ScheduleStore, StatsReading, StoredSchedule, TickFire,
};
use crate::fatal::Fatal;
use scripts::Call;

pub use connect::Target;

/// `--store redis://...`, parsed.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Where Redis is, and how to reach it.
    pub target: Target,
    /// `--redis-require-fsync`: refuse to start unless every write is
    /// fsynced before Redis answers (`appendfsync always`).
    pub require_fsync: bool,
    /// How often the rows of queues that hold nothing are removed.
    pub queue_sweep: Duration,
    /// How often each broker looks for work without a notification.
    pub poll_interval: Duration,
}

impl RedisSettings {
    /// Settings for `url`.
    ///
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub fn new(url: &str, require_fsync: bool) -> Result<Self, String> {
        Ok(Self {
            target: connect::parse(url)?,
            require_fsync,
            queue_sweep: timing::QUEUE_SWEEP,
            poll_interval: timing::POLL_INTERVAL,
        })
    }
}

/// The Redis backend: see the module doc.
pub struct RedisBackend {
    inner: Arc<Inner>,
}

/// What the backend's tasks and calls share.
struct Inner {
    conn: connect::Connection,
    queue: QueueConfig,
    /// This broker in the registry.
    broker_id: Uuid,
    streams: Streams,
    /// Wakes the maintenance loop (a job was scheduled).
    maintain: Notify,
    health: Health,
    /// This broker's lifetime counters, per queue.
    counts: Counts,
    queue_sweep: Duration,
    /// Where the next sweep starts checking this broker's counted queues.
    sweep_from: AtomicUsize,
    poll_interval: Duration,
    /// The gauges of /metrics, read from the store once it is served.
    gauges: Gauges,
    fatal: Fatal,
}

impl Inner {
    /// A script call by this broker.
    fn call(&self) -> Call {
        let retention = u64::try_from(self.queue.retention.as_micros()).unwrap_or(u64::MAX);
        Call::new(self.broker_id, retention)
    }
}

impl RedisBackend {
    /// Connects, reads what the server's persistence settings make of an
    /// acknowledged job (refusing to start where `settings` or the
    /// eviction policy say so), and registers this broker.
    ///
    /// # Errors
    /// When Redis cannot be reached or its settings are refused.
    pub async fn open(
        queue: &QueueConfig,
        settings: &RedisSettings,
        fatal: Fatal,
    ) -> Result<Self, OpenError> {
        let conn = connect::Connection::new(settings.target.clone());
        let mut connection = conn.get().await.map_err(|e| {
            OpenError::Shared(format!(
                "connecting to Redis at {}: {e}",
                settings.target.describe()
            ))
        })?;
        durability::check(&mut connection, settings.require_fsync)
            .await
            .map_err(OpenError::Shared)?;
        let broker_id = Uuid::new_v4();
        info!(%broker_id, redis = %settings.target.describe(), "connected to Redis");
        let inner = Arc::new(Inner {
            conn,
            queue: queue.clone(),
            broker_id,
            streams: Streams::default(),
            maintain: Notify::new(),
            health: Health::new("Redis", scripts::UNREACHABLE),
            counts: Counts::default(),
            queue_sweep: settings.queue_sweep,
            sweep_from: AtomicUsize::new(0),
            poll_interval: settings.poll_interval,
            gauges: Gauges::default(),
            fatal,
        });
        registry::heartbeat(&inner)
            .await
            .map_err(|e| OpenError::Shared(format!("registering the broker: {e}")))?;
        Ok(Self { inner })
    }
}

#[tonic::async_trait]
impl crate::backend::SourceStore for RedisBackend {
    async fn source_rows(
        &self,
        group: &str,
    ) -> Result<Vec<crate::backend::SourceRow>, BackendError> {
        sources::rows(&self.inner, group).await
    }

    async fn put_source_rows(
        &self,
        group: &str,
        writes: Vec<crate::backend::RowWrite>,
    ) -> Result<Vec<bool>, BackendError> {
        sources::put(&self.inner, group, writes).await
    }

    async fn commit_source(
        &self,
        group: &str,
        commit: crate::backend::SourceCommit,
    ) -> Result<Option<crate::backend::SourceCommitted>, BackendError> {
        self.inner.health.refuse_new_work("no record is enqueued")?;
        sources::commit(&self.inner, group, commit).await
    }
}

#[tonic::async_trait]
impl ScheduleStore for RedisBackend {
    async fn schedules(&self) -> Result<Vec<StoredSchedule>, BackendError> {
        schedules::all(&self.inner).await
    }

    async fn schedule(&self, name: &str) -> Result<Option<StoredSchedule>, BackendError> {
        schedules::one(&self.inner, name).await
    }

    async fn due_schedules(
        &self,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, BackendError> {
        schedules::due(&self.inner, until, limit).await
    }

    async fn next_schedule_fire(&self) -> Result<Option<Millis>, BackendError> {
        schedules::next_fire(&self.inner).await
    }

    async fn put_schedule(
        &self,
        schedule: StoredSchedule,
        expect: Expect,
    ) -> Result<bool, BackendError> {
        schedules::put(&self.inner, schedule, expect).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, BackendError> {
        schedules::delete(&self.inner, name).await
    }

    async fn put_schedules(
        &self,
        writes: Vec<(StoredSchedule, u64)>,
    ) -> Result<Vec<bool>, BackendError> {
        schedules::put_many(&self.inner, writes).await
    }

    async fn fire_schedules(
        &self,
        ticks: Vec<TickFire>,
    ) -> Result<Vec<Option<Fired>>, BackendError> {
        self.inner.health.refuse_new_work("no tick is fired")?;
        schedules::fire_many(&self.inner, ticks).await
    }
}

#[tonic::async_trait]
impl Backend for RedisBackend {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, BackendError> {
        self.inner.health.refuse_new_work(what)?;
        enqueue::enqueue(&self.inner, jobs).await
    }

    async fn open_feed(&self, spec: ConsumerSpec) -> Result<LeaseFeed, BackendError> {
        self.inner
            .health
            .refuse_new_work("no new Lease streams are opened")?;
        claims::open(&self.inner, spec).await
    }

    async fn ack(&self, acks: Vec<Ack>) -> Result<Batch<()>, BackendError> {
        leases::ack(&self.inner, acks).await
    }

    async fn nack(
        &self,
        lease: LeaseRef,
        failure: Failure,
    ) -> Result<FailureOutcome, BackendError> {
        leases::nack(&self.inner, lease, failure).await
    }

    async fn extend(
        &self,
        lease: LeaseRef,
        by: Option<Duration>,
    ) -> Result<Extended, BackendError> {
        leases::extend(&self.inner, lease, by).await
    }

    async fn progress(
        &self,
        lease: LeaseRef,
        report: ProgressReport,
    ) -> Result<bool, BackendError> {
        leases::progress(&self.inner, lease, report).await
    }

    async fn release(
        &self,
        lease: LeaseRef,
        delay: Duration,
        key_delay: Duration,
    ) -> Result<JobState, BackendError> {
        leases::release(&self.inner, lease, delay, key_delay).await
    }

    async fn queues_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, BackendError> {
        reads::queues_of(&self.inner, ids).await
    }

    async fn job(&self, id: Uuid) -> Result<JobSnapshot, BackendError> {
        reads::job(&self.inner, id).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<JobPage, BackendError> {
        reads::list(&self.inner, filter, after, limit).await
    }

    async fn stats(&self) -> Result<StatsReading, BackendError> {
        reads::stats(&self.inner, true).await
    }

    async fn counters(&self) -> Result<StatsReading, BackendError> {
        reads::stats(&self.inner, false).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        registry::workers(&self.inner).await
    }

    async fn retry(&self, id: Uuid) -> Result<(), BackendError> {
        admin::retry(&self.inner, id).await
    }

    async fn cancel(&self, id: Uuid) -> Result<JobState, BackendError> {
        admin::cancel(&self.inner, id).await
    }

    async fn purge(&self, queue: String, state: JobState) -> Result<u64, BackendError> {
        admin::purge(&self.inner, queue, state).await
    }

    async fn pause(&self, queue: String) -> Result<(), BackendError> {
        admin::pause(&self.inner, queue, true).await
    }

    async fn resume(&self, queue: String) -> Result<(), BackendError> {
        admin::pause(&self.inner, queue, false).await
    }

    async fn set_limits(&self, queue: String, limits: QueueLimits) -> Result<(), BackendError> {
        flow::set(&self.inner, queue, limits).await
    }

    async fn limits(&self, queue: String) -> Result<QueueLimits, BackendError> {
        flow::get_limits(&self.inner, &queue).await
    }

    async fn keys(&self, queue: String, limit: usize) -> Result<Vec<KeyStats>, BackendError> {
        flow::keys(&self.inner, &queue, limit).await
    }

    fn begin_drain(&self) {
        self.inner.health.begin_drain();
        self.inner.streams.end_all();
    }

    async fn leases_resolved(&self, deadline: tokio::time::Instant) -> usize {
        reads::leases_resolved(&self.inner, deadline).await
    }

    async fn unfinished(&self) -> (u64, bool) {
        let count = reads::unfinished(&self.inner).await.unwrap_or(0);
        (count, true)
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.inner.fatal.reason()
    }

    fn spawn_tasks(&self, tasks: &TaskTracker, stop: CancellationToken) {
        tasks::spawn(&self.inner, tasks, stop);
    }

    fn serving(&self) -> watch::Receiver<bool> {
        self.inner.health.subscribe()
    }

    fn observe(&self, _observer: Box<dyn Observer>) {
        // Job transitions happen in Redis, on any broker: the job counters
        // of /metrics are the local backend's. The gauges, read from
        // Redis, are kept from now on.
        self.inner.gauges.turn_on();
    }

    fn gauges(&self) -> Option<GaugeReading> {
        Some(self.inner.gauges.latest())
    }

    async fn close(&self) {
        registry::leave(&self.inner).await;
        self.inner.conn.close().await;
    }
}
