//! Consumers (open Lease streams) and how ready jobs are matched to their
//! free slots.
//!
//! A consumer's queues and types that are interned when it opens are
//! retained (see `names.rs`); those that no job uses yet are not interned
//! for it, so a Lease cannot fill the name table. The queue keeps them in
//! its `waiting` index, and when such a name is interned (a job of it is
//! enqueued, or its queue paused) every consumer waiting for it takes it
//! up as if it had been there when the consumer opened.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use super::job::{ConsumerId, JobState, Lease, Seq};
use super::names::NameId;
use super::{Queue, ReadyKey};
use crate::Timestamp;

/// What a Lease stream asks for, validated by the caller.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Who is asking.
    pub worker_id: String,
    /// Queues to take jobs from; not empty.
    pub queues: Vec<String>,
    /// Job types to take; empty for any.
    pub job_types: Vec<String>,
    /// Most unresolved jobs at once; at least 1.
    pub max_in_flight: u32,
    /// Lease length; `None` for the configured default.
    pub lease_duration: Option<Duration>,
    /// (job id, lease id) of jobs the worker holds from an earlier stream.
    pub held_leases: Vec<(Uuid, Uuid)>,
}

/// Which filter of a consumer a name is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Filter {
    Queue,
    JobType,
}

/// An open Lease stream.
#[derive(Debug)]
pub(super) struct Consumer {
    pub worker_id: Arc<str>,
    pub queues: Vec<NameId>,
    /// `None` takes any type; `Some` of an empty list takes none yet (its
    /// types are all waiting).
    pub job_types: Option<Vec<NameId>>,
    /// Names of its filters that are not interned yet.
    pub waiting: Vec<(Arc<str>, Filter)>,
    pub max_in_flight: u32,
    /// Jobs leased on this stream and not resolved yet.
    pub in_flight: u32,
    pub lease_duration: Duration,
    pub connected_since: Timestamp,
}

impl Consumer {
    /// The names of its `filter` that no job uses yet.
    pub(super) fn waiting_names(&self, filter: Filter) -> impl Iterator<Item = String> + '_ {
        self.waiting
            .iter()
            .filter(move |(_, f)| *f == filter)
            .map(|(name, _)| name.to_string())
    }

    fn has_slot(&self) -> bool {
        self.in_flight < self.max_in_flight
    }

    fn accepts(&self, job_type: NameId) -> bool {
        self.job_types
            .as_ref()
            .is_none_or(|types| types.contains(&job_type))
    }
}

impl Queue {
    /// Opens a consumer, adopts the current ones of its held leases, and
    /// leases it ready jobs up to its `max_in_flight`.
    ///
    /// Its queues and types that no job uses are not interned: it waits
    /// for them (see the module doc), so opening never fails for names.
    pub fn open_consumer(&mut self, spec: ConsumerSpec, now: Timestamp) -> ConsumerId {
        let id = ConsumerId(self.next_consumer);
        self.next_consumer += 1;
        let mut queues = Vec::new();
        let mut job_types = (!spec.job_types.is_empty()).then(Vec::new);
        let mut waiting = Vec::new();
        let names = spec
            .queues
            .iter()
            .map(|q| (q, Filter::Queue))
            .chain(spec.job_types.iter().map(|t| (t, Filter::JobType)));
        for (name, filter) in names {
            match self.names.get(name) {
                Some(name_id) => {
                    self.names.retain(name_id);
                    match filter {
                        Filter::Queue => queues.push(name_id),
                        Filter::JobType => job_types.get_or_insert_default().push(name_id),
                    }
                }
                None => {
                    let name: Arc<str> = Arc::from(name.as_str());
                    self.waiting
                        .entry(name.clone())
                        .or_default()
                        .push((id, filter));
                    waiting.push((name, filter));
                }
            }
        }
        for &queue in &queues {
            self.queues.entry(queue).or_default().consumers.push(id);
        }
        self.consumers.insert(
            id,
            Consumer {
                worker_id: spec.worker_id.into(),
                queues,
                job_types,
                waiting,
                max_in_flight: spec.max_in_flight,
                in_flight: 0,
                lease_duration: spec.lease_duration.unwrap_or(self.config.lease_duration),
                connected_since: now,
            },
        );
        for (job_id, lease_id) in spec.held_leases {
            self.adopt_lease(id, job_id, lease_id, now);
        }
        self.fill(id, now);
        id
    }

