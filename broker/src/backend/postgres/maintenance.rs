//! The backend's tasks and its shared-state reads:
//!
//! - the **listener** holds one connection with `LISTEN sluice_wake` and
//!   wakes the claimer and the maintenance loop on every notification
//!   (sent in the transaction that made a job ready or scheduled it);
//! - the **claimer** fills this broker's streams on each wake-up, and at
//!   least every [`POLL_INTERVAL`] (the fallback where notifications are
//!   lost), recounting their leases first;
//! - the **maintenance loop** promotes due jobs, fails expired leases (of
//!   any broker: SKIP LOCKED lets one broker take each), deletes finished
//!   jobs past `--retention` in bounded batches, refreshes this broker's
//!   heartbeat in `sluice_brokers` and forgets brokers whose heartbeat
//!   stopped, and every `queue_sweep` removes the rows of queues that
//!   hold nothing (one broker at a time, under an advisory lock). It
//!   sleeps until the next job is due or the poll interval,
//!   whichever is first, so a scheduled job runs on time without polling
//!   faster;
//! - the **health check**: when the database cannot be reached, health is
//!   NOT_SERVING, new work is refused with UNAVAILABLE and this broker's
//!   streams end; it keeps trying with backoff and serves again by itself.

use std::sync::Arc;
use std::time::Duration;

use sluice_queue::{Counters, JobState, QueueStats, WorkerInfo};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::rows::{self, state_of};
use super::{Inner, POLL_INTERVAL, connect, jobs, sql, streams, unavailable};
use crate::backend::{GaugeReading, StatsReading};
use crate::service::{RequestError, convert};

/// How often a broker renews its row in `sluice_brokers`.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A broker whose heartbeat is older than this is gone: its streams leave
/// ListWorkers and its counters are folded into `sluice_counters`.
const BROKER_TIMEOUT_SECS: i64 = 10;

/// How often the gauges of /metrics are read from the database (they
/// count every job, which is not free on a large history).
const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// Finished jobs deleted per statement once past `--retention`.
const RETENTION_BATCH: i64 = 5000;

/// Failed attempts kept for Stats.
const FAILURES_KEPT: i64 = 500;

/// The longest wait between two reconnection attempts.
const MAX_RECONNECT: Duration = Duration::from_secs(5);

/// Starts the listener, the claimer, the maintenance loop and the health check.
pub(super) fn spawn(inner: &Arc<Inner>, tasks: &TaskTracker, stop: CancellationToken) {
    tasks.spawn(listen(inner.clone(), stop.clone()));
    tasks.spawn(claimer(inner.clone(), stop.clone()));
    tasks.spawn(maintain(inner.clone(), stop.clone()));
    tasks.spawn(health(inner.clone(), stop));
}

async fn listen(inner: Arc<Inner>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = async {
            let client = connect::listener(&inner.target, tx).await?;
            client
                .batch_execute(&format!("LISTEN {}", sql::WAKE_CHANNEL))
                .await?;
            Ok::<_, tokio_postgres::Error>(client)
        };
        let client = tokio::select! {
            () = stop.cancelled() => return,
            client = connected => client,
        };
        match client {
            Ok(_client) => {
                backoff = Duration::from_millis(100);
                debug!("listening for wake-ups");
                // Notifications may have been missed while not listening.
                inner.claim.notify_one();
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        message = rx.recv() => match message {
                            Some(_) => {
                                inner.claim.notify_one();
                                inner.maintain.notify_one();
                            }
                            None => break, // the connection closed
                        },
                    }
                }
            }
            Err(e) => debug!(error = %e, "LISTEN connection failed; polling meanwhile"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT);
    }
}

async fn claimer(inner: Arc<Inner>, stop: CancellationToken) {
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let polled = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = inner.claim.notified() => false,
            _ = poll.tick() => true,
        };
        if !*inner.serving.borrow() || inner.streams.count() == 0 {
            continue;
        }
        let round = async {
            if polled {
                streams::recount(&inner).await?;
            }
            streams::claim_round(&inner).await
        };
        if let Err(e) = round.await {
            debug!(error = %e, "claim round failed");
            inner.health_check.notify_one();
        }
    }
}

