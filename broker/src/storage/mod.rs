//! Persistence for `--data-dir`: the queue's durable view (see
//! [`crate::queue::Change`]) in one redb file, written with group commit.
//!
//! The in-memory queue stays the source of truth for reads; the store only
//! takes changes and gives them back on start. One writer thread takes every
//! batch of changes waiting, writes them in one transaction, and commits it
//! with an fsync, so concurrent requests share one fsync. A request that
//! changed something is answered only after the commit holding its changes
//! returned (the service awaits the [`Commit`]).
//!
//! A failed write or fsync is never retried: the store fails every waiting
//! and later commit, cancels the shutdown token, and the broker exits with an
//! error, because going on would answer OK for changes not on disk.
//!
//! Corruption: the file is opened with redb's integrity check, which verifies
//! the checksum of every page; a damaged file, or a record that does not
//! decode, stops the start with an error naming it. The broker never starts
//! empty on a damaged directory.

mod codec;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::error::QueueError;
use crate::queue::{Change, JobRecord, StoreMeta};

/// Job records by seq (see `codec`).
const JOBS: TableDefinition<u64, &[u8]> = TableDefinition::new("jobs");
/// Payloads by seq, written once per job.
const PAYLOADS: TableDefinition<u64, &[u8]> = TableDefinition::new("payloads");
/// Paused queues.
const PAUSED: TableDefinition<&str, ()> = TableDefinition::new("paused");
/// `instance` (8 bytes) and `next_seq` (u64, big-endian).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The file in the data directory.
pub const FILE_NAME: &str = "sluice.redb";

/// redb's page cache. The store is read once, on start; after that only
/// the pages a commit touches matter (redb's default is 1 GiB, which kept
/// a copy of the whole file in the broker's memory).
const CACHE_BYTES: usize = 64 << 20;

/// Most changes written in one transaction; more wait for the next.
const MAX_GROUP_CHANGES: usize = 200_000;

