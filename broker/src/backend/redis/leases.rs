//! The lease operations: Ack, Nack, Extend, Release and the expiry of
//! leases, each a script fenced by the lease id it names (`leased()` in
//! `lua/lib.lua`), which tells an unknown job (NOT_FOUND) from a stale
//! lease (FAILED_PRECONDITION) as the local backend does. What a failed
//! attempt leads to is the queue crate's [`after_failure`], decided here
//! on what `lua/peek.lua` (a Nack) or `lua/maintain.lua` (an expiry) read
//! and applied by `lua/fail.lua`, which a lease ended meanwhile refuses.
//!
//! A lease that ends frees its stream's slot: here when the stream is this
//! broker's, else by the script's message on that broker's channel.

use std::time::Duration;

use rand::Rng as _;
use redis::Value;
use sluice_queue::{
    AfterFailure, Extended, Failure, FailureOutcome, JobState, LEASE_EXPIRED, QueueError,
    after_failure, truncate_error,
};
use tracing::{debug, warn};
use uuid::Uuid;

use super::scripts::{reply, scripts};
use super::{Inner, job};
use crate::backend::{Ack, BackendError, Batch, LeaseRef, ProgressReport};

type Result<T> = std::result::Result<T, BackendError>;

/// A script's refusal of `lease`: `{'unknown'}` or `{'stale', state}`.
fn refusal(answer: &[Value], lease: LeaseRef) -> Result<QueueError> {
    match reply::string(reply::at(answer, 0)?)?.as_str() {
        "unknown" => Ok(QueueError::UnknownJob {
            job_id: lease.job_id,
        }),
        "stale" => Ok(QueueError::StaleLease {
            job_id: lease.job_id,
            lease_id: lease.lease_id,
            state: job::state_of(&reply::string(reply::at(answer, 1)?)?)?,
        }),
        _ => Err(reply::malformed("a lease refusal")),
    }
}

/// What a lease operation says of the job whose lease ended: its queue,
/// type, attempt, worker, and the broker and stream that held it.
struct Ended {
    queue: String,
    job_type: String,
    attempt: String,
    worker: String,
    broker: String,
    stream: String,
}

impl Ended {
    /// The six fields from `at` on.
    fn of(answer: &[Value], at: usize) -> Result<Self> {
        let field = |i: usize| reply::string(reply::at(answer, at + i)?);
        Ok(Self {
            queue: field(0)?,
            job_type: field(1)?,
            attempt: field(2)?,
            worker: field(3)?,
            broker: field(4)?,
            stream: field(5)?,
        })
    }

    /// Frees the slot of the stream, if it is this broker's (the script
    /// told any other).
    fn free_slot(&self, inner: &Inner, job: Uuid) {
        if self.broker == inner.broker_id.to_string()
            && let Ok(stream) = self.stream.parse()
        {
            inner.streams.slot_freed(stream, job);
        }
    }
}

/// What the failure policy needs of a leased job: its attempt, its most
/// attempts, and whether an operator asked to cancel it.
pub(super) struct Peeked {
    attempt: u32,
    max_attempts: u32,
    cancel_requested: bool,
}

impl Peeked {
    /// From three items of a script's answer, as `lua/peek.lua` and
    /// `lua/maintain.lua` give them.
    pub(super) fn of(items: &[Value]) -> Result<Self> {
        Ok(Self {
            attempt: reply::int(reply::at(items, 0)?)?,
            max_attempts: reply::int(reply::at(items, 1)?)?,
            cancel_requested: reply::string(reply::at(items, 2)?)? == "1",
        })
    }
}

pub(super) async fn ack(inner: &Inner, acks: Vec<Ack>) -> Result<Batch<()>> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let call = inner.call().args(acks.iter().flat_map(|a| {
        [
            a.lease.job_id.to_string().into_bytes(),
            a.lease.lease_id.to_string().into_bytes(),
            a.result.as_deref().unwrap_or_default().to_vec(),
        ]
    }));
    let answered = call.run(&inner.conn, &scripts().ack).await?;
    let answered = reply::items(&answered)?;
    if answered.len() != acks.len() {
        return Err(reply::malformed("an answer per lease"));
    }
    let mut out = Vec::with_capacity(acks.len());
    for (Ack { lease, .. }, answer) in acks.into_iter().zip(answered) {
        let answer = reply::items(answer)?;
        if reply::string(reply::at(answer, 0)?)? != "ok" {
            out.push(Err(refusal(answer, lease)?));
            continue;
        }
        let ended = Ended::of(answer, 1)?;
        debug!(job_id = %lease.job_id, queue = %ended.queue, job_type = %ended.job_type,
            attempt = %ended.attempt, worker_id = %ended.worker, "job acked");
        inner.counts.add(&ended.queue, |c| c.acked += 1);
        ended.free_slot(inner, lease.job_id);
        out.push(Ok(()));
    }
    Ok(out)
}

pub(super) async fn nack(
    inner: &Inner,
    lease: LeaseRef,
    failure: Failure,
) -> Result<FailureOutcome> {
    let ids = [lease.job_id.to_string(), lease.lease_id.to_string()];
    let peeked = inner
        .call()
        .args(&ids)
        .run(&inner.conn, &scripts().peek)
        .await?;
    let peeked = reply::items(&peeked)?;
    if reply::string(reply::at(peeked, 0)?)? != "ok" {
        return Err(refusal(peeked, lease)?.into());
    }
    let read = Peeked::of(&peeked[1..])?;
    let failure = Failure {
        error: truncate_error(failure.error).into(),
        ..failure
    };
    fail(inner, lease, read, failure, false)
        .await?
        .map_err(BackendError::from)
}

