//! The worker's main loop: one Lease stream sized to the worker's
//! concurrency, reconnected with backoff when it breaks, each job run in a
//! tracked task; and the drain on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::v1 as pb;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backoff;
use crate::client::{BrokerLink, Resolution};
use crate::error::WorkerError;
use crate::handler::{Handler, Registry};
use crate::job_task::{self, Shared, lock};
use crate::summary::{Counters, Summary};

/// How long jobs still running at the drain deadline get to be released.
const RELEASE_GRACE: Duration = Duration::from_secs(3);

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    broker_url: String,
    worker_id: Option<String>,
    queues: Vec<String>,
    concurrency: usize,
    lease_duration: Duration,
    drain_timeout: Duration,
    handlers: Registry,
}

impl WorkerBuilder {
    /// A worker of the broker at `broker_url`, e.g. `http://127.0.0.1:50051`.
    pub fn new(broker_url: impl Into<String>) -> Self {
        Self {
            broker_url: broker_url.into(),
            worker_id: None,
            queues: Vec::new(),
            concurrency: 1,
            lease_duration: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(25),
            handlers: HashMap::new(),
        }
    }

    /// Names this worker in the broker (default: `hostname-pid`).
    #[must_use]
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Queues to take jobs from (default: `default`).
    #[must_use]
    pub fn queues<S: Into<String>>(mut self, queues: impl IntoIterator<Item = S>) -> Self {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Jobs run at once (default 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// Lease asked for each job (default 30s); heartbeats extend it every third of it.
    #[must_use]
    pub fn lease_duration(mut self, d: Duration) -> Self {
        self.lease_duration = d;
        self
    }

    /// How long a drain waits for running jobs (default 25s, below the usual 30s kill grace).
    #[must_use]
    pub fn drain_timeout(mut self, d: Duration) -> Self {
        self.drain_timeout = d;
        self
    }

    /// Runs jobs of `job_type` with `handler`.
    #[must_use]
    pub fn handler(mut self, job_type: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(job_type.into(), Arc::new(handler));
        self
    }

    /// # Errors
    /// [`WorkerError`] for a bad URL, no handlers, or settings out of range.
    pub fn build(self) -> Result<Worker, WorkerError> {
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        if self.concurrency == 0 || self.concurrency > 65_536 {
            return Err(WorkerError::InvalidSetting {
                setting: "concurrency",
                reason: format!("must be 1 to 65536, got {}", self.concurrency),
            });
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(WorkerError::InvalidSetting {
                setting: "lease_duration",
                reason: "must be at least 1s".into(),
            });
        }
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        Ok(Worker {
            link: BrokerLink::new(&self.broker_url)?,
            worker_id: worker_id.into(),
            queues: self.queues,
            concurrency: self.concurrency,
            lease_duration: self.lease_duration,
            drain_timeout: self.drain_timeout,
            handlers: Arc::new(self.handlers),
        })
    }
}

/// `hostname-pid`.
fn default_worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// A configured worker; [`Worker::run`] runs it.
pub struct Worker {
    link: BrokerLink,
    worker_id: Arc<str>,
    queues: Vec<String>,
    concurrency: usize,
    lease_duration: Duration,
    drain_timeout: Duration,
    handlers: Arc<Registry>,
}

impl Worker {
    /// Builds a worker of the broker at `broker_url`.
    pub fn builder(broker_url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder::new(broker_url)
    }

    /// Runs jobs until `shutdown` is cancelled, then drains: stops leasing,
    /// lets running jobs finish within the drain timeout, releases those
    /// still running at the deadline, and returns what it did.
    pub async fn run(self, shutdown: CancellationToken) -> Summary {
        let shared = Shared {
            link: self.link.clone(),
            handlers: self.handlers.clone(),
            worker_id: self.worker_id.clone(),
            lease_duration: self.lease_duration,
            running: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
            force_stop: CancellationToken::new(),
        };
        let tasks = TaskTracker::new();
        let mut job_types: Vec<String> = self.handlers.keys().cloned().collect();
        job_types.sort();
        info!(
            worker_id = &*self.worker_id,
            concurrency = self.concurrency,
            ?job_types,
            "worker started"
        );

        self.lease_until(&shutdown, &shared, &tasks, job_types)
            .await;

        let running = lock(&shared.running).len();
        info!(running, drain_timeout = %humantime::format_duration(self.drain_timeout),
            "draining: stopped leasing, waiting for running jobs");
        tasks.close();
        if tokio::time::timeout(self.drain_timeout, tasks.wait())
            .await
            .is_err()
        {
            let still_running = lock(&shared.running).len();
            warn!(
                still_running,
                "drain timeout passed: stopping and releasing the jobs still running"
            );
            shared.force_stop.cancel();
            if tokio::time::timeout(RELEASE_GRACE, tasks.wait())
                .await
                .is_err()
            {
                warn!(
                    "some releases did not reach the broker; those jobs return when their leases expire"
                );
            }
        }
        let summary = shared.counters.summary();
        info!(
            processed = summary.processed,
            failed = summary.failed,
            retried = summary.retried,
            released = summary.released,
            "worker stopped"
        );
        summary
    }

    /// Keeps one Lease stream open and starts each job it delivers, until
    /// `shutdown`.
    async fn lease_until(
        &self,
        shutdown: &CancellationToken,
        shared: &Shared,
        tasks: &TaskTracker,
        job_types: Vec<String>,
    ) {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let held_leases = lock(&shared.running)
                .iter()
                .map(|(job_id, lease_id)| pb::HeldLease {
                    job_id: job_id.clone(),
                    lease_id: lease_id.clone(),
                })
                .collect();
            let request = pb::LeaseRequest {
                worker_id: self.worker_id.to_string(),
                queues: self.queues.clone(),
                job_types: job_types.clone(),
                // The broker never holds more unresolved jobs on the stream
                // than this, held leases included: every job it sends can start.
                max_in_flight: u32::try_from(self.concurrency).unwrap_or(u32::MAX),
                lease_duration: Some(crate::client::duration_to_pb(self.lease_duration)),
                held_leases,
            };
            let opened = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                opened = shared.link.lease(request) => opened,
            };
            match opened {
                Err(status) => {
                    warn!(attempt = failures + 1, error = %status, "could not open the lease stream")
                }
                Ok(mut stream) => {
                    info!("lease stream open");
                    loop {
                        let message = tokio::select! {
                            biased;
                            // Dropping the stream closes it: the broker takes back what it has not sent.
                            () = shutdown.cancelled() => return,
                            message = stream.message() => message,
                        };
                        match message {
                            Ok(Some(leased)) => {
                                failures = 0;
                                self.start(leased, &slots, shared, tasks);
                            }
                            Ok(None) => {
                                warn!("the broker ended the lease stream");
                                break;
                            }
                            Err(status) => {
                                warn!(error = %status, "lease stream broke");
                                break;
                            }
                        }
                    }
                }
            }
            let delay = backoff::delay(failures);
            failures = failures.saturating_add(1);
            info!(attempt = failures, delay = %humantime::format_duration(delay), "reconnecting to the broker");
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn start(
        &self,
        leased: pb::LeasedJob,
        slots: &Arc<Semaphore>,
        shared: &Shared,
        tasks: &TaskTracker,
    ) {
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                tasks.spawn(job_task::run(leased, permit, shared.clone()));
            }
            Err(_) => {
                // Only when the broker freed a slot we still use (a lease
                // expired while its job runs): give the job back untouched.
                let job_id = leased.job.map(|j| j.id).unwrap_or_default();
                warn!(job_id, "no free slot for a delivered job; releasing it");
                let (link, lease_id) = (shared.link.clone(), leased.lease_id);
                let give_up_at = tokio::time::Instant::now() + self.lease_duration;
                tasks.spawn(async move {
                    let _ = link
                        .resolve(&job_id, &lease_id, &Resolution::Release, give_up_at)
                        .await;
                });
            }
        }
    }
}
