//! Persistence for `--data-dir`: the queue's durable view (see
//! [`sluice_queue::Change`]) in one redb file with a journal in front of
//! it, written with group commit.
//!
//! The in-memory queue stays the source of truth for reads; the store only
//! takes changes and gives them back on start. One writer thread takes every
//! batch of changes waiting, appends them to the journal as one frame and
//! fdatasyncs it, so concurrent requests share one fsync; redb takes the
//! same changes without an fsync and is made durable at checkpoints (see
//! `journal`). A request that changed something is answered only after the
//! journal holds its changes on disk (the service awaits the [`Commit`]).
//!
//! A failed write or fsync is never retried: the store fails the broker
//! (see [`crate::fatal`]), which fails every waiting and later commit and
//! exits with an error, because going on would answer OK for changes not
//! on disk.
//!
//! Corruption: the file is opened with redb's integrity check, which verifies
//! the checksum of every page, and the journal's frames carry CRC-32s; a
//! damaged file, a damaged frame before an intact one, or a record that
//! does not decode, stops the start with an error naming it. The broker
//! never starts empty on a damaged directory.

//! Files by role: `open.rs` opens the files and reads them back (recovery),
//! `journal.rs` is the journal (frames, replay, checkpoints), `writer.rs` is
//! the writer thread and its group commit, `compaction.rs` gives the space
//! of finished jobs back, `codec.rs` is a record's bytes.

mod codec;
mod compaction;
mod journal;
mod open;
mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::TableDefinition;
use tokio::sync::oneshot;
use tracing::error;

use crate::fatal::Fatal;
use journal::JOURNAL_FILE_NAME;
use sluice_queue::Change;

/// Job records by seq (see `codec`).
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// Payloads by seq, written once per job.
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
/// Paused queues.
const PAUSED: TableDefinition<&str, ()> = TableDefinition::new("paused");
/// Queues' flow-control limits by queue, as `crate::limits_record` encodes them.
const LIMITS: TableDefinition<&str, &[u8]> = TableDefinition::new("limits");
/// Schedules by name: records the backend encodes (`backend/local/schedules.rs`).
const SCHEDULES: TableDefinition<&str, &[u8]> = TableDefinition::new("schedules");
/// Source rows by group and key: records the backend encodes
/// (`backend/local/sources.rs`).
const SOURCES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("sources");
/// `instance` (8 bytes) and `id_key` (16 bytes), the secret of the job
/// ids (see `sluice_queue::IdSecret`), and `next_seq` (u64, big-endian).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The file in the data directory.
pub const FILE_NAME: &str = "sluice.redb";

/// redb's page cache. The store is read once, on start; after that only
/// the pages a commit touches matter (redb's default is 1 GiB, which kept
/// a copy of the whole file in the broker's memory).
const CACHE_BYTES: usize = 64 << 20;

/// Most changes written in one transaction; more wait for the next.
const MAX_GROUP_CHANGES: usize = 200_000;

/// Payload bytes past which a group takes no more changes: a group is one
/// journal frame, built in memory, and many large jobs arriving at once
/// must not make it gigabytes.
const MAX_GROUP_BYTES: usize = 64 << 20;

/// Why the store could not open, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or file could not be created or opened.
    #[error("opening {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The caller could not take back what the file holds.
    #[error("restoring the data directory: {0}")]
    Restore(Box<dyn std::error::Error + Send + Sync>),
    /// The file is damaged.
    #[error(
        "{path} is damaged ({what}); the broker will not start on it: move it aside to start empty, or restore a copy"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found.
        what: String,
    },
}

/// Resolves once the changes submitted with it are on disk, or the store failed.
pub type Commit = oneshot::Receiver<Result<(), Arc<str>>>;

struct Batch {
    changes: Vec<Change>,
    done: Option<oneshot::Sender<Result<(), Arc<str>>>>,
}

/// What the store reports to metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// The size of the data directory's files (the database and its
    /// journal) on disk.
    pub file_bytes: u64,
    /// How long the last commit took, fsync included; `None` before the first.
    pub last_commit: Option<Duration>,
}

/// The open store. See the module docs.
pub struct Store {
    /// The data file, for its size.
    path: PathBuf,
    /// Microseconds the last commit took, plus one (0: none yet); set by
    /// the writer thread.
    last_commit_micros: Arc<AtomicU64>,
    /// Batches for the writer; taken (dropped) by [`Store::close`] so the
    /// writer finishes what it holds and stops.
    tx: Mutex<Option<mpsc::Sender<Batch>>>,
    /// The writer thread, joined by [`Store::close`].
    writer: Mutex<Option<JoinHandle<()>>>,
    /// The broker's failure, which a failed commit sets.
    fatal: Fatal,
}

