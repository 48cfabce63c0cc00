//! This broker's Lease streams on a shared store, and the claimer that
//! fills them. Each stream has credit (its max_in_flight less the leases
//! it holds); a claim round asks the store ([`ClaimStore::claim`]) for up
//! to that many ready jobs per stream, the streams' claims running at
//! once, and sends what each got down its channel.
//!
//! Each stream knows the jobs it holds. A lease that ends frees its slot
//! ([`Streams::slot_freed`]) when it ends through this broker, and when
//! another broker's notification says it ended there; a recount from the
//! store ([`ClaimStore::held`]: at each poll, and when notifications may
//! have been lost) catches what no notification told. Freeing a job the
//! stream no longer holds does nothing, so a notification and a recount
//! may both see the same end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use sluice_queue::{ConsumerSpec, JobSnapshot, Timestamp, WorkerInfo};
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::backend::{BackendError, FeedCloser, LeaseRef};

/// A stream's id, unique within its broker.
pub type StreamId = i64;

/// A lease of a stream as shared stores write it, in a notification that
/// it ended or in a broker's list of held leases: `stream:job`. (Redis's
/// scripts write the same form.)
pub fn lease_entry(stream: StreamId, job: Uuid) -> String {
    format!("{stream}:{job}")
}

/// The stream and the job of a [`lease_entry`]; `None` if it is not one.
pub fn parse_lease_entry(entry: &str) -> Option<(StreamId, Uuid)> {
    let (stream, job) = entry.split_once(':')?;
    Some((stream.parse().ok()?, job.parse().ok()?))
}

/// What a shared store does for the claimer.
#[tonic::async_trait]
pub trait ClaimStore: Send + Sync + 'static {
    /// This broker's streams.
    fn streams(&self) -> &Streams;

    /// How many jobs are ready in `queues` (paused ones left out), up to
    /// `most`.
    async fn ready(&self, queues: &[String], most: u64) -> Result<u64, BackendError>;

    /// Leases up to `want.credit` ready jobs to `want`'s stream and
    /// returns them, each with its lease, in the contract's order
    /// (priority, then due time, then enqueue order).
    async fn claim(&self, want: &Want) -> Result<Vec<JobSnapshot>, BackendError>;

    /// The jobs each of this broker's streams holds leased in the store.
    async fn held(&self) -> Result<HashMap<StreamId, HashSet<Uuid>>, BackendError>;

    /// Makes the jobs of `leases` (leased, never sent) ready again with no
    /// attempt used.
    async fn give_back(&self, leases: Vec<LeaseRef>) -> Result<(), BackendError>;
}

/// This broker's open streams.
#[derive(Default)]
pub struct Streams {
    open: Mutex<HashMap<StreamId, Stream>>,
    next_id: AtomicU64,
    /// Where the next claim round starts, so that streams share the jobs.
    cursor: AtomicU64,
    /// Every claim of the last round took all it asked: more jobs may be
    /// ready, so a freed slot is worth a claim.
    more_ready: AtomicBool,
    /// Every claim of the last round took all it asked, and many: the
    /// jobs need no sharing out (no count before the next round).
    backlog: AtomicBool,
    /// Wakes the claimer.
    wake: Notify,
    /// When the claimer must run a round even if nothing wakes it: a
    /// queue or key that flow control holds until then.
    wake_at: Mutex<Option<tokio::time::Instant>>,
    /// The next round recounts the streams' leases first.
    recount: AtomicBool,
    /// Where give-backs run (the server's tasks, once started).
    tasks: OnceLock<TaskTracker>,
}

struct Stream {
    worker_id: String,
    queues: Vec<String>,
    /// Empty takes any type.
    job_types: Vec<String>,
    max_in_flight: u32,
    /// The jobs leased to it and not known to be resolved: its in-flight
    /// count is their number.
    held: HashSet<Uuid>,
    lease: Duration,
    connected_since: Timestamp,
    /// Slots freed since the last recount began: a recount that raced
    /// with one is not applied.
    freed: u64,
    tx: mpsc::Sender<JobSnapshot>,
}

