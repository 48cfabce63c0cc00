//! Flow control on PostgreSQL: a queue's limits in `sluice_limits`, a
//! key's hold and bucket in `sluice_keys` (migration 5), and the claim of
//! a queue that has limits.
//!
//! Exact across brokers: such a queue's jobs are claimed only here (the
//! plain claim of `claims.rs` leaves out every queue with a row in
//! `sluice_limits`), and each claim locks the queue's row first, so the
//! brokers' claims of one queue run one at a time. Inside that lock a
//! claim counts the jobs in flight from the rows themselves (of the queue,
//! and of each key it looks at), so an Ack through another broker, an
//! expired lease or a dead broker's leases returning to READY free their
//! slots the moment they commit: no counter can drift. The buckets are
//! read and written under the same lock. The rules are the queue crate's
//! ([`queue_hold`], [`key_hold`], [`Bucket`]), as on the embedded store.
//!
//! Fair dispatch: a claim walks the queue's keys that have ready jobs in
//! key order, from where the last claim stopped (the row's `cursor`,
//! wrapping round), dealing each key free to run its weight of jobs per
//! pass (the jobs without a key are one more key, ''), until the stream's
//! credit, the queue's room or its tokens run out, or a pass deals
//! nothing. A claim that stops on a time (a bucket, a key held back) asks
//! the claimer for a round then ([`Streams::wake_at`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Transaction;
use sluice_queue::{Bucket, JobSnapshot, KeyStats, QueueLimits, Timestamp, key_hold, queue_hold};
use uuid::Uuid;

use super::Inner;
use super::columns::{self, millis};
use super::sql::{self, get};
use crate::backend::BackendError;
use crate::backend::cluster::Want;
use crate::limits_record;

type Result<T> = std::result::Result<T, BackendError>;

/// Keys looked at per query of a claim's walk, at most.
const MAX_KEYS_PER_PAGE: u32 = 256;

/// The key the jobs without one are dealt under.
const NO_KEY: &str = "";

/// Sets (or, empty, clears) the limits of `queue`, and wakes every
/// broker's claimer: the new limits may free jobs.
pub(super) async fn set(inner: &Inner, queue: String, limits: QueueLimits) -> Result<()> {
    let client = sql::connection(&inner.pool).await?;
    if limits.is_empty() {
        // Keys a worker holds back stay held: the queue keeps an empty
        // row while they do (see `hold_key`).
        sql::execute(
            &client,
            "WITH gone AS (DELETE FROM sluice_keys WHERE queue = $1
                           AND (held_until IS NULL OR held_until <= now()))
             DELETE FROM sluice_limits WHERE queue = $1 AND NOT EXISTS (
                 SELECT 1 FROM sluice_keys WHERE queue = $1 AND held_until > now())",
            &[&queue],
        )
        .await?;
        sql::execute(
            &client,
            "UPDATE sluice_limits SET limits = '{}' WHERE queue = $1",
            &[&queue],
        )
        .await?;
    } else {
        sql::execute(
            &client,
            "INSERT INTO sluice_limits (queue, limits) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (queue) DO UPDATE SET limits = EXCLUDED.limits",
            &[&queue, &limits_record::encode(&limits)],
        )
        .await?;
    }
    drop(client);
    freed(inner);
    Ok(())
}

/// The limits of `queue`.
pub(super) async fn get_limits(inner: &Inner, queue: &str) -> Result<QueueLimits> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_opt(
        &client,
        "SELECT limits::text AS limits FROM sluice_limits WHERE queue = $1",
        &[&queue],
    )
    .await?;
    row.map_or(Ok(QueueLimits::default()), |row| {
        decode(&get::<String>(&row, "limits")?)
    })
}

fn decode(record: &str) -> Result<QueueLimits> {
    limits_record::decode(record).map_err(|e| {
        tracing::error!(error = %e, "queue limits in the database are not what Sluice writes");
        BackendError::Internal
    })
}

/// Every broker's claimer: a slot or a limit of a queue with limits
/// freed, so jobs it held may go now.
pub(super) fn freed(inner: &Inner) {
    inner.notifier.job_now(sluice_queue::JobState::Ready);
    inner.streams.wake();
}