    /// Sets how many unresolved jobs `consumer` may hold from now on (a
    /// Work session's credit), and leases it ready jobs up to that. A
    /// window below its jobs in flight takes none back: it gets no more
    /// until enough are resolved. Unknown consumers are ignored.
    pub fn set_window(&mut self, consumer: ConsumerId, window: u32, now: Timestamp) {
        let Some(c) = self.consumers.get_mut(&consumer) else {
            return;
        };
        c.max_in_flight = window;
        self.fill(consumer, now);
    }

    /// Moves a current lease of the same worker to `consumer` if it has a
    /// free slot for it; other held leases stay where they are.
    fn adopt_lease(&mut self, consumer: ConsumerId, job_id: Uuid, lease_id: Uuid, now: Timestamp) {
        let Ok(seq) = self.leased(job_id, lease_id) else {
            return;
        };
        let c = self.consumers.get_mut(&consumer).expect("consumer is open");
        let lease = self
            .jobs
            .get_mut_untracked(seq)
            .and_then(|j| j.lease.as_mut())
            .expect("leased() checked");
        if lease.consumer == consumer || lease.worker_id != c.worker_id || !c.has_slot() {
            return;
        }
        c.in_flight += 1;
        let previous = std::mem::replace(&mut lease.consumer, consumer);
        self.free_slot(previous, now);
    }

    /// Closes a consumer. Its jobs keep their leases until resolved or
    /// expired: a draining worker may still Ack them.
    pub fn close_consumer(&mut self, id: ConsumerId) {
        let Some(consumer) = self.consumers.remove(&id) else {
            return;
        };
        for &queue in &consumer.queues {
            if let Some(qs) = self.queues.get_mut(&queue) {
                qs.consumers.retain(|&c| c != id);
            }
        }
        for name in consumer
            .queues
            .iter()
            .chain(consumer.job_types.iter().flatten())
        {
            self.names.release(*name);
        }
        for (name, _) in &consumer.waiting {
            if let Some(waiters) = self.waiting.get_mut(name) {
                waiters.retain(|&(c, _)| c != id);
                if waiters.is_empty() {
                    self.waiting.remove(name);
                }
            }
        }
    }

    /// The consumers waiting for the name of `id`, just interned, take it
    /// up: into their filters, with a reference each.
    pub(super) fn resolve_waiting(&mut self, id: NameId) {
        let name = self.names.shared(id);
        let Some(waiters) = self.waiting.remove(&name) else {
            return;
        };
        for (consumer_id, filter) in waiters {
            let Some(consumer) = self.consumers.get_mut(&consumer_id) else {
                continue;
            };
            consumer
                .waiting
                .retain(|(n, f)| !(*n == name && *f == filter));
            match filter {
                Filter::Queue => {
                    consumer.queues.push(id);
                    self.queues
                        .entry(id)
                        .or_default()
                        .consumers
                        .push(consumer_id);
                }
                Filter::JobType => consumer.job_types.get_or_insert_default().push(id),
            }
            self.names.retain(id);
        }
    }

    /// Every open consumer.
    pub fn consumer_ids(&self) -> Vec<ConsumerId> {
        self.consumers.keys().copied().collect()
    }

