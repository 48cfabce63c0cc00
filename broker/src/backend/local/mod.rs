//! The local backend: one broker's in-memory [`Queue`], shared by every
//! RPC ([`SharedQueue`]), optionally kept in `--data-dir` (restored by
//! `recovery.rs`), with the one task that acts on its deadlines
//! (`scheduler.rs`). Each [`Backend`] method is one short operation on the
//! locked queue, and the ones that change a job wait for the commit that
//! holds the change.

mod recovery;
mod scheduler;
mod schedules;
mod shared_queue;
mod sources;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_queue::{
    ConsumerId, ConsumerSpec, Enqueued, Extended, Failure, FailureOutcome, JobFilter, JobSnapshot,
    JobState, KeyStats, NewJob, Observer, QueueConfig, QueueLimits, WorkerInfo,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::{
    Ack, Backend, BackendError, Batch, Expect, FeedCloser, Fired, GaugeReading, JobPage, LeaseFeed,
    LeaseRef, Millis, OpenError, ProgressReport, RowWrite, ScheduleStore, SourceCommit,
    SourceCommitted, SourceRow, SourceStore, StatsReading, StoredSchedule, TickFire,
};
use crate::clock::TokioClock;
use crate::fatal::Fatal;
use schedules::LocalSchedules;
pub use shared_queue::SharedQueue;
use sources::LocalSources;

/// The local backend: see the module doc.
pub struct LocalBackend {
    shared: SharedQueue,
    schedules: LocalSchedules,
    sources: LocalSources,
    durable: bool,
    /// Always serving: the local queue has nothing to wait for.
    serving: watch::Sender<bool>,
}

impl LocalBackend {
    /// The queue restored from `data_dir`, or empty and memory-only.
    ///
    /// # Errors
    /// When the data directory cannot be opened or restored.
    pub async fn open(
        config: &QueueConfig,
        data_dir: Option<&Path>,
        fatal: &Fatal,
    ) -> Result<Self, OpenError> {
        let clock = TokioClock::new();
        let (queue, store, schedules, sources) =
            recovery::open_queue(config, data_dir, &clock, fatal).await?;
        let durable = store.is_some();
        Ok(Self {
            shared: SharedQueue::new(queue, clock, store, fatal.clone()),
            schedules: LocalSchedules::new(schedules, fatal.clone()),
            sources: LocalSources::new(sources, fatal.clone()),
            durable,
            serving: watch::Sender::new(true),
        })
    }
}

/// Closes a local consumer.
struct LocalCloser {
    shared: SharedQueue,
    consumer: ConsumerId,
}

impl FeedCloser for LocalCloser {
    fn set_window(&self, window: u32) {
        self.shared.set_window(self.consumer, window);
    }

    fn close(&self, unsent: Vec<LeaseRef>) {
        self.shared.close_consumer(self.consumer, unsent);
    }
}

#[tonic::async_trait]
impl SourceStore for LocalBackend {
    async fn source_rows(&self, group: &str) -> Result<Vec<SourceRow>, BackendError> {
        self.sources.rows(group)
    }

    async fn put_source_rows(
        &self,
        group: &str,
        writes: Vec<RowWrite>,
    ) -> Result<Vec<bool>, BackendError> {
        self.sources.put(&self.shared, group, writes).await
    }

    async fn commit_source(
        &self,
        group: &str,
        commit: SourceCommit,
    ) -> Result<Option<SourceCommitted>, BackendError> {
        self.sources.commit(&self.shared, group, commit).await
    }
}

#[tonic::async_trait]
impl ScheduleStore for LocalBackend {
    async fn schedules(&self) -> Result<Vec<StoredSchedule>, BackendError> {
        self.schedules.all()
    }

    async fn schedule(&self, name: &str) -> Result<Option<StoredSchedule>, BackendError> {
        self.schedules.get(name)
    }

