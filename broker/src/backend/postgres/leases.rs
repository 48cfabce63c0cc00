//! The lease operations: Ack, Nack, Extend, Release, the give-back of
//! jobs leased to a stream that ended unsent, and the expiry of leases.
//! Every one names the job *and* the lease in its WHERE clause, so a
//! stale lease changes nothing however brokers interleave; when nothing
//! matched, one more read tells an unknown job (NOT_FOUND) from a stale
//! lease (FAILED_PRECONDITION), as the local backend answers. What a
//! failed attempt leads to is the queue crate's [`after_failure`].
//!
//! A lease that ends frees a slot of the stream that holds it: at once
//! when that stream is on this broker; through a notification to its
//! broker (`notify.rs`, after the commit) when it is on another, so that
//! a worker acking through another broker is not held to the poll.

use std::sync::OnceLock;
use std::time::Duration;

use deadpool_postgres::Transaction;
use rand::Rng as _;
use sluice_queue::{
    AfterFailure, Extended, Failure, FailureOutcome, JobState, LEASE_EXPIRED, QueueError,
    after_failure, truncate_error,
};
use tokio_postgres::Row;
use tracing::{debug, warn};
use uuid::Uuid;

use super::columns::{self, millis};
use super::sql::{self, get};
use super::{Inner, flow, reads};
use crate::backend::{Ack, BackendError, Batch, LeaseRef, ProgressReport};

type Result<T> = std::result::Result<T, BackendError>;

/// Moves job `$1` to the finished table in state `$2` with last error `$3`
/// (kept if NULL).
pub(super) const FINISH: &str = "WITH gone AS (DELETE FROM sluice_jobs WHERE id = $1 RETURNING *)
    INSERT INTO sluice_finished (id, seq, queue, job_type, payload, headers, priority, state,
        attempt, max_attempts, timeout_ms, idempotency_key, last_error, created_at, run_at,
        worker_id, finished_at, progress, key)
    SELECT id, seq, queue, job_type, payload, headers, priority, $2, attempt, max_attempts,
        timeout_ms, idempotency_key, coalesce($3, last_error), created_at, run_at, worker_id,
        now(), progress, key
    FROM gone";

/// What a fenced lease check found.
pub(super) struct Held {
    pub job_id: Uuid,
    pub queue: String,
    pub job_type: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub cancel_requested: bool,
    pub worker_id: String,
    pub broker_id: Option<Uuid>,
    pub stream_id: Option<i64>,
}

/// The columns [`Held::of`] reads.
const HELD_COLUMNS: &str = "id, queue, job_type, attempt, max_attempts, cancel_requested,
    coalesce(worker_id, '') AS worker_id, broker_id, stream_id";

impl Held {
    fn of(row: &Row) -> Result<Self> {
        Ok(Self {
            job_id: get(row, "id")?,
            queue: get(row, "queue")?,
            job_type: get(row, "job_type")?,
            attempt: get(row, "attempt")?,
            max_attempts: get(row, "max_attempts")?,
            cancel_requested: get(row, "cancel_requested")?,
            worker_id: get(row, "worker_id")?,
            broker_id: get(row, "broker_id")?,
            stream_id: get(row, "stream_id")?,
        })
    }

    /// What this failed attempt leads to.
    fn after_failure(
        &self,
        inner: &Inner,
        dead: bool,
        retry_after: Option<Duration>,
    ) -> AfterFailure {
        after_failure(
            u32::try_from(self.attempt).unwrap_or(0),
            u32::try_from(self.max_attempts).unwrap_or(0),
            self.cancel_requested,
            dead,
            retry_after,
            &inner.queue.backoff,
            rand::rng().random::<f64>(),
        )
    }
}

/// Locks job `lease.job_id` if `lease` is its current lease.
async fn hold(tx: &Transaction<'_>, lease: LeaseRef) -> Result<Option<Held>> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {HELD_COLUMNS} FROM sluice_jobs
             WHERE id = $1 AND lease_id = $2 AND state = 'leased' FOR UPDATE"
        )
    });
    let row = sql::query_opt(tx, sql, &[&lease.job_id, &lease.lease_id]).await?;
    row.as_ref().map(Held::of).transpose()
}

