//! Operator's reads and controls over the queue: job lookup and listing,
//! statistics, open consumers, retry, cancel, purge, pause and resume.

use std::ops::Bound;
use std::sync::Arc;

use tracing::info;
use uuid::Uuid;

use super::consumers::Filter;
use super::job::{JobState, JobView, Seq};
use super::{Action, JobEvent, LOG_TARGET, LogLevel, Queue};
use crate::QueueError;
use crate::Timestamp;

/// Counters of one queue since the broker started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Jobs enqueued (duplicates not counted).
    pub enqueued: u64,
    /// Attempts acknowledged.
    pub acked: u64,
    /// Attempts failed by Nack.
    pub nacked: u64,
    /// Leases that expired.
    pub expired: u64,
    /// Jobs that went DEAD.
    pub dead: u64,
}

impl std::ops::AddAssign for Counters {
    /// Adds another broker's (or another time's) counts of the same queue.
    fn add_assign(&mut self, other: Counters) {
        self.enqueued += other.enqueued;
        self.acked += other.acked;
        self.nacked += other.nacked;
        self.expired += other.expired;
        self.dead += other.dead;
    }
}

/// One queue's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Hands out nothing while paused.
    pub paused: bool,
    /// Jobs in each state, by [`JobState::index`].
    pub counts: [u64; 6],
    /// Counters since start.
    pub counters: Counters,
    /// When the READY job that has waited longest became due.
    pub oldest_ready_due: Option<Timestamp>,
    /// Its limits and what they hold back (shared backends leave it
    /// empty until they enforce limits).
    pub flow: crate::FlowStats,
}

impl QueueStats {
    /// Jobs in `state` now.
    pub fn count(&self, state: JobState) -> u64 {
        self.counts[state.index()]
    }
}

/// One open consumer, for ListWorkers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Who opened it.
    pub worker_id: Arc<str>,
    /// Queues it takes from.
    pub queues: Vec<String>,
    /// Types it takes; empty for any.
    pub job_types: Vec<String>,
    /// Unresolved jobs leased on it.
    pub in_flight: u32,
    /// Its limit.
    pub max_in_flight: u32,
    /// When it opened.
    pub connected_since: Timestamp,
}

/// Which jobs ListJobs returns.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only queues it covers (the caller's credential).
    pub scope: crate::QueueScope,
}

/// A page of ListJobs.
#[derive(Debug)]
pub struct ListPage<'a> {
    /// The matching jobs, in creation order.
    pub jobs: Vec<JobView<'a>>,
    /// Where the next page starts; `None` at the end.
    pub next: Option<u64>,
}

/// Jobs looked at per ListJobs page or PurgeQueue step at most, so that one
/// call never holds the queue for long.
pub const SCAN_BUDGET: usize = 10_000;

