//! This broker's Lease streams and the claimer that fills them. Each stream
//! has credit (its max_in_flight less the leases it holds); the claimer
//! takes up to that many ready jobs per stream with one `FOR UPDATE SKIP
//! LOCKED` statement, in the contract's order (priority, then run_at, then
//! enqueue order), skipping paused queues and other job types. Brokers
//! never wait on each other's claims: a row another broker is claiming is
//! skipped.
//!
//! A stream's slot is freed at once when its lease ends through this
//! broker; leases resolved through another broker, or expired, are found
//! by the recount every poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_proto::v1 as pb;
use sluice_queue::{ConsumerSpec, Timestamp, WorkerInfo};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use uuid::Uuid;

use super::jobs::{self, millis};
use super::rows::{self, UNFINISHED_COLUMNS};
use super::{Inner, sql, unavailable};
use crate::backend::{FeedCloser, LeaseFeed, LeaseRef};
use crate::service::RequestError;

/// This broker's open streams.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<i64, Stream>>,
    next_id: AtomicU64,
    /// Where the next claim round starts, so that streams share the jobs.
    cursor: AtomicU64,
    /// Every claim of the last round took all it asked: more jobs may be
    /// ready, so a freed slot is worth a claim.
    more_ready: std::sync::atomic::AtomicBool,
    /// Every claim of the last round took all it asked, and many: the
    /// jobs need no sharing out (no count before the next round).
    backlog: std::sync::atomic::AtomicBool,
}

struct Stream {
    worker_id: String,
    queues: Vec<String>,
    /// Empty takes any type.
    job_types: Vec<String>,
    max_in_flight: u32,
    in_flight: u32,
    lease_ms: i64,
    connected_since: Timestamp,
    /// Slots freed since the last recount began: a recount that raced
    /// with one is not applied.
    freed: u64,
    tx: mpsc::Sender<pb::LeasedJob>,
}

/// What the claimer needs of a stream with room.
struct Want {
    stream: i64,
    worker_id: String,
    queues: Vec<String>,
    job_types: Vec<String>,
    credit: i64,
    /// Leases it holds now.
    in_flight: u32,
    lease_ms: i64,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Stream>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the last claim round may have left jobs ready.
    pub fn more_ready(&self) -> bool {
        self.more_ready.load(Ordering::Relaxed)
    }

    /// A lease of `stream` ended.
    pub fn slot_freed(&self, stream: i64) {
        if let Some(s) = self.lock().get_mut(&stream) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.freed += 1;
        }
    }

    /// Ends every stream (the drain, or a lost database).
    pub fn end_all(&self) {
        self.lock().clear();
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The open streams, as ListWorkers shows them.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.lock()
            .values()
            .map(|s| WorkerInfo {
                worker_id: s.worker_id.as_str().into(),
                queues: s.queues.clone(),
                job_types: s.job_types.clone(),
                in_flight: s.in_flight,
                max_in_flight: s.max_in_flight,
                connected_since: s.connected_since,
            })
            .collect()
    }

    /// The streams with room, each with its credit. Each round starts one
    /// stream further, so that single jobs go round the streams.
    fn wants(&self) -> Vec<Want> {
        let mut open = self.lock();
        // Room by its count, but a full channel: the client has not read
        // its stream for a lease duration (the leases of what waits in it
        // expired). Closed, as on the local backend.
        open.retain(|id, s| {
            let stale = s.in_flight < s.max_in_flight && s.tx.capacity() == 0;
            if stale {
                warn!(stream = id, worker_id = %s.worker_id, "lease stream not read for a lease duration: closing it");
            }
            !stale
        });
        let mut wants: Vec<Want> = open
            .iter()
            .filter(|(_, s)| s.in_flight < s.max_in_flight)
            .map(|(&stream, s)| Want {
                stream,
                worker_id: s.worker_id.clone(),
                queues: s.queues.clone(),
                job_types: s.job_types.clone(),
                credit: i64::from(s.max_in_flight - s.in_flight),
                in_flight: s.in_flight,
                lease_ms: s.lease_ms,
            })
            .collect();
        drop(open);
        let n = wants.len();
        if n == 0 {
            return wants;
        }
        wants.sort_by_key(|w| w.stream);
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) as usize % n;
        wants.rotate_left(start);
        wants
    }
}

