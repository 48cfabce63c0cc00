//! The seam for sources (a Kafka topic's partitions and the like, read
//! by a process outside the broker that enqueues their records): every
//! backend keeps, per source group, rows of a key, a revision, an epoch,
//! a position and a body the backend does not read. What the rows mean
//! (members, partitions, who holds which) is `crate::sources`' business;
//! here a backend keeps the rows with the fewest rules.
//!
//! Two writes: a put, compare-and-set on the revision (claims, renewals,
//! resets), which leaves the position alone unless it sets it (a reset),
//! and a commit, which enqueues a partition's jobs and moves its position
//! in one atomic step (one transaction, one script, one group commit) if
//! the row still has the epoch and position its holder read: so a record
//! is enqueued once however sources and brokers die, and a holder whose
//! partition moved on (a new epoch) adds nothing. A commit does not
//! change the revision, so renewing a claim never races the commits of
//! its holder.

use bytes::Bytes;
use sluice_queue::{Enqueued, NewJob, QueueError};

use super::{BackendError, Expect};

/// One row of a source group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRow {
    /// Unique within the group.
    pub key: String,
    /// Bumped by every put.
    pub revision: u64,
    /// The fence of commits: a commit names the epoch it holds.
    pub epoch: u64,
    /// Where the next commit starts (the next record's offset); `None`
    /// before the first.
    pub position: Option<i64>,
    /// Encoded by `crate::sources`.
    pub body: Bytes,
}

/// One put of [`SourceStore::put_source_rows`].
#[derive(Debug, Clone)]
pub struct RowWrite {
    /// The row as it is to be (its revision the new one).
    pub row: SourceRow,
    /// What the store must hold first.
    pub expect: Expect,
    /// Deletes the row instead (`row`'s key and `expect` only).
    pub delete: bool,
    /// Writes `row.position` too; otherwise a row that exists keeps its
    /// own (a new row takes `row.position`).
    pub set_position: bool,
}

/// A partition's records to enqueue; see [`SourceStore::commit_source`].
#[derive(Debug, Clone)]
pub struct SourceCommit {
    /// The partition's row.
    pub key: String,
    /// The epoch its holder holds.
    pub epoch: u64,
    /// The position its holder read.
    pub from: Option<i64>,
    /// Each record's job and offset, in the partition's order.
    pub jobs: Vec<(NewJob, i64)>,
    /// The position once every job is taken (past the last record read,
    /// which may be past the last job's offset).
    pub to: i64,
}

/// What a commit did.
#[derive(Debug)]
pub struct SourceCommitted {
    /// The answers of the jobs taken, in order; when one was refused (a
    /// full queue), it is the last answer, and no job after it was added.
    pub answers: Vec<Result<Enqueued, QueueError>>,
    /// The partition's position now: the refused job's offset, else `to`.
    pub position: i64,
}

impl SourceCommit {
    /// The position after the first `taken` jobs.
    pub fn position_after(&self, taken: usize) -> i64 {
        self.jobs.get(taken).map_or(self.to, |(_, offset)| *offset)
    }
}

/// Where source groups live; see the module doc.
#[tonic::async_trait]
pub trait SourceStore: Send + Sync {
    /// Every row of `group`, by key.
    async fn source_rows(&self, group: &str) -> Result<Vec<SourceRow>, BackendError>;

    /// Writes each row the store holds as its write expects; whether each
    /// was written, in order. The rows are different ones.
    async fn put_source_rows(
        &self,
        group: &str,
        writes: Vec<RowWrite>,
    ) -> Result<Vec<bool>, BackendError>;

    /// If the row of `commit.key` has its epoch and position, enqueues the
    /// jobs in order until one is refused and moves the position past the
    /// jobs taken, atomically; `None` (nothing done) otherwise. Refused
    /// while draining, as Enqueue is.
    async fn commit_source(
        &self,
        group: &str,
        commit: SourceCommit,
    ) -> Result<Option<SourceCommitted>, BackendError>;
}

/// Whether a row at (`epoch`, `position`) takes `commit`.
pub fn commit_fits(row: Option<(u64, Option<i64>)>, commit: &SourceCommit) -> bool {
    row == Some((commit.epoch, commit.from))
}
