//! Job operations as SQL. Every operation on a lease names the job *and*
//! the lease in its WHERE clause, so a stale lease changes nothing however
//! brokers interleave; when nothing matched, one more read tells an unknown
//! job (NOT_FOUND) from a stale lease (FAILED_PRECONDITION), as the local
//! backend answers. Finishing a job moves its row from `sluice_jobs` to
//! `sluice_finished` in one statement.

use std::time::Duration;

use deadpool_postgres::Transaction;
use rand::Rng as _;
use sluice_proto::v1 as pb;
use sluice_queue::{
    Extended, Failure, FailureOutcome, JobFilter, JobState, LEASE_EXPIRED, QueueError,
    truncate_error,
};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::rows::{self, FINISHED_COLUMNS, UNFINISHED_COLUMNS, state_name, state_of};
use super::{Inner, sql, unavailable};
use crate::backend::{Batch, JobPage, LeaseRef};
use crate::service::RequestError;

type Result<T> = std::result::Result<T, RequestError>;

/// Moves job `$1` to the finished table in state `$2` with last error `$3`
/// (kept if NULL); returns its queue and type.
const FINISH: &str = "WITH gone AS (DELETE FROM sluice_jobs WHERE id = $1 RETURNING *)
    INSERT INTO sluice_finished (id, seq, queue, job_type, payload, headers, priority, state,
        attempt, max_attempts, timeout_ms, idempotency_key, last_error, created_at, run_at,
        worker_id, finished_at)
    SELECT id, seq, queue, job_type, payload, headers, priority, $2, attempt, max_attempts,
        timeout_ms, idempotency_key, coalesce($3, last_error), created_at, run_at, worker_id,
        now()
    FROM gone RETURNING queue, job_type";

/// What a fenced lease check found.
pub(super) struct Held {
    pub queue: String,
    pub job_type: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub cancel_requested: bool,
    pub worker_id: String,
    pub broker_id: Option<Uuid>,
    pub stream_id: Option<i64>,
}

/// The columns [`Held::of`] reads, after the job's id.
const HELD_COLUMNS: &str = "id, queue, job_type, attempt, max_attempts, cancel_requested,
    coalesce(worker_id, ''), broker_id, stream_id";

impl Held {
    /// A row of `id, HELD_COLUMNS`: the job's id and what is held of it.
    fn of(row: &tokio_postgres::Row) -> (Uuid, Self) {
        let held = Self {
            queue: row.get(1),
            job_type: row.get(2),
            attempt: row.get(3),
            max_attempts: row.get(4),
            cancel_requested: row.get(5),
            worker_id: row.get(6),
            broker_id: row.get(7),
            stream_id: row.get(8),
        };
        (row.get(0), held)
    }

    /// When the failed attempt runs again: `None` (DEAD, or CANCELLED if
    /// an operator asked) unless attempts remain; else after `retry_after`
    /// or the backoff of this attempt.
    fn retry_delay(&self, inner: &Inner, retry_after: Option<Duration>) -> Option<Duration> {
        (!self.cancel_requested && self.attempt < self.max_attempts).then(|| {
            retry_after.unwrap_or_else(|| {
                let unit = rand::rng().random::<f64>();
                let attempt = u32::try_from(self.attempt).unwrap_or(1);
                inner.queue.backoff.delay(attempt, unit)
            })
        })
    }
}

/// Locks job `lease.job_id` if `lease` is its current lease.
async fn hold(tx: &Transaction<'_>, lease: LeaseRef) -> Result<Option<Held>> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {HELD_COLUMNS} FROM sluice_jobs
             WHERE id = $1 AND lease_id = $2 AND state = 'leased' FOR UPDATE"
        )
    });
    let row = sql::row_opt(tx, sql, &[&lease.job_id, &lease.lease_id]).await?;
    Ok(row.map(|row| Held::of(&row).1))
}

