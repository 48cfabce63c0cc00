//! The queue's side of flow control (`flow.rs` has the rules): keeping
//! each key's place in the lanes' rings as limits hold and free it,
//! waking held keys and queues when their time comes, dealing the jobs a
//! freed limit lets go, and the operator's calls (set limits, hold a key,
//! read keys).
//!
//! The invariant, with the consumers' (see `lib.rs`): a key is in the
//! rings of its queue exactly while [`Flow::key_hold`] says nothing holds
//! it, a queue deals exactly while [`Flow::queue_hold`] says nothing holds
//! it, and every hold with a time has a wake-up at that time. So no
//! consumer with a free slot accepts a ready job that no limit holds.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::Queue;
use super::flow::{Flow, HoldReason, QueueLimits};
use super::job::Seq;
use super::lanes::KeyTag;
use super::names::NameId;
use crate::{QueueError, Timestamp};

/// One key of a queue, as `sluice keys` and Stats show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStats {
    /// The key.
    pub key: String,
    /// Its jobs leased now.
    pub in_flight: u32,
    /// Its jobs READY now.
    pub ready: u64,
    /// What holds its ready jobs back, if anything does.
    pub held_by: Option<HoldReason>,
    /// Until when a worker held it back (`key_delay`), if it did.
    pub held_until: Option<Timestamp>,
}

/// A queue's flow control as Stats shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowStats {
    /// Its limits.
    pub limits: QueueLimits,
    /// Ready jobs held back, by [`HoldReason::ALL`]'s order.
    pub waiting: [u64; 4],
    /// The keys with the most jobs waiting, most first.
    pub top_keys: Vec<KeyStats>,
}

impl FlowStats {
    /// The figures of a queue with `limits`: its `keys` (each with what
    /// holds it, if anything), the queue's own hold, and its ready jobs
    /// without a key. A key's ready jobs wait on its own hold, else on the
    /// queue's. One definition for every backend.
    pub fn of(
        limits: QueueLimits,
        keys: Vec<KeyStats>,
        queue_hold: Option<HoldReason>,
        keyless_ready: u64,
    ) -> Self {
        let slot = |reason: HoldReason| HoldReason::ALL.iter().position(|&r| r == reason);
        let mut waiting = [0u64; 4];
        let mut top = Vec::new();
        for mut key in keys.into_iter().filter(|k| k.ready > 0) {
            key.held_by = key.held_by.or(queue_hold);
            if let Some(i) = key.held_by.and_then(slot) {
                waiting[i] += key.ready;
            }
            top.push(key);
        }
        if let Some(i) = queue_hold.and_then(slot) {
            waiting[i] += keyless_ready;
        }
        top.sort_by(|a, b| b.ready.cmp(&a.ready).then_with(|| a.key.cmp(&b.key)));
        top.truncate(TOP_KEYS);
        Self {
            limits,
            waiting,
            top_keys: top,
        }
    }

    /// Ready jobs held back for `reason`.
    pub fn waiting(&self, reason: HoldReason) -> u64 {
        self.waiting[HoldReason::ALL
            .iter()
            .position(|&r| r == reason)
            .unwrap_or_default()]
    }
}

/// Keys Stats lists per queue.
pub const TOP_KEYS: usize = 10;

/// Every key `flow` knows, as ListKeys and Stats show them at `now`.
fn key_stats(flow: &Flow, now: Timestamp) -> Vec<KeyStats> {
    flow.keys
        .iter()
        .map(|(key, state)| KeyStats {
            key: key.to_string(),
            in_flight: state.in_flight,
            ready: state.ready,
            held_by: flow.key_hold(key, now).map(|h| h.reason),
            held_until: state.held_until.filter(|&t| t > now),
        })
        .collect()
}

/// `keys`, busiest first (jobs in flight and ready), at most `limit`: the
/// order of ListKeys on every backend.
pub fn busiest_first(mut keys: Vec<KeyStats>, limit: usize) -> Vec<KeyStats> {
    keys.sort_by(|a, b| {
        (u64::from(b.in_flight) + b.ready)
            .cmp(&(u64::from(a.in_flight) + a.ready))
            .then_with(|| a.key.cmp(&b.key))
    });
    keys.truncate(limit);
    keys
}

