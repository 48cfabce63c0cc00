//! Schedules on PostgreSQL (`sluice_schedules`, migration 0002): a row per
//! schedule, written only where its revision is the one expected. A fire
//! of many ticks locks their rows, inserts the jobs of those still at the
//! revision read with the enqueue's own statements and updates those rows
//! in one transaction, so each job and its schedule's new state commit
//! together or not at all; the firing loop's second write (the job's id)
//! is one statement for many schedules too.

use bytes::Bytes;
use sluice_queue::NewJob;
use tokio_postgres::Row;

use super::Inner;
use super::enqueue::{after_commit, insert_within, with_defaults};
use super::sql::{self, get};
use crate::backend::{BackendError, Expect, Fired, Millis, StoredSchedule, TickFire};

type Result<T> = std::result::Result<T, BackendError>;

const COLUMNS: &str = "name, revision, next_fire, body";

fn row_to_schedule(row: &Row) -> Result<StoredSchedule> {
    Ok(StoredSchedule {
        name: get(row, "name")?,
        revision: u64::try_from(get::<i64>(row, "revision")?).unwrap_or(0),
        next_fire: get(row, "next_fire")?,
        body: Bytes::from(get::<Vec<u8>>(row, "body")?),
    })
}

fn revision(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

pub(super) async fn all(inner: &Inner) -> Result<Vec<StoredSchedule>> {
    let client = sql::connection(&inner.pool).await?;
    let sql = format!("SELECT {COLUMNS} FROM sluice_schedules ORDER BY name");
    sql::query(&client, &sql, &[])
        .await?
        .iter()
        .map(row_to_schedule)
        .collect()
}

pub(super) async fn one(inner: &Inner, name: &str) -> Result<Option<StoredSchedule>> {
    let client = sql::connection(&inner.pool).await?;
    let sql = format!("SELECT {COLUMNS} FROM sluice_schedules WHERE name = $1");
    sql::query_opt(&client, &sql, &[&name])
        .await?
        .as_ref()
        .map(row_to_schedule)
        .transpose()
}

pub(super) async fn due(inner: &Inner, until: Millis, limit: usize) -> Result<Vec<StoredSchedule>> {
    let client = sql::connection(&inner.pool).await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM sluice_schedules WHERE next_fire <= $1
         ORDER BY next_fire LIMIT $2"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    sql::query(&client, &sql, &[&until, &limit])
        .await?
        .iter()
        .map(row_to_schedule)
        .collect()
}

pub(super) async fn next_fire(inner: &Inner) -> Result<Option<Millis>> {
    let client = sql::connection(&inner.pool).await?;
    let row = sql::query_one(
        &client,
        "SELECT min(next_fire) AS next_fire FROM sluice_schedules",
        &[],
    )
    .await?;
    get(&row, "next_fire")
}

pub(super) async fn put(inner: &Inner, schedule: StoredSchedule, expect: Expect) -> Result<bool> {
    let client = sql::connection(&inner.pool).await?;
    let rev = revision(schedule.revision);
    let body = schedule.body.as_ref();
    let changed = match expect {
        Expect::Absent => {
            sql::execute(
                &client,
                "INSERT INTO sluice_schedules (name, revision, next_fire, body)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
                &[&schedule.name, &rev, &schedule.next_fire, &body],
            )
            .await?
        }
        Expect::Revision(expected) => update(&client, &schedule, expected).await?,
    };
    Ok(changed == 1)
}

/// Writes `schedule` where it is at revision `expected`; the rows changed.
async fn update(
    client: &impl deadpool_postgres::GenericClient,
    schedule: &StoredSchedule,
    expected: u64,
) -> Result<u64> {
    sql::execute(
        client,
        "UPDATE sluice_schedules SET revision = $2, next_fire = $3, body = $4
         WHERE name = $1 AND revision = $5",
        &[
            &schedule.name,
            &revision(schedule.revision),
            &schedule.next_fire,
            &schedule.body.as_ref(),
            &revision(expected),
        ],
    )
    .await
}

pub(super) async fn delete(inner: &Inner, name: &str) -> Result<bool> {
    let client = sql::connection(&inner.pool).await?;
    let deleted = sql::execute(
        &client,
        "DELETE FROM sluice_schedules WHERE name = $1",
        &[&name],
    )
    .await?;
    Ok(deleted == 1)
}

/// One statement writes every schedule of `writes` at its expected
/// revision; whether each was written, in order.
pub(super) async fn put_many(
    inner: &Inner,
    writes: Vec<(StoredSchedule, u64)>,
) -> Result<Vec<bool>> {
    let client = sql::connection(&inner.pool).await?;
    let schedules: Vec<&StoredSchedule> = writes.iter().map(|(s, _)| s).collect();
    let expected: Vec<i64> = writes.iter().map(|(_, e)| revision(*e)).collect();
    let written = update_many(&client, &schedules, &expected).await?;
    Ok(writes
        .iter()
        .map(|(s, _)| written.contains(&s.name))
        .collect())
}

/// Writes each of `schedules` where it is at the revision of the same
/// place in `expected`, in one statement; the names written.
async fn update_many(
    client: &impl deadpool_postgres::GenericClient,
    schedules: &[&StoredSchedule],
    expected: &[i64],
) -> Result<std::collections::HashSet<String>> {
    if schedules.is_empty() {
        return Ok(std::collections::HashSet::new());
    }
    let names: Vec<&str> = schedules.iter().map(|s| s.name.as_str()).collect();
    let revisions: Vec<i64> = schedules.iter().map(|s| revision(s.revision)).collect();
    let next: Vec<Option<i64>> = schedules.iter().map(|s| s.next_fire).collect();
    let bodies: Vec<&[u8]> = schedules.iter().map(|s| s.body.as_ref()).collect();
    let rows = sql::query(
        client,
        "UPDATE sluice_schedules AS s
         SET revision = u.revision, next_fire = u.next_fire, body = u.body
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[], $5::bigint[])
              AS u(name, revision, next_fire, body, expected)
         WHERE s.name = u.name AND s.revision = u.expected
         RETURNING s.name",
        &[&names, &revisions, &next, &bodies, &expected],
    )
    .await?;
    rows.iter().map(|row| get::<String>(row, "name")).collect()
}

