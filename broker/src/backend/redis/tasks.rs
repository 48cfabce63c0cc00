//! The backend's own tasks, each started on the server's tracker and
//! stopped by its token:
//!
//! - the **subscriber** holds a pub/sub connection subscribed to the
//!   wake-up channel (`ready`: claim; `scheduled`: look at the deadlines)
//!   and to this broker's own channel (a lease of one of its streams ended
//!   through another broker: its slot is free), and resubscribes with
//!   backoff; a message lost meanwhile is made up by the recount on
//!   resubscribing and by the claimer's poll;
//! - the **claimer** (`cluster::run_claimer`) fills this broker's streams;
//! - the **maintenance loop** asks which queues have a deadline due
//!   (`sluice:due`, kept by the scripts: a scheduled job due, a lease
//!   expiring, a finished job past retention) and maintains each: due
//!   jobs become READY, expired leases are failed (`leases::expire`: of
//!   brokers maintaining at once, one ends each), old finished jobs go. It
//!   sleeps until the next deadline or the poll interval, so a scheduled
//!   job runs on time without polling faster. It also renews this
//!   broker's record, refreshes the gauges of /metrics, and every
//!   `queue_sweep` removes the queues that hold nothing (of those the
//!   scripts noted when they deleted a job or resumed a queue);
//! - the **health check** (`cluster::Health`, a PING).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use uuid::Uuid;

use super::scripts::{FREED_PREFIX, WAKE_CHANNEL, reply, scripts};
use super::{Inner, leases, reads, registry};
use crate::backend::cluster::timing::{HEARTBEAT, MAX_BACKOFF};
use crate::backend::cluster::{Every, Ping, between_passes, run_claimer};
use crate::backend::{BackendError, LeaseRef};

type Result<T> = std::result::Result<T, BackendError>;

/// The most queues maintained in one pass, and jobs of each kind per
/// queue and script.
const MAINTAIN_QUEUES: u32 = 100;
const MAINTAIN_BATCH: u32 = 1000;

/// Starts every task of the backend.
pub(super) fn spawn(inner: &Arc<Inner>, tasks: &TaskTracker, stop: CancellationToken) {
    inner.streams.track(tasks);
    tasks.spawn(subscribe(inner.clone(), stop.clone()));
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
            let mut conn = inner.conn.get().await?;
            let pong: std::result::Result<String, _> =
                redis::cmd("PING").query_async(&mut conn).await;
            if let Err(e) = pong {
                inner.conn.reset().await;
                return Err(e.to_string());
            }
            Ok(())
        })
    });
    let watched = inner.clone();
    tasks.spawn(async move {
        watched.health.watch(ping, &watched.streams, stop).await;
    });
}

/// Subscribes to the wake-up channel and this broker's own, resubscribing
/// with backoff.
async fn subscribe(inner: Arc<Inner>, stop: CancellationToken) {
    let own = format!("{FREED_PREFIX}{}", inner.broker_id);
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match listen(&inner, &own, &stop).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => debug!(error = %e, "Redis subscription failed; polling meanwhile"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One subscription, until its connection ends or `stop`.
async fn listen(
    inner: &Inner,
    own: &str,
    stop: &CancellationToken,
) -> std::result::Result<(), String> {
    let mut pubsub = inner.conn.pubsub().await?;
    pubsub
        .subscribe(&[WAKE_CHANNEL, own])
        .await
        .map_err(|e| e.to_string())?;
    debug!("subscribed to wake-ups");
    // Messages may have been missed while not subscribed.
    inner.streams.recount_soon();
    inner.maintain.notify_one();
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Ok(()); // the connection closed
        };
        let payload: String = message.get_payload().unwrap_or_default();
        if message.get_channel_name() == own {
            inner.streams.entry_freed(&payload);
        } else if payload == "ready" {
            inner.streams.wake();
        } else {
            inner.maintain.notify_one();
        }
    }
}

async fn maintain(inner: Arc<Inner>, stop: CancellationToken) {
    let (mut heartbeat, mut sweep) = (Every::new(HEARTBEAT), Every::new(inner.queue_sweep));
    loop {
        let outcome = if inner.health.serving() {
            Some(maintain_pass(&inner, &mut heartbeat, &mut sweep).await)
        } else {
            None
        };
        let (health, wake, poll) = (&inner.health, &inner.maintain, inner.poll_interval);
        if !between_passes(health, wake, poll, &stop, outcome).await {
            return;
        }
    }
}