    /// A consumer of `queue` with a free slot that takes `job_type`, chosen
    /// round-robin so that streams share the work.
    pub(super) fn consumer_with_slot_for(
        &mut self,
        queue: NameId,
        job_type: NameId,
    ) -> Option<ConsumerId> {
        let qs = self.queues.get_mut(&queue)?;
        if qs.paused || qs.flow.held {
            return None;
        }
        let n = qs.consumers.len();
        for i in 0..n {
            let id = qs.consumers[(qs.cursor + i) % n];
            let consumer = &self.consumers[&id];
            if consumer.has_slot() && consumer.accepts(job_type) {
                qs.cursor = (qs.cursor + i + 1) % n;
                return Some(id);
            }
        }
        None
    }

    /// A slot of `consumer` freed (a lease ended): fill it, if the consumer
    /// is still open, then deal what the lease's end freed of its key's
    /// and its queue's limits to the other consumers.
    pub(super) fn free_slot(&mut self, consumer: ConsumerId, now: Timestamp) {
        if let Some(c) = self.consumers.get_mut(&consumer) {
            c.in_flight -= 1;
            self.fill(consumer, now);
        }
        self.pump(now);
    }

    /// Leases ready jobs to `consumer` until it has no free slot or nothing it takes is ready.
    pub(super) fn fill(&mut self, consumer: ConsumerId, now: Timestamp) {
        while self
            .consumers
            .get(&consumer)
            .is_some_and(Consumer::has_slot)
        {
            let Some(seq) = self.best_ready_for(consumer) else {
                return;
            };
            self.lease_to(consumer, seq, now);
        }
    }

    /// Every queue (not paused, not held by its limits) and type the
    /// consumer takes is looked at: each offers the next job of the key
    /// whose turn it is (see `lanes.rs`), and the first of those in
    /// ReadyKey order wins.
    fn best_ready_for(&self, consumer: ConsumerId) -> Option<Seq> {
        let c = &self.consumers[&consumer];
        let mut best: Option<ReadyKey> = None;
        for queue in &c.queues {
            let Some(qs) = self
                .queues
                .get(queue)
                .filter(|qs| !qs.paused && !qs.flow.held)
            else {
                continue;
            };
            let nexts: Box<dyn Iterator<Item = ReadyKey>> = match &c.job_types {
                None => Box::new(qs.ready.values().filter_map(|lanes| lanes.next())),
                Some(types) => Box::new(types.iter().filter_map(|t| qs.ready.get(t)?.next())),
            };
            for key in nexts {
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
        best.map(|key| key.seq())
    }

    /// Leases a READY job to a consumer with a free slot and queues its delivery.
    pub(super) fn lease_to(&mut self, consumer: ConsumerId, seq: Seq, now: Timestamp) {
        let c = self.consumers.get_mut(&consumer).expect("consumer is open");
        c.in_flight += 1;
        let lease_duration = c.lease_duration;
        let expires_at = now.saturating_add(lease_duration);
        let worker_id = c.worker_id.clone();
        let lease_id = self.new_uuid();
        // Before it leaves its lane, whose turn it ends.
        self.flow_leased(seq, now);
        // Not durable (see `durable`): the job's record stays as it was.
        let job = self.jobs.get_mut_untracked(seq).expect("job is known");
        debug_assert_eq!(job.state, JobState::Ready);
        job.attempt += 1;
        job.lease = Some(Box::new(Lease {
            id: lease_id,
            consumer,
            worker_id,
            expires_at,
            duration: lease_duration,
            leased_at: now,
        }));
        self.unindex(seq, now);
        self.set_state_untracked(seq, JobState::Leased);
        self.leases.insert((expires_at, seq));
        self.outbox.push(super::Delivery {
            consumer,
            seq,
            lease_id,
        });
        self.log_job(
            seq,
            self.jobs[seq].lease.as_deref(),
            super::LogLevel::Debug,
            "job leased",
        );
        let waited = now.saturating_since(self.jobs[seq].run_at);
        self.observe(seq, super::JobEvent::Leased { waited });
    }
}
