//! Opening the data directory and reading it back (recovery): the
//! integrity check, the tables, and every record handed to the caller in
//! seq order, so the records never all sit in memory at once.
//!
//! Data at rest is private: a directory the broker creates gets mode 0700
//! and the database file 0600; an existing directory that others may write
//! to is used, with a warning. The directory is synced once its files
//! exist, and so is the parent of each directory the broker made, before
//! any commit is acknowledged: a new entry would not survive a power loss
//! otherwise.

use std::fs::Permissions;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, StorageBackend};
use sluice_queue::{IdSecret, JobRecord, StoreMeta};

use super::journal::{self, JOURNAL_FILE_NAME, JournalFile};
use super::writer::write_loop;
use super::{
    CACHE_BYTES, FILE_NAME, JOBS, LIMITS, META, PAUSED, PAYLOADS, SCHEDULES, SOURCES, Store,
    StoreError, codec,
};
use crate::fatal::Fatal;

/// Creates `dir` (and its missing parents) with mode 0700, or warns if it
/// exists and is group- or world-writable.
/// Returns the directories it made, outermost first.
fn private_dir(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:o}", mode & 0o7777),
                    "the data directory is writable by other users: they can change or delete jobs (chmod 700 it)"
                );
            }
            Ok(Vec::new())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut missing: Vec<PathBuf> = dir
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .take_while(|a| !a.exists())
                .map(Path::to_path_buf)
                .collect();
            missing.reverse();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
            Ok(missing)
        }
        Err(e) => Err(e),
    }
}

/// Makes the entries of `dir` durable: a file just created there (the
/// database, the journal) is found after a power loss only once its
/// directory is synced, whatever was synced inside the file.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (or creates) the store in `dir` and reads it back: each stored
    /// job goes to `on_job`, in seq order, and the rest is returned. A new
    /// store keeps `new_ids` as the secret of its job ids. A
    /// failure of the store later fails the broker through `fatal`.
    ///
    /// # Errors
    /// [`StoreError::Open`], [`StoreError::Corrupt`], or
    /// [`StoreError::Restore`] from `on_job`.
    pub fn open<E: std::error::Error + Send + Sync + 'static>(
        dir: &Path,
        new_ids: IdSecret,
        fatal: Fatal,
        on_job: impl FnMut(JobRecord) -> Result<(), E>,
    ) -> Result<(Store, StoreMeta), StoreError> {
        let path = dir.join(FILE_NAME);
        let made = match private_dir(dir) {
            Ok(made) => made,
            Err(e) => {
                return Err(StoreError::Open {
                    path,
                    source: e.into(),
                });
            }
        };
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
        // redb creates the file with the umask's mode: jobs are for this
        // user only.
        if db.is_ok()
            && let Err(e) = std::fs::set_permissions(&path, Permissions::from_mode(0o600))
        {
            return Err(StoreError::Open {
                path,
                source: e.into(),
            });
        }
        let journal_path = dir.join(JOURNAL_FILE_NAME);
        let journal = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&journal_path)
            .map_err(|e| StoreError::Open {
                path: journal_path,
                source: e.into(),
            })?;
        // Before the first commit is acknowledged: the directory's files,
        // and each directory the broker made, in its parent.
        let parents = made.iter().map(|made| match made.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        });
        let synced = std::iter::once(dir).chain(parents).try_for_each(sync_dir);
        if let Err(e) = synced {
            return Err(StoreError::Open {
                path: dir.to_path_buf(),
                source: e.into(),
            });
        }
        Self::start(
            path,
            db,
            Box::new(JournalFile(journal)),
            new_ids,
            fatal,
            on_job,
        )
    }

    /// Replays `journal` into the database `db` opened at `path`, reads it
    /// back and starts its writer.
    pub(super) fn start<E: std::error::Error + Send + Sync + 'static>(
        path: PathBuf,
        db: Result<Database, redb::DatabaseError>,
        journal: Box<dyn StorageBackend>,
        new_ids: IdSecret,
        fatal: Fatal,
        on_job: impl FnMut(JobRecord) -> Result<(), E>,
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
        let journal = journal::recover(&db, journal, &path.with_file_name(JOURNAL_FILE_NAME))?;
        let meta = read_back(&db, new_ids, on_job).map_err(|e| match e {
            ReadError::Corrupt(what) => corrupt(what),
            ReadError::Redb(e) => corrupt(e.to_string()),
            ReadError::Restore(e) => StoreError::Restore(e.into()),
        })?;
        let (tx, rx) = mpsc::channel();
        let last_commit_micros = Arc::new(AtomicU64::new(0));
        let writer = {
            let fatal = fatal.clone();
            let last_commit_micros = last_commit_micros.clone();
            std::thread::Builder::new()
                .name("sluice-store".into())
                .spawn(move || write_loop(db, journal, &rx, &fatal, &last_commit_micros))
                .map_err(|e| open_err(e.into()))?
        };
        Ok((
            Store {
                path,
                last_commit_micros,
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                fatal,
            },
            meta,
        ))
    }
}