/// Fires `ticks` in one transaction: their rows locked, skipping those
/// another broker has locked (it is firing them: if it fails, they are
/// still due for the next pass), the jobs of those at their expected
/// revision inserted with the enqueue's own statements, and those rows
/// updated; one commit for all. Skipping, not waiting, is what lets
/// brokers that read the same due schedules split them instead of
/// queueing behind each other's transactions.
pub(super) async fn fire_many(
    inner: &Inner,
    mut ticks: Vec<TickFire>,
) -> Result<Vec<Option<Fired>>> {
    for tick in &mut ticks {
        with_defaults(&mut tick.job, &inner.queue);
    }
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let names: Vec<&str> = ticks.iter().map(|t| t.schedule.name.as_str()).collect();
    let locked = sql::query(
        &tx,
        "SELECT name, revision FROM sluice_schedules
         WHERE name = ANY($1) FOR UPDATE SKIP LOCKED",
        &[&names],
    )
    .await?;
    let mut current = std::collections::HashMap::new();
    for row in &locked {
        current.insert(get::<String>(row, "name")?, get::<i64>(row, "revision")?);
    }
    // The ticks whose schedule is as it was read.
    let live: Vec<usize> = (0..ticks.len())
        .filter(|&i| current.get(&ticks[i].schedule.name) == Some(&revision(ticks[i].expect)))
        .collect();
    let jobs: Vec<&NewJob> = live.iter().map(|&i| &ticks[i].job).collect();
    let known = &inner.enqueuer.known;
    let (answers, added, queues) =
        insert_within(&tx, &jobs, inner.queue.max_queue_size, known).await?;
    let advanced: Vec<usize> = live
        .iter()
        .zip(&answers)
        .filter(|(_, answer)| answer.is_ok())
        .map(|(&i, _)| i)
        .collect();
    let schedules: Vec<&StoredSchedule> = advanced.iter().map(|&i| &ticks[i].schedule).collect();
    let expected: Vec<i64> = advanced
        .iter()
        .map(|&i| revision(ticks[i].expect))
        .collect();
    update_many(&tx, &schedules, &expected).await?;
    sql::commit(tx).await?;
    after_commit(&inner.notifier, known, added, queues);
    let mut fired: Vec<Option<Fired>> = ticks.iter().map(|_| None).collect();
    for (&i, answer) in live.iter().zip(answers) {
        if let Ok(e) = &answer
            && !e.duplicate
        {
            inner.counts.add(&ticks[i].job.queue, |c| c.enqueued += 1);
        }
        fired[i] = Some(answer);
    }
    inner.streams.wake();
    Ok(fired)
}