/// Why `lease` matched nothing: the job is unknown, or the lease stale.
async fn refusal(inner: &Inner, lease: LeaseRef) -> RequestError {
    match state_now(inner, lease.job_id).await {
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

/// The state of job `id`, if it is known.
async fn state_now(inner: &Inner, id: Uuid) -> Result<Option<JobState>> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let row = sql::row_opt(
        &client,
        "SELECT state FROM sluice_jobs WHERE id = $1
             UNION ALL SELECT state FROM sluice_finished WHERE id = $1",
        &[&id],
    )
    .await?;
    Ok(row.map(|row| state_of(row.get(0))))
}

/// A lease held by one of this broker's streams ended: its slot is free,
/// and worth a claim only if the last round left jobs ready (otherwise the
/// next ready job's notification wakes the claimer anyway).
fn lease_ended(inner: &Inner, broker_id: Option<Uuid>, stream_id: Option<i64>) {
    if broker_id == Some(inner.broker_id)
        && let Some(stream) = stream_id
    {
        inner.streams.slot_freed(stream);
        if inner.streams.more_ready() {
            inner.claim.notify_one();
        }
    }
}

pub(super) async fn ack(inner: &Inner, leases: Vec<LeaseRef>) -> Result<Batch<()>> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let (jobs, ids): (Vec<Uuid>, Vec<Uuid>) = leases.iter().map(|l| (l.job_id, l.lease_id)).unzip();
    let client = inner.pool.get().await.map_err(unavailable)?;
    // One statement: the fenced delete and the insert into the history.
    let rows = sql::rows(
        &client,
        "WITH gone AS (
                 DELETE FROM sluice_jobs j USING unnest($1::uuid[], $2::uuid[]) AS a(id, lease_id)
                 WHERE j.id = a.id AND j.lease_id = a.lease_id AND j.state = 'leased'
                 RETURNING j.*
             ), kept AS (
                 INSERT INTO sluice_finished (id, seq, queue, job_type, payload, headers,
                     priority, state, attempt, max_attempts, timeout_ms, idempotency_key,
                     last_error, created_at, run_at, worker_id, finished_at)
                 SELECT id, seq, queue, job_type, payload, headers, priority, 'succeeded',
                     attempt, max_attempts, timeout_ms, idempotency_key, last_error,
                     created_at, run_at, worker_id, now()
                 FROM gone RETURNING id
             )
             SELECT id, queue, job_type, attempt, worker_id, broker_id, stream_id FROM gone",
        &[&jobs, &ids],
    )
    .await?;
    drop(client);
    let mut acked = std::collections::HashSet::with_capacity(rows.len());
    for row in &rows {
        let id: Uuid = row.get(0);
        let queue: String = row.get(1);
        let job_type: String = row.get(2);
        let attempt: i32 = row.get(3);
        let worker_id: Option<String> = row.get(4);
        debug!(job_id = %id, %queue, %job_type, attempt, worker_id = worker_id.as_deref().unwrap_or(""), "job acked");
        inner.count(&queue, |c| c.acked += 1);
        lease_ended(inner, row.get(5), row.get(6));
        acked.insert(id);
    }
    let mut answers = Vec::with_capacity(leases.len());
    for lease in leases {
        if acked.remove(&lease.job_id) {
            answers.push(Ok(()));
        } else {
            answers.push(match refusal(inner, lease).await {
                RequestError::Queue(e) => Err(e),
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
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let Some(held) = hold(&tx, lease).await? else {
        drop(tx);
        drop(client);
        return Err(refusal(inner, lease).await);
    };
    inner.count(&held.queue, |c| c.nacked += 1);
    let error = truncate_error(failure.error);
    let delay = held
        .retry_delay(inner, failure.retry_after)
        .filter(|_| !failure.dead);
    let outcome = settle_failure(inner, &tx, lease.job_id, &held, &error, delay).await?;
    tx.commit().await.map_err(unavailable)?;
    lease_ended(inner, held.broker_id, held.stream_id);
    Ok(outcome)
}

/// Ends a failed attempt of the held job: CANCELLED if an operator asked,
/// DEAD without `delay`, else due again after `delay`.
pub(super) async fn settle_failure(
    inner: &Inner,
    tx: &Transaction<'_>,
    job_id: Uuid,
    held: &Held,
    error: &str,
    delay: Option<Duration>,
) -> Result<FailureOutcome> {
    let log = |message: &str| {
        warn!(%job_id, queue = %held.queue, job_type = %held.job_type, attempt = held.attempt,
            worker_id = %held.worker_id, error, "{message}");
    };
    if held.cancel_requested {
        tx.execute(FINISH, &[&job_id, &"cancelled", &error])
            .await
            .map_err(unavailable)?;
        return Ok(FailureOutcome {
            state: JobState::Cancelled,
            next_attempt_at: None,
        });
    }
    let dead = delay.is_none();
    tx.execute(
        "INSERT INTO sluice_failures (job_id, queue, job_type, attempt, error, failed_at, dead,
             worker_id) VALUES ($1, $2, $3, $4, $5, now(), $6, $7)",
        &[
            &job_id,
            &held.queue,
            &held.job_type,
            &held.attempt,
            &error,
            &dead,
            &held.worker_id,
        ],
    )
    .await
    .map_err(unavailable)?;
    let Some(delay) = delay else {
        log("job dead");
        inner.count(&held.queue, |c| c.dead += 1);
        tx.execute(FINISH, &[&job_id, &"dead", &error])
            .await
            .map_err(unavailable)?;
        return Ok(FailureOutcome {
            state: JobState::Dead,
            next_attempt_at: None,
        });
    };
    log("job attempt failed");
    let ms = millis(delay);
    let row = sql::row(
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
    sql::wake_all(tx).await?;
    Ok(FailureOutcome {
        state: if ms == 0 {
            JobState::Ready
        } else {
            JobState::Scheduled
        },
        next_attempt_at: Some(rows::timestamp(row.get(0))),
    })
}

pub(super) async fn extend(
    inner: &Inner,
    lease: LeaseRef,
    by: Option<Duration>,
) -> Result<Extended> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let by = by.map(millis);
    let row = sql::row_opt(&client, "UPDATE sluice_jobs
             SET lease_expires_at = now() + coalesce($3::bigint, lease_ms) * interval '1 millisecond'
             WHERE id = $1 AND lease_id = $2 AND state = 'leased'
             RETURNING lease_expires_at, cancel_requested", &[&lease.job_id, &lease.lease_id, &by]).await?;
    drop(client);
    match row {
        Some(row) => Ok(Extended {
            expires_at: rows::timestamp(row.get(0)),
            cancel_requested: row.get(1),
        }),
        None => Err(refusal(inner, lease).await),
    }
}

pub(super) async fn release(inner: &Inner, lease: LeaseRef, delay: Duration) -> Result<JobState> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let Some(held) = hold(&tx, lease).await? else {
        drop(tx);
        drop(client);
        return Err(refusal(inner, lease).await);
    };
    let state = give_back(&tx, lease.job_id, held.cancel_requested, delay).await?;
    tx.commit().await.map_err(unavailable)?;
    debug!(job_id = %lease.job_id, queue = %held.queue, job_type = %held.job_type,
        attempt = held.attempt, worker_id = %held.worker_id, "job released");
    lease_ended(inner, held.broker_id, held.stream_id);
    Ok(state)
}

/// Ends a lease without using an attempt: READY in its old place, due
/// after `delay`, or CANCELLED if an operator asked for it.
pub(super) async fn give_back(
    tx: &Transaction<'_>,
    job_id: Uuid,
    cancel_requested: bool,
    delay: Duration,
) -> Result<JobState> {
    if cancel_requested {
        tx.execute(
            "UPDATE sluice_jobs SET attempt = attempt - 1 WHERE id = $1",
            &[&job_id],
        )
        .await
        .map_err(unavailable)?;
        tx.execute(FINISH, &[&job_id, &"cancelled", &None::<String>])
            .await
            .map_err(unavailable)?;
        return Ok(JobState::Cancelled);
    }
    let ms = millis(delay);
    tx.execute(
        "UPDATE sluice_jobs SET attempt = attempt - 1,
             state = CASE WHEN $2::bigint = 0 THEN 'ready' ELSE 'scheduled' END,
             run_at = CASE WHEN $2::bigint = 0 THEN run_at ELSE now() + $2::bigint * interval '1 millisecond' END,
             lease_id = NULL, worker_id = NULL, broker_id = NULL, stream_id = NULL,
             leased_at = NULL, lease_expires_at = NULL, lease_ms = NULL
         WHERE id = $1",
        &[&job_id, &ms],
    )
    .await
    .map_err(unavailable)?;
    sql::wake_all(tx).await?;
    Ok(if ms == 0 {
        JobState::Ready
    } else {
        JobState::Scheduled
    })
}

/// Gives back jobs leased to a stream that ended before sending them.
pub(super) async fn give_back_unsent(inner: &Inner, leases: Vec<LeaseRef>) -> Result<()> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    for lease in leases {
        if let Some(held) = hold(&tx, lease).await? {
            give_back(&tx, lease.job_id, held.cancel_requested, Duration::ZERO).await?;
        }
    }
    tx.commit().await.map_err(unavailable)?;
    inner.claim.notify_one();
    Ok(())
}

/// Fails expired leases (of any broker), a bounded batch at a time; two
/// brokers never take the same one (SKIP LOCKED). Returns how many.
pub(super) async fn expire(inner: &Inner) -> Result<usize> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "SELECT {HELD_COLUMNS} FROM sluice_jobs
             WHERE state = 'leased' AND lease_expires_at <= now()
             ORDER BY lease_expires_at LIMIT 500 FOR UPDATE SKIP LOCKED"
        )
    });
    let rows = sql::rows(&tx, sql, &[]).await?;
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let (job_id, held) = Held::of(row);
        inner.count(&held.queue, |c| c.expired += 1);
        let delay = held.retry_delay(inner, None);
        settle_failure(inner, &tx, job_id, &held, LEASE_EXPIRED, delay).await?;
        ended.push((held.broker_id, held.stream_id));
    }
    tx.commit().await.map_err(unavailable)?;
    for (broker, stream) in ended {
        lease_ended(inner, broker, stream);
    }
    Ok(rows.len())
}

