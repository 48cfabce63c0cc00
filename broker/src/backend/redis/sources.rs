//! Source groups on Redis (the key layout is in `lua/lib.lua`): a hash
//! per row and a set of each group's keys. A batch of puts is one
//! script, each checking its revision; a commit is one script that
//! checks the row's epoch and position, runs `enqueue.lua`'s body for
//! each job until one is refused and moves the position, so the jobs and
//! the position are written together or not at all.

use bytes::Bytes;

use super::Inner;
use super::enqueue::{answers, enqueue_args};
use super::scripts::{reply, scripts};
use crate::backend::{BackendError, Expect, RowWrite, SourceCommit, SourceCommitted, SourceRow};

type Result<T> = std::result::Result<T, BackendError>;

pub(super) async fn rows(inner: &Inner, group: &str) -> Result<Vec<SourceRow>> {
    let answered = inner
        .call()
        .arg(group)
        .run(&inner.conn, &scripts().source_read)
        .await?;
    let mut rows = reply::items(&answered)?
        .iter()
        .map(|row| {
            let row = reply::items(row)?;
            Ok(SourceRow {
                key: reply::string(reply::at(row, 0)?)?,
                revision: reply::int(reply::at(row, 1)?)?,
                epoch: reply::int(reply::at(row, 2)?)?,
                position: reply::number(reply::at(row, 3)?)?,
                body: Bytes::from(reply::bytes(reply::at(row, 4)?)?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(rows)
}

pub(super) async fn put(inner: &Inner, group: &str, writes: Vec<RowWrite>) -> Result<Vec<bool>> {
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let mut call = inner.call().arg(group);
    for write in &writes {
        let row = &write.row;
        call = call
            .arg(&row.key)
            .arg(match write.expect {
                Expect::Absent => String::new(),
                Expect::Revision(r) => r.to_string(),
            })
            .arg(if write.delete {
                "delete"
            } else if write.set_position {
                "position"
            } else {
                ""
            })
            .arg(row.revision)
            .arg(row.epoch)
            .arg(row.position.map_or_else(String::new, |p| p.to_string()))
            .arg(row.body.as_ref());
    }
    let answered = call.run(&inner.conn, &scripts().source_put).await?;
    let written = reply::items(&answered)?;
    if written.len() != writes.len() {
        return Err(reply::malformed("an answer per row"));
    }
    written
        .iter()
        .map(|w| Ok(reply::int::<u64>(w)? == 1))
        .collect()
}

/// The jobs of a commit are of one queue (a partition's: the service
/// refuses others).
pub(super) async fn commit(
    inner: &Inner,
    group: &str,
    commit: SourceCommit,
) -> Result<Option<SourceCommitted>> {
    let queue = commit
        .jobs
        .first()
        .map_or_else(String::new, |(job, _)| job.queue.clone());
    let mut call = inner
        .call()
        .arg(group)
        .arg(&commit.key)
        .arg(commit.epoch)
        .arg(commit.from.map_or_else(String::new, |p| p.to_string()))
        .arg(commit.to)
        .arg(commit.jobs.len());
    for (_, offset) in &commit.jobs {
        call = call.arg(*offset);
    }
    let call = enqueue_args(call, inner, &queue, commit.jobs.iter().map(|(job, _)| job));
    let answered = call.run(&inner.conn, &scripts().source_commit).await?;
    let parts = reply::items(&answered)?;
    match reply::string(reply::at(parts, 0)?)?.as_str() {
        "stale" => Ok(None),
        "done" => {
            let position = reply::int(reply::at(parts, 1)?)?;
            let given = reply::at(parts, 2)?;
            let count = reply::items(given)?.len();
            let mut woken = false;
            let answers: Vec<_> = answers(inner, &queue, (0..count).collect(), given)?
                .into_iter()
                .map(|(_, answer, ready)| {
                    woken |= ready;
                    answer
                })
                .collect();
            let dead = answers
                .iter()
                .zip(&commit.jobs)
                .filter(|(answer, (job, _))| answer.is_ok() && job.dead_letter.is_some())
                .count() as u64;
            if dead > 0 {
                inner.counts.add(&queue, |c| c.dead += dead);
            }
            if woken {
                inner.streams.wake();
            }
            Ok(Some(SourceCommitted { answers, position }))
        }
        _ => Err(reply::malformed("a source commit's answer")),
    }
}