/// What the claimer asks the store for, for one stream with room.
#[derive(Debug, Clone)]
pub struct Want {
    /// The stream.
    pub stream: StreamId,
    /// Its worker.
    pub worker_id: String,
    /// Its queues.
    pub queues: Vec<String>,
    /// Its job types; empty for any.
    pub job_types: Vec<String>,
    /// Most jobs to lease to it now.
    pub credit: u32,
    /// Leases it holds now.
    in_flight: u32,
    /// The length of its leases.
    pub lease: Duration,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamId, Stream>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An id for a stream about to open (its leases may be adopted under
    /// it before [`Streams::open`]).
    pub fn next_id(&self) -> StreamId {
        StreamId::try_from(self.next_id.fetch_add(1, Ordering::Relaxed)).unwrap_or(StreamId::MAX)
    }

    /// Opens stream `id` for `spec`, holding the jobs `adopted` already,
    /// and wakes the claimer; returns the channel its jobs come down.
    pub fn open(
        &self,
        id: StreamId,
        spec: ConsumerSpec,
        lease: Duration,
        adopted: HashSet<Uuid>,
    ) -> mpsc::Receiver<JobSnapshot> {
        // Sized to max_in_flight, which the credit never exceeds: a full
        // channel means the client stopped reading (see `wants`).
        let (tx, rx) = mpsc::channel(spec.max_in_flight as usize);
        self.lock().insert(
            id,
            Stream {
                worker_id: spec.worker_id,
                queues: spec.queues,
                job_types: spec.job_types,
                max_in_flight: spec.max_in_flight,
                held: adopted,
                lease,
                connected_since: Timestamp::from_system_time(std::time::SystemTime::now()),
                freed: 0,
                tx,
            },
        );
        self.wake();
        rx
    }

    /// Wakes the claimer.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Has the claimer run a round at `at` (or earlier, if an earlier one
    /// is asked for already): flow control holds jobs until then.
    pub fn wake_at(&self, at: tokio::time::Instant) {
        let mut wake_at = self
            .wake_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if wake_at.is_none_or(|t| at < t) {
            *wake_at = Some(at);
            drop(wake_at);
            self.wake();
        }
    }

    /// The timed round asked for, if any.
    fn next_wake(&self) -> Option<tokio::time::Instant> {
        *self
            .wake_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The timed round is running: forget it (a claim asks again).
    fn timed_wake_done(&self) {
        let mut wake_at = self
            .wake_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if wake_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
            *wake_at = None;
        }
    }

    /// Asks the claimer to recount the streams' leases, then claim:
    /// notifications of leases ended elsewhere may have been lost.
    pub fn recount_soon(&self) {
        self.recount.store(true, Ordering::Release);
        self.wake();
    }

    /// The lease of `job` on `stream` ended: its slot is free, and worth
    /// a claim if the last round may have left jobs ready (otherwise the
    /// next ready job's wake-up comes anyway).
    pub fn slot_freed(&self, stream: StreamId, job: Uuid) {
        let freed = self.lock().get_mut(&stream).is_some_and(|s| {
            let held = s.held.remove(&job);
            s.freed += u64::from(held);
            held
        });
        if freed && self.more_ready.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// A `stream:job` entry ([`lease_entry`]) arrived on this broker's
    /// channel: that lease ended through another broker. An entry that is
    /// not one (never written by a broker of this version) asks for a
    /// recount instead.
    pub fn entry_freed(&self, entry: &str) {
        match parse_lease_entry(entry) {
            Some((stream, job)) => self.slot_freed(stream, job),
            None => self.recount_soon(),
        }
    }

    /// Sets how many unresolved jobs `stream` may hold from now on (a
    /// Work session's credit) and wakes the claimer if that leaves room.
    pub fn set_window(&self, stream: StreamId, window: u32) {
        let room = self.lock().get_mut(&stream).is_some_and(|s| {
            s.max_in_flight = window;
            in_flight(s) < window
        });
        if room {
            self.wake();
        }
    }

    /// Ends every stream (the drain, or a lost store).
    pub fn end_all(&self) {
        self.lock().clear();
    }

    /// How many streams are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The open streams, as ListWorkers shows them.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.lock()
            .values()
            .map(|s| WorkerInfo {
                worker_id: s.worker_id.as_str().into(),
                queues: s.queues.clone(),
                job_types: s.job_types.clone(),
                in_flight: in_flight(s),
                max_in_flight: s.max_in_flight,
                connected_since: s.connected_since,
            })
            .collect()
    }

    /// Runs give-backs on the server's `tasks` from now on.
    pub fn track(&self, tasks: &TaskTracker) {
        let _ = self.tasks.set(tasks.clone());
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match self.tasks.get() {
            Some(tasks) => drop(tasks.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    /// The streams with room, each with its credit. Each round starts one
    /// stream further, so that single jobs go round the streams.
    fn wants(&self) -> Vec<Want> {
        let mut open = self.lock();
        // Room by its count, but a full channel: the client has not read
        // its stream for a lease duration (the leases of what waits in it
        // expired). Closed, as on the local backend.
        open.retain(|id, s| {
            let stale = in_flight(s) < s.max_in_flight && s.tx.capacity() == 0;
            if stale {
                warn!(stream = id, worker_id = %s.worker_id, "lease stream not read for a lease duration: closing it");
            }
            !stale
        });
        let mut wants: Vec<Want> = open
            .iter()
            .filter(|(_, s)| in_flight(s) < s.max_in_flight)
            .map(|(&stream, s)| Want {
                stream,
                worker_id: s.worker_id.clone(),
                queues: s.queues.clone(),
                job_types: s.job_types.clone(),
                credit: s.max_in_flight - in_flight(s),
                in_flight: in_flight(s),
                lease: s.lease,
            })
            .collect();
        drop(open);
        let n = wants.len();
        if n == 0 {
            return wants;
        }
        wants.sort_by_key(|w| w.stream);
        let start = self.cursor.fetch_add(1, Ordering::Relaxed) as usize % n;
        wants.rotate_left(start);
        wants
    }

    /// Sends `jobs` down `stream`; returns the leases of those that could
    /// not be sent (the stream ended meanwhile).
    fn deliver(&self, stream: StreamId, jobs: Vec<JobSnapshot>) -> Vec<LeaseRef> {
        let mut open = self.lock();
        let Some(stream) = open.get_mut(&stream) else {
            return jobs.iter().filter_map(LeaseRef::of).collect();
        };
        let mut unsent = Vec::new();
        for job in jobs {
            debug!(job_id = %job.id, queue = %job.queue, job_type = %job.job_type,
                attempt = job.attempt, worker_id = %stream.worker_id, "job leased");
            let id = job.id;
            match stream.tx.try_send(job) {
                Ok(()) => drop(stream.held.insert(id)),
                Err(e) => unsent.extend(LeaseRef::of(&e.into_inner())),
            }
        }
        unsent
    }
}

/// A stream's unresolved leases.
fn in_flight(stream: &Stream) -> u32 {
    u32::try_from(stream.held.len()).unwrap_or(u32::MAX)
}

/// Closes a stream of a shared backend.
pub struct Closer<S: ClaimStore> {
    store: Weak<S>,
    stream: StreamId,
}

impl<S: ClaimStore> Closer<S> {
    /// The closer of `stream`, a stream of `store`.
    pub fn new(store: &Arc<S>, stream: StreamId) -> Self {
        Self {
            store: Arc::downgrade(store),
            stream,
        }
    }
}

impl<S: ClaimStore> FeedCloser for Closer<S> {
    fn set_window(&self, window: u32) {
        if let Some(store) = self.store.upgrade() {
            store.streams().set_window(self.stream, window);
        }
    }

    fn close(&self, unsent: Vec<LeaseRef>) {
        let Some(store) = self.store.upgrade() else {
            return;
        };
        store.streams().lock().remove(&self.stream);
        if unsent.is_empty() {
            return;
        }
        // Closed from a Drop: the store is written from a task.
        let streams_store = store.clone();
        store.streams().spawn(async move {
            if let Err(e) = streams_store.give_back(unsent).await {
                // Their leases expire and they run again: nothing is lost.
                warn!(error = %e, "could not give back unsent jobs; their leases will expire");
            }
        });
    }
}

/// Fills the streams of `store` on each wake-up and at least every `poll`
/// (the fallback for lost notifications, when it also recounts), while
/// `serving`; a failed round asks `health_check` to look at the store.
pub async fn run_claimer<S: ClaimStore>(
    store: Arc<S>,
    poll: Duration,
    serving: watch::Receiver<bool>,
    health_check: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let streams = store.streams();
    loop {
        let timed = streams.next_wake();
        let polled = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = streams.wake.notified() => false,
            () = sleep_until(timed) => {
                streams.timed_wake_done();
                false
            }
            _ = ticks.tick() => true,
        };
        if !*serving.borrow() || streams.count() == 0 {
            continue;
        }
        let round = async {
            if streams.recount.swap(false, Ordering::AcqRel) || polled {
                recount(&*store).await?;
            }
            claim_round(&store).await
        };
        if let Err(e) = round.await {
            debug!(error = %e, "claim round failed");
            health_check.notify_one();
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sets each stream's in-flight count to the leases the store says it
/// holds (those resolved through other brokers, or expired, are gone).
async fn recount<S: ClaimStore>(store: &S) -> Result<(), BackendError> {
    let streams = store.streams();
    let before: HashMap<StreamId, u64> = streams
        .lock()
        .iter()
        .map(|(&id, s)| (id, s.freed))
        .collect();
    if before.is_empty() {
        return Ok(());
    }
    let mut held = store.held().await?;
    let mut open = streams.lock();
    for (id, stream) in open.iter_mut() {
        // A claim runs in the same task as the recount, so only a freed
        // slot can race with it: such a stream is recounted next time.
        if before.get(id) == Some(&stream.freed) {
            stream.held = held.remove(id).unwrap_or_default();
        }
    }
    Ok(())
}

/// A round in which every claim took all it asked, and at least this
/// many, means a backlog: the next round skips the count of [`share`].
const BACKLOG_CLAIM: u32 = 32;

/// Fills every stream with room, until none can take more or no job is
/// ready for them.
async fn claim_round<S: ClaimStore>(store: &Arc<S>) -> Result<(), BackendError> {
    let streams = store.streams();
    loop {
        let mut wants = streams.wants();
        // With a backlog every stream takes all its room: no count.
        if !streams.backlog.load(Ordering::Relaxed) {
            share(&**store, &mut wants).await?;
        }
        // A stream whose share is nothing does not claim.
        wants.retain(|w| w.credit > 0);
        if wants.is_empty() {
            return Ok(());
        }
        // The streams' claims run at once, each on its own connection:
        // the store keeps them from waiting on each other.
        let mut claims = tokio::task::JoinSet::new();
        for want in wants {
            let store = store.clone();
            claims.spawn(async move {
                let jobs = store.claim(&want).await?;
                Ok::<_, BackendError>((want, jobs))
            });
        }
        let (mut claimed_any, mut filled_one, mut short_one, mut small_one) =
            (false, false, false, false);
        let mut unsent = Vec::new();
        while let Some(claimed) = claims.join_next().await {
            let (want, jobs) = claimed.map_err(|e| {
                warn!(error = %e, "a claim task failed");
                BackendError::Internal
            })??;
            let got = u32::try_from(jobs.len()).unwrap_or(u32::MAX);
            claimed_any = true;
            let filled = got >= want.credit;
            filled_one |= filled;
            short_one |= !filled;
            // A full claim of a few jobs says little of what is left.
            small_one |= got < BACKLOG_CLAIM;
            unsent.extend(streams.deliver(want.stream, jobs));
        }
        if !unsent.is_empty() {
            store.give_back(unsent).await?;
        }
        // A claim that got less than it asked found no more ready jobs; a
        // round without claims tells nothing.
        if claimed_any {
            streams.more_ready.store(!short_one, Ordering::Relaxed);
            streams
                .backlog
                .store(!short_one && !small_one, Ordering::Relaxed);
        }
        // A stream that took all it asked for may find more.
        if !filled_one {
            return Ok(());
        }
    }
}

/// With several streams and few jobs, each asks for its share of the
/// jobs ready now, so that they split them evenly (as the local backend's
/// round robin does); one stream alone, or a backlog larger than the
/// streams' credit, needs no count.
async fn share<S: ClaimStore>(store: &S, wants: &mut [Want]) -> Result<(), BackendError> {
    let n = u32::try_from(wants.len()).unwrap_or(u32::MAX);
    if n < 2 {
        return Ok(());
    }
    let mut queues: Vec<String> = wants
        .iter()
        .flat_map(|w| w.queues.iter().cloned())
        .collect();
    queues.sort_unstable();
    queues.dedup();
    let most: u64 = wants.iter().map(|w| u64::from(w.credit)).sum();
    let ready = u32::try_from(store.ready(&queues, most).await?).unwrap_or(u32::MAX);
    // Dealt out one by one, the stream holding the fewest first (the
    // round's rotation breaks ties), as the local backend's round robin
    // deals jobs: each gets `ready / n`, the first `ready % n` one more.
    wants.sort_by_key(|w| w.in_flight);
    let (each, extra) = (ready / n, ready % n);
    for (i, want) in (0..).zip(wants.iter_mut()) {
        want.credit = want.credit.min(each + u32::from(i < extra));
    }
    Ok(())
}
