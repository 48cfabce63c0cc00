//! The backend's own tasks, each started on the server's tracker and
//! stopped by its token:
//!
//! - the **listener** holds one connection that LISTENs on the wake-up
//!   channel (a job became ready or was scheduled: claim, and look at
//!   the due times) and on this broker's own channel (the lease of a job
//!   of one of its streams ended through another broker: its slot is
//!   free);
//! - the **claimer** (`cluster::run_claimer`) fills this broker's streams
//!   on each wake-up and at least every poll interval (the fallback
//!   where notifications are lost);
//! - the **maintenance loop** promotes due jobs, fails expired leases (of
//!   any broker: SKIP LOCKED lets one broker take each), deletes finished
//!   jobs past `--retention` in bounded batches, renews this broker's
//!   heartbeat (`registry.rs`), refreshes the gauges of /metrics, and
//!   every `queue_sweep` removes the rows of queues that hold nothing
//!   (one broker at a time, under an advisory lock). It sleeps until the
//!   next job is due or the poll interval, whichever is first, so a
//!   scheduled job runs on time without polling faster;
//! - the **health check** (`cluster::Health`);
//! - the **enqueue writers** (`enqueue.rs`), and the **notifier** that
//!   tells the other brokers what changed here (`notify.rs`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::columns::millis;
use super::sql::{self, get};
use super::{Inner, connect, leases, notify, reads, registry};
use crate::backend::BackendError;
use crate::backend::cluster::timing::{HEARTBEAT, MAX_BACKOFF};
use crate::backend::cluster::{Every, Ping, between_passes, run_claimer};
use sluice_queue::JobState;

type Result<T> = std::result::Result<T, BackendError>;

/// Finished jobs deleted per statement once past `--retention`.
const RETENTION_BATCH: i64 = 5000;

/// Failed attempts kept for Stats.
const FAILURES_KEPT: i64 = 500;

/// Starts every task of the backend.
pub(super) fn spawn(inner: &Arc<Inner>, tasks: &TaskTracker, stop: CancellationToken) {
    inner.streams.track(tasks);
    inner.enqueuer.start(tasks, stop.clone());
    let (notifier, pool, stop_telling) = (inner.notifier.clone(), inner.pool.clone(), stop.clone());
    tasks.spawn(async move { notifier.run(pool, stop_telling).await });
    tasks.spawn(listen(inner.clone(), stop.clone()));
    tasks.spawn(run_claimer(
        inner.clone(),
        inner.poll_interval,
        inner.health.subscribe(),
        inner.health.check_now(),
        stop.clone(),
    ));
    tasks.spawn(maintain(inner.clone(), stop.clone()));
    let pinged = inner.clone();
    let ping: Ping = Box::new(move || {
        let inner = pinged.clone();
        Box::pin(async move {
            let client = inner.pool.get().await.map_err(|e| sql::describe(&e))?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| sql::describe(&e))?;
            Ok(())
        })
    });
    let watched = inner.clone();
    tasks.spawn(async move {
        watched.health.watch(ping, &watched.streams, stop).await;
    });
}

/// LISTENs on the wake-up channel and this broker's own, reconnecting
/// with backoff; a notification may be lost while it reconnects, which
/// the recount on reconnection and the claimer's poll cover.
async fn listen(inner: Arc<Inner>, stop: CancellationToken) {
    let own = notify::freed_channel(inner.broker_id);
    let statement = format!("LISTEN {}; LISTEN {own}", notify::WAKE_CHANNEL);
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let mut listened = false;
        let ended = connect::listen(
            &inner.target,
            &statement,
            || {
                listened = true;
                debug!("listening for wake-ups");
                // Notifications may have been missed while not listening.
                inner.streams.recount_soon();
                inner.maintain.notify_one();
            },
            |channel, payload| {
                if channel == own {
                    for entry in notify::freed_entries(payload) {
                        inner.streams.entry_freed(entry);
                    }
                } else if payload == notify::READY {
                    inner.streams.wake();
                } else {
                    inner.maintain.notify_one();
                }
            },
            &stop,
        )
        .await;
        if let Err(e) = ended {
            debug!(error = %e, "LISTEN connection failed; polling meanwhile");
        }
        if listened {
            backoff = Duration::from_millis(100);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let mut chores = Chores {
        heartbeat: Every::new(HEARTBEAT),
        retention: Every::new(inner.poll_interval * 10),
        sweep: Every::new(inner.queue_sweep),
    };
    loop {
        let outcome = if inner.health.serving() {
            Some(maintain_pass(&inner, &mut chores).await)
        } else {
            None
        };
        let (health, wake, poll) = (&inner.health, &inner.maintain, inner.poll_interval);
        if !between_passes(health, wake, poll, &stop, outcome).await {
            return;
        }
    }
}

/// What a maintenance pass does at its own pace.
struct Chores {
    heartbeat: Every,
    retention: Every,
    sweep: Every,
}

/// One pass: due jobs made READY, expired leases ended, then the chores
/// that are due; how long until the next deadline.
async fn maintain_pass(inner: &Inner, chores: &mut Chores) -> Result<Duration> {
    promote(inner).await?;
    while leases::expire(inner).await? > 0 {}
    chores
        .heartbeat
        .run(async || registry::heartbeat(inner).await)
        .await?;
    inner
        .gauges
        .refresh(async || reads::gauges(inner).await)
        .await?;
    chores
        .retention
        .run(async || retention(inner).await)
        .await?;
    chores.sweep.run(async || sweep_queues(inner).await).await?;
    next_wake(inner).await
}

/// Makes due scheduled jobs READY, a bounded batch at a time.
async fn promote(inner: &Inner) -> Result<()> {
    let client = sql::connection(&inner.pool).await?;
    loop {
        let row = sql::query_one(
            &client,
            "WITH due AS (
                     SELECT id FROM sluice_jobs WHERE state = 'scheduled' AND run_at <= now()
                     ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED
                 ), made AS (
                     UPDATE sluice_jobs j SET state = 'ready' FROM due WHERE j.id = due.id
                     RETURNING j.id
                 )
                 SELECT count(*) AS n FROM made",
            &[],
        )
        .await?;
        let promoted: i64 = get(&row, "n")?;
        if promoted > 0 {
            inner.notifier.job_now(JobState::Ready);
            inner.streams.wake();
        }
        if promoted < 1000 {
            return Ok(());
        }
    }
}

