//! The writer thread: takes every batch waiting, writes them in one
//! transaction and commits it with one fsync (group commit), then answers
//! each batch's waiter. A failed commit fails the broker; it is never retried.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use redb::Database;
use sluice_queue::Change;

use super::compaction::{COMPACT_AFTER_REMOVALS, IDLE, compact};
use super::{Batch, JOBS, MAX_GROUP_CHANGES, META, PAUSED, PAYLOADS, SCHEDULES, SOURCES, codec};
use crate::fatal::Fatal;

/// The writer thread: one transaction and one fsync per group of batches.
pub(super) fn write_loop(
    mut db: Database,
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
        let mut changes = first.changes.len();
        group.push(first);
        while changes < MAX_GROUP_CHANGES {
            match rx.try_recv() {
                Ok(batch) => {
                    changes += batch.changes.len();
                    group.push(batch);
                }
                Err(_) => break,
            }
        }
        removed += group
            .iter()
            .flat_map(|b| &b.changes)
            .filter(|c| matches!(c, Change::Delete { .. }))
            .count();
        let result = match fatal.reason() {
            Some(why) => Err(why),
            // Only waiters (calls that changed nothing): every change before
            // theirs is committed already.
            None if group.iter().all(|b| b.changes.is_empty()) => Ok(()),
            None => {
                let started = Instant::now();
                let result = commit(&db, &group)
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
    }
    if fatal.reason().is_none() {
        compact(&mut db);
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

fn commit(db: &Database, group: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut payloads = txn.open_table(PAYLOADS)?;
        let mut paused = txn.open_table(PAUSED)?;
        let mut schedules = txn.open_table(SCHEDULES)?;
        let mut sources = txn.open_table(SOURCES)?;
        let mut next_seq = None;
        for change in group.iter().flat_map(|b| &b.changes) {
            match change {
                Change::Put { record, new } => {
                    jobs.insert(record.seq, codec::encode(record).as_slice())?;
                    if *new {
                        payloads.insert(record.seq, record.payload.as_ref())?;
                        next_seq = next_seq.max(Some(record.seq + 1));
                    }
                }
                Change::Delete { seq } => {
                    jobs.remove(seq)?;
                    payloads.remove(seq)?;
                }
                Change::Paused {
                    queue,
                    paused: true,
                } => {
                    paused.insert(queue.as_str(), ())?;
                }
                Change::Paused { queue, .. } => {
                    paused.remove(queue.as_str())?;
                }
                Change::Schedule {
                    name,
                    record: Some(record),
                } => {
                    schedules.insert(name.as_str(), record.as_slice())?;
                }
                Change::Schedule { name, record: None } => {
                    schedules.remove(name.as_str())?;
                }
                Change::Source {
                    group,
                    key,
                    record: Some(record),
                } => {
                    sources.insert((group.as_str(), key.as_str()), record.as_slice())?;
                }
                Change::Source {
                    group,
                    key,
                    record: None,
                } => {
                    sources.remove((group.as_str(), key.as_str()))?;
                }
            }
        }
        if let Some(next_seq) = next_seq {
            txn.open_table(META)?
                .insert("next_seq", next_seq.to_be_bytes().as_slice())?;
        }
    }
    // Durability::Immediate (the default): returns once fsynced.
    txn.commit()?;
    Ok(())
}
