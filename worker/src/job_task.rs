//! One attempt of one job: waits for a concurrency slot, runs the handler
//! in a task of its own (so a panic is caught), enforces the job's timeout,
//! keeps the lease alive with heartbeats, stops the handler when it must,
//! and reports the outcome to the broker once the handler has ended.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_trace::{TRACE_TARGET, TraceContext, continue_trace};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, field, info, info_span, trace_span, warn};

use crate::client::{BrokerError, BrokerErrorKind, Extended, LeasedJob, Link, Report, Resolved};
use crate::handler::{Handler, Job, JobContext, JobError, Registry, ResultSlot};
use crate::metrics::{Ended, WorkerMetrics};
use crate::summary::Counters;
use crate::timing::{ABORT_GRACE, HEARTBEATS_PER_LEASE, RELEASE_RETRY_FOR, STOP_GRACE};

/// What every job task shares with the runner.
#[derive(Clone)]
pub(crate) struct Shared {
    pub link: Arc<dyn Link>,
    pub handlers: Arc<Registry>,
    pub worker_id: Arc<str>,
    pub lease_duration: Duration,
    /// Concurrency slots: a job runs only while it holds one.
    pub slots: Arc<Semaphore>,
    /// Leases of the jobs this worker holds now, by job id: sent as held
    /// leases when the Lease stream reconnects.
    pub running: Arc<Mutex<HashMap<String, String>>>,
    pub counters: Arc<Counters>,
    pub metrics: Arc<WorkerMetrics>,
    /// Cancelled when the worker stops leasing: jobs still waiting for a
    /// slot are given back at once.
    pub stop_leasing: CancellationToken,
    /// Cancelled at the drain deadline: running jobs stop and are released.
    pub force_stop: CancellationToken,
}

/// How an attempt ended, before it is reported.
enum Outcome {
    Report(Report),
    /// The lease is gone (expired, or the broker restarted): nothing to
    /// report, the job is someone else's now.
    LeaseLost(String),
}

type Extending = Pin<Box<dyn Future<Output = (Instant, Result<Extended, BrokerError>)> + Send>>;

