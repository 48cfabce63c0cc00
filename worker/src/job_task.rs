//! One attempt of one job: runs its handler in a task of its own (so a panic
//! is caught), enforces the job's timeout, keeps the lease alive with
//! heartbeats, and reports the outcome to the broker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_proto::v1 as pb;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{Instrument as _, info, info_span, warn};

use crate::client::{BrokerLink, Resolution, Resolved};
use crate::handler::{Job, JobContext, JobError, Registry};
use crate::summary::Counters;

/// What every job task shares with the runner.
#[derive(Clone)]
pub(crate) struct Shared {
    pub link: BrokerLink,
    pub handlers: Arc<Registry>,
    pub worker_id: Arc<str>,
    pub lease_duration: Duration,
    /// Leases of the jobs running now, by job id: sent as held leases when
    /// the Lease stream reconnects.
    pub running: Arc<Mutex<HashMap<String, String>>>,
    pub counters: Arc<Counters>,
    /// Cancelled at the drain deadline: running jobs stop and are released.
    pub force_stop: CancellationToken,
}

/// How an attempt ended, before it is reported.
enum Outcome {
    Report(Resolution),
    /// The broker no longer knows this lease (it expired, or the broker
    /// restarted): nothing to report, the job is someone else's now.
    LeaseLost(tonic::Status),
}

/// Runs one leased job to its end. `permit` is the concurrency slot it
/// occupies, freed as soon as the handler is done.
pub(crate) async fn run(leased: pb::LeasedJob, permit: OwnedSemaphorePermit, shared: Shared) {
    let Some(job) = leased.job.map(job_from_pb) else {
        warn!(
            lease_id = leased.lease_id,
            "leased job without a job; ignored"
        );
        return;
    };
    let span = info_span!(
        "job",
        job_id = job.id,
        job_type = job.job_type,
        queue = job.queue,
        attempt = job.attempt,
        worker_id = &*shared.worker_id
    );
    run_attempt(job, leased.lease_id, permit, shared)
        .instrument(span)
        .await;
}

async fn run_attempt(job: Job, lease_id: String, permit: OwnedSemaphorePermit, shared: Shared) {
    let started = Instant::now();
    let job_id = job.id.clone();
    lock(&shared.running).insert(job_id.clone(), lease_id.clone());
    let mut lease_expires = started + shared.lease_duration;

    let outcome = match shared.handlers.get(&job.job_type).cloned() {
        None => {
            warn!("no handler for this job type; giving it back");
            Outcome::Report(Resolution::Release)
        }
        Some(handler) => {
            let cancel = CancellationToken::new();
            let ctx = JobContext::new(
                cancel.clone(),
                shared.link.clone(),
                job_id.clone(),
                lease_id.clone(),
            );
            let timeout = job.timeout;
            let mut task = tokio::spawn(handler.call(job, ctx));
            let deadline = started + timeout;
            let beat = shared.lease_duration / 3;
            let mut heartbeat = tokio::time::interval_at(started + beat, beat);
            let outcome = loop {
                tokio::select! {
                    biased;
                    () = shared.force_stop.cancelled() => break Outcome::Report(Resolution::Release),
                    joined = &mut task => break Outcome::Report(finished(joined)),
                    () = tokio::time::sleep_until(deadline) => {
                        break Outcome::Report(nack(format!("timed out after {}", humantime::format_duration(timeout)), false));
                    }
                    _ = heartbeat.tick() => {
                        match shared.link.extend(&job_id, &lease_id, shared.lease_duration).await {
                            Ok(reply) if reply.cancel_requested => break Outcome::Report(nack("cancelled".into(), true)),
                            Ok(_) => lease_expires = Instant::now() + shared.lease_duration,
                            Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
                                break Outcome::LeaseLost(status);
                            }
                            Err(status) => warn!(error = %status, "heartbeat failed; the job keeps running"),
                        }
                    }
                }
            };
            // Stops the handler if it is still running: its token first, then its future.
            cancel.cancel();
            task.abort();
            outcome
        }
    };
    drop(permit);

    let resolution = match outcome {
        Outcome::LeaseLost(status) => {
            lock(&shared.running).remove(&job_id);
            warn!(error = %status, "lease lost; the handler was stopped and the job is not reported");
            return;
        }
        Outcome::Report(resolution) => resolution,
    };
    // Past the lease's expiry the broker has moved on; a release on forced
    // shutdown must not hold up the exit either.
    let give_up_at = if resolution == Resolution::Release {
        lease_expires.min(Instant::now() + Duration::from_secs(2))
    } else {
        lease_expires
    };
    let result = shared
        .link
        .resolve(&job_id, &lease_id, &resolution, give_up_at)
        .await;
    lock(&shared.running).remove(&job_id);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match (&resolution, result) {
        (_, Ok(resolved)) => {
            shared.counters.record(resolved);
            match (&resolution, resolved) {
                (Resolution::Nack { error, .. }, Resolved::Failed) => {
                    warn!(outcome = "failed", error, elapsed_ms, "job failed for good");
                }
                (Resolution::Nack { error, .. }, _) => warn!(
                    outcome = "retry",
                    error, elapsed_ms, "job failed, will retry"
                ),
                (Resolution::Release, _) => info!(outcome = "released", elapsed_ms, "job released"),
                (Resolution::Ack, _) => info!(outcome = "succeeded", elapsed_ms, "job succeeded"),
            }
        }
        (_, Err(status)) => {
            warn!(error = %status, elapsed_ms, "could not report the job's outcome; its lease will expire")
        }
    }
}

/// The resolution for a handler task that ended.
fn finished(joined: Result<Result<(), JobError>, tokio::task::JoinError>) -> Resolution {
    match joined {
        Ok(Ok(())) => Resolution::Ack,
        Ok(Err(err)) => Resolution::Nack {
            error: err.message,
            retry_after: err.retry_after,
            dead: err.permanent,
        },
        Err(join) if join.is_panic() => nack(
            format!("handler panicked: {}", panic_message(join.into_panic())),
            false,
        ),
        Err(_) => nack("handler task was cancelled".into(), false),
    }
}

fn nack(error: String, dead: bool) -> Resolution {
    Resolution::Nack {
        error,
        retry_after: None,
        dead,
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".into(), |s| (*s).to_owned()),
    }
}

fn job_from_pb(job: pb::Job) -> Job {
    Job {
        timeout: job
            .timeout
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or(Duration::from_secs(60)),
        id: job.id,
        queue: job.queue,
        job_type: job.job_type,
        payload: job.payload,
        headers: job.headers,
        attempt: job.attempt,
        max_attempts: job.max_attempts,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
