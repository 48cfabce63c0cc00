//! The writer thread: takes every batch waiting, appends them to the
//! journal as one frame with one fsync (group commit), answers each batch's
//! waiter, then hands the same changes to redb without an fsync (see
//! `journal`). A failed commit fails the broker; it is never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use redb::{Database, Durability};
use sluice_queue::Change;

use super::compaction::{COMPACT_AFTER_REMOVALS, IDLE, compact};
use super::journal::{self, Journal};
use super::{Batch, MAX_GROUP_BYTES, MAX_GROUP_CHANGES};
use crate::fatal::Fatal;

/// The writer thread: one journal frame and one fsync per group of batches.
pub(super) fn write_loop(
    mut db: Database,
    mut journal: Journal,
    rx: &mpsc::Receiver<Batch>,
    fatal: &Fatal,
    last_commit_micros: &AtomicU64,
) {
    let _guard = FailOnPanic(fatal);
    let mut group = Vec::new();
    let mut removed = 0;
    loop {
        let first = match rx.recv_timeout(IDLE) {
            Ok(batch) => batch,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if fatal.reason().is_some() {
                    continue;
                }
                if !journal.is_empty() {
                    checkpoint(&db, &mut journal, fatal);
                }
                // Idle: give the space of finished jobs back to the disk.
                // (Under load the file keeps its high-water mark; redb
                // reuses its free pages.)
                if removed >= COMPACT_AFTER_REMOVALS && fatal.reason().is_none() {
                    compact(&mut db);
                    removed = 0;
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let (mut changes, mut bytes) = (first.changes.len(), payload_bytes(&first));
        group.push(first);
        while changes < MAX_GROUP_CHANGES && bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(batch) => {
                    changes += batch.changes.len();
                    bytes += payload_bytes(&batch);
                    group.push(batch);
                }
                Err(_) => break,
            }
        }
        let entries = journal::entries(group.iter().flat_map(|b| &b.changes));
        let result = match fatal.reason() {
            Some(why) => Err(why),
            // Only waiters (calls that changed nothing): every change before
            // theirs is committed already.
            None if entries.is_empty() => Ok(()),
            None => {
                let started = Instant::now();
                let result = journal
                    .append(&entries)
                    .map_err(|e| fatal.fail(format!("writing the data directory failed: {e}")));
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                last_commit_micros.store(micros.saturating_add(1), Ordering::Relaxed);
                result
            }
        };
        for batch in group.drain(..) {
            if let Some(done) = batch.done {
                // The caller may have gone (client cancelled): nothing to tell.
                let _ = done.send(result.clone());
            }
        }
        if result.is_ok() && !entries.is_empty() {
            // Answered already: the journal holds the group.
            match apply_non_durable(&db, &entries) {
                Ok(count) => removed += count,
                Err(e) => {
                    fatal.fail(format!("writing the data directory failed: {e}"));
                    continue;
                }
            }
            if journal.is_full() {
                checkpoint(&db, &mut journal, fatal);
            }
        }
    }
    if fatal.reason().is_none() {
        checkpoint(&db, &mut journal, fatal);
        compact(&mut db);
    }
}

/// The bytes of clients' data `batch` carries into its frame: new jobs'
/// payloads, results and progress messages, and the records of schedules
/// and source rows (the rest of a change is small and bounded).
fn payload_bytes(batch: &Batch) -> usize {
    batch
        .changes
        .iter()
        .map(|change| match change {
            Change::Put { record, new } => {
                let payload = if *new { record.payload.len() } else { 0 };
                payload
                    + record.result.as_ref().map_or(0, bytes::Bytes::len)
                    + record.progress.as_ref().map_or(0, |p| p.message.len())
            }
            Change::Schedule {
                record: Some(record),
                ..
            }
            | Change::Source {
                record: Some(record),
                ..
            } => record.len(),
            _ => 0,
        })
        .sum()
}

/// Writes a group into redb without an fsync; the journal has it.
fn apply_non_durable(db: &Database, entries: &[journal::Entry]) -> Result<usize, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::None)?;
    let removed = journal::apply(&txn, entries)?;
    txn.commit()?;
    Ok(removed)
}

/// A checkpoint; a failure fails the broker.
fn checkpoint(db: &Database, journal: &mut Journal, fatal: &Fatal) {
    if let Err(e) = journal.checkpoint(db) {
        fatal.fail(format!("writing the data directory failed: {e}"));
    }
}

/// Fails the store if the writer thread panics (redb panics on some
/// damage it finds late), so that the broker stops instead of refusing
/// every change forever.
struct FailOnPanic<'a>(&'a Fatal);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.fail("the store's writer panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sluice_queue::JobRecord;

    use super::super::test_record;
    use super::*;

    fn put(payload: &'static [u8], new: bool) -> Change {
        Change::Put {
            record: test_record(1, payload),
            new,
        }
    }

    #[test]
    fn a_group_counts_the_payloads_it_carries() {
        let batch = Batch {
            changes: vec![
                put(b"12345", true),
                // A known job's record leaves its payload alone; its
                // result counts.
                Change::Put {
                    record: JobRecord {
                        result: Some(Bytes::from_static(b"ok")),
                        ..test_record(1, b"67890")
                    },
                    new: false,
                },
                Change::Schedule {
                    name: "s".into(),
                    record: Some(vec![0; 3]),
                },
                Change::Delete { seq: 2 },
            ],
            done: None,
        };
        assert_eq!(payload_bytes(&batch), 10);
    }
}
