//! The firing loop: one task per broker that enqueues the ticks that are
//! due. It reads the schedules due now from the store's order by next tick
//! (never the whole list), plans each with its catch-up policy
//! (`sluice_schedule::plan`), applies its overlap policy, and fires each
//! tick with [`crate::backend::ScheduleStore::fire_schedules`]: the tick's job and the
//! schedule's advance commit together, on the revision it read, so when
//! several brokers fire one tick at once one job is added and the others
//! find the schedule moved on. A second write then records the job's id
//! on the schedule (`last_job_id`, `recent_runs`).
//!
//! Every broker runs the loop over a shared store: a broker that dies
//! delays no tick, since the others fire it as they would anyway.
//!
//! A pass fires the due ticks in batches ([`BATCH`] ticks a store call,
//! [`BATCHES`] calls at once), starting at a random place in the due list
//! so that brokers spread the work.
//!
//! It sleeps until the next tick, at most [`POLL`] (so a schedule another
//! broker created is seen within it), and wakes early when this broker's
//! Admin service writes a schedule.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use sluice_proto::v1 as pb;
use sluice_queue::JobState;
use sluice_schedule::{Millis, Overlap, format_tick};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::record::{Record, add_run, calendar, catch_up, overlap, tick_job, timestamp_of};
use super::{Skipped, TickObserver, now_millis};
use crate::backend::{SharedBackend, TickFire};
use crate::clock::TokioClock;

/// Longest sleep between passes.
pub const POLL: Duration = Duration::from_secs(1);

/// Most schedules one pass reads.
const PASS: usize = 1024;

/// Ticks one store call fires (one PostgreSQL transaction).
const BATCH: usize = 128;

/// Batches one broker fires at once.
const BATCHES: usize = 4;

/// What one due schedule needs this pass.
enum Step {
    /// Its next tick fired.
    Fire(Tick),
    /// Moved on without a job (ticks skipped by a policy): the record as
    /// read and as it is to be written.
    Advance(Record, Record),
    /// Nothing (it has no next tick).
    Done,
    /// It cannot fire: tried again on a later pass.
    Failed,
}

/// A tick about to fire.
struct Tick {
    /// The schedule as read.
    read: Record,
    /// As it is once the tick fired.
    fired: Record,
    /// The tick and the one after it.
    tick: Millis,
    next: Option<Millis>,
    /// The queue of its job.
    queue: String,
}

/// The firing loop of one broker.
#[derive(Clone)]
pub struct Firing {
    /// Where schedules and jobs live.
    pub backend: SharedBackend,
    /// The broker's clock.
    pub clock: TokioClock,
    /// Notified when this broker writes a schedule.
    pub wake: Arc<Notify>,
    /// The tick metrics, with `--http-addr`.
    pub observer: Option<Arc<dyn TickObserver>>,
}