/// Whether `queue` has limits, as this broker last read (for waking the
/// claimers when one of its leases ends).
pub(super) fn has_limits(inner: &Inner, queue: &str) -> bool {
    inner
        .flowed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(queue)
}

/// Notes which of `queues` have limits now.
pub(super) fn note_limited(inner: &Inner, queues: &[String], limited: &HashSet<String>) {
    let mut flowed = inner
        .flowed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for queue in queues {
        if limited.contains(queue) {
            flowed.insert(queue.clone());
        } else {
            flowed.remove(queue);
        }
    }
}

/// Holds every job of the key of job `job_id` for `delay` (a worker's
/// key_delay), in the transaction that resolves its lease.
pub(super) async fn hold_key(tx: &Transaction<'_>, job_id: Uuid, delay: Duration) -> Result<()> {
    if delay.is_zero() {
        return Ok(());
    }
    // A queue without limits gets an empty row: its claims then go
    // through `claim`, which sees the hold.
    sql::execute(
        tx,
        "INSERT INTO sluice_limits (queue, limits)
         SELECT queue, '{}' FROM sluice_jobs WHERE id = $1 AND key IS NOT NULL
         ON CONFLICT (queue) DO NOTHING",
        &[&job_id],
    )
    .await?;
    sql::execute(
        tx,
        "INSERT INTO sluice_keys (queue, key, held_until)
         SELECT queue, key, now() + $2::bigint * interval '1 millisecond'
         FROM sluice_jobs WHERE id = $1 AND key IS NOT NULL
         ON CONFLICT (queue, key) DO UPDATE
         SET held_until = greatest(sluice_keys.held_until, EXCLUDED.held_until)",
        &[&job_id, &millis(delay)],
    )
    .await?;
    Ok(())
}

/// A key's state as a claim reads it.
#[derive(Default)]
struct KeyRow {
    /// Its ready jobs of the stream's types, up to the claim's credit.
    ready: u32,
    in_flight: u32,
    held_until: Option<Timestamp>,
    bucket: Option<Bucket>,
    /// Its bucket changed in this claim.
    taken: bool,
}

fn stamp(t: Option<SystemTime>) -> Option<Timestamp> {
    t.map(Timestamp::from_system_time)
}

fn bucket(tokens: Option<f64>, at: Option<SystemTime>) -> Option<Bucket> {
    Some(Bucket {
        tokens: tokens?,
        at: Timestamp::from_system_time(at?),
    })
}

fn system_time(t: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(t.as_micros())
}

