//! The queue shared by every RPC: one [`Queue`] behind a `std::sync::Mutex`,
//! locked in short synchronous sections and never across `.await`, with the
//! senders of the open Lease streams, the wake-ups for the scheduler and
//! for the drain, and the store of `--data-dir`.
//!
//! With a store, every operation hands the queue's changes to it under the
//! lock (so the store sees them in order), and [`SharedQueue::write`] waits,
//! after unlocking, for the commit that holds them.
//!
//! A panic while the lock is held may leave the queue half-updated: the
//! lock is then poisoned, and taking it fails the broker (see
//! [`crate::fatal`]) instead of serving that queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_queue::Timestamp;

use tokio::sync::{Notify, mpsc};
use tracing::warn;

use crate::backend::{BackendError, LeaseRef};
use crate::clock::{Clock, TokioClock};
use crate::fatal::Fatal;
use crate::storage::{Commit, Store, StoreStats};
use sluice_queue::{Change, ConsumerId, ConsumerSpec, Delivery, JobSnapshot, Queue};

/// The receiving end of one Lease stream.
pub(super) type JobReceiver = mpsc::Receiver<JobSnapshot>;

/// A cheap handle to the shared queue.
#[derive(Clone)]
pub struct SharedQueue {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    clock: TokioClock,
    /// Wakes the scheduler when a deadline earlier than the one it sleeps
    /// towards appears.
    scheduler: Notify,
    /// Wakes drain waiters whenever the count of leased jobs may have dropped.
    lease_ended: Notify,
    /// Where changes go with `--data-dir`; the queue then tracks them.
    store: Option<Store>,
    /// The broker's failure: once set, no change is made or acknowledged.
    fatal: Fatal,
}

struct State {
    queue: Queue,
    /// The sending ends of open Lease streams. Jobs are leased first and
    /// sent after, under the same lock, so `tx.reserve()` cannot come first;
    /// instead each channel holds the stream's max_in_flight, which the queue
    /// never exceeds, so `try_send` meets a full channel only when leases
    /// expired while their messages sat unread (the stream is then closed).
    senders: HashMap<ConsumerId, mpsc::Sender<JobSnapshot>>,
    /// Reused buffer for deliveries.
    deliveries: Vec<Delivery>,
    /// The deadline the scheduler sleeps towards.
    scheduler_wakes_at: Option<Timestamp>,
    /// No new work: Enqueue and Lease are refused.
    draining: bool,
}