async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let mut last_heartbeat = tokio::time::Instant::now();
    let mut last_retention = tokio::time::Instant::now();
    let mut last_gauges = tokio::time::Instant::now() - GAUGES_EVERY;
    let mut last_sweep = tokio::time::Instant::now();
    loop {
        let mut next_due = POLL_INTERVAL;
        if *inner.serving.borrow() {
            let pass = async {
                promote(&inner).await?;
                while jobs::expire(&inner).await? > 0 {}
                if last_heartbeat.elapsed() >= HEARTBEAT {
                    heartbeat(&inner).await?;
                    last_heartbeat = tokio::time::Instant::now();
                }
                if inner.metrics_on.load(std::sync::atomic::Ordering::Acquire)
                    && last_gauges.elapsed() >= GAUGES_EVERY
                {
                    refresh_gauges(&inner).await?;
                    last_gauges = tokio::time::Instant::now();
                }
                if last_retention.elapsed() >= POLL_INTERVAL * 10 {
                    retention(&inner).await?;
                    last_retention = tokio::time::Instant::now();
                }
                if last_sweep.elapsed() >= inner.queue_sweep {
                    sweep_queues(&inner).await?;
                    last_sweep = tokio::time::Instant::now();
                }
                next_wake(&inner).await
            };
            match pass.await {
                Ok(due) => next_due = due.min(POLL_INTERVAL),
                Err(e) => {
                    debug!(error = %e, "maintenance pass failed");
                    inner.health_check.notify_one();
                }
            }
        }
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = inner.maintain.notified() => {}
            () = tokio::time::sleep(next_due) => {}
        }
    }
}

/// Makes due scheduled jobs READY, a bounded batch at a time.
async fn promote(inner: &Inner) -> Result<(), RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    loop {
        let rows = sql::rows(
            &client,
            "WITH due AS (
                     SELECT id FROM sluice_jobs WHERE state = 'scheduled' AND run_at <= now()
                     ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED
                 ), made AS (
                     UPDATE sluice_jobs j SET state = 'ready' FROM due WHERE j.id = due.id
                     RETURNING j.id
                 )
                 SELECT count(*) FROM made",
            &[],
        )
        .await?;
        let promoted: i64 = rows.first().map_or(0, |r| r.get(0));
        if promoted > 0 {
            // Committed already (no transaction here): the others now.
            sql::wake_all(&client).await?;
            inner.claim.notify_one();
        }
        if promoted < 1000 {
            return Ok(());
        }
    }
}

/// How long until the next scheduled job is due, or a lease expires.
async fn next_wake(inner: &Inner) -> Result<Duration, RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let row = sql::row(
        &client,
        "SELECT extract(epoch FROM least(
                 (SELECT min(run_at) FROM sluice_jobs WHERE state = 'scheduled'),
                 (SELECT min(lease_expires_at) FROM sluice_jobs WHERE state = 'leased')
             ) - now())::float8",
        &[],
    )
    .await?;
    let seconds: Option<f64> = row.get(0);
    Ok(seconds.map_or(POLL_INTERVAL, |s| {
        Duration::from_secs_f64(s.max(0.0) + 0.001)
    }))
}

/// Deletes finished jobs past retention, and old failure records.
async fn retention(inner: &Inner) -> Result<(), RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let retention = jobs::millis(inner.queue.retention);
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
        if deleted < RETENTION_BATCH as u64 {
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
async fn sweep_queues(inner: &Inner) -> Result<(), RequestError> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK])
        .await
        .map_err(unavailable)?
        .get(0);
    if locked {
        let swept = tx
            .query(
                "WITH used AS (
                     SELECT queue FROM sluice_jobs UNION SELECT queue FROM sluice_finished
                     UNION SELECT queue FROM sluice_paused
                 ), gone AS (
                     DELETE FROM sluice_queues WHERE queue NOT IN (SELECT queue FROM used)
                     RETURNING queue
                 ), counters AS (
                     DELETE FROM sluice_counters WHERE queue IN (SELECT queue FROM gone)
                 )
                 SELECT count(*) FROM gone",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let swept: i64 = swept.first().map_or(0, |row| row.get(0));
        if swept > 0 {
            debug!(swept, "queues that held nothing removed");
        }
    }
    tx.commit().await.map_err(unavailable)?;
    let queues: std::collections::HashSet<String> =
        sql::rows(&client, "SELECT queue FROM sluice_queues", &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
    inner
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|queue, _| queues.contains(queue));
    inner.enqueuer.known.clear();
    Ok(())
}

