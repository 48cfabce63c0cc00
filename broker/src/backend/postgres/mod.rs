//! The PostgreSQL backend: several stateless brokers over one database
//! (`--store postgres://...`). The database holds every job and decides
//! every time (run_at, lease expiry, backoff due times) with its own clock;
//! a broker holds only its open Lease streams and counters.
//!
//! - `connect.rs`: the URL, the pool, TLS, LISTEN connections;
//! - `schema.rs` and `migrations/`: the versioned schema;
//! - `rows.rs`: rows to the contract's messages; `sql.rs`: statements
//!   prepared once per connection;
//! - `jobs.rs`: one statement (or one short transaction) per operation,
//!   every lease operation fenced by lease id in the statement itself;
//! - `enqueue.rs`: concurrent Enqueue calls grouped into one statement and
//!   one commit;
//! - `streams.rs`: this broker's Lease streams and the claimer that fills
//!   them with `FOR UPDATE SKIP LOCKED`;
//! - `maintenance.rs`: wake-ups (LISTEN/NOTIFY and the poll fallback),
//!   promotion of due jobs, lease expiry, retention, the broker registry's
//!   heartbeat and the health of the connection.

mod connect;
mod enqueue;
mod jobs;
mod maintenance;
mod rows;
pub mod schema;
mod sql;
mod streams;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use sluice_proto::v1 as pb;
use sluice_queue::{
    ConsumerSpec, Counters, Enqueued, Extended, Failure, FailureOutcome, JobFilter, JobState,
    NewJob, Observer, QueueConfig, WorkerInfo,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use uuid::Uuid;

use super::{Backend, Batch, GaugeReading, JobPage, LeaseFeed, LeaseRef, StatsReading};
use crate::config::Config;
use crate::fatal::Fatal;
use crate::server::ServerError;
use crate::service::RequestError;

pub use connect::Target;

/// How often each broker looks for work even without a notification:
/// claims, due jobs and expired leases are found within this interval
/// where LISTEN/NOTIFY is lost, unavailable or behind a pooler.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often, by default, the rows of queues that hold nothing (no job,
/// no pause) are removed: `sluice_queues`, `sluice_counters`, and each
/// broker's own counters of them.
pub const QUEUE_SWEEP: Duration = Duration::from_secs(60);

/// `--store postgres://...`, parsed.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// Where the database is, and how to reach it.
    pub target: Target,
    /// Connections in the pool.
    pub pool_size: usize,
    /// How often the rows of queues that hold nothing are removed.
    pub queue_sweep: Duration,
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
            queue_sweep: QUEUE_SWEEP,
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
    streams: streams::Streams,
    enqueuer: enqueue::Enqueuer,
    /// Wakes the claimer (jobs may be ready, or a stream has room).
    claim: Notify,
    /// Wakes the maintenance loop (a job was scheduled).
    maintain: Notify,
    /// Asks the health check to look now (an operation failed).
    health_check: Notify,
    draining: AtomicBool,
    /// /metrics is served: the gauges are read from the database.
    metrics_on: AtomicBool,
    serving: watch::Sender<bool>,
    /// Lifetime counters of this broker, per queue.
    counters: Mutex<HashMap<String, Counters>>,
    /// How often empty queues are swept.
    queue_sweep: Duration,
    /// The last gauge reading, refreshed by the maintenance loop.
    gauges: Mutex<Option<GaugeReading>>,
    fatal: Fatal,
}

impl PostgresBackend {
    /// Connects, applies the migrations, and registers this broker.
    ///
    /// # Errors
    /// When the database cannot be reached or its schema is newer.
    pub async fn open(
        config: &Config,
        settings: &PostgresSettings,
        fatal: Fatal,
    ) -> Result<Self, ServerError> {
        let store = |e: String| ServerError::Database(e);
        let pool = connect::pool(&settings.target, settings.pool_size).map_err(store)?;
        let applied = {
            let mut client = pool
                .get()
                .await
                .map_err(|e| store(format!("connecting to the database: {}", describe(&e))))?;
            schema::migrate(&mut client)
                .await
                .map_err(|e| store(e.to_string()))?
        };
        let broker_id = Uuid::new_v4();
        info!(
            %broker_id,
            schema_version = schema::SCHEMA_VERSION,
            migrations_applied = applied,
            "connected to PostgreSQL"
        );
        let inner = Arc::new(Inner {
            enqueuer: enqueue::Enqueuer::new(pool.clone(), config.queue.max_queue_size),
            pool,
            target: settings.target.clone(),
            queue: config.queue.clone(),
            broker_id,
            streams: streams::Streams::default(),
            claim: Notify::new(),
            maintain: Notify::new(),
            health_check: Notify::new(),
            draining: AtomicBool::new(false),
            metrics_on: AtomicBool::new(false),
            serving: watch::Sender::new(true),
            counters: Mutex::new(HashMap::new()),
            queue_sweep: settings.queue_sweep,
            gauges: Mutex::new(None),
            fatal,
        });
        maintenance::register(&inner)
            .await
            .map_err(|e| store(format!("registering the broker: {e}")))?;
        Ok(Self { inner })
    }
}