impl SharedQueue {
    /// Shares `queue`, reading time from `clock`, keeping its changes in
    /// `store` if there is one; a poisoned lock fails the broker through `fatal`.
    pub fn new(mut queue: Queue, clock: TokioClock, store: Option<Store>, fatal: Fatal) -> Self {
        if store.is_some() {
            queue.track_changes();
        }
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue,
                    senders: HashMap::new(),
                    deliveries: Vec::new(),
                    scheduler_wakes_at: None,
                    draining: false,
                }),
                clock,
                scheduler: Notify::new(),
                lease_ended: Notify::new(),
                store,
                fatal,
            }),
        }
    }

    /// Runs `op` on the queue at the current time, then sends the jobs it
    /// leased and wakes whoever its changes concern.
    ///
    /// # Errors
    /// [`BackendError::Failed`] once the broker failed.
    pub fn with_queue<T>(
        &self,
        op: impl FnOnce(&mut Queue, Timestamp) -> T,
    ) -> Result<T, BackendError> {
        let mut state = self.lock()?;
        Ok(self.apply(&mut state, |state, now| op(&mut state.queue, now)))
    }

    /// Like [`SharedQueue::with_queue`] for an operation whose changes the
    /// client is told of: returns once they are durable (at once without a
    /// store).
    ///
    /// # Errors
    /// [`BackendError::Failed`] when the broker failed before or during
    /// the commit (a failed store): the change may not be on disk.
    pub async fn write<T>(
        &self,
        op: impl FnOnce(&mut Queue, Timestamp) -> T,
    ) -> Result<T, BackendError> {
        self.write_checked(None, op).await
    }

    /// Like [`SharedQueue::write`] for new work: refused while draining,
    /// with `what` saying what is refused.
    ///
    /// # Errors
    /// [`BackendError::ShuttingDown`] while draining, or as [`SharedQueue::write`].
    pub async fn write_unless_draining<T>(
        &self,
        what: &'static str,
        op: impl FnOnce(&mut Queue, Timestamp) -> T,
    ) -> Result<T, BackendError> {
        self.write_checked(Some(what), op).await
    }

    async fn write_checked<T>(
        &self,
        refused_while_draining: Option<&'static str>,
        op: impl FnOnce(&mut Queue, Timestamp) -> T,
    ) -> Result<T, BackendError> {
        let (out, commit) = self.write_now(refused_while_draining, op)?;
        self.committed(commit).await?;
        Ok(out)
    }

    /// Runs `op` on the queue now (refused while draining if it says
    /// what), and returns, without waiting for it, the commit that holds
    /// its changes.
    pub(super) fn write_now<T>(
        &self,
        refused_while_draining: Option<&'static str>,
        op: impl FnOnce(&mut Queue, Timestamp) -> T,
    ) -> Result<(T, Option<Commit>), BackendError> {
        self.write_now_with(refused_while_draining, |q, now| (op(q, now), Vec::new()))
    }

    /// [`SharedQueue::write_now`] for an operation whose changes go with
    /// others that are not the queue's (a source's position): `op` returns
    /// those too, and they are written in the same commit.
    pub(super) fn write_now_with<T>(
        &self,
        refused_while_draining: Option<&'static str>,
        op: impl FnOnce(&mut Queue, Timestamp) -> (T, Vec<Change>),
    ) -> Result<(T, Option<Commit>), BackendError> {
        let mut state = self.lock()?;
        // A failed store drains the broker too: the failure is the reason
        // to give.
        if let Some(why) = self.inner.fatal.reason() {
            return Err(BackendError::Failed(why));
        }
        if let Some(what) = refused_while_draining.filter(|_| state.draining) {
            return Err(BackendError::ShuttingDown(what));
        }
        let (out, commit) =
            self.apply_with(&mut state, true, |state, now| op(&mut state.queue, now));
        Ok((out, commit?))
    }

    /// Hands `changes` that are not the queue's (schedules) to the store:
    /// the commit to await, `None` for a memory-only broker.
    pub(super) fn submit(&self, changes: Vec<Change>) -> Result<Option<Commit>, BackendError> {
        if let Some(why) = self.inner.fatal.reason() {
            return Err(BackendError::Failed(why));
        }
        match &self.inner.store {
            None => Ok(None),
            Some(store) => store.submit(changes, true).map_err(BackendError::Failed),
        }
    }

    /// Waits for `commit`, if any.
    pub(super) async fn committed(&self, commit: Option<Commit>) -> Result<(), BackendError> {
        if let Some(commit) = commit {
            commit
                .await
                .unwrap_or_else(|_| Err("the store stopped".into()))
                .map_err(BackendError::Failed)?;
        }
        Ok(())
    }

    /// The store's figures for metrics; `None` for a memory-only broker.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.inner.store.as_ref().map(Store::stats)
    }

    /// Writes what was submitted to the store and closes it. Blocks.
    pub fn close_store(&self) {
        if let Some(store) = &self.inner.store {
            store.close();
        }
    }

    /// Why the broker failed, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.inner.fatal.reason()
    }

    /// Opens a consumer whose jobs are sent to the returned channel.
    pub(super) fn open_consumer(
        &self,
        spec: ConsumerSpec,
    ) -> Result<(ConsumerId, JobReceiver), BackendError> {
        let mut state = self.lock()?;
        if state.draining {
            return Err(BackendError::ShuttingDown(
                "no new Lease streams are opened",
            ));
        }
        let (tx, rx) = mpsc::channel(spec.max_in_flight as usize);
        let id = self.apply(&mut state, |state, now| {
            let id = state.queue.open_consumer(spec, now);
            // Registered before `apply` sends what the consumer was leased.
            state.senders.insert(id, tx);
            Ok::<_, BackendError>(id)
        })?;
        Ok((id, rx))
    }

    /// Closes a consumer whose stream ended (its channel closed), giving
    /// back what it took off the channel but never sent.
    pub(super) fn close_consumer(&self, id: ConsumerId, unsent: Vec<LeaseRef>) {
        // A failed broker serves nothing more: there is nothing to give back.
        let Ok(mut state) = self.lock() else { return };
        self.apply(&mut state, |state, now| {
            state.queue.close_consumer(id);
            state.senders.remove(&id);
            for lease in unsent {
                state.queue.return_unsent(lease.job_id, lease.lease_id, now);
            }
        });
    }

    /// Sets how many unresolved jobs consumer `id` may hold from now on,
    /// sending what that leases it.
    pub(super) fn set_window(&self, id: ConsumerId, window: u32) {
        let Ok(mut state) = self.lock() else { return };
        self.apply(&mut state, |state, now| {
            state.queue.set_window(id, window, now);
        });
    }

    /// Refuses new work from now on and ends every Lease stream (once each
    /// has sent what it holds). Leased jobs can still be resolved.
    pub fn begin_drain(&self) {
        let Ok(mut state) = self.lock() else { return };
        state.draining = true;
        for id in state.queue.consumer_ids() {
            state.queue.close_consumer(id);
        }
        // Dropping the senders ends the streams.
        state.senders.clear();
    }

    /// Waits until no job is leased, or `deadline`. Returns the count still
    /// leased (none once the broker failed: it resolves nothing more).
    pub async fn leases_resolved(&self, deadline: tokio::time::Instant) -> usize {
        loop {
            let ended = self.inner.lease_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let Ok(leased) = self.lock().map(|state| state.queue.leased_count()) else {
                return 0;
            };
            if leased == 0 {
                return 0;
            }
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => return leased,
                () = ended => {}
            }
        }
    }

    /// Expires what is due, then returns when to come back: the tokio
    /// instant of the next deadline, if any.
    pub(super) fn tick(&self) -> Option<tokio::time::Instant> {
        let mut state = self.lock().ok()?;
        self.apply(&mut state, |state, now| state.queue.expire(now));
        let next = state.queue.next_deadline();
        state.scheduler_wakes_at = next;
        next.map(|t| self.inner.clock.instant_at(t))
    }

    /// Resolves when a deadline earlier than the last [`SharedQueue::tick`]'s appeared.
    pub(super) async fn deadline_moved(&self) {
        self.inner.scheduler.notified().await;
    }

    /// Runs `op` on the locked state at the current time, then settles:
    /// sends what it leased, wakes whoever its changes concern, and hands
    /// the changes to the store without waiting for them.
    fn apply<T>(&self, state: &mut State, op: impl FnOnce(&mut State, Timestamp) -> T) -> T {
        // A failed store has stopped the broker already; nothing to add here.
        let (out, _) = self.apply_with(state, false, |state, now| (op(state, now), Vec::new()));
        out
    }

    /// [`SharedQueue::apply`], returning with `wait` the commit to await;
    /// `op` also returns changes that are not the queue's, committed with
    /// the queue's own, after them.
    fn apply_with<T>(
        &self,
        state: &mut State,
        wait: bool,
        op: impl FnOnce(&mut State, Timestamp) -> (T, Vec<Change>),
    ) -> (T, Result<Option<Commit>, BackendError>) {
        let now = self.inner.clock.now();
        let leased_before = state.queue.leased_count();
        let (out, extra) = op(state, now);
        self.settle(state, now, leased_before);
        let commit = match &self.inner.store {
            None => Ok(None),
            Some(store) => {
                let mut changes = Vec::new();
                state.queue.take_changes(&mut changes);
                changes.extend(extra);
                store.submit(changes, wait).map_err(BackendError::Failed)
            }
        };
        (out, commit)
    }

    /// Sends what the last operation leased, then wakes the scheduler and
    /// drain waiters if the operation concerns them.
    fn settle(&self, state: &mut State, now: Timestamp, leased_before: usize) {
        let mut deliveries = std::mem::take(&mut state.deliveries);
        loop {
            state.queue.drain_deliveries(&mut deliveries);
            if deliveries.is_empty() {
                break;
            }
            for delivery in deliveries.drain(..) {
                let job = JobSnapshot::from(state.queue.delivered_job(delivery));
                let sent = match state.senders.get(&delivery.consumer) {
                    Some(tx) => tx.try_send(job).map_err(|e| match e {
                        mpsc::error::TrySendError::Full(_) => "full",
                        mpsc::error::TrySendError::Closed(_) => "closed",
                    }),
                    None => Err("gone"),
                };
                if let Err(why) = sent {
                    if why == "full" {
                        // Only stale messages (leases that expired unsent)
                        // fill a channel sized to max_in_flight: the client
                        // has not read its stream for a lease duration.
                        warn!(consumer = ?delivery.consumer, "lease stream not read for a lease duration: closing it");
                    }
                    // The stream is going (or must go) away; its Drop closes
                    // the consumer too. Keep the job out of its hands.
                    state.queue.close_consumer(delivery.consumer);
                    state.senders.remove(&delivery.consumer);
                    state.queue.return_undelivered(delivery, now);
                }
            }
        }
        state.deliveries = deliveries;
        if state
            .queue
            .next_deadline()
            .is_some_and(|next| state.scheduler_wakes_at.is_none_or(|at| next < at))
        {
            state.scheduler_wakes_at = state.queue.next_deadline();
            self.inner.scheduler.notify_one();
        }
        if state.queue.leased_count() < leased_before {
            self.inner.lease_ended.notify_waiters();
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, BackendError> {
        self.inner
            .fatal
            .lock(&self.inner.state, "the queue")
            .map_err(BackendError::Failed)
    }
}