/// Jobs removed before the writer, once idle for [`IDLE`], compacts the file.
const COMPACT_AFTER_REMOVALS: usize = 100_000;
const IDLE: std::time::Duration = std::time::Duration::from_millis(500);

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
    /// The queue cannot take back what the file holds.
    #[error("restoring the data directory: {0}")]
    Restore(#[from] QueueError),
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

/// The open store. See the module docs.
pub struct Store {
    tx: Mutex<Option<mpsc::Sender<Batch>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    failure: Arc<OnceLock<Arc<str>>>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads it back: each stored
    /// job goes to `on_job`, in seq order, and the rest is returned. A new
    /// store keeps `new_instance` as the first half of its job ids. A
    /// failure of the store later cancels `on_failure`.
    ///
    /// # Errors
    /// [`StoreError::Open`], [`StoreError::Corrupt`], or
    /// [`StoreError::Restore`] from `on_job`.
    pub fn open(
        dir: &Path,
        new_instance: [u8; 8],
        on_failure: CancellationToken,
        on_job: impl FnMut(JobRecord) -> Result<(), QueueError>,
    ) -> Result<(Store, StoreMeta), StoreError> {
        let path = dir.join(FILE_NAME);
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Err(StoreError::Open {
                path,
                source: e.into(),
            });
        }
        // redb takes an empty file for a new database: here it can only be
        // one that lost its contents.
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
            return Err(StoreError::Corrupt {
                path,
                what: "the file is empty".into(),
            });
        }
        let db = Database::builder()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(&path);
        Self::start(path, db, new_instance, on_failure, on_job)
    }

    /// Reads back the database `db` opened at `path` and starts its writer.
    fn start(
        path: PathBuf,
        db: Result<Database, redb::DatabaseError>,
        new_instance: [u8; 8],
        on_failure: CancellationToken,
        on_job: impl FnMut(JobRecord) -> Result<(), QueueError>,
    ) -> Result<(Store, StoreMeta), StoreError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.clone(),
            source,
        };
        let corrupt = |what: String| StoreError::Corrupt {
            path: path.clone(),
            what,
        };
        let db = db.map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(what)) => corrupt(what),
            redb::DatabaseError::Storage(redb::StorageError::Io(e)) => open_err(e.into()),
            other => corrupt(other.to_string()),
        })?;
        let meta = read_back(&db, new_instance, on_job).map_err(|e| match e {
            ReadError::Corrupt(what) => corrupt(what),
            ReadError::Redb(e) => corrupt(e.to_string()),
            ReadError::Restore(e) => StoreError::Restore(e),
        })?;
        let (tx, rx) = mpsc::channel();
        let failure = Arc::new(OnceLock::new());
        let writer = {
            let failure = failure.clone();
            std::thread::Builder::new()
                .name("sluice-store".into())
                .spawn(move || write_loop(db, &rx, &failure, &on_failure))
                .map_err(|e| open_err(e.into()))?
        };
        Ok((
            Store {
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                failure,
            },
            meta,
        ))
    }

    /// Queues `changes` for the next commit; with `wait`, the returned
    /// [`Commit`] says when they are on disk.
    ///
    /// # Errors
    /// Why the store failed, once a write failed or after [`Store::close`].
    pub fn submit(&self, changes: Vec<Change>, wait: bool) -> Result<Option<Commit>, Arc<str>> {
        if let Some(why) = self.failure() {
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
        let sent = lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send(Batch { changes, done }).is_ok());
        if !sent {
            return Err("the store is closed".into());
        }
        Ok(commit)
    }

    /// Why the store failed, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.failure.get().cloned()
    }

    /// Writes what was submitted, then stops the writer. Blocks.
    pub fn close(&self) {
        lock(&self.tx).take();
        if let Some(writer) = lock(&self.writer).take()
            && writer.join().is_err()
        {
            error!("the store's writer thread panicked");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

enum ReadError {
    Corrupt(String),
    Redb(redb::Error),
    Restore(QueueError),
}

impl<E: Into<redb::Error>> From<E> for ReadError {
    fn from(e: E) -> Self {
        ReadError::Redb(e.into())
    }
}

/// Creates the tables if new, keeps `new_instance` if there is none, and
/// reads everything back: jobs to `on_job`, the rest returned.
fn read_back(
    db: &Database,
    new_instance: [u8; 8],
    mut on_job: impl FnMut(JobRecord) -> Result<(), QueueError>,
) -> Result<StoreMeta, ReadError> {
    let txn = db.begin_write()?;
    {
        txn.open_table(JOBS)?;
        txn.open_table(PAYLOADS)?;
        txn.open_table(PAUSED)?;
        let mut meta = txn.open_table(META)?;
        if meta.get("instance")?.is_none() {
            meta.insert("instance", new_instance.as_slice())?;
        }
    }
    txn.commit()?;

    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let read_meta = |key: &str| -> Result<Option<[u8; 8]>, ReadError> {
        match meta.get(key)? {
            None => Ok(None),
            Some(v) => v
                .value()
                .try_into()
                .map(Some)
                .map_err(|_| ReadError::Corrupt(format!("meta {key} is not 8 bytes"))),
        }
    };
    let instance = read_meta("instance")?;
    let next_seq = read_meta("next_seq")?.map_or(0, u64::from_be_bytes);
    let payloads = txn.open_table(PAYLOADS)?;
    for entry in txn.open_table(JOBS)?.iter()? {
        let (seq, bytes) = entry?;
        let seq = seq.value();
        let payload = payloads
            .get(seq)?
            .map(|p| Bytes::copy_from_slice(p.value()))
            .ok_or_else(|| ReadError::Corrupt(format!("job {seq} has no payload")))?;
        let record = codec::decode(seq, bytes.value(), payload)
            .map_err(|e| ReadError::Corrupt(format!("job {seq}: {e}")))?;
        on_job(record).map_err(ReadError::Restore)?;
    }
    let mut paused = Vec::new();
    for entry in txn.open_table(PAUSED)?.iter()? {
        paused.push(entry?.0.value().to_owned());
    }
    Ok(StoreMeta {
        instance,
        next_seq,
        paused,
    })
}

/// The writer thread: one transaction and one fsync per group of batches.
fn write_loop(
    mut db: Database,
    rx: &mpsc::Receiver<Batch>,
    failure: &OnceLock<Arc<str>>,
    on_failure: &CancellationToken,
) {
    let _guard = FailOnPanic {
        failure,
        on_failure,
    };
    let mut group = Vec::new();
    let mut removed = 0;
    loop {
        let first = match rx.recv_timeout(IDLE) {
            Ok(batch) => batch,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Idle: give the space of finished jobs back to the disk.
                // (Under load the file keeps its high-water mark; redb
                // reuses its free pages.)
                if removed >= COMPACT_AFTER_REMOVALS && failure.get().is_none() {
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
        let result = match failure.get() {
            Some(why) => Err(why.clone()),
            // Only waiters (calls that changed nothing): every change before
            // theirs is committed already.
            None if group.iter().all(|b| b.changes.is_empty()) => Ok(()),
            None => commit(&db, &group).map_err(|e| {
                let why: Arc<str> = e.to_string().into();
                error!(error = %why, "writing the data directory failed: no change is acknowledged from now on; stopping");
                let _ = failure.set(why.clone());
                on_failure.cancel();
                why
            }),
        };
        for batch in group.drain(..) {
            if let Some(done) = batch.done {
                // The caller may have gone (client cancelled): nothing to tell.
                let _ = done.send(result.clone());
            }
        }
    }
    if failure.get().is_none() {
        compact(&mut db);
    }
}

/// Fails the store if the writer thread panics (redb panics on some
/// damage it finds late), so that the broker stops instead of refusing
/// every change forever.
struct FailOnPanic<'a> {
    failure: &'a OnceLock<Arc<str>>,
    on_failure: &'a CancellationToken,
}

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            error!("the store's writer panicked: stopping");
            let _ = self.failure.set("the store's writer panicked".into());
            self.on_failure.cancel();
        }
    }
}