pub(super) async fn queues_of(inner: &Inner, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let rows = sql::rows(
        &client,
        "SELECT id, queue FROM sluice_jobs WHERE id = ANY($1)
             UNION ALL SELECT id, queue FROM sluice_finished WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

pub(super) async fn get(inner: &Inner, id: Uuid) -> Result<pb::Job> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let row = client
        .query_opt(
            &format!(
                "SELECT {UNFINISHED_COLUMNS} FROM sluice_jobs WHERE id = $1
                 UNION ALL SELECT {FINISHED_COLUMNS} FROM sluice_finished WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .map_err(unavailable)?;
    row.map(|row| rows::job(&row))
        .ok_or_else(|| QueueError::UnknownJob { job_id: id }.into())
}

pub(super) async fn list(
    inner: &Inner,
    filter: JobFilter,
    after: Option<u64>,
    limit: usize,
) -> Result<JobPage> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
    let state = filter.state.map(state_name);
    let (unfinished, finished) = match filter.state {
        None => (true, true),
        Some(s) => (s.is_unfinished(), !s.is_unfinished()),
    };
    let part = |columns: &str, table: &str| {
        format!(
            "SELECT {columns} FROM {table} WHERE seq > $1
                 AND ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR state = $3)
                 AND ($5 OR queue = ANY($6::text[])
                      OR EXISTS (SELECT 1 FROM unnest($7::text[]) AS p(prefix) WHERE starts_with(queue, p.prefix)))"
        )
    };
    let mut parts = Vec::new();
    if unfinished {
        parts.push(part(UNFINISHED_COLUMNS, "sluice_jobs"));
    }
    if finished {
        parts.push(part(FINISHED_COLUMNS, "sluice_finished"));
    }
    let sql = format!("{} ORDER BY 19 LIMIT $4", parts.join(" UNION ALL "));
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let (exact, prefixes) = filter.scope.split();
    let found = client
        .query(
            &sql,
            &[
                &after,
                &filter.queue,
                &state,
                &fetch,
                &filter.scope.is_every(),
                &exact,
                &prefixes,
            ],
        )
        .await
        .map_err(unavailable)?;
    let more = found.len() > limit;
    let page: Vec<_> = found.iter().take(limit).collect();
    let next = more
        .then(|| page.last().map(|row| row.get::<_, i64>(18)))
        .flatten()
        .and_then(|seq| u64::try_from(seq).ok());
    Ok(JobPage {
        jobs: page.into_iter().map(rows::job).collect(),
        next,
    })
}

pub(super) async fn retry(inner: &Inner, id: Uuid) -> Result<()> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let row = sql::row_opt(
        &tx,
        "SELECT state, queue, job_type FROM sluice_finished WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let Some(row) = row else {
        drop(tx);
        drop(client);
        return Err(not_there(inner, id, "RetryJob", RETRY_FROM).await);
    };
    let state = state_of(row.get(0));
    if !matches!(state, JobState::Dead | JobState::Cancelled) {
        return Err(wrong_state(id, state, "RetryJob", RETRY_FROM));
    }
    if let Some(limit) = inner.queue.max_queue_size {
        let queue: String = row.get(1);
        let held: i64 = sql::row(
            &tx,
            "SELECT count(*) FROM sluice_jobs WHERE queue = $1",
            &[&queue],
        )
        .await?
        .get(0);
        if u64::try_from(held).unwrap_or(0) >= limit {
            return Err(QueueError::QueueFull { queue, limit }.into());
        }
    }
    // Back to the unfinished table with its place in enqueue order; its
    // idempotency key goes only if no other unfinished job holds it now.
    tx.execute(
        "WITH back AS (DELETE FROM sluice_finished WHERE id = $1 RETURNING *)
         INSERT INTO sluice_jobs (id, seq, queue, job_type, payload, headers, priority, state,
             attempt, max_attempts, timeout_ms, idempotency_key, last_error, created_at, run_at)
         OVERRIDING SYSTEM VALUE
         SELECT id, seq, queue, job_type, payload, headers, priority, 'ready', 0, max_attempts,
             timeout_ms,
             CASE WHEN EXISTS (SELECT 1 FROM sluice_jobs j WHERE j.queue = back.queue
                               AND j.idempotency_key = back.idempotency_key)
                  THEN NULL ELSE idempotency_key END,
             last_error, created_at, now()
         FROM back",
        &[&id],
    )
    .await
    .map_err(unavailable)?;
    sql::wake_all(&tx).await?;
    tx.commit().await.map_err(unavailable)?;
    let (queue, job_type): (String, String) = (row.get(1), row.get(2));
    info!(job_id = %id, %queue, %job_type, attempt = 0, "job retried by operator");
    inner.claim.notify_one();
    Ok(())
}

