//! The memory high-water mark (`max_memory`): what the queue counts of the
//! memory its jobs hold, and how it stays under the mark.
//!
//! Counted per job, whatever its state (a DEAD job stays until RetryJob or
//! PurgeQueue, so it counts too): its payload, header names and values,
//! idempotency key (twice: the job's copy and the idempotency index's),
//! flow-control key,
//! last error, progress message, result, and [`JOB_OVERHEAD`] for the rest (the job record, its
//! indexes, the allocator's share). Not counted: interned names (at most
//! `MAX_NAMES` of at most 128 bytes), consumers, and the service's buffers.
//!
//! The count is exact: the job table adds a job's bytes when it is inserted
//! and takes them off when it is removed, and the changes to a held job's
//! size (its last error, progress and result) go through the table too. The bytes of
//! retained jobs (SUCCEEDED, CANCELLED) are counted apart as well, being
//! the ones the queue may forget to make room.
//!
//! Only new work is refused: an Enqueue, or a RetryJob, that would leave
//! the count above the mark first forgets retained jobs, oldest first, and
//! is refused with [`QueueError::OverMemory`] when forgetting all of them
//! would not be enough; a refusal changes nothing. Leases, acks, nacks and
//! admin calls are never refused: they free memory or keep it (a Nack's
//! error, at most 4 KiB, a progress message, at most 1 KiB, and an Ack's
//! result, at most 64 KiB, may take the count a little past the mark). Jobs
//! restored from the store are never refused either: they were
//! acknowledged, so a broker may start above the mark and refuse new work
//! until its jobs drain.

use tracing::debug;

use super::job::{Job, JobState, Seq};
use super::{LOG_TARGET, Queue};
use crate::QueueError;
use crate::Timestamp;

/// Bytes counted per job beyond its payload, headers, key and error:
/// the resident memory a queued job costs beyond its payload, measured with
/// `sluice-bench memory -n 1000000` as 178 B (`-s 100`) and 183 B
/// (`-s 1000`) per job (the README's Performance table: 171-181 B).
pub const JOB_OVERHEAD: u64 = 180;

impl Job {
    /// The bytes this job holds, as `max_memory` counts them.
    pub(crate) fn held_bytes(&self) -> u64 {
        let extras = self.extras.as_deref().map_or(0, |e| e.held_bytes());
        JOB_OVERHEAD + self.payload.len() as u64 + extras as u64
    }
}

impl Queue {
    /// The bytes the queue's jobs hold, as `max_memory` counts them (see
    /// the module docs).
    pub fn held_bytes(&self) -> u64 {
        self.jobs.held_bytes()
    }

    /// Of [`Queue::held_bytes`], the bytes of retained jobs (SUCCEEDED,
    /// CANCELLED), which the queue forgets, oldest first, to make room.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// Puts finished job `seq` in the retention set, counting its bytes.
    pub(super) fn retain(&mut self, seq: Seq) {
        let job = &self.jobs[seq];
        let (key, bytes) = (
            job.retention_key(seq, self.config.retention),
            job.held_bytes(),
        );
        if self.retained.insert(key) {
            self.retained_bytes += bytes;
        }
    }

    /// Takes job `seq` out of the retention set, if it is there.
    pub(super) fn unretain(&mut self, seq: Seq) {
        let job = &self.jobs[seq];
        let (key, bytes) = (
            job.retention_key(seq, self.config.retention),
            job.held_bytes(),
        );
        if self.retained.remove(&key) {
            self.retained_bytes -= bytes;
        }
    }

    /// Makes room for `needed` more bytes under `max_memory` by forgetting
    /// retained jobs, oldest first, but never job `keep`.
    ///
    /// # Errors
    /// [`QueueError::OverMemory`], with nothing forgotten, when forgetting
    /// every retained job but `keep` would not make room.
    pub(super) fn make_room(
        &mut self,
        needed: u64,
        keep: Option<Seq>,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let Some(limit) = self.config.max_memory else {
            return Ok(());
        };
        let held = self.jobs.held_bytes();
        if held.saturating_add(needed) <= limit {
            return Ok(());
        }
        let kept = keep
            .and_then(|seq| self.jobs.get(seq))
            .filter(|job| matches!(job.state, JobState::Succeeded | JobState::Cancelled))
            .map_or(0, Job::held_bytes);
        let floor = held - (self.retained_bytes - kept);
        if floor.saturating_add(needed) > limit {
            return Err(QueueError::OverMemory {
                held,
                needed,
                limit,
            });
        }
        let mut freed = 0;
        let mut doomed = Vec::new();
        for &(_, seq) in &self.retained {
            if held - freed + needed <= limit {
                break;
            }
            if Some(seq) != keep {
                freed += self.jobs[seq].held_bytes();
                doomed.push(seq);
            }
        }
        debug!(target: LOG_TARGET, forgotten = doomed.len(), freed, "retained jobs forgotten under --max-memory");
        for seq in doomed {
            self.remove_job(seq, now);
        }
        Ok(())
    }
}
