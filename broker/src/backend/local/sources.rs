//! The local backend's source groups: rows in memory by group and key,
//! each write handed to the data directory's group commit (with
//! `--data-dir`). A commit's jobs and its row's new position are one
//! submission, so they reach the disk in one transaction. A record is
//! `revision`, `epoch` (8 bytes each, big-endian), `position` (1 byte
//! 0/1, then 8 bytes), then the body.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use sluice_queue::Change;

use super::shared_queue::SharedQueue;
use crate::backend::schedule_store::expected;
use crate::backend::source_store::commit_fits;
use crate::backend::{BackendError, RowWrite, SourceCommit, SourceCommitted, SourceRow};
use crate::fatal::Fatal;

/// Every row, by (group, key).
pub(super) type SourceTable = BTreeMap<(String, String), SourceRow>;

/// The table of the records a data directory gave back.
///
/// # Errors
/// The group and key of a record that does not decode.
pub(super) fn restore(records: Vec<(String, String, Vec<u8>)>) -> Result<SourceTable, String> {
    let mut table = SourceTable::new();
    for (group, key, record) in records {
        let row = decode(key.clone(), &record).ok_or_else(|| {
            format!(
                "source {group:?} row {key:?}: a record of {} bytes",
                record.len()
            )
        })?;
        table.insert((group, key), row);
    }
    Ok(table)
}

/// The source groups, with the queue whose store keeps them.
pub(super) struct LocalSources {
    table: Mutex<SourceTable>,
    fatal: Fatal,
}

fn change(group: &str, key: &str, row: Option<&SourceRow>) -> Change {
    Change::Source {
        group: group.to_owned(),
        key: key.to_owned(),
        record: row.map(encode),
    }
}

impl LocalSources {
    pub(super) fn new(table: SourceTable, fatal: Fatal) -> Self {
        Self {
            table: Mutex::new(table),
            fatal,
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, SourceTable>, BackendError> {
        self.fatal
            .lock(&self.table, "the source groups")
            .map_err(BackendError::Failed)
    }

    pub(super) fn rows(&self, group: &str) -> Result<Vec<SourceRow>, BackendError> {
        let table = self.lock()?;
        Ok(table
            .range((group.to_owned(), String::new())..)
            .take_while(|((g, _), _)| g == group)
            .map(|(_, row)| row.clone())
            .collect())
    }

    /// Under the table's lock: each expectation checked and each row
    /// written, handed to one commit; then that commit awaited.
    pub(super) async fn put(
        &self,
        queue: &SharedQueue,
        group: &str,
        writes: Vec<RowWrite>,
    ) -> Result<Vec<bool>, BackendError> {
        let (written, commit) = {
            let mut table = self.lock()?;
            let mut written = Vec::with_capacity(writes.len());
            let mut changes = Vec::new();
            for write in writes {
                let id = (group.to_owned(), write.row.key.clone());
                let current = table.get(&id).map(|r| r.revision);
                let ok = expected(current, write.expect);
                if ok {
                    if write.delete {
                        table.remove(&id);
                        changes.push(change(group, &write.row.key, None));
                    } else {
                        let mut row = write.row;
                        if !write.set_position
                            && let Some(current) = table.get(&id)
                        {
                            row.position = current.position;
                        }
                        changes.push(change(group, &row.key, Some(&row)));
                        table.insert(id, row);
                    }
                }
                written.push(ok);
            }
            let commit = if changes.is_empty() {
                None
            } else {
                queue.submit(changes)?
            };
            (written, commit)
        };
        queue.committed(commit).await?;
        Ok(written)
    }

    /// Under the table's lock: the row checked, then the jobs enqueued
    /// (until one is refused) and the row's new position in one step of
    /// the queue and one commit; that commit awaited after.
    pub(super) async fn commit(
        &self,
        queue: &SharedQueue,
        group: &str,
        commit: SourceCommit,
    ) -> Result<Option<SourceCommitted>, BackendError> {
        let (committed, pending) = {
            let mut table = self.lock()?;
            let id = (group.to_owned(), commit.key.clone());
            let Some(row) = table.get(&id).cloned() else {
                return Ok(None);
            };
            if !commit_fits(Some((row.epoch, row.position)), &commit) {
                return Ok(None);
            }
            let jobs: Vec<_> = commit.jobs.iter().map(|(job, _)| job.clone()).collect();
            let (answers, pending) =
                queue.write_now_with(Some("no record is enqueued"), |q, now| {
                    let mut answers = Vec::with_capacity(jobs.len());
                    for job in jobs {
                        let answer = q.enqueue(job, now);
                        let refused = answer.is_err();
                        answers.push(answer);
                        if refused {
                            break;
                        }
                    }
                    let taken = answers.iter().filter(|a| a.is_ok()).count();
                    let row = SourceRow {
                        position: Some(commit.position_after(taken)),
                        ..row
                    };
                    let changes = vec![change(group, &commit.key, Some(&row))];
                    ((answers, row), changes)
                })?;
            let (answers, row) = answers;
            let position = row.position.unwrap_or(commit.to);
            table.insert(id, row);
            (SourceCommitted { answers, position }, pending)
        };
        queue.committed(pending).await?;
        Ok(Some(committed))
    }
}

fn encode(row: &SourceRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + row.body.len());
    out.extend_from_slice(&row.revision.to_be_bytes());
    out.extend_from_slice(&row.epoch.to_be_bytes());
    match row.position {
        Some(p) => {
            out.push(1);
            out.extend_from_slice(&p.to_be_bytes());
        }
        None => out.extend_from_slice(&[0; 9]),
    }
    out.extend_from_slice(&row.body);
    out
}

fn decode(key: String, record: &[u8]) -> Option<SourceRow> {
    let (revision, rest) = record.split_first_chunk::<8>()?;
    let (epoch, rest) = rest.split_first_chunk::<8>()?;
    let (flag, rest) = rest.split_first()?;
    let (position, body) = rest.split_first_chunk::<8>()?;
    Some(SourceRow {
        key,
        revision: u64::from_be_bytes(*revision),
        epoch: u64::from_be_bytes(*epoch),
        position: (*flag == 1).then(|| i64::from_be_bytes(*position)),
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        for position in [None, Some(0), Some(1_000_000)] {
            let row = SourceRow {
                key: "partition:events:3".into(),
                revision: 9,
                epoch: 4,
                position,
                body: Bytes::from_static(b"body"),
            };
            assert_eq!(decode(row.key.clone(), &encode(&row)), Some(row));
        }
        assert_eq!(decode("x".into(), &[1, 2, 3]), None);
    }
}
