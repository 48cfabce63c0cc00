//! Source groups on PostgreSQL (`sluice_source_rows`, migration 0003): a
//! row per member or partition. Puts are one transaction of
//! compare-and-set statements on the revision (the position written only
//! when a put sets it); a commit locks its row,
//! checks the epoch and position, inserts the jobs with the enqueue's own
//! statements and moves the position, in one transaction.

use bytes::Bytes;
use sluice_queue::NewJob;
use tokio_postgres::Row;

use super::Inner;
use super::enqueue::{after_commit, insert_within, with_defaults};
use super::sql::{self, get};
use crate::backend::source_store::commit_fits;
use crate::backend::{BackendError, Expect, RowWrite, SourceCommit, SourceCommitted, SourceRow};

type Result<T> = std::result::Result<T, BackendError>;

fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unsigned(row: &Row, name: &str) -> Result<u64> {
    Ok(u64::try_from(get::<i64>(row, name)?).unwrap_or(0))
}

fn to_row(row: &Row) -> Result<SourceRow> {
    Ok(SourceRow {
        key: get(row, "key")?,
        revision: unsigned(row, "revision")?,
        epoch: unsigned(row, "epoch")?,
        position: get(row, "position")?,
        body: Bytes::from(get::<Vec<u8>>(row, "body")?),
    })
}

pub(super) async fn rows(inner: &Inner, group: &str) -> Result<Vec<SourceRow>> {
    let client = sql::connection(&inner.pool).await?;
    sql::query(
        &client,
        "SELECT key, revision, epoch, position, body FROM sluice_source_rows
         WHERE grp = $1 ORDER BY key",
        &[&group],
    )
    .await?
    .iter()
    .map(to_row)
    .collect()
}

pub(super) async fn put(inner: &Inner, group: &str, writes: Vec<RowWrite>) -> Result<Vec<bool>> {
    let mut client = sql::connection(&inner.pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let mut written = Vec::with_capacity(writes.len());
    for write in &writes {
        let row = &write.row;
        let (revision, epoch, body) = (signed(row.revision), signed(row.epoch), row.body.as_ref());
        let changed =
            match (write.expect, write.delete) {
                (Expect::Absent, true) => 0,
                (Expect::Revision(r), true) => sql::execute(
                    &tx,
                    "DELETE FROM sluice_source_rows WHERE grp = $1 AND key = $2 AND revision = $3",
                    &[&group, &row.key, &signed(r)],
                )
                .await?,
                (Expect::Absent, false) => {
                    sql::execute(
                        &tx,
                        "INSERT INTO sluice_source_rows (grp, key, revision, epoch, position, body)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (grp, key) DO NOTHING",
                        &[&group, &row.key, &revision, &epoch, &row.position, &body],
                    )
                    .await?
                }
                (Expect::Revision(r), false) => {
                    sql::execute(
                        &tx,
                        "UPDATE sluice_source_rows
                     SET revision = $3, epoch = $4, body = $6,
                         position = CASE WHEN $8 THEN $5 ELSE position END
                     WHERE grp = $1 AND key = $2 AND revision = $7",
                        &[
                            &group,
                            &row.key,
                            &revision,
                            &epoch,
                            &row.position,
                            &body,
                            &signed(r),
                            &write.set_position,
                        ],
                    )
                    .await?
                }
            };
        written.push(changed == 1);
    }
    sql::commit(tx).await?;
    Ok(written)
}

pub(super) async fn commit(
    inner: &Inner,
    group: &str,
    mut commit: SourceCommit,
) -> Result<Option<SourceCommitted>> {
    for (job, _) in &mut commit.jobs {
        with_defaults(job, &inner.queue);
    }
    let known = &inner.enqueuer.known;
    let mut offered = commit.jobs.len();
    loop {
        let mut client = sql::connection(&inner.pool).await?;
        let tx = sql::transaction(&mut client).await?;
        let locked = sql::query_opt(
            &tx,
            "SELECT revision, epoch, position FROM sluice_source_rows
             WHERE grp = $1 AND key = $2 FOR UPDATE",
            &[&group, &commit.key],
        )
        .await?;
        let Some(locked) = locked else {
            return Ok(None);
        };
        let current = (
            unsigned(&locked, "epoch")?,
            get::<Option<i64>>(&locked, "position")?,
        );
        if !commit_fits(Some(current), &commit) {
            return Ok(None);
        }
        let jobs: Vec<&NewJob> = commit.jobs[..offered].iter().map(|(job, _)| job).collect();
        let (mut answers, added, queues) =
            insert_within(&tx, &jobs, inner.queue.max_queue_size, known).await?;
        let taken = answers.iter().take_while(|a| a.is_ok()).count();
        if answers[taken..].iter().skip(1).any(|a| a.is_ok()) {
            // A job after the first refused one was added: the partition's
            // order would break. Again, with the jobs before the refusal.
            drop(tx);
            offered = taken + 1;
            continue;
        }
        answers.truncate(taken + 1);
        let position = commit.position_after(taken);
        sql::execute(
            &tx,
            "UPDATE sluice_source_rows SET position = $3 WHERE grp = $1 AND key = $2",
            &[&group, &commit.key, &position],
        )
        .await?;
        sql::commit(tx).await?;
        after_commit(&inner.notifier, known, added, queues);
        for (answer, (job, _)) in answers.iter().zip(&commit.jobs) {
            if let Ok(e) = answer
                && !e.duplicate
            {
                let dead = u64::from(job.dead_letter.is_some());
                inner.counts.add(&job.queue, |c| {
                    c.enqueued += 1;
                    c.dead += dead;
                });
            }
        }
        inner.streams.wake();
        return Ok(Some(SourceCommitted { answers, position }));
    }
}