enum ReadError<E> {
    Corrupt(String),
    Redb(redb::Error),
    Restore(E),
}

impl<T: Into<redb::Error>, E> From<T> for ReadError<E> {
    fn from(e: T) -> Self {
        ReadError::Redb(e.into())
    }
}

/// Creates the tables if new, keeps `new_ids` if there are none, and
/// reads everything back: jobs to `on_job`, the rest returned.
fn read_back<E>(
    db: &Database,
    new_ids: IdSecret,
    mut on_job: impl FnMut(JobRecord) -> Result<(), E>,
) -> Result<StoreMeta, ReadError<E>> {
    let txn = db.begin_write()?;
    {
        txn.open_table(JOBS)?;
        txn.open_table(PAYLOADS)?;
        txn.open_table(PAUSED)?;
        txn.open_table(LIMITS)?;
        txn.open_table(SCHEDULES)?;
        txn.open_table(SOURCES)?;
        let mut meta = txn.open_table(META)?;
        if meta.get("instance")?.is_none() {
            meta.insert("instance", new_ids.instance.as_slice())?;
        }
        // A store made before ids were encrypted has an instance and no
        // key: it gets one now, and its jobs new ids.
        if meta.get("id_key")?.is_none() {
            meta.insert("id_key", new_ids.key.as_slice())?;
        }
    }
    txn.commit()?;

    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let read_meta = |key: &str| -> Result<Option<Vec<u8>>, ReadError<E>> {
        Ok(meta.get(key)?.map(|v| v.value().to_vec()))
    };
    let fixed = |key: &str, value: Option<Vec<u8>>| -> Result<Vec<u8>, ReadError<E>> {
        value.ok_or_else(|| ReadError::Corrupt(format!("meta {key} is missing")))
    };
    let instance: [u8; 8] = fixed("instance", read_meta("instance")?)?
        .try_into()
        .map_err(|_| ReadError::Corrupt("meta instance is not 8 bytes".into()))?;
    let key: [u8; 16] = fixed("id_key", read_meta("id_key")?)?
        .try_into()
        .map_err(|_| ReadError::Corrupt("meta id_key is not 16 bytes".into()))?;
    let next_seq = match read_meta("next_seq")? {
        None => 0,
        Some(bytes) => u64::from_be_bytes(
            bytes
                .try_into()
                .map_err(|_| ReadError::Corrupt("meta next_seq is not 8 bytes".into()))?,
        ),
    };
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
    let mut limits = Vec::new();
    for entry in txn.open_table(LIMITS)?.iter()? {
        let (queue, record) = entry?;
        let queue = queue.value().to_owned();
        let record = std::str::from_utf8(record.value())
            .map_err(|e| e.to_string())
            .and_then(crate::limits_record::decode)
            .map_err(|e| ReadError::Corrupt(format!("the limits of queue {queue}: {e}")))?;
        limits.push((queue, record));
    }
    let mut schedules = Vec::new();
    for entry in txn.open_table(SCHEDULES)?.iter()? {
        let (name, record) = entry?;
        schedules.push((name.value().to_owned(), record.value().to_vec()));
    }
    let mut sources = Vec::new();
    for entry in txn.open_table(SOURCES)?.iter()? {
        let (key, record) = entry?;
        let (group, key) = key.value();
        sources.push((group.to_owned(), key.to_owned(), record.value().to_vec()));
    }
    Ok(StoreMeta {
        ids: Some(IdSecret { instance, key }),
        next_seq,
        paused,
        limits,
        schedules,
        sources,
    })
}
