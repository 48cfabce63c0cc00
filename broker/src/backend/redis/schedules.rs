//! Schedules on Redis (the key layout is in `lua/lib.lua`): a hash per
//! schedule, a set of names and a sorted set by next tick; a put and a
//! fire are each one script, checking the revision inside it, and a fire
//! runs `enqueue.lua`'s body in the same script, so the tick's job and the
//! schedule's new state are written together or not at all.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;
use sluice_queue::NewJob;

use super::Inner;
use super::enqueue::{answers, enqueue_call};
use super::scripts::{reply, scripts};
use crate::backend::{BackendError, Expect, Fired, Millis, StoredSchedule};

type Result<T> = std::result::Result<T, BackendError>;

fn expected(expect: Expect) -> String {
    match expect {
        Expect::Absent => String::new(),
        Expect::Revision(r) => r.to_string(),
    }
}

fn next_arg(next_fire: Option<Millis>) -> String {
    next_fire.map_or_else(String::new, |at| at.to_string())
}

/// Reads with `schedule_read.lua` in `mode`.
async fn read(inner: &Inner, args: &[String]) -> Result<Vec<StoredSchedule>> {
    let answered = inner
        .call()
        .args(args)
        .run(&inner.conn, &scripts().schedule_read)
        .await?;
    reply::items(&answered)?
        .iter()
        .map(|row| {
            let row = reply::items(row)?;
            Ok(StoredSchedule {
                name: reply::string(reply::at(row, 0)?)?,
                revision: reply::int(reply::at(row, 1)?)?,
                next_fire: reply::number(reply::at(row, 2)?)?,
                body: Bytes::from(reply::bytes(reply::at(row, 3)?)?),
            })
        })
        .collect()
}

pub(super) async fn all(inner: &Inner) -> Result<Vec<StoredSchedule>> {
    read(inner, &["all".into()]).await
}

pub(super) async fn one(inner: &Inner, name: &str) -> Result<Option<StoredSchedule>> {
    Ok(read(inner, &["one".into(), name.into()]).await?.pop())
}

pub(super) async fn due(inner: &Inner, until: Millis, limit: usize) -> Result<Vec<StoredSchedule>> {
    // ZRANGE's LIMIT is a signed 64-bit count.
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    read(inner, &["due".into(), until.to_string(), limit.to_string()]).await
}

pub(super) async fn next_fire(inner: &Inner) -> Result<Option<Millis>> {
    let answered = inner
        .call()
        .arg("next")
        .run(&inner.conn, &scripts().schedule_read)
        .await?;
    match answered {
        Value::Nil | Value::Boolean(false) => Ok(None),
        ref v => reply::number(v),
    }
}

pub(super) async fn put(inner: &Inner, schedule: StoredSchedule, expect: Expect) -> Result<bool> {
    let answered = inner
        .call()
        .arg(&schedule.name)
        .arg(expected(expect))
        .arg(schedule.revision)
        .arg(next_arg(schedule.next_fire))
        .arg(schedule.body.as_ref())
        .run(&inner.conn, &scripts().schedule_put)
        .await?;
    Ok(reply::int::<u64>(&answered)? == 1)
}

pub(super) async fn delete(inner: &Inner, name: &str) -> Result<bool> {
    let answered = inner
        .call()
        .arg(name)
        .arg("*")
        .run(&inner.conn, &scripts().schedule_put)
        .await?;
    Ok(reply::int::<u64>(&answered)? == 1)
}

pub(super) async fn fire(
    inner: &Arc<Inner>,
    schedule: StoredSchedule,
    expect: u64,
    job: NewJob,
) -> Result<Option<Fired>> {
    let queue = job.queue.clone();
    let answered = enqueue_call(inner, &queue, std::iter::once(&job))
        .arg(&schedule.name)
        .arg(expect.to_string())
        .arg(schedule.revision)
        .arg(next_arg(schedule.next_fire))
        .arg(schedule.body.as_ref())
        .run(&inner.conn, &scripts().schedule_fire)
        .await?;
    if let Ok(items) = reply::items(&answered)
        && let Some(first) = items.first()
        && reply::text(first).ok().flatten().as_deref() == Some("stale")
    {
        return Ok(None);
    }
    let (_, answer, ready) = answers(inner, &queue, vec![0], &answered)?
        .pop()
        .ok_or_else(|| reply::malformed("an answer for the tick's job"))?;
    if ready {
        inner.streams.wake();
    }
    Ok(Some(answer))
}