/// This broker's counters as JSON: queue -> [enqueued, acked, nacked, expired, dead].
fn counters_json(inner: &Inner) -> String {
    let counters = inner
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map: serde_json::Map<String, serde_json::Value> = counters
        .iter()
        .map(|(q, c)| {
            (
                q.clone(),
                serde_json::json!([c.enqueued, c.acked, c.nacked, c.expired, c.dead]),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn streams_json(inner: &Inner) -> String {
    let workers: Vec<serde_json::Value> = inner
        .streams
        .workers()
        .into_iter()
        .map(|w| {
            serde_json::json!({
                "worker_id": &*w.worker_id,
                "queues": w.queues,
                "job_types": w.job_types,
                "in_flight": w.in_flight,
                "max_in_flight": w.max_in_flight,
                "connected_since_us": w.connected_since.as_micros(),
            })
        })
        .collect();
    serde_json::Value::Array(workers).to_string()
}

/// Adds this broker to `sluice_brokers`.
pub(super) async fn register(inner: &Inner) -> Result<(), String> {
    heartbeat(inner).await.map_err(|e| e.to_string())
}

/// Renews this broker's row and forgets brokers that stopped renewing.
async fn heartbeat(inner: &Inner) -> Result<(), RequestError> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    sql::execute(
        &client,
        "INSERT INTO sluice_brokers (broker_id, heartbeat, streams, counters)
             VALUES ($1, now(), $2::text::jsonb, $3::text::jsonb)
             ON CONFLICT (broker_id) DO UPDATE
             SET heartbeat = now(), streams = excluded.streams, counters = excluded.counters",
        &[
            &inner.broker_id,
            &streams_json(inner),
            &counters_json(inner),
        ],
    )
    .await?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let gone = sql::rows(&tx, "DELETE FROM sluice_brokers
             WHERE heartbeat < now() - $1::bigint * interval '1 second' RETURNING broker_id, counters::text", &[&BROKER_TIMEOUT_SECS]).await?;
    for row in &gone {
        fold_counters(&tx, row.get(1)).await?;
        let broker: uuid::Uuid = row.get(0);
        info!(%broker, "forgot a broker whose heartbeat stopped");
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(())
}

/// Adds a departed broker's counters to `sluice_counters`.
async fn fold_counters(
    tx: &deadpool_postgres::Transaction<'_>,
    json: String,
) -> Result<(), RequestError> {
    for (queue, c) in parse_counters(&json) {
        let v = [c.enqueued, c.acked, c.nacked, c.expired, c.dead]
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        tx.execute(
            "INSERT INTO sluice_counters (queue, enqueued, acked, nacked, expired, dead)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (queue) DO UPDATE SET enqueued = sluice_counters.enqueued + $2,
                 acked = sluice_counters.acked + $3, nacked = sluice_counters.nacked + $4,
                 expired = sluice_counters.expired + $5, dead = sluice_counters.dead + $6",
            &[&queue, &v[0], &v[1], &v[2], &v[3], &v[4]],
        )
        .await
        .map_err(unavailable)?;
    }
    Ok(())
}

fn parse_counters(json: &str) -> Vec<(String, Counters)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(queue, v)| {
            let n = |i: usize| v.get(i).and_then(serde_json::Value::as_u64).unwrap_or(0);
            (
                queue,
                Counters {
                    enqueued: n(0),
                    acked: n(1),
                    nacked: n(2),
                    expired: n(3),
                    dead: n(4),
                },
            )
        })
        .collect()
}

/// Leaves `sluice_brokers` at shutdown, folding this broker's counters in.
pub(super) async fn deregister(inner: &Inner) {
    let done = async {
        let mut client = inner.pool.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute(
            "DELETE FROM sluice_brokers WHERE broker_id = $1",
            &[&inner.broker_id],
        )
        .await
        .map_err(unavailable)?;
        fold_counters(&tx, counters_json(inner)).await?;
        tx.commit().await.map_err(unavailable)
    };
    if let Err(e) = done.await {
        warn!(error = %e, "could not leave the broker registry; others forget this broker shortly");
    }
}

/// Every queue's figures, from the database.
pub(super) async fn stats(inner: &Inner) -> Result<StatsReading, RequestError> {
    let mut reading = counters(inner).await?;
    let client = inner.pool.get().await.map_err(unavailable)?;
    let mut queues: std::collections::BTreeMap<String, QueueStats> = reading
        .queues
        .drain(..)
        .map(|q| (q.queue.clone(), q))
        .collect();
    let counts = sql::rows(
        &client,
        "SELECT queue, state, count(*) FROM sluice_jobs GROUP BY 1, 2
             UNION ALL SELECT queue, state, count(*) FROM sluice_finished GROUP BY 1, 2",
        &[],
    )
    .await?;
    for row in &counts {
        if let Some(q) = queues.get_mut(row.get::<_, &str>(0)) {
            let state: JobState = state_of(row.get(1));
            q.counts[state.index()] = u64::try_from(row.get::<_, i64>(2)).unwrap_or(0);
        }
    }
    let oldest = sql::rows(
        &client,
        "SELECT queue, min(run_at) FROM sluice_jobs WHERE state = 'ready' GROUP BY queue",
        &[],
    )
    .await?;
    for row in &oldest {
        if let Some(q) = queues.get_mut(row.get::<_, &str>(0)) {
            q.oldest_ready_due = Some(rows::timestamp(row.get(1)));
        }
    }
    let failures = sql::rows(
        &client,
        "SELECT job_id, queue, job_type, attempt, error, failed_at, dead, worker_id
             FROM (SELECT * FROM sluice_failures ORDER BY id DESC LIMIT $1) f ORDER BY id",
        &[&i64::try_from(sluice_queue::RECENT_FAILURES).unwrap_or(50)],
    )
    .await?;
    reading.recent_failures = failures
        .iter()
        .map(|row| {
            convert::failure_to_pb(&sluice_queue::FailedAttempt {
                job_id: row.get(0),
                queue: row.get(1),
                job_type: row.get(2),
                attempt: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
                error: row.get(4),
                failed_at: rows::timestamp(row.get(5)),
                dead: row.get(6),
                worker_id: row.get(7),
            })
        })
        .collect();
    reading.queues = queues.into_values().collect();
    Ok(reading)
}

/// Every queue with its pause flag and lifetime counters, without the
/// counts by state.
pub(super) async fn counters(inner: &Inner) -> Result<StatsReading, RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let now: std::time::SystemTime = client
        .query_one("SELECT now()", &[])
        .await
        .map_err(unavailable)?
        .get(0);
    let now = rows::timestamp(now);
    let mut queues: std::collections::BTreeMap<String, QueueStats> = sql::rows(
        &client,
        "SELECT queue, queue IN (SELECT queue FROM sluice_paused) FROM sluice_queues",
        &[],
    )
    .await?
    .iter()
    .map(|row| {
        let queue: String = row.get(0);
        let stats = QueueStats {
            queue: queue.clone(),
            paused: row.get(1),
            counts: [0; 6],
            counters: Counters::default(),
            oldest_ready_due: None,
        };
        (queue, stats)
    })
    .collect();
    // Other brokers' counters as of their last heartbeat, those of brokers
    // gone, and this broker's own as they are now.
    let others = sql::rows(
        &client,
        "SELECT counters::text FROM sluice_brokers WHERE broker_id <> $1
             UNION ALL SELECT json_object_agg(queue, json_build_array(enqueued, acked, nacked,
                 expired, dead))::text FROM sluice_counters HAVING count(*) > 0",
        &[&inner.broker_id],
    )
    .await?;
    let own: Vec<(String, Counters)> = inner
        .counters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(queue, c)| (queue.clone(), *c))
        .collect();
    let all = others
        .iter()
        .flat_map(|row| parse_counters(row.get(0)))
        .chain(own);
    for (queue, c) in all {
        if let Some(q) = queues.get_mut(&queue) {
            q.counters.enqueued += c.enqueued;
            q.counters.acked += c.acked;
            q.counters.nacked += c.nacked;
            q.counters.expired += c.expired;
            q.counters.dead += c.dead;
        }
    }
    Ok(StatsReading {
        queues: queues.into_values().collect(),
        recent_failures: Vec::new(),
        now,
    })
}

/// The Lease streams of every live broker: this one's as they are, the
/// others' as of their last heartbeat.
pub(super) async fn workers(inner: &Inner) -> Result<Vec<WorkerInfo>, RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let rows = sql::rows(
        &client,
        "SELECT streams::text FROM sluice_brokers
             WHERE broker_id <> $1 AND heartbeat >= now() - $2::bigint * interval '1 second'",
        &[&inner.broker_id, &BROKER_TIMEOUT_SECS],
    )
    .await?;
    let mut workers = inner.streams.workers();
    for row in &rows {
        let Ok(serde_json::Value::Array(streams)) = serde_json::from_str(row.get(0)) else {
            continue;
        };
        for s in streams {
            let strings = |key: &str| -> Vec<String> {
                s.get(key)
                    .and_then(serde_json::Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let number = |key: &str| s.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
            workers.push(WorkerInfo {
                worker_id: s
                    .get("worker_id")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .into(),
                queues: strings("queues"),
                job_types: strings("job_types"),
                in_flight: u32::try_from(number("in_flight")).unwrap_or(0),
                max_in_flight: u32::try_from(number("max_in_flight")).unwrap_or(0),
                connected_since: sluice_queue::Timestamp::from_micros(number("connected_since_us")),
            });
        }
    }
    Ok(workers)
}

async fn refresh_gauges(inner: &Inner) -> Result<(), RequestError> {
    let reading = GaugeReading {
        stats: stats(inner).await?,
        workers: workers(inner).await?,
        held: None,
        store: None,
    };
    *inner
        .gauges
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reading);
    Ok(())
}

/// Waits until no job is leased to this broker's streams, or `deadline`.
pub(super) async fn leases_resolved(inner: &Inner, deadline: tokio::time::Instant) -> usize {
    loop {
        let leased = async {
            let client = inner.pool.get().await.map_err(unavailable)?;
            let row = sql::row(
                &client,
                "SELECT count(*) FROM sluice_jobs WHERE broker_id = $1 AND state = 'leased'",
                &[&inner.broker_id],
            )
            .await?;
            Ok::<_, RequestError>(usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        };
        let leased = tokio::time::timeout_at(deadline, leased).await;
        match leased {
            Ok(Ok(0)) => return 0,
            Ok(Ok(n)) if tokio::time::Instant::now() >= deadline => return n,
            Ok(Ok(_)) => {}
            // Unreachable: the leases stay valid in the database.
            Ok(Err(_)) | Err(_) => return 0,
        }
        tokio::time::sleep(Duration::from_millis(100).min(deadline - tokio::time::Instant::now()))
            .await;
    }
}

/// Jobs scheduled, ready or leased, in the whole database.
pub(super) async fn unfinished(inner: &Inner) -> Result<u64, RequestError> {
    let client = inner.pool.get().await.map_err(unavailable)?;
    let row = client
        .query_one("SELECT count(*) FROM sluice_jobs", &[])
        .await
        .map_err(unavailable)?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// Watches the database: on a failed operation (or every few seconds)
/// checks it; while it cannot be reached, the broker is NOT_SERVING and
/// its streams end.
async fn health(inner: Arc<Inner>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let ok = async {
            let client = inner.pool.get().await.map_err(|e| e.to_string())?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        };
        let ok = tokio::time::timeout(Duration::from_secs(5), ok)
            .await
            .unwrap_or_else(|_| Err("no answer within 5 s".into()));
        let was = *inner.serving.borrow();
        match ok {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                if !was {
                    info!("the database is reachable again: serving");
                    inner.serving.send_replace(true);
                    inner.claim.notify_one();
                }
            }
            Err(e) => {
                if was {
                    warn!(error = %e, "the database is unreachable: not serving, ending lease streams, reconnecting");
                    inner.serving.send_replace(false);
                    inner.streams.end_all();
                }
            }
        }
        let wait = if *inner.serving.borrow() {
            Duration::from_secs(2)
        } else {
            let wait = backoff;
            backoff = (backoff * 2).min(MAX_RECONNECT);
            wait
        };
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = inner.health_check.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
