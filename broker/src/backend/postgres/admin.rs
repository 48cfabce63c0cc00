//! The operator's actions on jobs and queues: RetryJob, CancelJob,
//! PurgeQueue, PauseQueue and ResumeQueue. Which states an action takes a
//! job from, and the room a queue has, are the queue crate's rules
//! ([`Action`], [`check_room`]).

use sluice_queue::{Action, JobState, QueueError, check_room};
use tracing::info;
use uuid::Uuid;

use super::columns::{self, Table};
use super::leases::FINISH;
use super::sql::{self, get};
use super::{Inner, reads};
use crate::backend::BackendError;

type Result<T> = std::result::Result<T, BackendError>;

pub(super) async fn retry(inner: &Inner, id: Uuid) -> Result<()> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let row = sql::query_opt(
        &tx,
        "SELECT state, queue, job_type FROM sluice_finished WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let Some(row) = row else {
        drop(tx);
        drop(client);
        return Err(not_there(inner, id, Action::Retry).await);
    };
    Action::Retry.check(id, columns::state(&row)?)?;
    let queue: String = get(&row, "queue")?;
    let job_type: String = get(&row, "job_type")?;
    if inner.queue.max_queue_size.is_some() {
        let held: i64 = get(
            &sql::query_one(
                &tx,
                "SELECT count(*) AS held FROM sluice_jobs WHERE queue = $1",
                &[&queue],
            )
            .await?,
            "held",
        )?;
        check_room(
            &queue,
            u64::try_from(held).unwrap_or(0),
            inner.queue.max_queue_size,
        )?;
    }
    // Back to the unfinished table with its place in enqueue order; its
    // idempotency key goes only if no other unfinished job holds it now.
    sql::execute(
        &tx,
        "WITH back AS (DELETE FROM sluice_finished WHERE id = $1 RETURNING *)
         INSERT INTO sluice_jobs (id, seq, queue, job_type, payload, headers, priority, state,
             attempt, max_attempts, timeout_ms, idempotency_key, last_error, created_at, run_at,
             key)
         OVERRIDING SYSTEM VALUE
         SELECT id, seq, queue, job_type, payload, headers, priority, 'ready', 0, max_attempts,
             timeout_ms,
             CASE WHEN EXISTS (SELECT 1 FROM sluice_jobs j WHERE j.queue = back.queue
                               AND j.idempotency_key = back.idempotency_key)
                  THEN NULL ELSE idempotency_key END,
             last_error, created_at, now(), key
         FROM back",
        &[&id],
    )
    .await?;
    sql::commit(tx).await?;
    info!(job_id = %id, %queue, %job_type, attempt = 0, "job retried by operator");
    inner.notifier.job_now(JobState::Ready);
    inner.streams.wake();
    Ok(())
}

pub(super) async fn cancel(inner: &Inner, id: Uuid) -> Result<JobState> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let row = sql::query_opt(
        &tx,
        "SELECT state, queue, job_type, attempt FROM sluice_jobs WHERE id = $1 FOR UPDATE",
        &[&id],
    )
    .await?;
    let Some(row) = row else {
        drop(tx);
        drop(client);
        return Err(not_there(inner, id, Action::Cancel).await);
    };
    let state = columns::state(&row)?;
    let (queue, job_type, attempt): (String, String, i32) = (
        get(&row, "queue")?,
        get(&row, "job_type")?,
        get(&row, "attempt")?,
    );
    info!(job_id = %id, %queue, %job_type, attempt, "job cancelled by operator");
    if state == JobState::Leased {
        // Its worker learns it on Extend, through whichever broker.
        sql::execute(
            &tx,
            "UPDATE sluice_jobs SET cancel_requested = true WHERE id = $1",
            &[&id],
        )
        .await?;
        sql::commit(tx).await?;
        return Ok(JobState::Leased);
    }
    sql::execute(&tx, FINISH, &[&id, &"cancelled", &None::<String>]).await?;
    sql::commit(tx).await?;
    Ok(JobState::Cancelled)
}

/// Purges in bounded batches, each its own transaction, so that a large
/// purge does not hold locks for long; jobs enqueued during it are spared.
pub(super) async fn purge(inner: &Inner, queue: String, state: JobState) -> Result<u64> {
    if state == JobState::Leased {
        return Err(QueueError::PurgeLeased.into());
    }
    let client = sql::connection(&inner.pool).await?;
    let known = sql::query_opt(
        &client,
        "SELECT 1 FROM sluice_queues WHERE queue = $1",
        &[&queue],
    )
    .await?;
    if known.is_none() {
        return Err(QueueError::UnknownQueue { queue }.into());
    }
    let table = Table::of(state).name();
    let horizon: i64 = get(
        &sql::query_one(
            &client,
            &format!("SELECT coalesce(max(seq), 0) AS horizon FROM {table}"),
            &[],
        )
        .await?,
        "horizon",
    )?;
    let delete = format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table}
             WHERE queue = $1 AND state = $2 AND seq <= $3 LIMIT 1000 FOR UPDATE SKIP LOCKED)"
    );
    let mut purged = 0;
    loop {
        let n = sql::execute(&client, &delete, &[&queue, &state.stored_name(), &horizon]).await?;
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
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    if paused {
        sql::execute(
            &tx,
            "INSERT INTO sluice_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&queue],
        )
        .await?;
        sql::execute(
            &tx,
            "INSERT INTO sluice_paused (queue) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&queue],
        )
        .await?;
    } else {
        sql::execute(&tx, "DELETE FROM sluice_paused WHERE queue = $1", &[&queue]).await?;
    }
    sql::commit(tx).await?;
    if paused {
        info!(%queue, "queue paused");
    } else {
        info!(%queue, "queue resumed");
        inner.notifier.job_now(JobState::Ready);
        inner.streams.wake();
    }
    Ok(())
}

/// Why job `id` was not where `action` looked: unknown, or in a state the
/// action does not take.
async fn not_there(inner: &Inner, id: Uuid, action: Action) -> BackendError {
    match reads::state_now(inner, id).await {
        Ok(None) => QueueError::UnknownJob { job_id: id }.into(),
        Ok(Some(state)) => action.wrong_state(id, state).into(),
        Err(e) => e,
    }
}