/// Claims up to `credit` jobs of `queue`, which has limits, for `want`'s
/// stream; see the module doc.
pub(super) async fn claim(
    inner: &Inner,
    want: &Want,
    queue: &str,
    credit: u32,
) -> Result<Vec<JobSnapshot>> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let lock = [&queue as &(dyn tokio_postgres::types::ToSql + Sync)];
    // Sent together: tokio-postgres pipelines the requests polled at once.
    let (_, row) = tokio::try_join!(
        sql::execute(
            &tx,
            "SELECT set_config('synchronous_commit', 'off', true)",
            &[]
        ),
        sql::query_opt(
            &tx,
            "SELECT limits::text AS limits, tokens, tokens_at, cursor, now() AS now,
                 queue IN (SELECT queue FROM sluice_paused) AS paused
             FROM sluice_limits WHERE queue = $1 FOR UPDATE",
            &lock,
        ),
    )?;
    let Some(row) = row else {
        // Cleared meanwhile: the plain claim takes its jobs from now on.
        note_limited(inner, &[queue.to_owned()], &HashSet::new());
        return Ok(Vec::new());
    };
    if get::<bool>(&row, "paused")? {
        return Ok(Vec::new());
    }
    let limits = decode(&get::<String>(&row, "limits")?)?;
    let now = Timestamp::from_system_time(get(&row, "now")?);
    let mut queue_bucket = bucket(get(&row, "tokens")?, get(&row, "tokens_at")?);
    let start: Option<String> = get(&row, "cursor")?;
    let in_flight = if limits.max_in_flight.is_some() {
        let row = sql::query_one(
            &tx,
            "SELECT count(*) AS n FROM sluice_jobs WHERE queue = $1 AND state = 'leased'",
            &[&queue],
        )
        .await?;
        u32::try_from(get::<i64>(&row, "n")?).unwrap_or(u32::MAX)
    } else {
        0
    };
    let mut wake: Option<Timestamp> = None;
    let mut note_wake = |at: Option<Timestamp>| {
        if let Some(at) = at {
            wake = Some(wake.map_or(at, |w: Timestamp| w.min(at)));
        }
    };
    // What the queue's own limits allow now.
    let mut budget = credit;
    if let Some(max) = limits.max_in_flight {
        budget = budget.min(max.saturating_sub(in_flight));
    }
    if let Some(rate) = limits.rate {
        let b = queue_bucket.get_or_insert_with(|| Bucket::full(rate, now));
        budget = budget.min(u32::try_from(b.whole_tokens(rate, now)).unwrap_or(u32::MAX));
    }
    if budget == 0 {
        if let Some(hold) = queue_hold(&limits, in_flight, queue_bucket.as_ref(), now) {
            note_wake(hold.until);
        }
        drop(tx);
        schedule_wake(inner, wake, now);
        return Ok(Vec::new());
    }
    let job_types: Option<&Vec<String>> = (!want.job_types.is_empty()).then_some(&want.job_types);
    // The walk: round the keys with ready jobs from the cursor, each
    // dealt up to its weight per visit, until the budget is spent or a
    // whole round dealt nothing.
    let mut dealt: Vec<(String, i32)> = Vec::new();
    let mut dealt_at: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<String, KeyRow> = HashMap::new();
    let mut idle: HashSet<String> = HashSet::new();
    let mut cursor = start;
    'walk: while budget > 0 {
        // A page the size of what is left to deal: one job a key is the
        // common case.
        let size = i64::from(budget.clamp(8, MAX_KEYS_PER_PAGE));
        let page = next_keys(&tx, queue, job_types, cursor.as_deref(), size, credit).await?;
        if page.is_empty() {
            if cursor.is_none() {
                break;
            }
            cursor = None;
            continue;
        }
        let full = page.len() as i64 == size;
        for (key, row) in page {
            if idle.contains(&key) {
                break 'walk;
            }
            cursor = Some(key.clone());
            // A key met again in a later pass keeps what this claim did.
            let state = keys.entry(key.clone()).or_insert(row);
            let n = deal(&limits, &key, state, &mut budget, now, &mut note_wake);
            if n == 0 {
                idle.insert(key);
                continue;
            }
            idle.clear();
            match dealt_at.get(&key) {
                Some(&i) => dealt[i].1 += i32::try_from(n).unwrap_or(i32::MAX),
                None => {
                    dealt_at.insert(key.clone(), dealt.len());
                    dealt.push((key, i32::try_from(n).unwrap_or(i32::MAX)));
                }
            }
            if budget == 0 {
                break 'walk;
            }
        }
        if !full {
            // The last key: on from the first.
            cursor = None;
        }
    }
    // What the claim takes of the buckets (each job dealt: one the lease
    // finds gone meanwhile costs a token it did not use, never one more),
    // and where the next claim goes on; written with the leases.
    let dealt_total: i32 = dealt.iter().map(|(_, n)| *n).sum();
    if let Some(rate) = limits.rate
        && let Some(b) = queue_bucket.as_mut()
    {
        for _ in 0..dealt_total {
            b.take(rate, now);
        }
    }
    let taken: Vec<(&String, Bucket)> = keys
        .iter()
        .filter(|(_, k)| k.taken)
        .filter_map(|(key, k)| Some((key, k.bucket?)))
        .collect();
    let names: Vec<&str> = taken.iter().map(|(k, _)| k.as_str()).collect();
    let tokens: Vec<f64> = taken.iter().map(|(_, b)| b.tokens).collect();
    let ats: Vec<SystemTime> = taken.iter().map(|(_, b)| system_time(b.at)).collect();
    let (queue_tokens, queue_at) = (
        queue_bucket.map(|b| b.tokens),
        queue_bucket.map(|b| system_time(b.at)),
    );
    let state: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&queue, &queue_tokens, &queue_at, &cursor];
    let key_state: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
        [&queue, &names, &tokens, &ats];
    let (jobs, _, _) = tokio::try_join!(
        lease(inner, &tx, want, queue, job_types, &dealt),
        sql::execute(
            &tx,
            "UPDATE sluice_limits SET tokens = $2, tokens_at = $3, cursor = $4 WHERE queue = $1",
            &state,
        ),
        async {
            if names.is_empty() {
                return Ok(0);
            }
            sql::execute(
                &tx,
                "INSERT INTO sluice_keys (queue, key, tokens, tokens_at)
                 SELECT $1, key, tokens, at
                 FROM unnest($2::text[], $3::float8[], $4::timestamptz[]) AS t(key, tokens, at)
                 ON CONFLICT (queue, key) DO UPDATE
                 SET tokens = EXCLUDED.tokens, tokens_at = EXCLUDED.tokens_at",
                &key_state,
            )
            .await
        },
    )?;
    sql::commit(tx).await?;
    drop(client);
    if let Some(rate) = limits.rate
        && let Some(b) = queue_bucket
    {
        note_wake(b.wait(rate, now));
    }
    schedule_wake(inner, wake, now);
    Ok(jobs)
}

