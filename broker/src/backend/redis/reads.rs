//! What the backend reads without changing anything: a job, a page of
//! jobs, the queues of jobs, Stats' figures, and the counts the drain and
//! the shutdown report need.

use std::collections::BTreeMap;

use redis::Value;
use sluice_queue::{
    Counters, FailedAttempt, JobFilter, JobSnapshot, JobState, QueueError, QueueStats,
    RECENT_FAILURES, Timestamp,
};
use uuid::Uuid;

use super::scripts::{reply, scripts};
use super::{Inner, job, registry};
use crate::backend::cluster::{Counts, add_counters, wait_for_leases};
use crate::backend::{BackendError, GaugeReading, JobPage, StatsReading};

type Result<T> = std::result::Result<T, BackendError>;

pub(super) async fn queues_of(inner: &Inner, ids: &[Uuid]) -> Result<Vec<(Uuid, String)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let answer = inner
        .call()
        .args(ids.iter().map(Uuid::to_string))
        .run(&inner.conn, &scripts().queues_of)
        .await?;
    let mut out = Vec::new();
    for (id, queue) in ids.iter().zip(reply::items(&answer)?) {
        let queue = reply::string(queue)?;
        if !queue.is_empty() {
            out.push((*id, queue));
        }
    }
    Ok(out)
}

pub(super) async fn job(inner: &Inner, id: Uuid) -> Result<JobSnapshot> {
    let answer = inner
        .call()
        .arg(id.to_string())
        .run(&inner.conn, &scripts().get)
        .await?;
    let fields = reply::items(&answer)?;
    if fields.is_empty() {
        return Err(QueueError::UnknownJob { job_id: id }.into());
    }
    job::job(fields)
}

pub(super) async fn list(
    inner: &Inner,
    filter: JobFilter,
    after: Option<u64>,
    limit: usize,
) -> Result<JobPage> {
    let (exact, prefixes) = filter.scope.split();
    // Each step answers its first jobs after `after`, in order; the page
    // is the first `limit` of them all.
    let mut found: BTreeMap<u64, JobSnapshot> = BTreeMap::new();
    let mut cursor = "0".to_owned();
    loop {
        let answer = inner
            .call()
            .arg(after.unwrap_or(0))
            .arg(limit.saturating_add(1))
            .arg(filter.state.map_or("", JobState::stored_name))
            .arg(filter.queue.as_deref().unwrap_or(""))
            .arg(&cursor)
            .arg(if filter.scope.is_every() { "1" } else { "0" })
            .arg(exact.len())
            .args(&exact)
            .arg(prefixes.len())
            .args(&prefixes)
            .run(&inner.conn, &scripts().list)
            .await?;
        let answer = reply::items(&answer)?;
        for entry in reply::items(reply::at(answer, 1)?)? {
            let entry = reply::items(entry)?;
            let seq: u64 = reply::int(reply::at(entry, 0)?)?;
            found.insert(seq, job::job(reply::items(reply::at(entry, 1)?)?)?);
        }
        while found.len() > limit.saturating_add(1) {
            found.pop_last();
        }
        cursor = reply::string(reply::at(answer, 0)?)?;
        if cursor == "0" {
            break;
        }
    }
    let more = found.len() > limit;
    let page: Vec<(u64, JobSnapshot)> = found.into_iter().take(limit).collect();
    let next = page.last().map(|(seq, _)| *seq).filter(|_| more);
    Ok(JobPage {
        jobs: page.into_iter().map(|(_, job)| job).collect(),
        next,
    })
}

/// Every queue's figures; without `counts`, only its pause and lifetime
/// counters (every broker's, and those of brokers gone).
pub(super) async fn stats(inner: &Inner, counts: bool) -> Result<StatsReading> {
    let mut queues: BTreeMap<String, QueueStats> = BTreeMap::new();
    let (mut cursor, mut now) = ("0".to_owned(), None);
    let mut all = inner.counts.snapshot();
    let mut recent_failures = Vec::new();
    loop {
        let first = cursor == "0";
        let answer = inner
            .call()
            .arg(&cursor)
            .arg(if counts { "1" } else { "0" })
            .arg(RECENT_FAILURES)
            .run(&inner.conn, &scripts().stats)
            .await?;
        let answer = reply::items(&answer)?;
        now.get_or_insert(job::timestamp(reply::int(reply::at(answer, 1)?)?));
        for row in reply::items(reply::at(answer, 2)?)? {
            let stats = queue_stats(reply::items(row)?, counts)?;
            queues.insert(stats.queue.clone(), stats);
        }
        if first {
            all.extend(gone_counters(reply::items(reply::at(answer, 3)?)?)?);
            for others in reply::items(reply::at(answer, 4)?)? {
                all.extend(Counts::parse(&reply::string(others)?));
            }
            recent_failures = reply::items(reply::at(answer, 5)?)?
                .iter()
                .map(failure)
                .collect::<Result<Vec<_>>>()?;
            // Newest first in Redis; newest last in a reading.
            recent_failures.reverse();
        }
        cursor = reply::string(reply::at(answer, 0)?)?;
        if cursor == "0" {
            break;
        }
    }
    add_counters(&mut queues, all);
    if counts {
        for (queue, flow) in super::flow::stats(inner).await? {
            if let Some(q) = queues.get_mut(&queue) {
                q.flow = flow;
            }
        }
    }
    Ok(StatsReading {
        queues: queues.into_values().collect(),
        recent_failures,
        now: now.unwrap_or(Timestamp::from_micros(0)),
    })
}