impl Firing {
    /// Fires due ticks until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let wake = self.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let pause = self.pass(&stop).await;
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = &mut wake => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Fires what is due; returns how long to wait before the next pass.
    async fn pass(&self, stop: &CancellationToken) -> Duration {
        let now = now_millis(&self.clock);
        let mut due = match self.backend.due_schedules(now, PASS).await {
            Ok(due) => due,
            Err(e) => {
                debug!(error = %e, "reading the due schedules");
                return POLL;
            }
        };
        let read = due.len();
        // Each broker starts at its own place in the list, so that
        // brokers over one store fire different schedules at once rather
        // than race for the same ones (a race costs the loser a read).
        if read > 1 {
            due.rotate_left(rand::rng().random_range(0..read));
        }
        let mut failed = 0;
        let mut ticks = Vec::new();
        let mut advances = Vec::new();
        for stored in due {
            match self.step(stored, now).await {
                Step::Fire(tick) => ticks.push(tick),
                Step::Advance(old, new) => advances.push((old, new)),
                Step::Done => {}
                Step::Failed => failed += 1,
            }
        }
        let mut batches = JoinSet::new();
        if !advances.is_empty() {
            let this = self.clone();
            batches.spawn(async move { this.advance(advances).await });
        }
        let mut ticks = ticks.into_iter().peekable();
        while ticks.peek().is_some() && !stop.is_cancelled() {
            if batches.len() >= BATCHES
                && let Some(done) = batches.join_next().await
            {
                failed += done.unwrap_or(BATCH);
            }
            let batch: Vec<Tick> = ticks.by_ref().take(BATCH).collect();
            let this = self.clone();
            batches.spawn(async move { this.fire_batch(batch).await });
        }
        // Every batch in flight finishes, even when stopping: each is one
        // store transaction and one write.
        while let Some(done) = batches.join_next().await {
            failed += done.unwrap_or(BATCH);
        }
        if stop.is_cancelled() {
            return Duration::ZERO;
        }
        if read == PASS && failed < read {
            return Duration::ZERO;
        }
        if failed > 0 {
            return POLL;
        }
        match self.backend.next_schedule_fire().await {
            Ok(Some(next)) => {
                let wait = next.saturating_sub(now_millis(&self.clock)).clamp(0, 1000);
                Duration::from_millis(u64::try_from(wait).unwrap_or(0)).min(POLL)
            }
            Ok(None) => POLL,
            Err(e) => {
                debug!(error = %e, "reading the next tick");
                POLL
            }
        }
    }

    /// What one due schedule needs: its catch-up plan, then for the first
    /// tick of the plan its overlap policy. One tick per schedule per
    /// pass: a schedule with more to catch up is due again at once and
    /// fires the next on the next pass.
    async fn step(&self, stored: crate::backend::StoredSchedule, now: Millis) -> Step {
        let name = stored.name.clone();
        let Some(due) = stored.next_fire else {
            return Step::Done;
        };
        let record = match Record::decode(stored) {
            Ok(record) => record,
            Err(e) => {
                error!(schedule = %name, error = %e, "a schedule's record does not decode: it fires nothing");
                return Step::Failed;
            }
        };
        let calendar = match calendar(&record.schedule, due - 1) {
            Ok(calendar) => calendar,
            Err(e) => {
                error!(schedule = %name, error = %e, "a stored schedule no longer compiles: it fires nothing");
                return Step::Failed;
            }
        };
        let plan = sluice_schedule::plan(&calendar, catch_up(&record.schedule), due, now);
        let queue = tick_job(&record.schedule, due, false).queue;
        if plan.skipped > 0 {
            info!(schedule = %name, queue, skipped = plan.skipped, "missed ticks skipped by the catch-up policy");
            self.observe(|o| o.skipped(&name, &queue, Skipped::CatchUp, plan.skipped));
        }
        let Some(&tick) = plan.fire.first() else {
            let advanced = record.changed(plan.next, |_| {});
            return Step::Advance(record, advanced);
        };
        let next = plan.fire.get(1).copied().or(plan.next);
        let policy = overlap(&record.schedule);
        if policy != Overlap::Allow
            && let Some(previous) = self.unfinished_previous(&record.schedule).await
        {
            if policy == Overlap::Skip {
                info!(schedule = %name, queue, tick = %format_tick(tick), previous_job_id = %previous, "tick skipped: the previous tick's job is unfinished");
                self.observe(|o| o.skipped(&name, &queue, Skipped::Overlap, 1));
                let advanced = record.changed(next, |_| {});
                return Step::Advance(record, advanced);
            }
            match self.backend.cancel(previous).await {
                Ok(state) => {
                    info!(schedule = %name, queue, job_id = %previous, state = ?state, "previous tick's job cancelled")
                }
                Err(e) => {
                    debug!(schedule = %name, job_id = %previous, error = %e, "cancelling the previous tick's job")
                }
            }
        }
        let fired = record.changed(next, |s| s.last_fired_at = Some(timestamp_of(tick)));
        Step::Fire(Tick {
            read: record,
            fired,
            tick,
            next,
            queue,
        })
    }

