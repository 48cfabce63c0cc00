//! The PostgreSQL backend: several stateless brokers over one database
//! (`--store postgres://...`). The database holds every job and decides
//! every time (run_at, lease expiry, backoff due times) with its own clock;
//! a broker holds only its open Lease streams (`cluster::Streams`) and
//! its counters.
//!
//! - `connect.rs`: the URL, the pool, TLS, the LISTEN connection;
//! - `schema.rs` and `migrations/`: the versioned schema;
//! - `sql.rs`: the one way to run SQL, and the classification of its
//!   errors; `columns.rs`: a job's columns, by name, and their reading;
//! - `enqueue.rs`: concurrent Enqueue calls grouped into one statement and
//!   one commit;
//! - `claims.rs`: Lease streams opened, and filled with `FOR UPDATE SKIP
//!   LOCKED`;
//! - `leases.rs`: Ack, Nack, Extend, Release and expiry, each fenced by
//!   lease id in the statement itself;
//! - `notify.rs`: what brokers tell each other (a job is ready or
//!   scheduled; a lease of your stream ended), after each commit;
//! - `admin.rs`: the operator's actions; `reads.rs`: jobs, pages, Stats;
//! - `registry.rs`: the brokers' heartbeats, streams and counters;
//! - `tasks.rs`: LISTEN, the claimer, the maintenance loop, the health
//!   check.

mod admin;
mod claims;
mod columns;
mod connect;
mod enqueue;
mod flow;
mod leases;
mod notify;
mod reads;
mod registry;
mod schedules;
pub mod schema;
mod sources;
mod sql;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
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

pub use connect::Target;

/// `--store postgres://...`, parsed.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Where the database is, and how to reach it.
    pub target: Target,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How often the rows of queues that hold nothing are removed.
    pub queue_sweep: Duration,
    /// How often each broker looks for work without a notification.
    pub poll_interval: Duration,
}

impl PostgresSettings {
    /// Settings for `url`, with a pool of `pool_size` connections.
    ///
    /// # Errors
    /// A message saying what is wrong with the URL.
    pub fn new(url: &str, pool_size: usize) -> Result<Self, String> {
        Ok(Self {
            target: connect::parse(url)?,
            pool_size,
            queue_sweep: timing::QUEUE_SWEEP,
            poll_interval: timing::POLL_INTERVAL,
        })
    }
}

/// The PostgreSQL backend: see the module doc.
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

/// What the backend's tasks and calls share.
struct Inner {
    pool: Pool,
    target: Target,
    queue: QueueConfig,
    /// This broker in `sluice_brokers`.
    broker_id: Uuid,
    streams: Streams,
    enqueuer: enqueue::Enqueuer,
    /// Wakes the maintenance loop (a job was scheduled).
    maintain: Notify,
    /// What the other brokers are told, after each commit.
    notifier: Arc<notify::Notifier>,
    health: Health,
    /// This broker's lifetime counters, per queue.
    counts: Counts,
    /// How often empty queues are swept.
    queue_sweep: Duration,
    /// How often the claimer and the maintenance loop poll.
    poll_interval: Duration,
    /// The gauges of /metrics, read from the store once it is served.
    gauges: Gauges,
    /// The queues with limits, as this broker's claims last read them
    /// (see `flow.rs`).
    flowed: std::sync::Mutex<std::collections::HashSet<String>>,
    fatal: Fatal,
}

impl PostgresBackend {
    /// Connects, applies the migrations, and registers this broker.
    ///
    /// # Errors
    /// When the database cannot be reached or its schema is newer.
    pub async fn open(
        queue: &QueueConfig,
        settings: &PostgresSettings,
        fatal: Fatal,
    ) -> Result<Self, OpenError> {
        let pool =
            connect::pool(&settings.target, settings.pool_size).map_err(OpenError::Shared)?;
        let applied = {
            let mut client = pool.get().await.map_err(|e| {
                OpenError::Shared(format!("connecting to the database: {}", sql::describe(&e)))
            })?;
            schema::migrate(&mut client)
                .await
                .map_err(|e| OpenError::Shared(sql::describe(&e)))?
        };
        let broker_id = Uuid::new_v4();
        info!(
            %broker_id,
            schema_version = schema::SCHEMA_VERSION,
            migrations_applied = applied,
            "connected to PostgreSQL"
        );
        let notifier = Arc::new(notify::Notifier::default());
        let inner = Arc::new(Inner {
            enqueuer: enqueue::Enqueuer::new(pool.clone(), queue.max_queue_size, notifier.clone()),
            pool,
            target: settings.target.clone(),
            queue: queue.clone(),
            broker_id,
            streams: Streams::default(),
            maintain: Notify::new(),
            notifier,
            health: Health::new(
                "PostgreSQL",
                "the database is unreachable; the broker reconnects by itself",
            ),
            counts: Counts::default(),
            queue_sweep: settings.queue_sweep,
            poll_interval: settings.poll_interval,
            gauges: Gauges::default(),
            flowed: std::sync::Mutex::default(),
            fatal,
        });
        registry::heartbeat(&inner)
            .await
            .map_err(|e| OpenError::Shared(format!("registering the broker: {e}")))?;
        Ok(Self { inner })
    }
}

#[tonic::async_trait]
impl crate::backend::SourceStore for PostgresBackend {
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
impl ScheduleStore for PostgresBackend {
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
impl Backend for PostgresBackend {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, BackendError> {
        self.inner.health.refuse_new_work(what)?;
        let queues: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
        let results = self.inner.enqueuer.enqueue(jobs, &self.inner.queue).await?;
        for (queue, result) in queues.iter().zip(&results) {
            if let Ok(e) = result
                && !e.duplicate
            {
                self.inner.counts.add(queue, |c| c.enqueued += 1);
            }
        }
        // The other brokers hear of it from the notifier (and so does this
        // one's maintenance loop, of scheduled jobs); this one's claimer now.
        self.inner.streams.wake();
        Ok(results)
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
        reads::stats(&self.inner).await
    }

    async fn counters(&self) -> Result<StatsReading, BackendError> {
        reads::counters(&self.inner).await
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
        (reads::unfinished(&self.inner).await.unwrap_or(0), true)
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
        // Job transitions happen in the database, on any broker: the job
        // counters of /metrics are the local backend's. The gauges, read
        // from the database, are kept from now on.
        self.inner.gauges.turn_on();
    }

    fn gauges(&self) -> Option<GaugeReading> {
        Some(self.inner.gauges.latest())
    }

    async fn close(&self) {
        registry::deregister(&self.inner).await;
    }
}