impl Store {
    /// The files' size and the last commit's duration.
    pub fn stats(&self) -> StoreStats {
        let micros = self.last_commit_micros.load(Ordering::Relaxed);
        StoreStats {
            // A file that cannot be read now counts as empty in metrics; a
            // failed write fails the broker through its own path.
            file_bytes: [
                self.path.as_path(),
                &self.path.with_file_name(JOURNAL_FILE_NAME),
            ]
            .iter()
            .map(|path| std::fs::metadata(path).map_or(0, |m| m.len()))
            .sum(),
            last_commit: micros.checked_sub(1).map(Duration::from_micros),
        }
    }

    /// Queues `changes` for the next commit; with `wait`, the returned
    /// [`Commit`] says when they are on disk.
    ///
    /// # Errors
    /// Why the store failed, once a write failed or after [`Store::close`].
    pub fn submit(&self, changes: Vec<Change>, wait: bool) -> Result<Option<Commit>, Arc<str>> {
        if let Some(why) = self.fatal.reason() {
            return Err(why);
        }
        if changes.is_empty() && !wait {
            return Ok(None);
        }
        let (done, commit) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let sent = self
            .fatal
            .lock(&self.tx, "the store's sender")?
            .as_ref()
            .is_some_and(|tx| tx.send(Batch { changes, done }).is_ok());
        if !sent {
            return Err("the store is closed".into());
        }
        Ok(commit)
    }

    /// Writes what was submitted, then stops the writer. Blocks.
    pub fn close(&self) {
        // A poisoned lock has failed the broker already; nothing is left to close.
        if let Ok(mut tx) = self.fatal.lock(&self.tx, "the store's sender") {
            tx.take();
        }
        if let Ok(mut writer) = self.fatal.lock(&self.writer, "the store's writer")
            && let Some(writer) = writer.take()
            && writer.join().is_err()
        {
            error!("the store's writer thread panicked");
        }
    }
}

/// A plain READY job of queue `q` and type `t`, for the store's tests.
#[cfg(test)]
fn test_record(seq: u64, payload: &'static [u8]) -> sluice_queue::JobRecord {
    sluice_queue::JobRecord {
        seq,
        queue: "q".into(),
        job_type: "t".into(),
        payload: bytes::Bytes::from_static(payload),
        headers: Vec::new(),
        priority: 0,
        state: sluice_queue::JobState::Ready,
        attempt: 0,
        max_attempts: 1,
        timeout: Duration::from_secs(1),
        created_at: sluice_queue::Timestamp::default(),
        run_at: sluice_queue::Timestamp::default(),
        finished_at: None,
        last_error: None,
        idempotency_key: None,
        key: None,
        cancel_requested: false,
        progress: None,
        result: None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use redb::Database;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// Memory that refuses every fsync once `fail` is set.
    #[derive(Debug, Default)]
    struct FailingDisk {
        memory: InMemoryBackend,
        fail: Arc<AtomicBool>,
    }

    impl StorageBackend for FailingDisk {
        fn len(&self) -> std::io::Result<u64> {
            self.memory.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.memory.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.memory.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            self.memory.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.memory.write(offset, data)
        }
    }

    fn put(seq: u64) -> Vec<Change> {
        vec![Change::Put {
            record: test_record(seq, b"p"),
            new: true,
        }]
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_commit_and_every_later_one() {
        let disk = FailingDisk::default();
        let fail = disk.fail.clone();
        let stopped = CancellationToken::new();
        let db = Database::builder().create_with_backend(InMemoryBackend::new());
        let fatal = Fatal::new(stopped.clone());
        let ids = sluice_queue::IdSecret {
            instance: [7; 8],
            key: [9; 16],
        };
        let (store, meta) = Store::start(
            "memory".into(),
            db,
            Box::new(disk),
            ids,
            fatal.clone(),
            |_| Ok::<_, std::convert::Infallible>(()),
        )
        .expect("opens");
        assert_eq!(meta.ids, Some(ids));

        let commit = store
            .submit(put(0), true)
            .expect("accepted")
            .expect("a commit");
        assert_eq!(commit.await.expect("answered"), Ok(()));
        assert!(!stopped.is_cancelled());

        fail.store(true, Ordering::SeqCst);
        let commit = store
            .submit(put(1), true)
            .expect("accepted")
            .expect("a commit");
        let failed = commit.await.expect("answered");
        assert!(failed.is_err_and(|why| why.contains("injected fsync failure")));
        assert!(stopped.is_cancelled(), "the broker is told to stop");
        // Never retried as if it had worked, even once the disk recovers.
        fail.store(false, Ordering::SeqCst);
        assert!(store.submit(put(2), true).is_err());
        assert!(fatal.reason().is_some());
        store.close();
    }
}
