//! The worker's main loop: one Lease stream (a Work session, see
//! `client/session.rs`) sized to the worker's concurrency, reconnected
//! with backoff when it breaks or the broker drains, each job run in a
//! tracked task; and the drain on shutdown. It reaches the broker only
//! through a [`Link`], so its tests run it against a scripted one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_limits as limits;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::backoff;
use crate::client::security::{PemSource, Security, TlsSources};
use crate::client::{BrokerErrorKind, BrokerLink, LeaseSpec, LeaseStream, Link, Report};
use crate::defaults;
use crate::error::WorkerError;
use crate::handler::{Handler, Registry};
use crate::job_task::{self, Shared, lock};
use crate::metrics::WorkerMetrics;
use crate::summary::{Counters, Summary};
use crate::timing::{RELEASE_GRACE, RELEASE_RETRY_FOR};
use prometheus_client::registry::Registry as MetricsRegistry;

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    broker_url: String,
    worker_id: Option<String>,
    queues: Vec<String>,
    concurrency: usize,
    lease_duration: Duration,
    drain_timeout: Duration,
    handlers: Registry,
    /// Read and checked by `build`, so that a bad file fails there.
    tls: TlsSources,
    /// Checked by `build`. (No `Debug` here: it would show the token.)
    token: Option<String>,
    /// Where the worker counts what it does; a registry of its own if unset.
    metrics: Option<Arc<WorkerMetrics>>,
}

impl WorkerBuilder {
    /// A worker of the broker at `broker_url`, e.g. `http://127.0.0.1:50051`.
    pub fn new(broker_url: impl Into<String>) -> Self {
        Self {
            broker_url: broker_url.into(),
            worker_id: None,
            queues: Vec::new(),
            concurrency: defaults::CONCURRENCY,
            lease_duration: defaults::LEASE_DURATION,
            drain_timeout: defaults::DRAIN_TIMEOUT,
            handlers: HashMap::new(),
            tls: TlsSources::default(),
            token: None,
            metrics: None,
        }
    }