/// Deals jobs of `key` on one visit of the walk: up to its weight, its
/// ready jobs not dealt yet and the budget, while nothing holds it.
/// Returns how many.
fn deal(
    limits: &QueueLimits,
    key: &str,
    state: &mut KeyRow,
    budget: &mut u32,
    now: Timestamp,
    note_wake: &mut impl FnMut(Option<Timestamp>),
) -> u32 {
    let (weight, rate) = if key == NO_KEY {
        (1, None)
    } else {
        (limits.weight(key), limits.key_rate(key))
    };
    let mut n = 0;
    while n < weight && *budget > 0 && state.ready > 0 {
        if key != NO_KEY
            && let Some(hold) = key_hold(
                limits,
                key,
                state.in_flight,
                state.held_until,
                state.bucket.as_ref(),
                now,
            )
        {
            note_wake(hold.until);
            break;
        }
        if let Some(rate) = rate {
            state
                .bucket
                .get_or_insert_with(|| Bucket::full(rate, now))
                .take(rate, now);
            state.taken = true;
        }
        state.in_flight += 1;
        state.ready -= 1;
        n += 1;
        *budget -= 1;
    }
    n
}

/// Has the claimer run again when a hold ends.
fn schedule_wake(inner: &Inner, at: Option<Timestamp>, now: Timestamp) {
    if let Some(at) = at {
        let delay = at.saturating_since(now);
        inner.streams.wake_at(tokio::time::Instant::now() + delay);
    }
}

/// The next keys (at most `page`) with ready jobs of `job_types` after
/// `after` (from the first if `None`), in key order ('' is the jobs
/// without a key), skipping from key to key down the index; with each,
/// its ready jobs (up to `most`), jobs in flight, hold and bucket. One
/// round trip.
async fn next_keys(
    tx: &Transaction<'_>,
    queue: &str,
    job_types: Option<&Vec<String>>,
    after: Option<&str>,
    page: i64,
    most: u32,
) -> Result<Vec<(String, KeyRow)>> {
    // Two statements, not one with `$3 IS NULL OR ...`: a generic plan
    // of that could not start the index scan at the cursor.
    static FROM_FIRST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static AFTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = match after {
        None => FROM_FIRST.get_or_init(|| next_keys_sql(false)),
        Some(_) => AFTER.get_or_init(|| next_keys_sql(true)),
    };
    let most = i64::from(most);
    let after = after.unwrap_or_default();
    let rows = sql::query(tx, sql, &[&queue, &job_types, &after, &page, &most]).await?;
    rows.iter()
        .map(|row| {
            Ok((
                get::<String>(row, "key")?,
                KeyRow {
                    ready: u32::try_from(get::<i64>(row, "ready")?).unwrap_or(u32::MAX),
                    in_flight: u32::try_from(get::<i64>(row, "in_flight")?).unwrap_or(u32::MAX),
                    held_until: stamp(get(row, "held_until")?),
                    bucket: bucket(get(row, "tokens")?, get(row, "tokens_at")?),
                    taken: false,
                },
            ))
        })
        .collect()
}