/// How long until the next scheduled job is due, or a lease expires.
async fn next_wake(inner: &Inner) -> Result<Duration> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_one(
        &client,
        "SELECT extract(epoch FROM least(
                 (SELECT min(run_at) FROM sluice_jobs WHERE state = 'scheduled'),
                 (SELECT min(lease_expires_at) FROM sluice_jobs WHERE state = 'leased')
             ) - now())::float8 AS seconds",
        &[],
    )
    .await?;
    let seconds: Option<f64> = get(&row, "seconds")?;
    Ok(seconds.map_or(inner.poll_interval, |s| {
        Duration::from_secs_f64(s.max(0.0) + 0.001)
    }))
}

/// Deletes finished jobs past retention, and old failure records.
async fn retention(inner: &Inner) -> Result<()> {
    let client = sql::connection(&inner.pool).await?;
    let retention = millis(inner.queue.retention);
    loop {
        let deleted = sql::execute(
            &client,
            "DELETE FROM sluice_finished WHERE id IN (
                     SELECT id FROM sluice_finished
                     WHERE finished_at < now() - $1::bigint * interval '1 millisecond'
                     ORDER BY finished_at LIMIT $2)",
            &[&retention, &RETENTION_BATCH],
        )
        .await?;
        if deleted < RETENTION_BATCH.unsigned_abs() {
            break;
        }
    }
    sql::execute(
        &client,
        "DELETE FROM sluice_failures WHERE id <= (SELECT max(id) FROM sluice_failures) - $1",
        &[&FAILURES_KEPT],
    )
    .await?;
    Ok(())
}

/// The advisory lock a queue sweep takes ("sluicq" in ASCII): one
/// broker sweeps at a time.
const SWEEP_LOCK: i64 = 0x736c_7569_6371;

/// Removes the rows of queues that hold no job (unfinished or finished)
/// and are not paused, so that queues and their counters cannot grow
/// without bound; then this broker forgets its own counters of queues
/// that are gone and the queues it knew (see `enqueue.rs`). One scan of
/// each job table. A queue enqueued to while the sweep runs may lose its
/// row until its next enqueue, which adds it again.
async fn sweep_queues(inner: &Inner) -> Result<()> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let locked: bool = get(
        &sql::query_one(
            &tx,
            "SELECT pg_try_advisory_xact_lock($1) AS locked",
            &[&SWEEP_LOCK],
        )
        .await?,
        "locked",
    )?;
    if locked {
        let row = sql::query_one(
            &tx,
            "WITH used AS (
                 SELECT queue FROM sluice_jobs UNION SELECT queue FROM sluice_finished
                 UNION SELECT queue FROM sluice_paused
             ), gone AS (
                 DELETE FROM sluice_queues WHERE queue NOT IN (SELECT queue FROM used)
                 RETURNING queue
             ), counters AS (
                 DELETE FROM sluice_counters WHERE queue IN (SELECT queue FROM gone)
             )
             SELECT count(*) AS swept FROM gone",
            &[],
        )
        .await?;
        let swept: i64 = get(&row, "swept")?;
        if swept > 0 {
            debug!(swept, "queues that held nothing removed");
        }
    }
    sql::commit(tx).await?;
    let queues: std::collections::HashSet<String> =
        sql::query(&client, "SELECT queue FROM sluice_queues", &[])
            .await?
            .iter()
            .map(|row| get(row, "queue"))
            .collect::<Result<_>>()?;
    inner.counts.retain(|queue| queues.contains(queue));
    inner.enqueuer.known.clear();
    Ok(())
}
