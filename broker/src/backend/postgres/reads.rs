//! What the backend reads without changing anything: a job, a page of
//! jobs, the queues of jobs, Stats' figures, and the counts the drain and
//! the shutdown report need.

use std::collections::BTreeMap;

use sluice_queue::{
    Counters, FailedAttempt, JobFilter, JobSnapshot, JobState, QueueError, QueueStats,
    RECENT_FAILURES,
};
use uuid::Uuid;

use super::columns::{self, Table, columns};
use super::sql::{self, get};
use super::{Inner, registry};
use crate::backend::cluster::{Counts, add_counters, wait_for_leases};
use crate::backend::{BackendError, JobPage, StatsReading};

type Result<T> = std::result::Result<T, BackendError>;

/// The state of job `id`, if it is known.
pub(super) async fn state_now(inner: &Inner, id: Uuid) -> Result<Option<JobState>> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_opt(
        &client,
        "SELECT state FROM sluice_jobs WHERE id = $1
             UNION ALL SELECT state FROM sluice_finished WHERE id = $1",
        &[&id],
    )
    .await?;
    row.as_ref().map(columns::state).transpose()
}

pub(super) async fn queues_of(inner: &Inner, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    let client = sql::connection(&inner.pool).await?;
    let rows = sql::query(
        &client,
        "SELECT id, queue FROM sluice_jobs WHERE id = ANY($1)
             UNION ALL SELECT id, queue FROM sluice_finished WHERE id = ANY($1)",
        &[&ids],
    )
    .await?;
    rows.iter()
        .map(|row| Ok((get(row, "id")?, get(row, "queue")?)))
        .collect()
}

pub(super) async fn job(inner: &Inner, id: Uuid) -> Result<JobSnapshot> {
    let client = sql::connection(&inner.pool).await?;
    let sql = format!(
        "SELECT {} FROM sluice_jobs WHERE id = $1
         UNION ALL SELECT {} FROM sluice_finished WHERE id = $1",
        columns(Table::Unfinished),
        columns(Table::Finished)
    );
    match sql::query_opt(&client, &sql, &[&id]).await? {
        Some(row) => columns::job(&row),
        None => Err(QueueError::UnknownJob { job_id: id }.into()),
    }
}

