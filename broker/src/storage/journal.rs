//! The journal (`DIR/sluice.journal`): what makes a commit durable. Each
//! group of changes is appended to it as one frame and fdatasynced before
//! any caller is answered; the redb file takes the same changes in a
//! transaction without an fsync of its own (redb's `Durability::None`). A
//! checkpoint (one durable redb commit) runs after [`CHECKPOINT_BYTES`] or
//! [`CHECKPOINT_GROUPS`], when the writer is idle, and on close; it starts a
//! new epoch, and the journal is written again from its start. A redb commit
//! writes every B-tree page the group touched and the file's allocator
//! state; an append writes the group's bytes once, most often into space
//! the file already has (it grows by [`GROW_BYTES`] of zeros), so the
//! fdatasync writes no inode.
//!
//! Epochs: the epoch the journal is in is kept in redb's meta table
//! (`journal_epoch`) and changed only by the durable commit that makes the
//! journal's frames redundant, so frames of an earlier epoch further in the
//! file are never replayed. An epoch is 64 random bits, not a count: job
//! payloads are written into frames byte for byte, and a payload shaped
//! like a frame of the next epoch could otherwise pass for one (replayed,
//! or taken for damage) once the journal's frames end where it sits.
//!
//! Recovery: on open, the journal's frames of the current epoch are applied
//! to the redb file in one durable transaction that also starts the next
//! epoch, before anything is read back.
//!
//! Frames: a 24-byte header (magic `SLJ1`, body length, epoch, CRC-32 of the
//! body, CRC-32 of the header's first 20 bytes) and a protobuf body. Only
//! the last write can be unfinished after a crash, and it was never
//! answered: a bad frame with no intact frame of the epoch after it is that
//! write (or the end), and is dropped. A bad frame followed by an intact one
//! is damage to answered changes, and the broker refuses to start on it.

use std::os::unix::fs::FileExt as _;
use std::path::Path;

use bytes::Bytes;
use prost::Message;
use redb::{Database, ReadableTable as _, StorageBackend, WriteTransaction};
use sluice_queue::Change;

use super::{JOBS, LIMITS, META, PAUSED, PAYLOADS, SCHEDULES, SOURCES, StoreError, codec};

/// The journal's file in the data directory.
pub(super) const JOURNAL_FILE_NAME: &str = "sluice.journal";
/// Journal bytes after which the writer checkpoints: bounds the replay on
/// start and the redb pages kept for non-durable commits.
const CHECKPOINT_BYTES: u64 = 16 << 20;
/// Groups after which the writer checkpoints, however small: each
/// non-durable redb commit holds on to the pages it replaced until the
/// next durable one.
const CHECKPOINT_GROUPS: u32 = 1024;
/// The steps the journal file grows by.
const GROW_BYTES: u64 = 1 << 20;

const MAGIC: [u8; 4] = *b"SLJ1";
const HEADER: usize = 24;
/// The meta table's key for the current epoch (u64, big-endian).
const EPOCH_KEY: &str = "journal_epoch";

/// One frame's body: a group's changes, as redb will take them.
#[derive(Clone, PartialEq, Message)]
struct Frame {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Entry>,
}

/// One change, encoded once for both the journal and redb.
#[derive(Clone, PartialEq, Message)]
pub(super) struct Entry {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    kind: Option<Kind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Kind {
    #[prost(message, tag = "1")]
    Put(PutEntry),
    /// A job removed, by seq.
    #[prost(uint64, tag = "2")]
    Delete(u64),
    #[prost(message, tag = "3")]
    Paused(PausedEntry),
    #[prost(message, tag = "4")]
    Schedule(RowEntry),
    #[prost(message, tag = "5")]
    Source(RowEntry),
    /// A queue's limits: `name` the queue, `record` as
    /// `crate::limits_record` encodes them, `None` when cleared.
    #[prost(message, tag = "6")]
    Limits(RowEntry),
}

#[derive(Clone, PartialEq, Message)]
struct PutEntry {
    #[prost(uint64, tag = "1")]
    seq: u64,
    /// The record as `codec` stores it.
    #[prost(bytes = "vec", tag = "2")]
    record: Vec<u8>,
    /// The payload, for a job just enqueued only.
    #[prost(bytes = "bytes", optional, tag = "3")]
    payload: Option<Bytes>,
}

#[derive(Clone, PartialEq, Message)]
struct PausedEntry {
    #[prost(string, tag = "1")]
    queue: String,
    #[prost(bool, tag = "2")]
    paused: bool,
}

/// A schedule (`key` empty) or source row; `record` `None` removes it.
#[derive(Clone, PartialEq, Message)]
struct RowEntry {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "vec", optional, tag = "3")]
    record: Option<Vec<u8>>,
}