/// Opens a stream: adopts the leases the worker says it still holds, then
/// lets the claimer fill it.
pub(super) async fn open(
    inner: &std::sync::Arc<Inner>,
    spec: ConsumerSpec,
) -> Result<LeaseFeed, RequestError> {
    let stream = i64::try_from(inner.streams.next_id.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
    let lease_ms = millis(spec.lease_duration.unwrap_or(inner.queue.lease_duration));
    let mut adopted = 0;
    if !spec.held_leases.is_empty() {
        let (jobs, leases): (Vec<Uuid>, Vec<Uuid>) = spec.held_leases.iter().copied().unzip();
        let client = inner.pool.get().await.map_err(unavailable)?;
        let held = i64::from(spec.max_in_flight);
        adopted = sql::execute(
            &client,
            "UPDATE sluice_jobs SET broker_id = $3, stream_id = $4
                 WHERE id IN (SELECT j.id FROM sluice_jobs j
                     JOIN unnest($1::uuid[], $2::uuid[]) AS h(id, lease_id)
                       ON j.id = h.id AND j.lease_id = h.lease_id
                     WHERE j.state = 'leased' AND j.worker_id = $5 LIMIT $6)",
            &[
                &jobs,
                &leases,
                &inner.broker_id,
                &stream,
                &spec.worker_id,
                &held,
            ],
        )
        .await?;
    }
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let (tx, rx) = mpsc::channel(spec.max_in_flight as usize);
    inner.streams.lock().insert(
        stream,
        Stream {
            worker_id: spec.worker_id,
            queues: spec.queues,
            job_types: spec.job_types,
            max_in_flight: spec.max_in_flight,
            in_flight: u32::try_from(adopted).unwrap_or(0),
            lease_ms,
            connected_since: now,
            freed: 0,
            tx,
        },
    );
    inner.claim.notify_one();
    Ok(LeaseFeed {
        jobs: rx,
        closer: Box::new(Closer {
            inner: std::sync::Arc::downgrade(inner),
            stream,
        }),
    })
}

/// Closes a stream of this broker.
struct Closer {
    inner: std::sync::Weak<Inner>,
    stream: i64,
}

impl FeedCloser for Closer {
    fn close(self: Box<Self>, unsent: Vec<pb::LeasedJob>) {
        let Some(inner) = self.inner.upgrade() else {
            return;
        };
        inner.streams.lock().remove(&self.stream);
        let leases = lease_refs(&unsent);
        if leases.is_empty() {
            return;
        }
        // Closed from a Drop: the database is written from a task.
        tokio::spawn(async move {
            if let Err(e) = jobs::give_back_unsent(&inner, leases).await {
                // Their leases expire and they run again: nothing is lost.
                warn!(error = %e, "could not give back unsent jobs; their leases will expire");
            }
        });
    }
}

fn lease_refs(messages: &[pb::LeasedJob]) -> Vec<LeaseRef> {
    messages.iter().filter_map(LeaseRef::of).collect()
}

/// Fills every stream with room, until none can take more or no job is
/// ready for them. One round per wake-up or poll.
pub(super) async fn claim_round(inner: &Arc<Inner>) -> Result<(), RequestError> {
    loop {
        let mut wants = inner.streams.wants();
        // With a backlog every stream takes all its room: no count.
        if !inner.streams.backlog.load(Ordering::Relaxed) {
            share(inner, &mut wants).await?;
        }
        // A stream whose share is nothing does not claim.
        wants.retain(|w| w.credit > 0);
        if wants.is_empty() {
            return Ok(());
        }
        // The streams' claims run at once, each on its own connection:
        // SKIP LOCKED keeps them from waiting on each other.
        let mut claims = tokio::task::JoinSet::new();
        for want in wants {
            let inner = inner.clone();
            claims.spawn(async move {
                let got = claim(&inner, &want).await?;
                // A full claim of a few jobs says little of what is left.
                Ok::<_, RequestError>((got == want.credit, got >= BACKLOG_CLAIM))
            });
        }
        let (mut claimed_any, mut filled_one, mut short_one, mut small_one) =
            (false, false, false, false);
        while let Some(claimed) = claims.join_next().await {
            match claimed {
                Ok(claimed) => {
                    let (filled, large) = claimed?;
                    claimed_any = true;
                    filled_one |= filled;
                    short_one |= !filled;
                    small_one |= !large;
                }
                Err(e) => return Err(RequestError::Unavailable(format!("a claim task: {e}"))),
            }
        }
        // A claim that got less than it asked found no more ready jobs; a
        // round without claims tells nothing.
        if claimed_any {
            let streams = &inner.streams;
            streams.more_ready.store(!short_one, Ordering::Relaxed);
            streams
                .backlog
                .store(!short_one && !small_one, Ordering::Relaxed);
        }
        // A stream that took all it asked for may find more.
        if !filled_one {
            return Ok(());
        }
    }
}

/// A round in which every claim took all it asked, and at least this
/// many, means a backlog: the next round skips the count of [`share`].
const BACKLOG_CLAIM: i64 = 32;

/// With several streams and few jobs, each asks for its share of the
/// jobs ready now, so that they split them evenly (as the local backend's
/// round robin does); one stream alone, or a backlog larger than the
/// streams' credit, needs no count.
async fn share(inner: &Inner, wants: &mut [Want]) -> Result<(), RequestError> {
    let n = i64::try_from(wants.len()).unwrap_or(1);
    if n < 2 {
        return Ok(());
    }
    let mut queues: Vec<&str> = wants
        .iter()
        .flat_map(|w| w.queues.iter().map(String::as_str))
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let most: i64 = wants.iter().map(|w| w.credit).sum();
    let client = inner.pool.get().await.map_err(unavailable)?;
    let ready: i64 = sql::row(
        &client,
        "SELECT count(*) FROM (SELECT 1 FROM sluice_jobs
                 WHERE state = 'ready' AND queue = ANY($1) LIMIT $2) r",
        &[&queues, &most],
    )
    .await?
    .get(0);
    // Dealt out one by one, the stream holding the fewest first (the
    // round's rotation breaks ties), as the local backend's round robin
    // deals jobs: each gets `ready / n`, the first `ready % n` one more.
    wants.sort_by_key(|w| w.in_flight);
    let (each, extra) = (ready / n, ready % n);
    for (i, want) in (0..).zip(wants.iter_mut()) {
        want.credit = want.credit.min(each + i64::from(i < extra));
    }
    Ok(())
}