impl Inner {
    /// Adds to this broker's counters of `queue`.
    fn count(&self, queue: &str, add: impl FnOnce(&mut Counters)) {
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = counters.get_mut(queue) {
            add(c);
        } else {
            let mut c = Counters::default();
            add(&mut c);
            counters.insert(queue.to_owned(), c);
        }
    }

    fn refuse_new_work(&self, what: &'static str) -> Result<(), RequestError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(RequestError::ShuttingDown(what));
        }
        if !*self.serving.borrow() {
            return Err(RequestError::Unavailable(
                "the database is unreachable; the broker reconnects by itself".into(),
            ));
        }
        Ok(())
    }
}

/// A database failure as the service reports it.
fn unavailable(e: impl std::error::Error) -> RequestError {
    RequestError::Unavailable(format!("the database: {}", describe(&e)))
}

/// An error with its causes: tokio-postgres says only "db error" until
/// its source, the server's message, is added.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tonic::async_trait]
impl Backend for PostgresBackend {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, RequestError> {
        self.inner.refuse_new_work(what)?;
        let queues: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
        let results = self.inner.enqueuer.enqueue(jobs, &self.inner.queue).await?;
        for (queue, result) in queues.iter().zip(&results) {
            if let Ok(e) = result
                && !e.duplicate
            {
                self.inner.count(queue, |c| c.enqueued += 1);
            }
        }
        self.inner.claim.notify_one();
        self.inner.maintain.notify_one();
        Ok(results)
    }

    async fn open_feed(&self, spec: ConsumerSpec) -> Result<LeaseFeed, RequestError> {
        self.inner
            .refuse_new_work("no new Lease streams are opened")?;
        streams::open(&self.inner, spec).await
    }

    async fn ack(&self, leases: Vec<LeaseRef>) -> Result<Batch<()>, RequestError> {
        jobs::ack(&self.inner, leases).await
    }

    async fn nack(
        &self,
        lease: LeaseRef,
        failure: Failure,
    ) -> Result<FailureOutcome, RequestError> {
        jobs::nack(&self.inner, lease, failure).await
    }

    async fn extend(
        &self,
        lease: LeaseRef,
        by: Option<Duration>,
    ) -> Result<Extended, RequestError> {
        jobs::extend(&self.inner, lease, by).await
    }

    async fn release(&self, lease: LeaseRef, delay: Duration) -> Result<JobState, RequestError> {
        jobs::release(&self.inner, lease, delay).await
    }

    async fn queues_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, RequestError> {
        jobs::queues_of(&self.inner, ids).await
    }

    async fn job(&self, id: Uuid) -> Result<pb::Job, RequestError> {
        jobs::get(&self.inner, id).await
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<JobPage, RequestError> {
        jobs::list(&self.inner, filter, after, limit).await
    }

    async fn stats(&self) -> Result<StatsReading, RequestError> {
        maintenance::stats(&self.inner).await
    }

    async fn counters(&self) -> Result<StatsReading, RequestError> {
        maintenance::counters(&self.inner).await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, RequestError> {
        maintenance::workers(&self.inner).await
    }

    async fn retry(&self, id: Uuid) -> Result<(), RequestError> {
        jobs::retry(&self.inner, id).await
    }

    async fn cancel(&self, id: Uuid) -> Result<JobState, RequestError> {
        jobs::cancel(&self.inner, id).await
    }

    async fn purge(&self, queue: String, state: JobState) -> Result<u64, RequestError> {
        jobs::purge(&self.inner, queue, state).await
    }

    async fn pause(&self, queue: String) -> Result<(), RequestError> {
        jobs::pause(&self.inner, queue, true).await
    }

    async fn resume(&self, queue: String) -> Result<(), RequestError> {
        jobs::pause(&self.inner, queue, false).await
    }

    fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.streams.end_all();
    }

    async fn leases_resolved(&self, deadline: tokio::time::Instant) -> usize {
        maintenance::leases_resolved(&self.inner, deadline).await
    }

    async fn unfinished(&self) -> (u64, bool) {
        (
            maintenance::unfinished(&self.inner).await.unwrap_or(0),
            true,
        )
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.inner.fatal.reason()
    }

    fn spawn_tasks(&self, tasks: &TaskTracker, stop: CancellationToken) {
        maintenance::spawn(&self.inner, tasks, stop);
    }

    fn serving(&self) -> watch::Receiver<bool> {
        self.inner.serving.subscribe()
    }

    fn observe(&self, _observer: Box<dyn Observer>) {
        // Job transitions happen in the database, on any broker: the job
        // counters of /metrics are the local backend's. The gauges, read
        // from the database, are kept from now on.
        self.inner.metrics_on.store(true, Ordering::Release);
    }

    fn gauges(&self) -> Option<GaugeReading> {
        self.inner
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .or_else(|| Some(GaugeReading::default()))
    }

    async fn close(&self) {
        maintenance::deregister(&self.inner).await;
    }
}