/// `changes` as journal entries.
pub(super) fn entries<'a>(changes: impl Iterator<Item = &'a Change>) -> Vec<Entry> {
    changes
        .map(|change| {
            let kind = match change {
                Change::Put { record, new } => Kind::Put(PutEntry {
                    seq: record.seq,
                    record: codec::encode(record),
                    payload: new.then(|| record.payload.clone()),
                }),
                Change::Delete { seq } => Kind::Delete(*seq),
                Change::Paused { queue, paused } => Kind::Paused(PausedEntry {
                    queue: queue.clone(),
                    paused: *paused,
                }),
                Change::Limits { queue, limits } => Kind::Limits(RowEntry {
                    name: queue.clone(),
                    key: String::new(),
                    record: (!limits.is_empty())
                        .then(|| crate::limits_record::encode(limits).into_bytes()),
                }),
                Change::Schedule { name, record } => Kind::Schedule(RowEntry {
                    name: name.clone(),
                    key: String::new(),
                    record: record.clone(),
                }),
                Change::Source { group, key, record } => Kind::Source(RowEntry {
                    name: group.clone(),
                    key: key.clone(),
                    record: record.clone(),
                }),
            };
            Entry { kind: Some(kind) }
        })
        .collect()
}

/// Writes `entries` into `txn`, in order. Returns how many jobs they removed.
pub(super) fn apply(txn: &WriteTransaction, entries: &[Entry]) -> Result<usize, redb::Error> {
    let mut jobs = txn.open_table(JOBS)?;
    let mut payloads = txn.open_table(PAYLOADS)?;
    let mut paused = txn.open_table(PAUSED)?;
    let mut schedules = txn.open_table(SCHEDULES)?;
    let mut limits = txn.open_table(LIMITS)?;
    let mut sources = txn.open_table(SOURCES)?;
    let mut next_seq = None;
    let mut removed = 0;
    for kind in entries.iter().filter_map(|e| e.kind.as_ref()) {
        match kind {
            Kind::Put(put) => {
                jobs.insert(put.seq, put.record.as_slice())?;
                if let Some(payload) = &put.payload {
                    payloads.insert(put.seq, payload.as_ref())?;
                    next_seq = next_seq.max(Some(put.seq + 1));
                }
            }
            Kind::Delete(seq) => {
                jobs.remove(seq)?;
                payloads.remove(seq)?;
                removed += 1;
            }
            Kind::Paused(p) if p.paused => {
                paused.insert(p.queue.as_str(), ())?;
            }
            Kind::Paused(p) => {
                paused.remove(p.queue.as_str())?;
            }
            Kind::Schedule(row) => match &row.record {
                Some(record) => {
                    schedules.insert(row.name.as_str(), record.as_slice())?;
                }
                None => {
                    schedules.remove(row.name.as_str())?;
                }
            },
            Kind::Limits(row) => match &row.record {
                Some(record) => {
                    limits.insert(row.name.as_str(), record.as_slice())?;
                }
                None => {
                    limits.remove(row.name.as_str())?;
                }
            },
            Kind::Source(row) => match &row.record {
                Some(record) => {
                    sources.insert((row.name.as_str(), row.key.as_str()), record.as_slice())?;
                }
                None => {
                    sources.remove((row.name.as_str(), row.key.as_str()))?;
                }
            },
        }
    }
    if let Some(next_seq) = next_seq {
        let mut meta = txn.open_table(META)?;
        // Never backwards: a replayed frame may be older than the file.
        let stored = meta
            .get("next_seq")?
            .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
            .map_or(0, u64::from_be_bytes);
        if next_seq > stored {
            meta.insert("next_seq", next_seq.to_be_bytes().as_slice())?;
        }
    }
    Ok(removed)
}

/// The journal file, appended to by the writer thread.
pub(super) struct Journal {
    file: Box<dyn StorageBackend>,
    /// Where the next frame goes.
    len: u64,
    /// The file's length.
    capacity: u64,
    /// Frames since the last checkpoint.
    groups: u32,
    epoch: u64,
}