/// Claims up to `want.credit` ready jobs for one stream and sends them.
async fn claim(inner: &Inner, want: &Want) -> Result<i64, RequestError> {
    let mut client = inner.pool.get().await.map_err(unavailable)?;
    let job_types: Option<&Vec<String>> = (!want.job_types.is_empty()).then_some(&want.job_types);
    // A claim is committed without waiting for the WAL flush: nothing is
    // acknowledged to a client by it. If PostgreSQL crashes before the
    // flush, the job is READY again and runs again (at least once, as
    // after an expired lease); every Ack, Nack and Enqueue waits.
    let tx = client.transaction().await.map_err(unavailable)?;
    let claim = tx.prepare_cached(claim_sql()).await.map_err(unavailable)?;
    // Sent together: tokio-postgres pipelines the requests polled at once.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
        &want.queues,
        &job_types,
        &want.credit,
        &want.worker_id,
        &inner.broker_id,
        &want.stream,
        &want.lease_ms,
    ];
    let (_, rows) = tokio::try_join!(
        tx.batch_execute("SET LOCAL synchronous_commit = off"),
        tx.query(&claim, &params),
    )
    .map_err(unavailable)?;
    tx.commit().await.map_err(unavailable)?;
    drop(client);
    if rows.is_empty() {
        return Ok(0);
    }
    let mut jobs: Vec<(i32, std::time::SystemTime, i64, pb::LeasedJob)> = rows
        .iter()
        .map(|row| (row.get(5), row.get(13), row.get(18), rows::leased_job(row)))
        .collect();
    // The UPDATE returns rows in no order: send them in the claim order.
    jobs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let got = i64::try_from(jobs.len()).unwrap_or(0);
    let mut unsent = Vec::new();
    {
        let mut open = inner.streams.lock();
        match open.get_mut(&want.stream) {
            Some(stream) => {
                for (_, _, _, message) in jobs {
                    if let Some(job) = &message.job {
                        debug!(job_id = %job.id, queue = %job.queue, job_type = %job.job_type,
                            attempt = job.attempt, worker_id = %want.worker_id, "job leased");
                    }
                    match stream.tx.try_send(message) {
                        Ok(()) => stream.in_flight += 1,
                        Err(e) => unsent.push(e.into_inner()),
                    }
                }
            }
            None => unsent.extend(jobs.into_iter().map(|(_, _, _, m)| m)),
        }
    }
    if !unsent.is_empty() {
        // The stream ended meanwhile: its jobs go back at once.
        jobs::give_back_unsent(inner, lease_refs(&unsent)).await?;
    }
    Ok(got)
}