/// Why `lease` matched nothing: the job is unknown, or the lease stale.
async fn refusal(inner: &Inner, lease: LeaseRef) -> BackendError {
    match reads::state_now(inner, lease.job_id).await {
        Ok(None) => QueueError::UnknownJob {
            job_id: lease.job_id,
        }
        .into(),
        Ok(Some(state)) => QueueError::StaleLease {
            job_id: lease.job_id,
            lease_id: lease.lease_id,
            state,
        }
        .into(),
        Err(e) => e,
    }
}

/// A lease of a job of `queue` ended (committed): if the queue has
/// limits, the slot it held may let a job go on any broker.
fn slot_freed(inner: &Inner, queue: &str) {
    if flow::has_limits(inner, queue) {
        flow::freed(inner);
    }
}

/// The lease of `job` ended (committed): a slot of its stream is free,
/// here or, told, on the stream's broker.
fn lease_ended(inner: &Inner, job: Uuid, broker_id: Option<Uuid>, stream_id: Option<i64>) {
    if let (Some(broker), Some(stream)) = (broker_id, stream_id) {
        if broker == inner.broker_id {
            inner.streams.slot_freed(stream, job);
        } else {
            inner.notifier.lease_ended(broker, stream, job);
        }
    }
}

pub(super) async fn ack(inner: &Inner, acks: Vec<Ack>) -> Result<Batch<()>> {
    if acks.is_empty() {
        return Ok(Vec::new());
    }
    let jobs: Vec<Uuid> = acks.iter().map(|a| a.lease.job_id).collect();
    let ids: Vec<Uuid> = acks.iter().map(|a| a.lease.lease_id).collect();
    let results: Vec<Option<&[u8]>> = acks.iter().map(|a| a.result.as_deref()).collect();
    // One statement: the fenced delete and the insert into the history,
    // with each ack's result.
    let sql = "WITH gone AS (
             DELETE FROM sluice_jobs j
             USING unnest($1::uuid[], $2::uuid[], $3::bytea[]) AS a(id, lease_id, result)
             WHERE j.id = a.id AND j.lease_id = a.lease_id AND j.state = 'leased'
             RETURNING j.*, a.result
         ), kept AS (
             INSERT INTO sluice_finished (id, seq, queue, job_type, payload, headers,
                 priority, state, attempt, max_attempts, timeout_ms, idempotency_key,
                 last_error, created_at, run_at, worker_id, finished_at, progress, result, key)
             SELECT id, seq, queue, job_type, payload, headers, priority, 'succeeded',
                 attempt, max_attempts, timeout_ms, idempotency_key, last_error,
                 created_at, run_at, worker_id, now(), progress, result, key
             FROM gone
         )
         SELECT id, queue, job_type, attempt, worker_id, broker_id, stream_id FROM gone";
    let client = sql::connection(&inner.pool).await?;
    let rows = sql::query(&client, sql, &[&jobs, &ids, &results]).await?;
    drop(client);
    let mut acked = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = get(row, "id")?;
        let queue: String = get(row, "queue")?;
        let job_type: String = get(row, "job_type")?;
        let attempt: i32 = get(row, "attempt")?;
        let worker_id: Option<String> = get(row, "worker_id")?;
        debug!(job_id = %id, %queue, %job_type, attempt, worker_id = worker_id.as_deref().unwrap_or(""), "job acked");
        inner.counts.add(&queue, |c| c.acked += 1);
        slot_freed(inner, &queue);
        lease_ended(inner, id, get(row, "broker_id")?, get(row, "stream_id")?);
        acked.insert(id);
    }
    let mut answers = Vec::with_capacity(acks.len());
    for Ack { lease, .. } in acks {
        if acked.remove(&lease.job_id) {
            answers.push(Ok(()));
        } else {
            answers.push(match refusal(inner, lease).await {
                BackendError::Queue(e) => Err(e),
                other => return Err(other),
            });
        }
    }
    Ok(answers)
}