impl Journal {
    /// Appends `entries` as one frame and fdatasyncs it.
    pub(super) fn append(&mut self, entries: &[Entry]) -> std::io::Result<()> {
        let frame = encode_frame(entries, self.epoch)?;
        let end = self.len + frame.len() as u64;
        if end > self.capacity {
            // Grow by whole steps of real zeros (not a hole: writing into
            // a hole allocates blocks, and the fdatasync would write the
            // inode again), so most appends only overwrite.
            let capacity = end.div_ceil(GROW_BYTES) * GROW_BYTES;
            self.file.set_len(capacity)?;
            let zeros = vec![0; usize::try_from(capacity - end).unwrap_or(0)];
            self.file.write(end, &zeros)?;
            self.capacity = capacity;
        }
        self.file.write(self.len, &frame)?;
        self.file.sync_data()?;
        self.len = end;
        self.groups += 1;
        Ok(())
    }

    /// Whether it holds anything a checkpoint would make redundant.
    pub(super) fn is_empty(&self) -> bool {
        self.groups == 0
    }

    /// Whether it is time for a checkpoint.
    pub(super) fn is_full(&self) -> bool {
        self.len >= CHECKPOINT_BYTES || self.groups >= CHECKPOINT_GROUPS
    }

    /// Makes every change redb took durable in redb, in the commit that
    /// starts the next epoch; the journal is written from its start again.
    pub(super) fn checkpoint(&mut self, db: &Database) -> Result<(), redb::Error> {
        // A durable commit persists the non-durable ones before it.
        let txn = db.begin_write()?;
        let next = new_epoch(self.epoch);
        write_epoch(&txn, next)?;
        txn.commit()?;
        self.epoch = next;
        self.len = 0;
        self.groups = 0;
        Ok(())
    }
}

/// A new epoch: random (see the module doc), never the current one.
fn new_epoch(current: u64) -> u64 {
    loop {
        let epoch = rand::random::<u64>();
        if epoch != current {
            return epoch;
        }
    }
}

/// The epoch in the meta table (0 in a store older than the journal).
fn read_epoch(txn: &WriteTransaction) -> Result<u64, redb::Error> {
    Ok(txn
        .open_table(META)?
        .get(EPOCH_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn write_epoch(txn: &WriteTransaction, epoch: u64) -> Result<(), redb::Error> {
    txn.open_table(META)?
        .insert(EPOCH_KEY, epoch.to_be_bytes().as_slice())?;
    Ok(())
}

fn encode_frame(entries: &[Entry], epoch: u64) -> std::io::Result<Vec<u8>> {
    let body = Frame {
        entries: entries.to_vec(),
    };
    let len = u32::try_from(body.encoded_len())
        .map_err(|_| std::io::Error::other("a group of changes over 4 GiB"))?;
    let mut frame = Vec::with_capacity(HEADER + len as usize);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&epoch.to_le_bytes());
    frame.extend_from_slice(&[0; 8]);
    body.encode(&mut frame).map_err(std::io::Error::other)?;
    let body_crc = crc32fast::hash(&frame[HEADER..]);
    frame[16..20].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32fast::hash(&frame[..20]);
    frame[20..24].copy_from_slice(&header_crc.to_le_bytes());
    Ok(frame)
}

/// The epoch of the intact header at the start of `bytes`, with the
/// body's length and CRC.
fn header_at(bytes: &[u8]) -> Option<(u64, usize, u32)> {
    let header: &[u8; HEADER] = bytes.get(..HEADER)?.try_into().ok()?;
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[..4] != MAGIC || crc32fast::hash(&header[..20]) != word(20) {
        return None;
    }
    let epoch = u64::from(word(8)) | (u64::from(word(12)) << 32);
    Some((epoch, usize::try_from(word(4)).ok()?, word(16)))
}

/// The intact frame of `epoch` at the start of `bytes`, as (its entries,
/// its length).
fn frame_at(bytes: &[u8], epoch: u64) -> Option<(Vec<Entry>, usize)> {
    let (found, len, crc) = header_at(bytes)?;
    let body = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    if found != epoch || crc32fast::hash(body) != crc {
        return None;
    }
    let frame = Frame::decode(body).ok()?;
    Some((frame.entries, HEADER + len))
}

/// What [`read`] found.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Every intact frame's entries, in order.
    pub(super) entries: Vec<Entry>,
    /// An unfinished last write was dropped.
    pub(super) unfinished: bool,
}

/// Why [`read`] failed.
#[derive(Debug)]
pub(super) enum ReadError {
    Io(std::io::Error),
    /// Damage before the end, described.
    Damaged(String),
}

/// Reads the frames of `epoch` in `file`.
pub(super) fn read(file: &dyn StorageBackend, epoch: u64) -> Result<Recovered, ReadError> {
    let len = file.len().map_err(ReadError::Io)?;
    let len = usize::try_from(len)
        .map_err(|_| ReadError::Io(std::io::Error::other("the journal is too large")))?;
    let mut bytes = vec![0; len];
    file.read(0, &mut bytes).map_err(ReadError::Io)?;
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some((frame, size)) = frame_at(&bytes[at..], epoch) {
        entries.extend(frame);
        at += size;
    }
    // The end of the epoch's frames. Only the last write may be
    // unfinished: an intact frame of the epoch after it means answered
    // changes were damaged.
    if let Some(next) = (at + 1..bytes.len()).find(|&i| frame_at(&bytes[i..], epoch).is_some()) {
        return Err(ReadError::Damaged(format!(
            "a damaged frame at byte {at}, with intact changes at byte {next} after it"
        )));
    }
    // What follows the epoch's frames: zeros (the file's preallocated
    // space), a frame of an earlier epoch, or an unfinished write.
    let rest = &bytes[at..];
    let unfinished = rest.iter().take(HEADER).any(|&b| b != 0)
        && header_at(rest).is_none_or(|(found, _, _)| found == epoch);
    Ok(Recovered {
        entries,
        unfinished,
    })
}

/// The journal's file: plain positioned writes, no locking (redb holds the
/// data directory's lock on its own file).
#[derive(Debug)]
pub(super) struct JournalFile(pub(super) std::fs::File);

impl StorageBackend for JournalFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read_exact_at(out, offset)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}