/// The statement of [`next_keys`]: from the first key, or after `$3`.
fn next_keys_sql(after: bool) -> String {
    let first = if after {
        "coalesce(key, '') > $3"
    } else {
        "$3::text = ''"
    };
    format!(
        "WITH RECURSIVE k(key) AS (
             (SELECT coalesce(key, '') FROM sluice_jobs
              WHERE queue = $1 AND state = 'ready' AND {first}
                AND ($2::text[] IS NULL OR job_type = ANY($2))
              ORDER BY coalesce(key, '') LIMIT 1)
             UNION ALL
             SELECT (SELECT coalesce(j.key, '') FROM sluice_jobs j
                     WHERE j.queue = $1 AND j.state = 'ready' AND coalesce(j.key, '') > k.key
                       AND ($2::text[] IS NULL OR j.job_type = ANY($2))
                     ORDER BY coalesce(j.key, '') LIMIT 1)
             FROM k WHERE k.key IS NOT NULL
         ), page AS (SELECT key FROM k WHERE key IS NOT NULL LIMIT $4)
         SELECT p.key,
             (SELECT count(*) FROM (
                 SELECT 1 FROM sluice_jobs j
                 WHERE j.queue = $1 AND j.state = 'ready' AND coalesce(j.key, '') = p.key
                   AND ($2::text[] IS NULL OR j.job_type = ANY($2))
                 LIMIT $5) r) AS ready,
             (SELECT count(*) FROM sluice_jobs j
              WHERE j.queue = $1 AND j.state = 'leased' AND coalesce(j.key, '') = p.key)
                 AS in_flight,
             s.held_until, s.tokens, s.tokens_at
         FROM page p LEFT JOIN sluice_keys s ON s.queue = $1 AND s.key = p.key"
    )
}

/// Leases `dealt` (per key, how many of its first ready jobs) to `want`'s
/// stream; returns them in the order dealt, each key's in the contract's
/// order.
async fn lease(
    inner: &Inner,
    tx: &Transaction<'_>,
    want: &Want,
    queue: &str,
    job_types: Option<&Vec<String>>,
    dealt: &[(String, i32)],
) -> Result<Vec<JobSnapshot>> {
    if dealt.is_empty() {
        return Ok(Vec::new());
    }
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "WITH picked AS (
                 SELECT j.tid FROM unnest($3::text[], $8::int[]) AS d(key, n)
                 CROSS JOIN LATERAL (
                     SELECT ctid AS tid FROM sluice_jobs
                     WHERE queue = $1 AND state = 'ready' AND coalesce(key, '') = d.key
                       AND ($2::text[] IS NULL OR job_type = ANY($2))
                     ORDER BY priority DESC, run_at, seq
                     LIMIT d.n
                     FOR UPDATE SKIP LOCKED
                 ) j
             )
             {}",
            super::claims::lease_picked()
        )
    });
    let keys: Vec<&str> = dealt.iter().map(|(k, _)| k.as_str()).collect();
    let counts: Vec<i32> = dealt.iter().map(|(_, n)| *n).collect();
    let rows = sql::query(
        tx,
        sql,
        &[
            &queue,
            &job_types,
            &keys,
            &want.worker_id,
            &inner.broker_id,
            &want.stream,
            &millis(want.lease),
            &counts,
        ],
    )
    .await?;
    let rank: HashMap<&str, usize> = keys.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    let mut jobs = rows
        .iter()
        .map(|row| Ok((columns::seq(row)?, columns::job(row)?)))
        .collect::<Result<Vec<_>>>()?;
    jobs.sort_by(|(seq_a, a), (seq_b, b)| {
        let key = |j: &JobSnapshot| rank.get(j.key.as_deref().unwrap_or(NO_KEY)).copied();
        key(a)
            .cmp(&key(b))
            .then(b.priority.cmp(&a.priority))
            .then(a.run_at.cmp(&b.run_at))
            .then(seq_a.cmp(seq_b))
    });
    Ok(jobs.into_iter().map(|(_, job)| job).collect())
}