/// Moves live pages to the front of the file and truncates it.
fn compact(db: &mut Database) {
    let started = std::time::Instant::now();
    loop {
        match db.compact() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // Only space is lost: the data is intact.
                warn!(error = %e, "compacting the data directory failed");
                break;
            }
        }
    }
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data directory compacted"
    );
}

fn commit(db: &Database, group: &[Batch]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    {
        let mut jobs = txn.open_table(JOBS)?;
        let mut payloads = txn.open_table(PAYLOADS)?;
        let mut paused = txn.open_table(PAUSED)?;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use super::*;
    use crate::clock::Timestamp;
    use crate::queue::{JobRecord, JobState};

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
        let record = JobRecord {
            seq,
            queue: "q".into(),
            job_type: "t".into(),
            payload: Bytes::from_static(b"p"),
            headers: Vec::new(),
            priority: 0,
            state: JobState::Ready,
            attempt: 0,
            max_attempts: 1,
            timeout: std::time::Duration::from_secs(1),
            created_at: Timestamp::default(),
            run_at: Timestamp::default(),
            finished_at: None,
            last_error: None,
            idempotency_key: None,
            cancel_requested: false,
        };
        vec![Change::Put { record, new: true }]
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_the_commit_and_every_later_one() {
        let disk = FailingDisk::default();
        let fail = disk.fail.clone();
        let stopped = CancellationToken::new();
        let db = Database::builder().create_with_backend(disk);
        let (store, meta) =
            Store::start("memory".into(), db, [7; 8], stopped.clone(), |_| Ok(())).expect("opens");
        assert_eq!(meta.instance, Some([7; 8]));

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
        assert!(store.failure().is_some());
        store.close();
    }
}