/// Runs one leased job to its end.
pub(crate) async fn run(leased: LeasedJob, shared: Shared) {
    let job = leased.job;
    let trace =
        TraceContext::from_headers(job.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let trace_id = trace.map(|t| t.parent.trace_id());
    let span = info_span!(
        "job",
        job_id = job.id,
        job_type = job.job_type,
        queue = job.queue,
        attempt = job.attempt,
        worker_id = &*shared.worker_id,
        trace_id
    );
    // The exported span (see sluice-trace): the producer's trace goes on here.
    let traced = trace_span!(target: TRACE_TARGET, "job", job_id = job.id, job_type = job.job_type,
        queue = job.queue, attempt = job.attempt, worker_id = &*shared.worker_id, trace_id = field::Empty);
    continue_trace(&traced, trace);
    run_attempt(job, leased.lease_id, shared)
        .instrument(traced)
        .instrument(span)
        .await;
}

async fn run_attempt(job: Job, lease_id: String, shared: Shared) {
    let received = Instant::now();
    let job_id = job.id.clone();
    lock(&shared.running).insert(job_id.clone(), lease_id.clone());
    let mut lease_expires = received + shared.lease_duration;

    let job_type = job.job_type.clone();
    shared.metrics.leased();
    let handler = shared.handlers.get(&job.job_type).cloned();
    let outcome = match handler {
        None => {
            warn!("no handler for this job type; giving it back");
            Outcome::Report(Report::Release)
        }
        Some(handler) => {
            // A slot is normally free at once: the broker sends no more jobs
            // than the worker's concurrency. It is not after a broker restart
            // or a lease that expired under a running job, until the job
            // holding the slot notices that its lease is gone.
            let permit = tokio::select! {
                biased;
                permit = shared.slots.clone().acquire_owned() => permit.ok(),
                () = shared.stop_leasing.cancelled() => None,
            };
            match permit {
                None => Outcome::Report(Report::Release),
                Some(_permit) => {
                    shared.metrics.started(&job_type);
                    let started = Instant::now();
                    let (outcome, timed_out) =
                        attempt(job, handler, &lease_id, &shared, &mut lease_expires).await;
                    shared
                        .metrics
                        .stopped(&job_type, started.elapsed(), timed_out);
                    outcome
                }
            }
        }
    };

    let report = match outcome {
        Outcome::LeaseLost(why) => {
            lock(&shared.running).remove(&job_id);
            shared.metrics.resolved(&job_type, None);
            warn!(
                error = why,
                "lease lost; the handler was stopped and the job is not reported"
            );
            return;
        }
        Outcome::Report(report) => report,
    };
    // Past the lease's expiry the broker has moved on; a release on shutdown
    // must not hold up the exit either.
    let give_up_at = if report == Report::Release {
        lease_expires.min(Instant::now() + RELEASE_RETRY_FOR)
    } else {
        lease_expires
    };
    let result = shared
        .link
        .resolve(&job_id, &lease_id, &report, give_up_at)
        .await;
    lock(&shared.running).remove(&job_id);
    let ended = match &report {
        Report::Ack(_) => Ended::Succeeded,
        Report::Nack { .. } => Ended::Failed,
        Report::Release => Ended::Released,
    };
    shared
        .metrics
        .resolved(&job_type, result.is_ok().then_some(ended));
    let elapsed_ms = u64::try_from(received.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(resolved) => {
            shared.counters.record(resolved);
            match (&report, resolved) {
                (Report::Nack { error, .. }, Resolved::Failed) => {
                    warn!(outcome = "failed", error, elapsed_ms, "job failed for good");
                }
                (Report::Nack { error, .. }, _) => warn!(
                    outcome = "retry",
                    error, elapsed_ms, "job failed, will retry"
                ),
                (Report::Release, _) => info!(outcome = "released", elapsed_ms, "job released"),
                (Report::Ack(_), _) => info!(outcome = "succeeded", elapsed_ms, "job succeeded"),
            }
        }
        Err(err) => {
            warn!(error = %err, elapsed_ms, "could not report the job's outcome; its lease will expire")
        }
    }
}

/// Runs the handler until it returns or must stop, then makes sure it has
/// stopped before the outcome is reported; true with it if the job timed out.
async fn attempt(
    job: Job,
    handler: Arc<dyn Handler>,
    lease_id: &str,
    shared: &Shared,
    lease_expires: &mut Instant,
) -> (Outcome, bool) {
    let started = Instant::now();
    let timeout = job.timeout;
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + Duration::from_secs(86_400));
    let cancel = CancellationToken::new();
    let result = ResultSlot::default();
    let ctx = JobContext::new(
        cancel.clone(),
        shared.link.clone(),
        job.id.clone(),
        lease_id.to_owned(),
        result.clone(),
    );
    let job_id = job.id.clone();
    // The call itself inside the task, so that a panic in its synchronous
    // part is caught too.
    let mut task = tokio::spawn(async move { handler.call(job, ctx).await });

    let beat = shared.lease_duration / HEARTBEATS_PER_LEASE;
    let next_beat = tokio::time::sleep_until(started + beat);
    tokio::pin!(next_beat);
    let mut extending: Option<Extending> = None;
    let stop = loop {
        tokio::select! {
            biased;
            joined = &mut task => return (Outcome::Report(finished(joined, &result)), false),
            () = shared.force_stop.cancelled() => break (Outcome::Report(Report::Release), false),
            () = tokio::time::sleep_until(deadline) => {
                break (Outcome::Report(nack(format!("timed out after {}", humantime::format_duration(timeout)), false)), true);
            }
            () = tokio::time::sleep_until(*lease_expires) => {
                break (Outcome::LeaseLost("the lease ran out before a heartbeat reached the broker".into()), false);
            }
            (sent_at, reply) = async { extending.as_mut().expect("guarded").await }, if extending.is_some() => {
                extending = None;
                match reply {
                    Ok(reply) if reply.cancel_requested => break (Outcome::Report(nack("cancelled".into(), true)), false),
                    Ok(_) => *lease_expires = sent_at + shared.lease_duration,
                    Err(err) if err.kind() == BrokerErrorKind::LeaseLost => {
                        break (Outcome::LeaseLost(err.message().to_owned()), false);
                    }
                    Err(err) => warn!(error = %err, "heartbeat failed; the job keeps running"),
                }
            }
            () = &mut next_beat, if extending.is_none() => {
                next_beat.as_mut().reset(Instant::now() + beat);
                let (link, job_id, lease_id, by) = (shared.link.clone(), job_id.clone(), lease_id.to_owned(), shared.lease_duration);
                extending = Some(Box::pin(async move {
                    let sent_at = Instant::now();
                    (sent_at, link.extend(&job_id, &lease_id, by).await)
                }));
            }
        }
    };
    // Stop the handler: its token first; a handler that does not return
    // within the grace (an exec handler does: it kills its process group
    // within it) has its future dropped.
    cancel.cancel();
    if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
        task.abort();
        if tokio::time::timeout(ABORT_GRACE, &mut task).await.is_err() {
            error!(
                "the handler ignores cancellation and blocks its thread; reporting the job anyway"
            );
        }
    }
    stop
}

/// The report for a handler task that ended, with the result it set.
fn finished(
    joined: Result<Result<(), JobError>, tokio::task::JoinError>,
    result: &ResultSlot,
) -> Report {
    match joined {
        Ok(Ok(())) => Report::Ack(lock(result).take()),
        Ok(Err(err)) => Report::Nack {
            error: err.message,
            retry_after: err.retry_after,
            dead: err.permanent,
            key_delay: err.key_delay,
        },
        Err(join) if join.is_panic() => nack(
            format!("handler panicked: {}", panic_message(join.into_panic())),
            false,
        ),
        Err(_) => nack("handler task was cancelled".into(), false),
    }
}

fn nack(error: String, dead: bool) -> Report {
    Report::Nack {
        error,
        retry_after: None,
        dead,
        key_delay: None,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