    /// Writes schedules moved on without a job; how many failed.
    async fn advance(&self, advances: Vec<(Record, Record)>) -> usize {
        let count = advances.len();
        let writes = advances
            .into_iter()
            .map(|(old, new)| (new.stored, old.stored.revision))
            .collect();
        match self.backend.put_schedules(writes).await {
            // One not written changed meanwhile (another broker, an
            // operator): the next pass reads it again.
            Ok(_) => 0,
            Err(e) => {
                warn!(error = %e, schedules = count, "writing schedules");
                count
            }
        }
    }

    /// Fires a batch of ticks of different schedules, then records each
    /// job's id on its schedule; how many failed.
    async fn fire_batch(&self, batch: Vec<Tick>) -> usize {
        let fires = batch
            .iter()
            .map(|t| TickFire {
                schedule: t.fired.stored.clone(),
                expect: t.read.stored.revision,
                job: tick_job(&t.read.schedule, t.tick, true),
            })
            .collect();
        let answers = match self.backend.fire_schedules(fires).await {
            Ok(answers) => answers,
            Err(e) => {
                warn!(error = %e, ticks = batch.len(), "ticks not fired: tried again");
                return batch.len();
            }
        };
        let mut failed = 0;
        let mut records = Vec::new();
        for (t, answer) in batch.into_iter().zip(answers) {
            let name = &t.read.schedule.name;
            let tick = format_tick(t.tick);
            let enqueued = match answer {
                Some(Ok(enqueued)) => enqueued,
                None => {
                    debug!(schedule = %name, tick = %tick, "tick fired by another broker");
                    continue;
                }
                Some(Err(refused)) => {
                    warn!(schedule = %name, queue = t.queue, tick = %tick, error = %refused, "tick refused: tried again");
                    failed += 1;
                    continue;
                }
            };
            let lag = Duration::from_millis(
                u64::try_from(now_millis(&self.clock).saturating_sub(t.tick)).unwrap_or(0),
            );
            info!(
                job_id = %enqueued.job_id,
                job_type = t.read.schedule.job.as_ref().map_or("", |j| j.job_type.as_str()),
                queue = t.queue,
                attempt = 0,
                schedule = %name,
                tick = %tick,
                lag_ms = lag.as_millis() as u64,
                duplicate = enqueued.duplicate,
                "schedule tick enqueued"
            );
            self.observe(|o| o.fired(name, &t.queue, lag));
            let with_job = t.fired.changed(t.next, |s| {
                s.last_job_id = enqueued.job_id.to_string();
                add_run(
                    &mut s.recent_runs,
                    pb::ScheduleRun {
                        scheduled_for: Some(timestamp_of(t.tick)),
                        job_id: enqueued.job_id.to_string(),
                        ..Default::default()
                    },
                );
            });
            records.push((with_job.stored, t.fired.stored.revision));
        }
        if !records.is_empty()
            && let Err(e) = self.backend.put_schedules(records).await
        {
            // The ticks fired; only their job ids are not noted.
            warn!(error = %e, "noting the fired ticks' jobs");
        }
        failed
    }

    /// The previous tick's job, if it is unfinished.
    async fn unfinished_previous(&self, schedule: &pb::Schedule) -> Option<Uuid> {
        let id = Uuid::parse_str(&schedule.last_job_id).ok()?;
        let job = self.backend.job(id).await.ok()?;
        matches!(
            job.state,
            JobState::Scheduled | JobState::Ready | JobState::Leased
        )
        .then_some(id)
    }

    fn observe(&self, f: impl FnOnce(&dyn TickObserver)) {
        if let Some(observer) = &self.observer {
            f(observer.as_ref());
        }
    }
}