/// Sets each stream's in-flight count to the leases the database says it
/// holds (those resolved through other brokers, or expired, are gone).
pub(super) async fn recount(inner: &Inner) -> Result<(), RequestError> {
    let before: HashMap<i64, u64> = inner
        .streams
        .lock()
        .iter()
        .map(|(&id, s)| (id, s.freed))
        .collect();
    if before.is_empty() {
        return Ok(());
    }
    let client = inner.pool.get().await.map_err(unavailable)?;
    let rows = sql::rows(
        &client,
        "SELECT stream_id, count(*) FROM sluice_jobs
             WHERE broker_id = $1 AND state = 'leased' GROUP BY stream_id",
        &[&inner.broker_id],
    )
    .await?;
    let held: HashMap<i64, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let mut open = inner.streams.lock();
    for (id, stream) in open.iter_mut() {
        // A claim runs in the same task as the recount, so only a freed
        // slot can race with it: such a stream is recounted next time.
        if before.get(id) == Some(&stream.freed) {
            stream.in_flight = u32::try_from(held.get(id).copied().unwrap_or(0)).unwrap_or(0);
        }
    }
    Ok(())
}

/// The claim statement: see [`claim`].
fn claim_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let returning = UNFINISHED_COLUMNS
            .split(", ")
            .map(|c| {
                if c.starts_with("NULL") {
                    c.to_owned()
                } else {
                    format!("j.{c}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            // Per queue (not paused), the first ready jobs straight
            // off the claim index; then the first of those over all.
            // Each is found again by its row address (ctid), which its lock
            // keeps valid, not through the key index.
            "WITH picked AS (
                     SELECT j.tid FROM (
                         SELECT unnest($1::text[]) AS queue
                         EXCEPT SELECT queue FROM sluice_paused
                     ) q CROSS JOIN LATERAL (
                         SELECT ctid AS tid, priority, run_at, seq FROM sluice_jobs
                         WHERE state = 'ready' AND queue = q.queue
                           AND ($2::text[] IS NULL OR job_type = ANY($2))
                         ORDER BY priority DESC, run_at, seq
                         LIMIT $3
                         FOR UPDATE SKIP LOCKED
                     ) j
                     ORDER BY j.priority DESC, j.run_at, j.seq
                     LIMIT $3
                 )
                 UPDATE sluice_jobs j SET state = 'leased', attempt = attempt + 1,
                     lease_id = gen_random_uuid(), worker_id = $4, broker_id = $5,
                     stream_id = $6, leased_at = now(), lease_ms = $7::bigint,
                     lease_expires_at = now() + $7::bigint * interval '1 millisecond'
                 FROM picked WHERE j.ctid = picked.tid
                 RETURNING {}",
            returning
        )
    })
}
