//! The firing loop: one task per broker that enqueues the ticks that are
//! due. It reads the schedules due now from the store's order by next tick
//! (never the whole list), plans each with its catch-up policy
//! (`sluice_schedule::plan`), applies its overlap policy, and fires each
//! tick with [`ScheduleStore::fire_schedule`]: the tick's job and the
//! schedule's advance commit together, on the revision it read, so when
//! several brokers fire one tick at once one job is added and the others
//! find the schedule moved on. A second write then records the job's id
//! on the schedule (`last_job_id`, `recent_runs`).
//!
//! Every broker runs the loop over a shared store: a broker that dies
//! delays no tick, since the others fire it as they would anyway.
//!
//! It sleeps until the next tick, at most [`POLL`] (so a schedule another
//! broker created is seen within it), and wakes early when this broker's
//! Admin service writes a schedule.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_queue::JobState;
use sluice_schedule::{Millis, Overlap, format_tick};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use super::record::{Record, add_run, calendar, catch_up, overlap, tick_job, timestamp_of};
use super::{Skipped, TickObserver, now_millis};
use crate::backend::{Expect, SharedBackend};
use crate::clock::TokioClock;

/// Longest sleep between passes.
pub const POLL: Duration = Duration::from_secs(1);

/// Most schedules one pass reads.
const PASS: usize = 256;

/// What firing one schedule came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Its due ticks were handled (or another broker had).
    Done,
    /// Something refused or failed: tried again on a later pass.
    Failed,
}

/// The firing loop of one broker.
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
        let due = match self.backend.due_schedules(now, PASS).await {
            Ok(due) => due,
            Err(e) => {
                debug!(error = %e, "reading the due schedules");
                return POLL;
            }
        };
        let read = due.len();
        let mut failed = 0;
        for stored in due {
            if stop.is_cancelled() {
                return Duration::ZERO;
            }
            if self.fire(stored, now).await == Outcome::Failed {
                failed += 1;
            }
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

    /// Fires the due ticks of one schedule.
    async fn fire(&self, stored: crate::backend::StoredSchedule, now: Millis) -> Outcome {
        let name = stored.name.clone();
        let Some(due) = stored.next_fire else {
            return Outcome::Done;
        };
        let record = match Record::decode(stored) {
            Ok(record) => record,
            Err(e) => {
                error!(schedule = %name, error = %e, "a schedule's record does not decode: it fires nothing");
                return Outcome::Failed;
            }
        };
        let calendar = match calendar(&record.schedule, due - 1) {
            Ok(calendar) => calendar,
            Err(e) => {
                error!(schedule = %name, error = %e, "a stored schedule no longer compiles: it fires nothing");
                return Outcome::Failed;
            }
        };
        let plan = sluice_schedule::plan(&calendar, catch_up(&record.schedule), due, now);
        let queue = tick_job(&record.schedule, due, false).queue;
        if plan.skipped > 0 {
            info!(schedule = %name, queue, skipped = plan.skipped, "missed ticks skipped by the catch-up policy");
            self.observe(|o| o.skipped(&name, &queue, Skipped::CatchUp, plan.skipped));
        }
        let mut record = record;
        if plan.fire.is_empty() {
            let advanced = record.changed(plan.next, |_| {});
            return self.put(&mut record, advanced).await;
        }
        for (i, &tick) in plan.fire.iter().enumerate() {
            let next = plan.fire.get(i + 1).copied().or(plan.next);
            if self.fire_tick(&mut record, &queue, tick, next).await == Outcome::Failed {
                return Outcome::Failed;
            }
        }
        Outcome::Done
    }

    /// Fires `tick` of `record` (then due at `next`), as its overlap
    /// policy says; `record` follows what was written.
    async fn fire_tick(
        &self,
        record: &mut Record,
        queue: &str,
        tick: Millis,
        next: Option<Millis>,
    ) -> Outcome {
        let name = record.schedule.name.clone();
        let policy = overlap(&record.schedule);
        if policy != Overlap::Allow
            && let Some(previous) = self.unfinished_previous(&record.schedule).await
        {
            if policy == Overlap::Skip {
                info!(schedule = %name, queue, tick = %format_tick(tick), previous_job_id = %previous, "tick skipped: the previous tick's job is unfinished");
                self.observe(|o| o.skipped(&name, queue, Skipped::Overlap, 1));
                let advanced = record.changed(next, |_| {});
                return self.put(record, advanced).await;
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
        let job = tick_job(&record.schedule, tick, true);
        let job_type = job.job_type.clone();
        let fired = record.changed(next, |s| s.last_fired_at = Some(timestamp_of(tick)));
        let answer = self
            .backend
            .fire_schedule(fired.stored.clone(), record.stored.revision, job)
            .await;
        let enqueued = match answer {
            Ok(Some(Ok(enqueued))) => enqueued,
            Ok(None) => {
                debug!(schedule = %name, tick = %format_tick(tick), "tick fired by another broker");
                return Outcome::Done;
            }
            Ok(Some(Err(refused))) => {
                warn!(schedule = %name, queue, tick = %format_tick(tick), error = %refused, "tick refused: tried again");
                return Outcome::Failed;
            }
            Err(e) => {
                warn!(schedule = %name, queue, tick = %format_tick(tick), error = %e, "tick not fired: tried again");
                return Outcome::Failed;
            }
        };
        let lag = Duration::from_millis(
            u64::try_from(now_millis(&self.clock).saturating_sub(tick)).unwrap_or(0),
        );
        info!(
            job_id = %enqueued.job_id,
            job_type,
            queue,
            attempt = 0,
            schedule = %name,
            tick = %format_tick(tick),
            lag_ms = lag.as_millis() as u64,
            duplicate = enqueued.duplicate,
            "schedule tick enqueued"
        );
        self.observe(|o| o.fired(&name, queue, lag));
        *record = fired;
        let with_job = record.changed(next, |s| {
            s.last_job_id = enqueued.job_id.to_string();
            add_run(
                &mut s.recent_runs,
                pb::ScheduleRun {
                    scheduled_for: Some(timestamp_of(tick)),
                    job_id: enqueued.job_id.to_string(),
                    ..Default::default()
                },
            );
        });
        self.put(record, with_job).await
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

    /// Writes `next` over `record` (at its revision); `record` becomes it.
    async fn put(&self, record: &mut Record, next: Record) -> Outcome {
        let expect = Expect::Revision(record.stored.revision);
        match self.backend.put_schedule(next.stored.clone(), expect).await {
            Ok(true) => {
                *record = next;
                Outcome::Done
            }
            // Changed meanwhile (another broker, an operator): the next
            // pass reads it again.
            Ok(false) => Outcome::Done,
            Err(e) => {
                warn!(schedule = %record.schedule.name, error = %e, "writing a schedule");
                Outcome::Failed
            }
        }
    }

    fn observe(&self, f: impl FnOnce(&dyn TickObserver)) {
        if let Some(observer) = &self.observer {
            f(observer.as_ref());
        }
    }
}
