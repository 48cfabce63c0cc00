//! Schedules on PostgreSQL (`sluice_schedules`, migration 0002): a row per
//! schedule, written only where its revision is the one expected; a fire
//! locks the row, inserts the tick's job with the enqueue's own statements
//! and updates the row in one transaction, so the job and the schedule's
//! new state commit together or not at all.

use bytes::Bytes;
use sluice_queue::NewJob;
use tokio_postgres::Row;

use super::Inner;
use super::enqueue::{after_commit, insert_within, with_defaults};
use super::sql::{self, get};
use crate::backend::{BackendError, Expect, Fired, Millis, StoredSchedule};

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

pub(super) async fn fire(
    inner: &Inner,
    schedule: StoredSchedule,
    expect: u64,
    mut job: NewJob,
) -> Result<Option<Fired>> {
    with_defaults(&mut job, &inner.queue);
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let locked = sql::query_opt(
        &tx,
        "SELECT revision FROM sluice_schedules WHERE name = $1 FOR UPDATE",
        &[&schedule.name],
    )
    .await?;
    let current = match &locked {
        Some(row) => Some(get::<i64>(row, "revision")?),
        None => None,
    };
    if current != Some(revision(expect)) {
        return Ok(None);
    }
    let known = &inner.enqueuer.known;
    let (mut answers, added, queues) =
        insert_within(&tx, &[&job], inner.queue.max_queue_size, known).await?;
    let answer = answers.pop().ok_or(BackendError::Internal)?;
    if answer.is_ok() {
        update(&tx, &schedule, expect).await?;
    }
    sql::commit(tx).await?;
    after_commit(&inner.notifier, known, added, queues);
    if let Ok(e) = &answer
        && !e.duplicate
    {
        inner.counts.add(&job.queue, |c| c.enqueued += 1);
    }
    inner.streams.wake();
    Ok(Some(answer))
}