    /// Trusts only the CA certificates in this PEM for the broker's
    /// certificate, instead of the system's roots. Needs an `https://` URL.
    #[must_use]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(PemSource::Memory(pem.into()));
        self
    }

    /// Like [`WorkerBuilder::tls_ca_pem`], from a PEM file read by `build`.
    #[must_use]
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(PemSource::File(path.into()));
        self
    }

    /// Presents this client certificate (chain) and private key, both PEM,
    /// to a broker that requires client certificates (mTLS). Needs an
    /// `https://` URL.
    #[must_use]
    pub fn tls_identity_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.identity = Some((
            PemSource::Memory(cert.into()),
            PemSource::Memory(key.into()),
        ));
        self
    }

    /// Like [`WorkerBuilder::tls_identity_pem`], from PEM files read by `build`.
    #[must_use]
    pub fn tls_identity_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.identity = Some((PemSource::File(cert.into()), PemSource::File(key.into())));
        self
    }

    /// Sends `authorization: Bearer TOKEN` on every call to the broker.
    /// The token is never logged.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
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

    /// Lease asked for each job, 1s to 24h (default 30s); heartbeats extend
    /// it every third of it.
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

    /// Counts jobs, run times, slots and reconnections into `metrics`
    /// (see [`WorkerMetrics::register`]).
    #[must_use]
    pub fn metrics(mut self, metrics: Arc<WorkerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Runs jobs of `job_type` with `handler`.
    #[must_use]
    pub fn handler(mut self, job_type: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.insert(job_type.into(), Arc::new(handler));
        self
    }

    /// Checks the settings the broker would refuse, so that a bad setting
    /// fails here rather than on every reconnect.
    ///
    /// An `https://` URL turns TLS on: with the CA given, or else the
    /// system's roots.
    ///
    /// # Errors
    /// [`WorkerError`] for a bad URL, no handlers, or settings out of range;
    /// [`WorkerError::TlsNeedsHttps`] for TLS settings with an `http://` URL;
    /// [`WorkerError::TlsFile`] for a TLS file that cannot be read or holds
    /// no certificate or key; [`WorkerError::BadToken`].
    pub fn build(self) -> Result<Worker, WorkerError> {
        self.check()?;
        let security = Security::load(&self.broker_url, &self.tls, self.token.as_deref())?;
        if let Some(warning) = security.token_in_the_clear(&self.broker_url) {
            tracing::warn!("{warning}");
        }
        let link = BrokerLink::secured(&self.broker_url, &security)?;
        Ok(self.into_worker(Arc::new(link)))
    }

    fn check(&self) -> Result<(), WorkerError> {
        let invalid = |setting, reason: String| WorkerError::InvalidSetting { setting, reason };
        if self.handlers.is_empty() {
            return Err(WorkerError::NoHandlers);
        }
        let concurrency = u64::try_from(self.concurrency).unwrap_or(u64::MAX);
        limits::check_max_in_flight(concurrency)
            .map_err(|reason| invalid("concurrency", reason))?;
        limits::check_run_limit(self.lease_duration)
            .map_err(|reason| invalid("lease_duration", reason))?;
        for queue in &self.queues {
            limits::check_queue_name(queue).map_err(|reason| invalid("queues", reason))?;
        }
        for name in self.handlers.keys().chain(self.worker_id.iter()) {
            limits::check_name(name)
                .map_err(|reason| invalid("job type or worker id", format!("{name:?} {reason}")))?;
        }
        Ok(())
    }

    /// The checked worker, calling the broker through `link`.
    fn into_worker(self, link: Arc<dyn Link>) -> Worker {
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        Worker {
            link,
            worker_id: worker_id.into(),
            queues: self.queues,
            concurrency: self.concurrency,
            lease_duration: self.lease_duration,
            drain_timeout: self.drain_timeout,
            handlers: Arc::new(self.handlers),
            metrics: self
                .metrics
                .unwrap_or_else(|| WorkerMetrics::register(&mut MetricsRegistry::default())),
        }
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
    link: Arc<dyn Link>,
    worker_id: Arc<str>,
    queues: Vec<String>,
    concurrency: usize,
    lease_duration: Duration,
    drain_timeout: Duration,
    handlers: Arc<Registry>,
    metrics: Arc<WorkerMetrics>,
}

impl Worker {
    /// Builds a worker of the broker at `broker_url`.
    pub fn builder(broker_url: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder::new(broker_url)
    }

    /// Runs jobs until `shutdown` is cancelled, then drains: stops leasing,
    /// lets running jobs finish within the drain timeout, stops and releases
    /// those still running at the deadline, and returns what it did.
    ///
    /// # Errors
    /// [`WorkerError::Refused`] when the broker refuses the Lease request
    /// for good (any error but [`BrokerErrorKind::Unavailable`]); running
    /// jobs are drained first.
    pub async fn run(self, shutdown: CancellationToken) -> Result<Summary, WorkerError> {
        let shared = Shared {
            link: self.link.clone(),
            handlers: self.handlers.clone(),
            worker_id: self.worker_id.clone(),
            lease_duration: self.lease_duration,
            slots: Arc::new(Semaphore::new(self.concurrency)),
            running: Arc::new(Mutex::new(HashMap::new())),
            counters: Arc::new(Counters::default()),
            metrics: self.metrics.clone(),
            stop_leasing: CancellationToken::new(),
            force_stop: CancellationToken::new(),
        };
        shared.metrics.set_slots(self.concurrency);
        let tasks = TaskTracker::new();
        let mut job_types: Vec<String> = self.handlers.keys().cloned().collect();
        job_types.sort();
        info!(
            worker_id = &*self.worker_id,
            concurrency = self.concurrency,
            ?job_types,
            "worker started"
        );

        let leased = self
            .lease_until(&shutdown, &shared, &tasks, job_types)
            .await;

        shared.stop_leasing.cancel();
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
                    "some jobs did not stop or their release did not reach the broker; they return when their leases expire"
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
        leased.map(|()| summary)
    }

    /// Keeps one Lease stream open and starts each job it delivers, until
    /// `shutdown`, or until the broker refuses the stream for good.
    async fn lease_until(
        &self,
        shutdown: &CancellationToken,
        shared: &Shared,
        tasks: &TaskTracker,
        job_types: Vec<String>,
    ) -> Result<(), WorkerError> {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let spec = self.lease_spec(shared, &job_types);
            let opened = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                opened = shared.link.lease(spec) => opened,
            };
            match opened {
                Err(err) if err.kind() == BrokerErrorKind::Unavailable => {
                    warn!(attempt = failures + 1, error = %err, "could not open the lease stream")
                }
                Err(err) => {
                    error!(error = %err, "the broker refuses the lease stream");
                    return Err(WorkerError::Refused(err));
                }
                Ok(mut stream) => {
                    info!("lease stream open");
                    failures = 0;
                    loop {
                        let message = tokio::select! {
                            biased;
                            () = shutdown.cancelled() => {
                                self.close_stream(stream, shared, tasks);
                                return Ok(());
                            }
                            message = stream.next_batch() => message,
                        };
                        match message {
                            Ok(Some(batch)) => {
                                for leased in batch {
                                    tasks.spawn(job_task::run(leased, shared.clone()));
                                }
                            }
                            Ok(None) => {
                                warn!("the broker ended the lease stream");
                                break;
                            }
                            Err(err) => {
                                warn!(error = %err, "lease stream broke");
                                break;
                            }
                        }
                    }
                }
            }
            let delay = backoff::delay(failures);
            failures = failures.saturating_add(1);
            info!(attempt = failures, delay = %humantime::format_duration(delay), "reconnecting to the broker");
            shared.metrics.reconnecting();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
        Ok(())
    }

    fn lease_spec(&self, shared: &Shared, job_types: &[String]) -> LeaseSpec {
        let held_leases = lock(&shared.running)
            .iter()
            .map(|(job_id, lease_id)| (job_id.clone(), lease_id.clone()))
            .collect();
        LeaseSpec {
            worker_id: self.worker_id.to_string(),
            queues: self.queues.clone(),
            job_types: job_types.to_vec(),
            // Jobs still running from an earlier stream are held leases: the
            // broker counts them, so every job it sends can start at once.
            max_in_flight: self.concurrency,
            lease_duration: self.lease_duration,
            held_leases,
        }
    }

    /// Closes the stream on shutdown. Jobs that already reached this side
    /// are taken off it first and given back once it is closed (closing it
    /// first means the broker cannot hand them straight back to it); jobs
    /// the broker had not sent yet it takes back itself.
    fn close_stream(&self, mut stream: Box<dyn LeaseStream>, shared: &Shared, tasks: &TaskTracker) {
        let mut arrived = Vec::new();
        while let Some(Ok(Some(batch))) = futures_now(stream.next_batch()) {
            arrived.extend(batch);
        }
        drop(stream);
        for leased in arrived {
            let (link, lease_id, job_id) = (shared.link.clone(), leased.lease_id, leased.job.id);
            let give_up_at = tokio::time::Instant::now() + RELEASE_RETRY_FOR;
            tasks.spawn(async move {
                if link
                    .resolve(&job_id, &lease_id, &Report::Release, give_up_at)
                    .await
                    .is_ok()
                {
                    info!(job_id, "job released unstarted");
                }
            });
        }
    }
}

/// The output of `future` if it is ready without waiting.
fn futures_now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let waker = std::task::Waker::noop();
    match future
        .as_mut()
        .poll(&mut std::task::Context::from_waker(waker))
    {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests;