pub(super) async fn nack(
    inner: &Inner,
    lease: LeaseRef,
    failure: Failure,
) -> Result<FailureOutcome> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let Some(held) = hold(&tx, lease).await? else {
        drop(tx);
        drop(client);
        return Err(refusal(inner, lease).await);
    };
    inner.counts.add(&held.queue, |c| c.nacked += 1);
    flow::hold_key(&tx, held.job_id, failure.key_delay).await?;
    let error = truncate_error(failure.error);
    let after = held.after_failure(inner, failure.dead, failure.retry_after);
    let outcome = settle_failure(inner, &tx, &held, &error, after).await?;
    sql::commit(tx).await?;
    inner.notifier.job_now(outcome.state);
    slot_freed(inner, &held.queue);
    lease_ended(inner, held.job_id, held.broker_id, held.stream_id);
    Ok(outcome)
}

/// Ends a failed attempt of the held job as `after` says.
async fn settle_failure(
    inner: &Inner,
    tx: &Transaction<'_>,
    held: &Held,
    error: &str,
    after: AfterFailure,
) -> Result<FailureOutcome> {
    let job_id = held.job_id;
    let log = |message: &str| {
        warn!(%job_id, queue = %held.queue, job_type = %held.job_type, attempt = held.attempt,
            worker_id = %held.worker_id, error, "{message}");
    };
    let delay = match after {
        AfterFailure::Cancelled => {
            debug!(%job_id, queue = %held.queue, job_type = %held.job_type,
                attempt = held.attempt, worker_id = %held.worker_id, "job cancelled");
            sql::execute(tx, FINISH, &[&job_id, &"cancelled", &error]).await?;
            return Ok(FailureOutcome {
                state: JobState::Cancelled,
                next_attempt_at: None,
            });
        }
        AfterFailure::Dead => None,
        AfterFailure::Retry(delay) => Some(delay),
    };
    sql::execute(
        tx,
        "INSERT INTO sluice_failures (job_id, queue, job_type, attempt, error, failed_at, dead,
             worker_id) VALUES ($1, $2, $3, $4, $5, now(), $6, $7)",
        &[
            &job_id,
            &held.queue,
            &held.job_type,
            &held.attempt,
            &error,
            &delay.is_none(),
            &held.worker_id,
        ],
    )
    .await?;
    let Some(delay) = delay else {
        log("job dead");
        inner.counts.add(&held.queue, |c| c.dead += 1);
        sql::execute(tx, FINISH, &[&job_id, &"dead", &error]).await?;
        return Ok(FailureOutcome {
            state: JobState::Dead,
            next_attempt_at: None,
        });
    };
    log("job attempt failed");
    let ms = millis(delay);
    let row = sql::query_one(
        tx,
        "UPDATE sluice_jobs SET
                 state = CASE WHEN $2::bigint = 0 THEN 'ready' ELSE 'scheduled' END,
                 run_at = now() + $2::bigint * interval '1 millisecond',
                 last_error = $3, lease_id = NULL, worker_id = NULL, broker_id = NULL,
                 stream_id = NULL, leased_at = NULL, lease_expires_at = NULL, lease_ms = NULL
             WHERE id = $1 RETURNING run_at",
        &[&job_id, &ms, &error],
    )
    .await?;
    Ok(FailureOutcome {
        state: if ms == 0 {
            JobState::Ready
        } else {
            JobState::Scheduled
        },
        next_attempt_at: Some(columns::timestamp(get(&row, "run_at")?)),
    })
}

pub(super) async fn extend(
    inner: &Inner,
    lease: LeaseRef,
    by: Option<Duration>,
) -> Result<Extended> {
    let client = sql::connection(&inner.pool).await?;
    let by = by.map(millis);
    let row = sql::query_opt(
        &client,
        "UPDATE sluice_jobs
             SET lease_expires_at = now() + coalesce($3::bigint, lease_ms) * interval '1 millisecond'
             WHERE id = $1 AND lease_id = $2 AND state = 'leased'
             RETURNING lease_expires_at, cancel_requested",
        &[&lease.job_id, &lease.lease_id, &by],
    )
    .await?;
    drop(client);
    match row {
        Some(row) => Ok(Extended {
            expires_at: columns::timestamp(get(&row, "lease_expires_at")?),
            cancel_requested: get(&row, "cancel_requested")?,
        }),
        None => Err(refusal(inner, lease).await),
    }
}