pub(super) async fn list(
    inner: &Inner,
    filter: JobFilter,
    after: Option<u64>,
    limit: usize,
) -> Result<JobPage> {
    let after = after.map_or(0, |a| i64::try_from(a).unwrap_or(i64::MAX));
    let state = filter.state.map(JobState::stored_name);
    let tables = match filter.state {
        None => vec![Table::Unfinished, Table::Finished],
        Some(s) => vec![Table::of(s)],
    };
    let sql = tables
        .iter()
        .map(|&table| {
            format!(
                "SELECT {} FROM {} WHERE seq > $1
                     AND ($2::text IS NULL OR queue = $2) AND ($3::text IS NULL OR state = $3)
                     AND ($5 OR queue = ANY($6::text[])
                          OR EXISTS (SELECT 1 FROM unnest($7::text[]) AS p(prefix)
                                     WHERE starts_with(queue, p.prefix)))",
                columns(table),
                table.name()
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
        + " ORDER BY seq LIMIT $4";
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
    let (exact, prefixes) = filter.scope.split();
    let client = sql::connection(&inner.pool).await?;
    let found = sql::query(
        &client,
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
    .await?;
    let more = found.len() > limit;
    let page = &found[..found.len().min(limit)];
    let next = match page.last() {
        Some(last) if more => u64::try_from(columns::seq(last)?).ok(),
        _ => None,
    };
    Ok(JobPage {
        jobs: page.iter().map(columns::job).collect::<Result<_>>()?,
        next,
    })
}

/// Every queue's figures.
pub(super) async fn stats(inner: &Inner) -> Result<StatsReading> {
    let mut reading = counters(inner).await?;
    let client = sql::connection(&inner.pool).await?;
    let mut queues: BTreeMap<String, QueueStats> = reading
        .queues
        .drain(..)
        .map(|q| (q.queue.clone(), q))
        .collect();
    let counts = sql::query(
        &client,
        "SELECT queue, state, count(*) AS n FROM sluice_jobs GROUP BY 1, 2
             UNION ALL SELECT queue, state, count(*) AS n FROM sluice_finished GROUP BY 1, 2",
        &[],
    )
    .await?;
    for row in &counts {
        if let Some(q) = queues.get_mut(get::<&str>(row, "queue")?) {
            let n: i64 = get(row, "n")?;
            q.counts[columns::state(row)?.index()] = u64::try_from(n).unwrap_or(0);
        }
    }
    let oldest = sql::query(
        &client,
        "SELECT queue, min(run_at) AS due FROM sluice_jobs WHERE state = 'ready' GROUP BY queue",
        &[],
    )
    .await?;
    for row in &oldest {
        if let Some(q) = queues.get_mut(get::<&str>(row, "queue")?) {
            q.oldest_ready_due = Some(columns::timestamp(get(row, "due")?));
        }
    }
    let failures = sql::query(
        &client,
        "SELECT job_id, queue, job_type, attempt, error, failed_at, dead, worker_id
             FROM (SELECT * FROM sluice_failures ORDER BY id DESC LIMIT $1) f ORDER BY id",
        &[&i64::try_from(RECENT_FAILURES).unwrap_or(50)],
    )
    .await?;
    reading.recent_failures = failures
        .iter()
        .map(|row| {
            Ok(FailedAttempt {
                job_id: get(row, "job_id")?,
                queue: get(row, "queue")?,
                job_type: get(row, "job_type")?,
                attempt: u32::try_from(get::<i32>(row, "attempt")?).unwrap_or(0),
                error: get(row, "error")?,
                failed_at: columns::timestamp(get(row, "failed_at")?),
                dead: get(row, "dead")?,
                worker_id: get(row, "worker_id")?,
            })
        })
        .collect::<Result<_>>()?;
    drop(client);
    for (queue, flow) in super::flow::stats(inner).await? {
        if let Some(q) = queues.get_mut(&queue) {
            q.flow = flow;
        }
    }
    reading.queues = queues.into_values().collect();
    Ok(reading)
}

/// Every queue with its pause flag and lifetime counters (every broker's,
/// and those of brokers gone), without the counts by state.
pub(super) async fn counters(inner: &Inner) -> Result<StatsReading> {
    let client = sql::connection(&inner.pool).await?;
    let now = columns::timestamp(get(
        &sql::query_one(&client, "SELECT now() AS now", &[]).await?,
        "now",
    )?);
    let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
    for row in sql::query(
        &client,
        "SELECT queue, queue IN (SELECT queue FROM sluice_paused) AS paused FROM sluice_queues",
        &[],
    )
    .await?
    {
        let queue: String = get(&row, "queue")?;
        let stats = QueueStats {
            queue: queue.clone(),
            paused: get(&row, "paused")?,
            counts: [0; 6],
            counters: Counters::default(),
            ..QueueStats::default()
        };
        queues.insert(queue, stats);
    }
    // Other brokers' counters as of their last heartbeat, those of brokers
    // gone, and this broker's own as they are now.
    let others = sql::query(
        &client,
        "SELECT counters::text AS counters FROM sluice_brokers WHERE broker_id <> $1
             UNION ALL SELECT json_object_agg(queue, json_build_array(enqueued, acked, nacked,
                 expired, dead))::text FROM sluice_counters HAVING count(*) > 0",
        &[&inner.broker_id],
    )
    .await?;
    let mut all = inner.counts.snapshot();
    for row in &others {
        all.extend(Counts::parse(get(row, "counters")?));
    }
    add_counters(&mut queues, all);
    Ok(StatsReading {
        queues: queues.into_values().collect(),
        recent_failures: Vec::new(),
        now,
    })
}

/// The gauges' reading: every queue's figures and every broker's streams.
pub(super) async fn gauges(inner: &Inner) -> Result<crate::backend::GaugeReading> {
    Ok(crate::backend::GaugeReading {
        stats: stats(inner).await?,
        workers: registry::workers(inner).await?,
        held: None,
        store: None,
    })
}

/// Waits until no job is leased to this broker's streams, or `deadline`.
pub(super) async fn leases_resolved(inner: &Inner, deadline: tokio::time::Instant) -> usize {
    wait_for_leases(deadline, || async {
        let client = sql::connection(&inner.pool).await?;
        let row = sql::query_one(
            &client,
            "SELECT count(*) AS n FROM sluice_jobs WHERE broker_id = $1 AND state = 'leased'",
            &[&inner.broker_id],
        )
        .await?;
        Ok(usize::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    })
    .await
}

/// Jobs scheduled, ready or leased, in the whole database.
pub(super) async fn unfinished(inner: &Inner) -> Result<u64> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_one(&client, "SELECT count(*) AS n FROM sluice_jobs", &[]).await?;
    Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
}