impl Queue {
    /// Sets the limits of `queue` (empty limits clear them). They apply at
    /// once: jobs they free are dealt, jobs in flight past a lowered limit
    /// run on (no more start until the count is under it).
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] for a new queue name past the limit.
    pub fn set_limits(
        &mut self,
        queue: &str,
        limits: QueueLimits,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let id = self.take_name(queue)?;
        let qs = self.queues.entry(id).or_default();
        let had = !qs.flow.limits.is_empty();
        let has = !limits.is_empty();
        qs.flow.set_limits(limits);
        // The limits hold one reference to the name while there are any
        // (take_name took one).
        if had || !has {
            self.names.release(id);
        }
        if had && !has {
            self.names.release(id);
        }
        if self.jobs.is_tracking() {
            self.limits_changed.push(self.names.shared(id));
        }
        self.refresh_queue(id, now);
        let keys: Vec<Arc<str>> = self.queues[&id].flow.keys.keys().cloned().collect();
        for key in keys {
            self.refresh_key(id, &key, now);
        }
        self.pump(now);
        Ok(())
    }

    /// The limits of `queue` (empty if it has none).
    pub fn limits(&self, queue: &str) -> QueueLimits {
        self.names
            .get(queue)
            .and_then(|id| self.queues.get(&id))
            .map(|qs| qs.flow.limits.clone())
            .unwrap_or_default()
    }

    /// Every queue's limits, for the store.
    pub fn all_limits(&self) -> Vec<(String, QueueLimits)> {
        self.queues
            .iter()
            .filter(|(_, qs)| !qs.flow.limits.is_empty())
            .map(|(&id, qs)| (self.names.name(id).to_owned(), qs.flow.limits.clone()))
            .collect()
    }

    /// Holds every job of the key of the job under `lease_id` for `delay`
    /// (a worker's `key_delay`, before it releases or fails the job). A job
    /// without a key holds nothing.
    ///
    /// # Errors
    /// [`QueueError::UnknownJob`], or [`QueueError::StaleLease`] when the lease is not current.
    pub fn hold_key(
        &mut self,
        job_id: Uuid,
        lease_id: Uuid,
        delay: Duration,
        now: Timestamp,
    ) -> Result<(), QueueError> {
        let seq = self.leased(job_id, lease_id)?;
        self.hold_key_of(seq, delay, now);
        Ok(())
    }

    /// [`Queue::hold_key`] for job `seq`.
    pub(super) fn hold_key_of(&mut self, seq: Seq, delay: Duration, now: Timestamp) {
        let job = &self.jobs[seq];
        let (queue, Some(key)) = (job.queue, job.key().cloned()) else {
            return;
        };
        if delay.is_zero() {
            return;
        }
        let until = now.saturating_add(delay);
        if let Some(qs) = self.queues.get_mut(&queue) {
            qs.flow.hold_key(&key, until);
        }
        self.log_job(seq, None, super::LogLevel::Info, "job's key held back");
        self.refresh_key(queue, &key, now);
    }

    /// The keys of `queue` with jobs ready or in flight, or held back:
    /// most jobs (in flight and ready) first, at most `limit`.
    pub fn keys(&self, queue: &str, limit: usize, now: Timestamp) -> Vec<KeyStats> {
        let Some(qs) = self.names.get(queue).and_then(|id| self.queues.get(&id)) else {
            return Vec::new();
        };
        busiest_first(key_stats(&qs.flow, now), limit)
    }

    /// The flow figures of queue `id` for Stats.
    pub(super) fn flow_stats(&self, id: NameId, now: Timestamp) -> FlowStats {
        let qs = &self.queues[&id];
        let keyed_ready: u64 = qs.flow.keys.values().map(|s| s.ready).sum();
        let keyless_ready = qs.counts[crate::JobState::Ready.index()].saturating_sub(keyed_ready);
        FlowStats::of(
            qs.flow.limits.clone(),
            key_stats(&qs.flow, now),
            qs.flow.queue_hold(now).map(|h| h.reason),
            keyless_ready,
        )
    }

    /// Whether jobs of `key` in queue `id` may be dealt now: brings the
    /// key's place in the rings and its wake-up up to date, and has the
    /// queue dealt if the key was just freed.
    pub(super) fn refresh_key(&mut self, id: NameId, key: &Arc<str>, now: Timestamp) -> bool {
        let Some(qs) = self.queues.get_mut(&id) else {
            return false;
        };
        let hold = qs.flow.key_hold(key, now);
        let open = hold.is_none();
        let state = qs.flow.keys.entry(key.clone()).or_default();
        let was_open = std::mem::replace(&mut state.open, open);
        let ready = state.ready;
        if open != was_open {
            let tag: KeyTag = Some(key.clone());
            for lanes in qs.ready.values_mut() {
                if open {
                    lanes.open(&tag);
                } else {
                    lanes.close(&tag);
                }
            }
            // Its jobs may go to consumers that had nothing to take.
            if open && ready > 0 && !self.to_pump.contains(&id) {
                self.to_pump.push(id);
            }
        }
        if let Some(until) = hold.and_then(|h| h.until) {
            self.flow_wakeups.insert((until, id, Some(key.clone())));
        }
        open
    }

    /// Whether queue `id` may deal now, as [`Queue::refresh_key`] for a key.
    pub(super) fn refresh_queue(&mut self, id: NameId, now: Timestamp) -> bool {
        let Some(qs) = self.queues.get_mut(&id) else {
            return false;
        };
        let hold = qs.flow.queue_hold(now);
        let held = hold.is_some();
        if std::mem::replace(&mut qs.flow.held, held) && !held && !self.to_pump.contains(&id) {
            self.to_pump.push(id);
        }
        if let Some(until) = hold.and_then(|h| h.until) {
            self.flow_wakeups.insert((until, id, None));
        }
        !held
    }

    /// A job of queue `id` was leased: it takes its key's and its queue's
    /// slots and tokens, and its key's turn moves on.
    pub(super) fn flow_leased(&mut self, seq: Seq, now: Timestamp) {
        let job = &self.jobs[seq];
        let (id, job_type, key) = (job.queue, job.job_type, job.key().cloned());
        let Some(qs) = self.queues.get_mut(&id) else {
            return;
        };
        qs.flow.leased(key.as_ref(), now);
        let weight = key.as_deref().map_or(1, |k| qs.flow.limits.weight(k));
        if let Some(lanes) = qs.ready.get_mut(&job_type) {
            lanes.dealt(&key, weight);
        }
        if let Some(key) = &key {
            self.refresh_key(id, key, now);
        }
        self.refresh_queue(id, now);
    }

    /// The lease of job `seq` ended: its slots are free again.
    pub(super) fn flow_lease_ended(&mut self, seq: Seq, now: Timestamp) {
        let job = &self.jobs[seq];
        let (id, key) = (job.queue, job.key().cloned());
        let Some(qs) = self.queues.get_mut(&id) else {
            return;
        };
        qs.flow.lease_ended(key.as_ref());
        if let Some(key) = &key {
            self.refresh_key(id, key, now);
            if let Some(qs) = self.queues.get_mut(&id) {
                qs.flow.forget_if_idle(key, now);
            }
        }
        self.refresh_queue(id, now);
    }

    /// Job `seq` became READY: counts it for its key, and says whether its
    /// key may be dealt now (the queue's own hold aside).
    pub(super) fn flow_ready(&mut self, seq: Seq, now: Timestamp) -> bool {
        let job = &self.jobs[seq];
        let (id, key) = (job.queue, job.key().cloned());
        let Some(key) = key else {
            return true;
        };
        // Refreshed before it counts: a key seen for the first time has
        // nothing else waiting to deal.
        let open = self.refresh_key(id, &key, now);
        if let Some(state) = self
            .queues
            .get_mut(&id)
            .and_then(|qs| qs.flow.keys.get_mut(&key))
        {
            state.ready += 1;
        }
        open
    }

    /// Job `seq` is no longer READY (leased, or taken out).
    pub(super) fn flow_unready(&mut self, seq: Seq, now: Timestamp) {
        let job = &self.jobs[seq];
        let (id, Some(key)) = (job.queue, job.key().cloned()) else {
            return;
        };
        if let Some(qs) = self.queues.get_mut(&id)
            && let Some(state) = qs.flow.keys.get_mut(&key)
        {
            state.ready = state.ready.saturating_sub(1);
            qs.flow.forget_if_idle(&key, now);
        }
    }

    /// Wakes the keys and queues whose hold ended by `now`.
    pub(super) fn wake_flow(&mut self, now: Timestamp) {
        while let Some((at, _, _)) = self.flow_wakeups.first() {
            if *at > now {
                break;
            }
            let Some((_, id, key)) = self.flow_wakeups.pop_first() else {
                break;
            };
            match key {
                Some(key) => {
                    self.refresh_key(id, &key, now);
                    if let Some(qs) = self.queues.get_mut(&id) {
                        qs.flow.forget_if_idle(&key, now);
                    }
                }
                None => {
                    self.refresh_queue(id, now);
                }
            }
        }
    }

    /// Deals the jobs of the queues a freed limit let go to every consumer
    /// of theirs with a free slot.
    pub(super) fn pump(&mut self, now: Timestamp) {
        while let Some(id) = self.to_pump.pop() {
            let Some(consumers) = self.queues.get(&id).map(|qs| qs.consumers.clone()) else {
                continue;
            };
            for consumer in consumers {
                self.fill(consumer, now);
            }
        }
    }
}