/// One pass: the queues whose deadline has come, then the chores that
/// are due; how long until the next deadline.
async fn maintain_pass(
    inner: &Inner,
    heartbeat: &mut Every,
    sweep: &mut Every,
) -> Result<Duration> {
    let due = maintain_due(inner).await?;
    heartbeat
        .run(async || registry::heartbeat(inner).await)
        .await?;
    inner
        .gauges
        .refresh(async || reads::gauges(inner).await)
        .await?;
    sweep.run(async || sweep_queues(inner).await).await?;
    Ok(due)
}

/// Maintains every queue whose deadline has come; returns how long until
/// the next deadline (or the poll interval if none).
async fn maintain_due(inner: &Inner) -> Result<Duration> {
    loop {
        let answer = inner
            .call()
            .arg(MAINTAIN_QUEUES)
            .run(&inner.conn, &scripts().due)
            .await?;
        let answer = reply::items(&answer)?;
        let now: u64 = reply::int(reply::at(answer, 0)?)?;
        let next: Option<u64> = reply::number(reply::at(answer, 1)?)?;
        let queues = reply::items(reply::at(answer, 2)?)?;
        if queues.is_empty() {
            return Ok(next.map_or(inner.poll_interval, |at| {
                Duration::from_micros(at.saturating_sub(now) + 1000)
            }));
        }
        let mut expired = 0;
        for queue in queues {
            expired += maintain_queue(inner, &reply::string(queue)?).await?;
        }
        // Expired leases are failed once each: what is due again now is
        // new (or another broker's to finish).
        if expired == 0 && queues.len() < MAINTAIN_QUEUES as usize {
            let next = next.map_or(0, |at| at.saturating_sub(now));
            return Ok(Duration::from_micros(next.max(1000)));
        }
    }
}

/// Maintains one queue; returns how many expired leases it failed.
async fn maintain_queue(inner: &Inner, queue: &str) -> Result<usize> {
    let answer = inner
        .call()
        .arg(queue)
        .arg(MAINTAIN_BATCH)
        .run(&inner.conn, &scripts().maintain)
        .await?;
    let answer = reply::items(&answer)?;
    let promoted: u64 = reply::int(reply::at(answer, 0)?)?;
    if promoted > 0 {
        inner.streams.wake();
    }
    let expired = &answer[1..];
    for lease in expired.chunks(5) {
        let [job, lease_id, read @ ..] = lease else {
            return Err(reply::malformed("an expired lease"));
        };
        let parse = |v| -> Result<Uuid> {
            reply::string(v)?
                .parse()
                .map_err(|_| reply::malformed("an id"))
        };
        let lease = LeaseRef {
            job_id: parse(job)?,
            lease_id: parse(lease_id)?,
        };
        // The script read what the failure policy needs: no second read.
        leases::expire(inner, lease, leases::Peeked::of(read)?).await?;
    }
    Ok(expired.len() / 5)
}

/// Queues looked at per step of the sweep, and counted queues checked
/// per sweep.
const SWEEP_STEP: u32 = 1000;

/// Removes the queues that hold nothing and are not paused (of those the
/// scripts noted), then forgets this broker's counters of queues gone:
/// those this sweep removed at once, and of the others (removed by
/// another broker) the next [`SWEEP_STEP`] this broker counts, in turn, so
/// that a sweep costs the same however many queues there are.
async fn sweep_queues(inner: &Inner) -> Result<()> {
    let mut counted: Vec<String> = inner
        .counts
        .snapshot()
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    counted.sort_unstable();
    let step = SWEEP_STEP as usize;
    let from = inner.sweep_from.load(Ordering::Relaxed);
    let from = if from < counted.len() { from } else { 0 };
    inner.sweep_from.store(from + step, Ordering::Relaxed);
    let mut check: Vec<String> = counted.drain(from..).take(step).collect();
    loop {
        let answer = inner
            .call()
            .arg(SWEEP_STEP)
            .args(std::mem::take(&mut check))
            .run(&inner.conn, &scripts().sweep)
            .await?;
        let answer = reply::items(&answer)?;
        let looked: u32 = reply::int(reply::at(answer, 0)?)?;
        let removed = reply::items(reply::at(answer, 1)?)?;
        let mut gone: std::collections::HashSet<String> = reply::items(reply::at(answer, 2)?)?
            .iter()
            .map(reply::string)
            .collect::<Result<_>>()?;
        if !removed.is_empty() {
            debug!(swept = removed.len(), "queues that held nothing removed");
            for queue in removed {
                gone.insert(reply::string(queue)?);
            }
        }
        if !gone.is_empty() {
            inner.counts.retain(|queue| !gone.contains(queue));
        }
        if looked < SWEEP_STEP {
            return Ok(());
        }
    }
}