impl Queue {
    /// The job `job_id`.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`].
    pub fn job(&self, job_id: Uuid) -> Result<JobView<'_>, QueueError> {
        let seq = self.seq_of(job_id)?;
        Ok(self.view(seq))
    }

    /// Up to `limit` jobs matching `filter` after position `after`, looking
    /// at no more than [`SCAN_BUDGET`] jobs: a page may be short while more follow.
    pub fn list(&self, filter: &JobFilter, after: Option<u64>, limit: usize) -> ListPage<'_> {
        let queue = match &filter.queue {
            Some(name) => match self.names.get(name) {
                Some(id) => Some(id),
                None => {
                    return ListPage {
                        jobs: Vec::new(),
                        next: None,
                    };
                }
            },
            None => None,
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut jobs = Vec::new();
        let mut last = None;
        for (scanned, (seq, job)) in self.jobs.range((start, Bound::Unbounded)).enumerate() {
            if jobs.len() == limit || scanned == SCAN_BUDGET {
                return ListPage { jobs, next: last };
            }
            last = Some(seq);
            if queue.is_none_or(|q| job.queue == q)
                && filter.state.is_none_or(|s| job.state == s)
                && (filter.scope.is_every() || filter.scope.allows(self.names.name(job.queue)))
            {
                jobs.push(self.view(seq));
            }
        }
        ListPage { jobs, next: None }
    }

    /// Statistics of every queue that holds or held a job or is paused, by name.
    pub fn stats(&self, now: Timestamp) -> Vec<QueueStats> {
        let mut stats: Vec<QueueStats> = self
            .queues
            .iter()
            // `enqueued` alone would hide, after a restart (counters start
            // from zero), queues that hold restored jobs.
            .filter(|(_, qs)| {
                qs.paused
                    || qs.counters.enqueued > 0
                    || qs.counts.iter().any(|&n| n > 0)
                    || !qs.flow.limits.is_empty()
            })
            .map(|(&id, qs)| QueueStats {
                queue: self.names.name(id).to_owned(),
                paused: qs.paused,
                counts: qs.counts,
                counters: qs.counters,
                oldest_ready_due: qs.ready.values().filter_map(|l| l.oldest_due()).min(),
                flow: self.flow_stats(id, now),
            })
            .collect();
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        stats
    }

    /// The open consumers, oldest first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.consumers
            .values()
            .map(|c| WorkerInfo {
                worker_id: c.worker_id.clone(),
                queues: c
                    .queues
                    .iter()
                    .map(|&q| self.names.name(q).to_owned())
                    .chain(c.waiting_names(Filter::Queue))
                    .collect(),
                job_types: c
                    .job_types
                    .iter()
                    .flatten()
                    .map(|&t| self.names.name(t).to_owned())
                    .chain(c.waiting_names(Filter::JobType))
                    .collect(),
                in_flight: c.in_flight,
                max_in_flight: c.max_in_flight,
                connected_since: c.connected_since,
            })
            .collect()
    }

    /// A DEAD or CANCELLED job runs again: READY, attempts reset.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] for any other
    /// state; [`QueueError::QueueFull`] when its queue is full;
    /// [`QueueError::OverMemory`] when the jobs are over `max_memory` even
    /// with the other retained jobs forgotten (a job to run again cannot be
    /// forgotten to make room, as a retained one can).
    pub fn retry(&mut self, job_id: Uuid, now: Timestamp) -> Result<(), QueueError> {
        let seq = self.seq_of(job_id)?;
        let job = &self.jobs[seq];
        let state = job.state;
        Action::Retry.check(job_id, state)?;
        self.check_room(job.queue)?;
        self.make_room(0, Some(seq), now)?;
        self.unindex(seq, now);
        // A new life: the last one's progress goes (it had no result).
        self.jobs.change_extras(seq, true, |e| e.progress = None);
        let job = self.jobs.get_mut(seq).expect("seq_of() found it");
        job.attempt = 0;
        job.cancel_requested = false;
        job.finished_at = Timestamp::default();
        job.run_at = now;
        self.log_job(seq, None, LogLevel::Info, "job retried by operator");
        self.observe(seq, JobEvent::Retried);
        self.make_ready(seq, now);
        Ok(())
    }

    /// Cancels a job: at once unless leased; a leased job is marked, its
    /// worker learns it on Extend and it ends CANCELLED when the worker
    /// resolves it (an Ack still records SUCCEEDED).
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`]; [`QueueError::WrongState`] for a finished job.
    pub fn cancel(&mut self, job_id: Uuid, now: Timestamp) -> Result<JobState, QueueError> {
        let seq = self.seq_of(job_id)?;
        let job = self.jobs.get_mut(seq).expect("seq_of() found it");
        let state = job.state;
        Action::Cancel.check(job_id, state)?;
        if state == JobState::Leased {
            job.cancel_requested = true;
        }
        self.log_job(seq, None, LogLevel::Info, "job cancelled by operator");
        if state == JobState::Leased {
            // Counted as cancelled when its worker resolves it.
            return Ok(JobState::Leased);
        }
        self.observe(seq, JobEvent::Cancelled);
        self.unindex(seq, now);
        self.finish(seq, JobState::Cancelled, now);
        Ok(JobState::Cancelled)
    }

    /// Deletes the jobs of `queue` in `state` created before `until` (a
    /// [`Queue::horizon`] taken when the purge began, so that jobs enqueued
    /// during it are spared), looking at no more than [`SCAN_BUDGET`] jobs
    /// after `after`. Returns how many were deleted and where to go on,
    /// `None` when done.
    ///
    /// # Errors
    /// [`QueueError::UnknownQueue`]; [`QueueError::PurgeLeased`] for state LEASED.
    pub fn purge_step(
        &mut self,
        queue: &str,
        state: JobState,
        after: Option<u64>,
        until: u64,
        now: Timestamp,
    ) -> Result<(u64, Option<u64>), QueueError> {
        if state == JobState::Leased {
            return Err(QueueError::PurgeLeased);
        }
        let queue_id = self
            .names
            .get(queue)
            .filter(|id| self.queues.contains_key(id))
            .ok_or_else(|| QueueError::UnknownQueue {
                queue: queue.to_owned(),
            })?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut doomed: Vec<Seq> = Vec::new();
        let mut next = None;
        for (scanned, (seq, job)) in self.jobs.range((start, Bound::Excluded(until))).enumerate() {
            if scanned == SCAN_BUDGET {
                break;
            }
            next = Some(seq);
            if job.queue == queue_id && job.state == state {
                doomed.push(seq);
            }
        }
        if next.is_some_and(|last| self.jobs.range(last + 1..until).next().is_none()) {
            next = None;
        }
        let purged = doomed.len() as u64;
        for seq in doomed {
            self.observe(seq, JobEvent::Purged);
            self.remove_job(seq, now);
        }
        if purged > 0 {
            info!(target: LOG_TARGET, queue, %state, purged, "jobs purged");
        }
        Ok((purged, next))
    }

    /// The position after the newest job: a purge stops there.
    pub fn horizon(&self) -> u64 {
        self.next_seq
    }

    /// Stops handing out the queue's jobs; enqueues still land.
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] for a new queue when the broker holds too many names.
    pub fn pause(&mut self, queue: &str) -> Result<(), QueueError> {
        let id = self.take_name(queue)?;
        let qs = self.queues.entry(id).or_default();
        if std::mem::replace(&mut qs.paused, true) {
            // Paused already: the flag holds its reference once.
            self.names.release(id);
        }
        self.note_paused(id);
        info!(target: LOG_TARGET, queue, "queue paused");
        Ok(())
    }

    /// Hands out the queue's jobs again. Resuming a queue never paused does nothing.
    pub fn resume(&mut self, queue: &str, now: Timestamp) {
        let Some(id) = self.names.get(queue) else {
            return;
        };
        self.note_paused(id);
        let Some(qs) = self.queues.get_mut(&id) else {
            return;
        };
        let was_paused = std::mem::replace(&mut qs.paused, false);
        let consumers = qs.consumers.clone();
        if was_paused {
            self.names.release(id);
        }
        info!(target: LOG_TARGET, queue, "queue resumed");
        for consumer in consumers {
            self.fill(consumer, now);
        }
    }
}