/// One queue's row of a Stats step.
fn queue_stats(row: &[Value], counts: bool) -> Result<QueueStats> {
    let mut stats = QueueStats {
        queue: reply::string(reply::at(row, 0)?)?,
        paused: reply::string(reply::at(row, 1)?)? == "1",
        counts: [0; 6],
        counters: Counters::default(),
        ..QueueStats::default()
    };
    if counts {
        for state in JobState::ALL {
            stats.counts[state.index()] = reply::int(reply::at(row, 2 + state.index())?)?;
        }
        stats.oldest_ready_due = reply::number::<u64>(reply::at(row, 8)?)?.map(job::timestamp);
    }
    Ok(stats)
}

/// The counters of brokers gone: `queue|i` and value pairs.
fn gone_counters(pairs: &[Value]) -> Result<Vec<(String, Counters)>> {
    let mut by_queue: BTreeMap<String, Counters> = BTreeMap::new();
    for pair in pairs.chunks(2) {
        let [field, value] = pair else {
            return Err(reply::malformed("field and value pairs"));
        };
        let field = reply::string(field)?;
        let (queue, i) = field
            .rsplit_once('|')
            .ok_or_else(|| reply::malformed("a counter field"))?;
        let value: u64 = reply::int(value)?;
        let c = by_queue.entry(queue.to_owned()).or_default();
        match i {
            "0" => c.enqueued = value,
            "1" => c.acked = value,
            "2" => c.nacked = value,
            "3" => c.expired = value,
            "4" => c.dead = value,
            _ => return Err(reply::malformed("a counter field")),
        }
    }
    Ok(by_queue.into_iter().collect())
}

/// A failed attempt as `lua/fail.lua` records it (a JSON array).
fn failure(v: &Value) -> Result<FailedAttempt> {
    let json: serde_json::Value = serde_json::from_str(&reply::string(v)?)
        .map_err(|_| reply::malformed("a failure record"))?;
    let field = |i: usize| {
        json.get(i)
            .ok_or_else(|| reply::malformed("a failure field"))
    };
    let text = |i: usize| -> Result<String> {
        Ok(field(i)?
            .as_str()
            .ok_or_else(|| reply::malformed("a failure field"))?
            .to_owned())
    };
    let number = |i: usize| field(i).map(|v| v.as_f64().unwrap_or(0.0));
    Ok(FailedAttempt {
        job_id: text(0)?.parse().map_err(|_| reply::malformed("a job id"))?,
        queue: text(1)?,
        job_type: text(2)?,
        attempt: number(3)? as u32,
        error: text(4)?,
        failed_at: job::timestamp(
            text(5)?
                .parse()
                .map_err(|_| reply::malformed("a failure time"))?,
        ),
        dead: field(6)?.as_bool().unwrap_or(false),
        worker_id: text(7)?,
    })
}

/// The gauges' reading: every queue's figures and every broker's streams.
pub(super) async fn gauges(inner: &Inner) -> Result<GaugeReading> {
    Ok(GaugeReading {
        stats: stats(inner, true).await?,
        workers: registry::workers(inner).await?,
        held: None,
        store: None,
    })
}

/// Jobs scheduled, ready or leased in every queue.
pub(super) async fn unfinished(inner: &Inner) -> Result<u64> {
    let mut by_queue: BTreeMap<String, u64> = BTreeMap::new();
    let mut cursor = "0".to_owned();
    loop {
        let answer = inner
            .call()
            .arg(&cursor)
            .run(&inner.conn, &scripts().unfinished)
            .await?;
        let answer = reply::items(&answer)?;
        for pair in answer[1..].chunks(2) {
            let [queue, count] = pair else {
                return Err(reply::malformed("queue and count pairs"));
            };
            by_queue.insert(reply::string(queue)?, reply::int(count)?);
        }
        cursor = reply::string(reply::at(answer, 0)?)?;
        if cursor == "0" {
            return Ok(by_queue.values().sum());
        }
    }
}

/// The leases this broker's streams hold.
async fn held(inner: &Inner) -> Result<usize> {
    let held = inner.call().run(&inner.conn, &scripts().held).await?;
    Ok(reply::items(&held)?.len())
}

/// Waits until no job is leased to this broker's streams, or `deadline`.
pub(super) async fn leases_resolved(inner: &Inner, deadline: tokio::time::Instant) -> usize {
    wait_for_leases(deadline, || held(inner)).await
}
