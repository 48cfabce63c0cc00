//! Schedules on Redis (the key layout is in `lua/lib.lua`): a hash per
//! schedule, a set of names and a sorted set by next tick; a put and a
//! fire are each one script, checking the revision inside it, and a fire
//! runs `enqueue.lua`'s body in the same script, so the tick's job and the
//! schedule's new state are written together or not at all. Many puts or
//! fires go in one script call.

use bytes::Bytes;
use redis::Value;

use super::Inner;
use super::enqueue::{answers, enqueue_args};
use super::scripts::{reply, scripts};
use crate::backend::{BackendError, Expect, Fired, Millis, StoredSchedule, TickFire};

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
    let written = put_all(inner, vec![(schedule, expect)]).await?;
    Ok(written.first() == Some(&true))
}

pub(super) async fn delete(inner: &Inner, name: &str) -> Result<bool> {
    let answered = inner
        .call()
        .arg(name)
        .arg("*")
        .arg("")
        .arg("")
        .arg("")
        .run(&inner.conn, &scripts().schedule_put)
        .await?;
    let deleted = reply::items(&answered)?;
    Ok(reply::int::<u64>(reply::at(deleted, 0)?)? == 1)
}

/// Every write in one script call.
pub(super) async fn put_many(
    inner: &Inner,
    writes: Vec<(StoredSchedule, u64)>,
) -> Result<Vec<bool>> {
    let writes = writes
        .into_iter()
        .map(|(schedule, expect)| (schedule, Expect::Revision(expect)))
        .collect();
    put_all(inner, writes).await
}

async fn put_all(inner: &Inner, writes: Vec<(StoredSchedule, Expect)>) -> Result<Vec<bool>> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = inner.call();
    for (schedule, expect) in &writes {
        call = call
            .arg(&schedule.name)
            .arg(expected(*expect))
            .arg(schedule.revision)
            .arg(next_arg(schedule.next_fire))
            .arg(schedule.body.as_ref());
    }
    let answered = call.run(&inner.conn, &scripts().schedule_put).await?;
    let written = reply::items(&answered)?;
    if written.len() != writes.len() {
        return Err(reply::malformed("an answer per schedule"));
    }
    written
        .iter()
        .map(|w| Ok(reply::int::<u64>(w)? == 1))
        .collect()
}

/// Every tick in one script call (each tick atomic on its own, and the
/// whole call too, as any script).
pub(super) async fn fire_many(inner: &Inner, ticks: Vec<TickFire>) -> Result<Vec<Option<Fired>>> {
    if ticks.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = inner.call();
    for tick in &ticks {
        call = enqueue_args(call, inner, &tick.job.queue, std::iter::once(&tick.job))
            .arg(&tick.schedule.name)
            .arg(tick.expect.to_string())
            .arg(tick.schedule.revision)
            .arg(next_arg(tick.schedule.next_fire))
            .arg(tick.schedule.body.as_ref());
    }
    let answered = call.run(&inner.conn, &scripts().schedule_fire).await?;
    let items = reply::items(&answered)?;
    if items.len() != ticks.len() {
        return Err(reply::malformed("an answer per tick"));
    }
    let mut fired = Vec::with_capacity(ticks.len());
    let mut woken = false;
    for (tick, item) in ticks.iter().zip(items) {
        if let Ok(parts) = reply::items(item)
            && let Some(first) = parts.first()
            && reply::text(first).ok().flatten().as_deref() == Some("stale")
        {
            fired.push(None);
            continue;
        }
        let (_, answer, ready) = answers(inner, &tick.job.queue, vec![0], item)?
            .pop()
            .ok_or_else(|| reply::malformed("an answer for the tick's job"))?;
        woken |= ready;
        fired.push(Some(answer));
    }
    if woken {
        inner.streams.wake();
    }
    Ok(fired)
}