/// Applies the frames of the current epoch in `file` (at `path`) to `db`,
/// durably and in the commit that starts the next epoch (recovery, before
/// the store is read back).
///
/// # Errors
/// [`StoreError::Corrupt`] for damage the journal shows before its end,
/// [`StoreError::Open`] when it cannot be read.
pub(super) fn recover(
    db: &Database,
    file: Box<dyn StorageBackend>,
    path: &Path,
) -> Result<Journal, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        path: path.to_owned(),
        what,
    };
    let unreadable = |e: std::io::Error| StoreError::Open {
        path: path.to_owned(),
        source: e.into(),
    };
    let redb = |e: redb::Error| corrupt(e.to_string());
    let txn = db.begin_write().map_err(|e| redb(e.into()))?;
    let epoch = read_epoch(&txn).map_err(redb)?;
    let recovered = read(file.as_ref(), epoch).map_err(|e| match e {
        ReadError::Io(e) => unreadable(e),
        ReadError::Damaged(what) => corrupt(what),
    })?;
    if recovered.unfinished {
        tracing::warn!(
            "dropped the unfinished last write at the journal's end (never acknowledged)"
        );
    }
    apply(&txn, &recovered.entries).map_err(redb)?;
    let next = new_epoch(epoch);
    write_epoch(&txn, next).map_err(redb)?;
    txn.commit().map_err(|e| redb(e.into()))?;
    let capacity = file.len().map_err(unreadable)?;
    Ok(Journal {
        file,
        len: 0,
        capacity,
        groups: 0,
        epoch: next,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::ReadableDatabase as _;
    use redb::backends::InMemoryBackend;

    use super::*;

    fn paused(queue: &str, paused: bool) -> Entry {
        Entry {
            kind: Some(Kind::Paused(PausedEntry {
                queue: queue.into(),
                paused,
            })),
        }
    }

    fn file_of(bytes: &[u8]) -> InMemoryBackend {
        let file = InMemoryBackend::new();
        file.set_len(bytes.len() as u64).unwrap();
        file.write(0, bytes).unwrap();
        file
    }

    fn frames(epoch: u64, groups: &[&[Entry]]) -> Vec<u8> {
        groups
            .iter()
            .flat_map(|group| encode_frame(group, epoch).unwrap())
            .collect()
    }

    #[test]
    fn frames_of_the_epoch_read_back_in_order() {
        let mut bytes = frames(
            3,
            &[
                &[paused("a", true), paused("b", true)],
                &[paused("c", true)],
            ],
        );
        bytes.extend(vec![0; 4096]);
        let read = read(&file_of(&bytes), 3).unwrap();
        assert_eq!(
            read.entries,
            vec![paused("a", true), paused("b", true), paused("c", true)]
        );
        assert!(!read.unfinished);
    }

    #[test]
    fn frames_of_an_earlier_epoch_are_not_replayed() {
        // Epoch 1 wrote three frames; epoch 2 one, over the first.
        let old = frames(
            1,
            &[
                &[paused("x", true)],
                &[paused("y", true)],
                &[paused("z", true)],
            ],
        );
        let new = frames(2, &[&[paused("a", true)]]);
        let mut bytes = old.clone();
        bytes[..new.len()].copy_from_slice(&new);
        let read2 = read(&file_of(&bytes), 2).unwrap();
        assert_eq!(read2.entries, vec![paused("a", true)]);
        assert!(!read2.unfinished);
        // Epoch 3 has written nothing yet.
        let read3 = read(&file_of(&old), 3).unwrap();
        assert!(read3.entries.is_empty() && !read3.unfinished);
    }

    #[test]
    fn epochs_are_not_a_count() {
        // A payload shaped as a frame of "the next epoch" must not be one.
        let mut seen = std::collections::HashSet::new();
        let mut epoch = 0;
        for _ in 0..100 {
            let next = new_epoch(epoch);
            assert_ne!(next, epoch.wrapping_add(1));
            assert!(seen.insert(next));
            epoch = next;
        }
    }

    #[test]
    fn an_unfinished_last_write_is_dropped() {
        let first = frames(1, &[&[paused("a", true)]]);
        let last = frames(1, &[&[paused("b", true)]]);
        for cut in [1, HEADER - 1, HEADER, last.len() - 1] {
            let mut bytes = first.clone();
            bytes.extend(&last[..cut]);
            // The rest of the preallocated file.
            bytes.extend(vec![0; 100]);
            let read = read(&file_of(&bytes), 1).unwrap();
            assert_eq!(read.entries, vec![paused("a", true)], "cut at {cut}");
            assert!(read.unfinished, "cut at {cut}");
        }
    }

    #[test]
    fn damage_before_an_intact_frame_refuses() {
        let bytes = frames(
            1,
            &[
                &[paused("a", true)],
                &[paused("b", true)],
                &[paused("c", true)],
            ],
        );
        let first = frames(1, &[&[paused("a", true)]]).len();
        // A bit flipped in the second frame's body, then its length.
        for at in [first + HEADER + 2, first + 5] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x04;
            let err = read(&file_of(&damaged), 1).unwrap_err();
            assert!(
                matches!(&err, ReadError::Damaged(what) if what.contains(&format!("frame at byte {first}"))),
                "{err:?}"
            );
        }
    }

    /// One in-memory file shared by the journals of successive "starts".
    #[derive(Debug, Clone, Default)]
    struct SharedFile(Arc<InMemoryBackend>);

    impl StorageBackend for SharedFile {
        fn len(&self) -> std::io::Result<u64> {
            self.0.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.0.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.0.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.write(offset, data)
        }
    }

    fn paused_queues(db: &Database) -> Vec<String> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(PAUSED).unwrap();
        table
            .iter()
            .unwrap()
            .map(|e| e.unwrap().0.value().to_owned())
            .collect()
    }

    #[test]
    fn a_start_replays_what_only_the_journal_holds_once() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let file = SharedFile::default();
        let mut journal = recover(&db, Box::new(file.clone()), Path::new("j")).unwrap();
        // Answered, never given to redb: a crash right after the fsync.
        journal
            .append(&[paused("a", true), paused("b", true)])
            .unwrap();
        journal.append(&[paused("a", false)]).unwrap();
        assert_eq!(file.len().unwrap(), GROW_BYTES, "grown by a whole step");
        assert!(paused_queues(&db).is_empty());
        let mut journal = recover(&db, Box::new(file.clone()), Path::new("j")).unwrap();
        assert_eq!(paused_queues(&db), vec!["b"]);
        // The next epoch's frames, then a start: the earlier epoch's frames
        // further in the file are not applied again.
        journal.append(&[paused("b", false)]).unwrap();
        recover(&db, Box::new(file.clone()), Path::new("j")).unwrap();
        assert!(paused_queues(&db).is_empty());
        recover(&db, Box::new(file), Path::new("j")).unwrap();
        assert!(paused_queues(&db).is_empty());
    }

    #[test]
    fn a_checkpoint_makes_the_frames_before_it_redundant() {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .unwrap();
        let file = SharedFile::default();
        let mut journal = recover(&db, Box::new(file.clone()), Path::new("j")).unwrap();
        let group = [paused("a", true)];
        journal.append(&group).unwrap();
        let txn = db.begin_write().unwrap();
        apply(&txn, &group).unwrap();
        txn.commit().unwrap();
        journal.checkpoint(&db).unwrap();
        assert!(journal.is_empty());
        // What later epochs did (the queue resumed), then a start: the
        // frame that paused it, still in the file, must not be applied.
        let txn = db.begin_write().unwrap();
        apply(&txn, &[paused("a", false)]).unwrap();
        txn.commit().unwrap();
        recover(&db, Box::new(file), Path::new("j")).unwrap();
        assert!(paused_queues(&db).is_empty());
    }
}