pub(super) async fn progress(
    inner: &Inner,
    lease: LeaseRef,
    report: ProgressReport,
) -> Result<bool> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_opt(
        &client,
        "UPDATE sluice_jobs
             SET progress = jsonb_build_object('percent', $3::bigint, 'message', $4::text,
                 'attempt', attempt, 'at_us', (extract(epoch FROM now()) * 1000000)::bigint)
             WHERE id = $1 AND lease_id = $2 AND state = 'leased'
             RETURNING cancel_requested",
        &[
            &lease.job_id,
            &lease.lease_id,
            &i64::from(report.percent),
            &report.message,
        ],
    )
    .await?;
    drop(client);
    match row {
        Some(row) => Ok(get(&row, "cancel_requested")?),
        None => Err(refusal(inner, lease).await),
    }
}

pub(super) async fn release(
    inner: &Inner,
    lease: LeaseRef,
    delay: Duration,
    key_delay: Duration,
) -> Result<JobState> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let Some(held) = hold(&tx, lease).await? else {
        drop(tx);
        drop(client);
        return Err(refusal(inner, lease).await);
    };
    flow::hold_key(&tx, held.job_id, key_delay).await?;
    let state = give_back(&tx, &held, delay).await?;
    sql::commit(tx).await?;
    inner.notifier.job_now(state);
    slot_freed(inner, &held.queue);
    debug!(job_id = %lease.job_id, queue = %held.queue, job_type = %held.job_type,
        attempt = held.attempt - 1, worker_id = %held.worker_id, "job released");
    lease_ended(inner, held.job_id, held.broker_id, held.stream_id);
    Ok(state)
}

/// Ends the held lease without using an attempt: READY in its old place,
/// due after `delay`, or CANCELLED if an operator asked for it.
async fn give_back(tx: &Transaction<'_>, held: &Held, delay: Duration) -> Result<JobState> {
    let job_id = held.job_id;
    if held.cancel_requested {
        sql::execute(
            tx,
            "UPDATE sluice_jobs SET attempt = attempt - 1 WHERE id = $1",
            &[&job_id],
        )
        .await?;
        sql::execute(tx, FINISH, &[&job_id, &"cancelled", &None::<String>]).await?;
        return Ok(JobState::Cancelled);
    }
    let ms = millis(delay);
    sql::execute(
        tx,
        "UPDATE sluice_jobs SET attempt = attempt - 1,
             state = CASE WHEN $2::bigint = 0 THEN 'ready' ELSE 'scheduled' END,
             run_at = CASE WHEN $2::bigint = 0 THEN run_at
                           ELSE now() + $2::bigint * interval '1 millisecond' END,
             lease_id = NULL, worker_id = NULL, broker_id = NULL, stream_id = NULL,
             leased_at = NULL, lease_expires_at = NULL, lease_ms = NULL
         WHERE id = $1",
        &[&job_id, &ms],
    )
    .await?;
    Ok(if ms == 0 {
        JobState::Ready
    } else {
        JobState::Scheduled
    })
}

/// Gives back jobs leased to a stream of this broker that ended before
/// sending them.
pub(super) async fn give_back_unsent(inner: &Inner, leases: Vec<LeaseRef>) -> Result<()> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let mut ready = false;
    for lease in leases {
        if let Some(held) = hold(&tx, lease).await? {
            ready |= give_back(&tx, &held, Duration::ZERO).await? == JobState::Ready;
        }
    }
    sql::commit(tx).await?;
    if ready {
        inner.notifier.job_now(JobState::Ready);
        inner.streams.wake();
    }
    Ok(())
}

/// Fails expired leases (of any broker), a bounded batch at a time; two
/// brokers never take the same one (SKIP LOCKED). Returns how many.
pub(super) async fn expire(inner: &Inner) -> Result<usize> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {HELD_COLUMNS} FROM sluice_jobs
             WHERE state = 'leased' AND lease_expires_at <= now()
             ORDER BY lease_expires_at LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
    });
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let rows = sql::query(&tx, sql, &[]).await?;
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let held = Held::of(row)?;
        inner.counts.add(&held.queue, |c| c.expired += 1);
        let after = held.after_failure(inner, false, None);
        settle_failure(inner, &tx, &held, LEASE_EXPIRED, after).await?;
        ended.push((held.job_id, held.broker_id, held.stream_id));
    }
    sql::commit(tx).await?;
    for (job, broker, stream) in ended {
        lease_ended(inner, job, broker, stream);
    }
    Ok(rows.len())
}