pub(super) async fn cancel(inner: &Inner, id: Uuid) -> Result<JobState> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let row = sql::row_opt(
        &tx,
        "SELECT state, queue, job_type, attempt FROM sluice_jobs WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let Some(row) = row else {
        drop(tx);
        drop(client);
        return Err(not_there(inner, id, "CancelJob", "SCHEDULED, READY or LEASED").await);
    };
    let state = state_of(row.get(0));
    let (queue, job_type, attempt): (String, String, i32) = (row.get(1), row.get(2), row.get(3));
    info!(job_id = %id, %queue, %job_type, attempt, "job cancelled by operator");
    if state == JobState::Leased {
        // Its worker learns it on Extend, through whichever broker.
        tx.execute(
            "UPDATE sluice_jobs SET cancel_requested = true WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        return Ok(JobState::Leased);
    }
    tx.execute(FINISH, &[&id, &"cancelled", &None::<String>])
        .await
        .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    Ok(JobState::Cancelled)
}

/// Purges in bounded batches, each its own transaction, so that a large
/// purge does not hold locks for long; jobs enqueued during it are spared.
pub(super) async fn purge(inner: &Inner, queue: String, state: JobState) -> Result<u64> {
    if state == JobState::Leased {
        return Err(QueueError::PurgeLeased.into());
    }
    let client = inner.pool.get().await.map_err(unavailable)?;
    let known = client
        .query_opt("SELECT 1 FROM sluice_queues WHERE queue = $1", &[&queue])
        .await
        .map_err(unavailable)?;
    if known.is_none() {
        return Err(QueueError::UnknownQueue { queue }.into());
    }
    let table = if state.is_unfinished() {
        "sluice_jobs"
    } else {
        "sluice_finished"
    };
    let horizon: i64 = client
        .query_one(&format!("SELECT coalesce(max(seq), 0) FROM {table}"), &[])
        .await
        .map_err(unavailable)?
        .get(0);
    let sql = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table}
             WHERE queue = $1 AND state = $2 AND seq <= $3 LIMIT 1000 FOR UPDATE SKIP LOCKED)"
    );
    let mut purged = 0;
    loop {
        let n = client
            .execute(&sql, &[&queue, &state_name(state), &horizon])
            .await
            .map_err(unavailable)?;
        purged += n;
        if n == 0 {
            break;
        }
    }
    if purged > 0 {
        info!(%queue, %state, purged, "jobs purged");
    }
    Ok(purged)
}