/// The keys of `queue` with jobs in flight or ready, or held back, most
/// jobs first, with what holds each (see [`sluice_queue::key_hold`]).
pub(super) async fn keys(inner: &Inner, queue: &str, limit: usize) -> Result<Vec<KeyStats>> {
    let limits = get_limits(inner, queue).await?;
    let client = sql::connection(&inner.pool).await?;
    let rows = sql::query(
        &client,
        "WITH counts AS (
             SELECT key, count(*) FILTER (WHERE state = 'leased') AS in_flight,
                 count(*) FILTER (WHERE state = 'ready') AS ready
             FROM sluice_jobs WHERE queue = $1 AND key IS NOT NULL
                 AND state IN ('leased', 'ready')
             GROUP BY key
         )
         SELECT coalesce(c.key, k.key) AS key, coalesce(c.in_flight, 0) AS in_flight,
             coalesce(c.ready, 0) AS ready, k.held_until, k.tokens, k.tokens_at, now() AS now
         FROM counts c FULL JOIN (SELECT * FROM sluice_keys WHERE queue = $1
                                  AND held_until > now()) k ON k.key = c.key
         ORDER BY coalesce(c.in_flight, 0) + coalesce(c.ready, 0) DESC, 1
         LIMIT $2",
        &[&queue, &i64::try_from(limit).unwrap_or(i64::MAX)],
    )
    .await?;
    rows.iter()
        .map(|row| {
            let key: String = get(row, "key")?;
            let now = Timestamp::from_system_time(get(row, "now")?);
            let in_flight = u32::try_from(get::<i64>(row, "in_flight")?).unwrap_or(u32::MAX);
            let held_until = stamp(get(row, "held_until")?);
            let b = bucket(get(row, "tokens")?, get(row, "tokens_at")?);
            Ok(KeyStats {
                held_by: key_hold(&limits, &key, in_flight, held_until, b.as_ref(), now)
                    .map(|h| h.reason),
                key,
                in_flight,
                ready: u64::try_from(get::<i64>(row, "ready")?).unwrap_or(0),
                held_until: held_until.filter(|&t| t > now),
            })
        })
        .collect()
}

/// The flow figures of Stats for each queue with limits: its limits, the
/// ready jobs held back by reason, and its top keys.
pub(super) async fn stats(inner: &Inner) -> Result<HashMap<String, sluice_queue::FlowStats>> {
    let client = sql::connection(&inner.pool).await?;
    let rows = sql::query(
        &client,
        "SELECT l.queue, l.limits::text AS limits, l.tokens, l.tokens_at, now() AS now,
             (SELECT count(*) FROM sluice_jobs j WHERE j.queue = l.queue
                 AND j.state = 'leased') AS in_flight,
             (SELECT count(*) FROM sluice_jobs j WHERE j.queue = l.queue
                 AND j.state = 'ready' AND j.key IS NULL) AS keyless_ready
         FROM sluice_limits l",
        &[],
    )
    .await?;
    drop(client);
    let mut out = HashMap::new();
    for row in &rows {
        let queue: String = get(row, "queue")?;
        let limits = decode(&get::<String>(row, "limits")?)?;
        let now = Timestamp::from_system_time(get(row, "now")?);
        let in_flight = u32::try_from(get::<i64>(row, "in_flight")?).unwrap_or(u32::MAX);
        let b = bucket(get(row, "tokens")?, get(row, "tokens_at")?);
        let queue_hold = queue_hold(&limits, in_flight, b.as_ref(), now).map(|h| h.reason);
        let keys = keys(inner, &queue, usize::MAX).await?;
        let keyless_ready = u64::try_from(get::<i64>(row, "keyless_ready")?).unwrap_or(0);
        out.insert(
            queue,
            sluice_queue::FlowStats::of(limits, keys, queue_hold, keyless_ready),
        );
    }
    Ok(out)
}