    async fn due_schedules(
        &self,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, BackendError> {
        self.schedules.due(until, limit)
    }

    async fn next_schedule_fire(&self) -> Result<Option<Millis>, BackendError> {
        self.schedules.next_fire()
    }

    async fn put_schedule(
        &self,
        schedule: StoredSchedule,
        expect: Expect,
    ) -> Result<bool, BackendError> {
        self.schedules.put(&self.shared, schedule, expect).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, BackendError> {
        self.schedules.delete(&self.shared, name).await
    }

    async fn put_schedules(
        &self,
        writes: Vec<(StoredSchedule, u64)>,
    ) -> Result<Vec<bool>, BackendError> {
        self.schedules.put_many(&self.shared, writes).await
    }

    async fn fire_schedules(
        &self,
        ticks: Vec<TickFire>,
    ) -> Result<Vec<Option<Fired>>, BackendError> {
        self.schedules.fire_many(&self.shared, ticks).await
    }
}

#[tonic::async_trait]
impl Backend for LocalBackend {
    async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        what: &'static str,
    ) -> Result<Batch<Enqueued>, BackendError> {
        self.shared
            .write_unless_draining(what, |queue, now| {
                jobs.into_iter()
                    .map(|job| queue.enqueue(job, now))
                    .collect()
            })
            .await
    }

    async fn open_feed(&self, spec: ConsumerSpec) -> Result<LeaseFeed, BackendError> {
        let (consumer, jobs) = self.shared.open_consumer(spec)?;
        Ok(LeaseFeed {
            jobs,
            closer: Arc::new(LocalCloser {
                shared: self.shared.clone(),
                consumer,
            }),
        })
    }

    async fn ack(&self, acks: Vec<Ack>) -> Result<Batch<()>, BackendError> {
        self.shared
            .write(|queue, now| {
                acks.into_iter()
                    .map(|a| queue.ack_with_result(a.lease.job_id, a.lease.lease_id, a.result, now))
                    .collect()
            })
            .await
    }

    async fn nack(
        &self,
        lease: LeaseRef,
        failure: Failure,
    ) -> Result<FailureOutcome, BackendError> {
        Ok(self
            .shared
            .write(|queue, now| queue.nack(lease.job_id, lease.lease_id, failure, now))
            .await??)
    }

    async fn extend(
        &self,
        lease: LeaseRef,
        by: Option<Duration>,
    ) -> Result<Extended, BackendError> {
        Ok(self
            .shared
            .with_queue(|queue, now| queue.extend(lease.job_id, lease.lease_id, by, now))??)
    }

    async fn progress(
        &self,
        lease: LeaseRef,
        report: ProgressReport,
    ) -> Result<bool, BackendError> {
        // Not a write: see `Queue::progress`.
        Ok(self.shared.with_queue(|queue, now| {
            queue.progress(
                lease.job_id,
                lease.lease_id,
                report.percent,
                report.message,
                now,
            )
        })??)
    }

    async fn release(
        &self,
        lease: LeaseRef,
        delay: Duration,
        key_delay: Duration,
    ) -> Result<JobState, BackendError> {
        Ok(self
            .shared
            .write(|queue, now| {
                // The hold first: the job may be leased again at once.
                queue.hold_key(lease.job_id, lease.lease_id, key_delay, now)?;
                queue.release(lease.job_id, lease.lease_id, delay, now)
            })
            .await??)
    }

    async fn queues_of(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>, BackendError> {
        self.shared.with_queue(|queue, _| {
            ids.iter()
                .filter_map(|&id| Some((id, queue.job(id).ok()?.queue.to_owned())))
                .collect()
        })
    }

    async fn job(&self, id: Uuid) -> Result<JobSnapshot, BackendError> {
        Ok(self
            .shared
            .with_queue(|queue, _| queue.job(id).map(JobSnapshot::from))??)
    }

    async fn list(
        &self,
        filter: JobFilter,
        after: Option<u64>,
        limit: usize,
    ) -> Result<JobPage, BackendError> {
        self.shared.with_queue(|queue, _| {
            let page = queue.list(&filter, after, limit);
            JobPage {
                jobs: page.jobs.into_iter().map(JobSnapshot::from).collect(),
                next: page.next,
            }
        })
    }

    async fn stats(&self) -> Result<StatsReading, BackendError> {
        self.shared.with_queue(|queue, now| StatsReading {
            queues: queue.stats(now),
            recent_failures: queue.recent_failures().cloned().collect(),
            now,
        })
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, BackendError> {
        self.shared.with_queue(|queue, _| queue.workers())
    }

    async fn retry(&self, id: Uuid) -> Result<(), BackendError> {
        Ok(self
            .shared
            .write(|queue, now| queue.retry(id, now))
            .await??)
    }

    async fn cancel(&self, id: Uuid) -> Result<JobState, BackendError> {
        Ok(self
            .shared
            .write(|queue, now| queue.cancel(id, now))
            .await??)
    }

    /// Purges in bounded steps, releasing the queue between them so that a
    /// large purge does not stall the data path.
    async fn purge(&self, queue_name: String, state: JobState) -> Result<u64, BackendError> {
        let until = self.shared.with_queue(|queue, _| queue.horizon())?;
        let mut purged = 0;
        let mut after = None;
        loop {
            let (n, next) = self
                .shared
                .write(|queue, now| queue.purge_step(&queue_name, state, after, until, now))
                .await??;
            purged += n;
            match next {
                Some(next) => after = Some(next),
                None => return Ok(purged),
            }
            tokio::task::yield_now().await;
        }
    }

    async fn pause(&self, name: String) -> Result<(), BackendError> {
        Ok(self.shared.write(|queue, _| queue.pause(&name)).await??)
    }

    async fn resume(&self, name: String) -> Result<(), BackendError> {
        self.shared
            .write(|queue, now| queue.resume(&name, now))
            .await
    }

    async fn set_limits(&self, name: String, limits: QueueLimits) -> Result<(), BackendError> {
        Ok(self
            .shared
            .write(|queue, now| queue.set_limits(&name, limits, now))
            .await??)
    }

    async fn limits(&self, name: String) -> Result<QueueLimits, BackendError> {
        self.shared.with_queue(|queue, _| queue.limits(&name))
    }

    async fn keys(&self, name: String, limit: usize) -> Result<Vec<KeyStats>, BackendError> {
        self.shared
            .with_queue(|queue, now| queue.keys(&name, limit, now))
    }

    fn begin_drain(&self) {
        self.shared.begin_drain();
    }

    async fn leases_resolved(&self, deadline: tokio::time::Instant) -> usize {
        self.shared.leases_resolved(deadline).await
    }

    async fn unfinished(&self) -> (u64, bool) {
        let count = self
            .shared
            .with_queue(|queue, _| queue.unfinished_count())
            .unwrap_or_default();
        (count, self.durable)
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.shared.failure()
    }

    fn spawn_tasks(&self, tasks: &TaskTracker, stop: CancellationToken) {
        tasks.spawn(scheduler::run(self.shared.clone(), stop));
    }

    fn serving(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    fn observe(&self, observer: Box<dyn Observer>) {
        // A failed broker serves no jobs: there is nothing to observe.
        let _ = self
            .shared
            .with_queue(|queue, _| queue.set_observer(observer));
    }

    fn gauges(&self) -> Option<GaugeReading> {
        let mut reading = self
            .shared
            .with_queue(|queue, now| GaugeReading {
                stats: StatsReading {
                    queues: queue.stats(now),
                    recent_failures: Vec::new(),
                    now,
                },
                workers: queue.workers(),
                held: Some((queue.held_bytes(), queue.retained_bytes())),
                store: None,
            })
            .ok()?;
        reading.store = self.shared.store_stats();
        Some(reading)
    }

    async fn close(&self) {
        let closing = self.shared.clone();
        // Writing what is pending blocks on the disk.
        let _ = tokio::task::spawn_blocking(move || closing.close_store()).await;
    }
}