pub(super) async fn pause(inner: &Inner, queue: String, paused: bool) -> Result<()> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    if paused {
        tx.execute(
            "INSERT INTO sluice_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&queue],
        )
        .await
        .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO sluice_paused (queue) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&queue],
        )
        .await
        .map_err(unavailable)?;
    } else {
        tx.execute("DELETE FROM sluice_paused WHERE queue = $1", &[&queue])
            .await
            .map_err(unavailable)?;
        sql::wake_all(&tx).await?;
    }
    tx.commit().await.map_err(unavailable)?;
    if paused {
        info!(%queue, "queue paused");
    } else {
        info!(%queue, "queue resumed");
        inner.claim.notify_one();
    }
    Ok(())
}

/// The states RetryJob takes a job from.
const RETRY_FROM: &str = "DEAD or CANCELLED";

/// Why job `id` was not where `action` looked: unknown, or in a state
/// other than `allowed`.
async fn not_there(
    inner: &Inner,
    id: Uuid,
    action: &'static str,
    allowed: &'static str,
) -> RequestError {
    match state_now(inner, id).await {
        Ok(None) => QueueError::UnknownJob { job_id: id }.into(),
        Ok(Some(state)) => wrong_state(id, state, action, allowed),
        Err(e) => e,
    }
}

fn wrong_state(
    job_id: Uuid,
    state: JobState,
    action: &'static str,
    allowed: &'static str,
) -> RequestError {
    QueueError::WrongState {
        job_id,
        state,
        action,
        allowed,
    }
    .into()
}

/// A duration in whole milliseconds, as the interval arithmetic takes it.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