/// Ends a failed attempt of `lease` as the failure policy decides on what
/// was `read` of the job, then applies it (`fail`, fenced: a lease ended
/// meanwhile is refused). `expired` says a lease expiry rather than a
/// Nack (for the counters and the log).
async fn fail(
    inner: &Inner,
    lease: LeaseRef,
    read: Peeked,
    failure: Failure,
    expired: bool,
) -> Result<std::result::Result<FailureOutcome, QueueError>> {
    let Failure {
        error,
        retry_after,
        dead,
        key_delay,
    } = failure;
    let ids = [lease.job_id.to_string(), lease.lease_id.to_string()];
    let after = after_failure(
        read.attempt,
        read.max_attempts,
        read.cancel_requested,
        dead,
        retry_after,
        &inner.queue.backoff,
        rand::rng().random::<f64>(),
    );
    let (decision, delay) = match after {
        // The script finishes a job whose cancel was asked for as
        // CANCELLED itself, whatever the decision.
        AfterFailure::Cancelled | AfterFailure::Dead => ("dead", Duration::ZERO),
        AfterFailure::Retry(delay) => ("retry", delay),
    };
    let answer = inner
        .call()
        .args(&ids)
        .arg(decision)
        .arg(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
        .arg(&error)
        .arg(u64::try_from(key_delay.as_millis()).unwrap_or(u64::MAX))
        .run(&inner.conn, &scripts().fail)
        .await?;
    let answer = reply::items(&answer)?;
    if reply::string(reply::at(answer, 0)?)? != "ok" {
        return Ok(Err(refusal(answer, lease)?));
    }
    let state = job::state_of(&reply::string(reply::at(answer, 1)?)?)?;
    let next_attempt_at = reply::number::<u64>(reply::at(answer, 2)?)?.map(job::timestamp);
    let ended = Ended::of(answer, 3)?;
    inner.counts.add(&ended.queue, |c| {
        if expired {
            c.expired += 1;
        } else {
            c.nacked += 1;
        }
        if state == JobState::Dead {
            c.dead += 1;
        }
    });
    if state == JobState::Cancelled {
        debug!(job_id = %lease.job_id, queue = %ended.queue, job_type = %ended.job_type,
            attempt = %ended.attempt, worker_id = %ended.worker, "job cancelled");
    } else {
        let message = if state == JobState::Dead {
            "job dead"
        } else {
            "job attempt failed"
        };
        warn!(job_id = %lease.job_id, queue = %ended.queue, job_type = %ended.job_type,
            attempt = %ended.attempt, worker_id = %ended.worker, error, "{message}");
    }
    ended.free_slot(inner, lease.job_id);
    if state == JobState::Ready {
        inner.streams.wake();
    }
    Ok(Ok(FailureOutcome {
        state,
        next_attempt_at,
    }))
}

/// Fails the expired lease `lease` of a job (its attempt counts), if it
/// is still the job's: of brokers maintaining at once, one ends it.
pub(super) async fn expire(inner: &Inner, lease: LeaseRef, read: Peeked) -> Result<()> {
    // A refusal means another broker ended it first.
    let failure = Failure {
        error: LEASE_EXPIRED.to_owned(),
        ..Failure::default()
    };
    fail(inner, lease, read, failure, true).await.map(drop)
}

pub(super) async fn extend(
    inner: &Inner,
    lease: LeaseRef,
    by: Option<Duration>,
) -> Result<Extended> {
    let answer = inner
        .call()
        .arg(lease.job_id.to_string())
        .arg(lease.lease_id.to_string())
        .arg(by.map_or_else(String::new, |d| d.as_millis().to_string()))
        .run(&inner.conn, &scripts().extend)
        .await?;
    let answer = reply::items(&answer)?;
    if reply::string(reply::at(answer, 0)?)? != "ok" {
        return Err(refusal(answer, lease)?.into());
    }
    Ok(Extended {
        expires_at: job::timestamp(reply::int(reply::at(answer, 1)?)?),
        cancel_requested: reply::string(reply::at(answer, 2)?)? == "1",
    })
}

pub(super) async fn progress(
    inner: &Inner,
    lease: LeaseRef,
    report: ProgressReport,
) -> Result<bool> {
    let answer = inner
        .call()
        .arg(lease.job_id.to_string())
        .arg(lease.lease_id.to_string())
        .arg(report.percent)
        .arg(report.message)
        .run(&inner.conn, &scripts().progress)
        .await?;
    let answer = reply::items(&answer)?;
    if reply::string(reply::at(answer, 0)?)? != "ok" {
        return Err(refusal(answer, lease)?.into());
    }
    Ok(reply::string(reply::at(answer, 1)?)? == "1")
}

pub(super) async fn release(
    inner: &Inner,
    lease: LeaseRef,
    delay: Duration,
    key_delay: Duration,
) -> Result<JobState> {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let answer = inner
        .call()
        .arg(lease.job_id.to_string())
        .arg(lease.lease_id.to_string())
        .arg(ms(delay))
        .arg(ms(key_delay))
        .run(&inner.conn, &scripts().release)
        .await?;
    let answer = reply::items(&answer)?;
    if reply::string(reply::at(answer, 0)?)? != "ok" {
        return Err(refusal(answer, lease)?.into());
    }
    let state = job::state_of(&reply::string(reply::at(answer, 1)?)?)?;
    let ended = Ended::of(answer, 2)?;
    debug!(job_id = %lease.job_id, queue = %ended.queue, job_type = %ended.job_type,
        attempt = %ended.attempt, worker_id = %ended.worker, "job released");
    ended.free_slot(inner, lease.job_id);
    if state == JobState::Ready {
        inner.streams.wake();
    }
    Ok(state)
}
