//! The Admin service's schedule calls: CreateSchedule (or upsert),
//! GetSchedule, ListSchedules, DeleteSchedule, PauseSchedule,
//! ResumeSchedule and TriggerSchedule. Each checks the definition (the
//! timing with `sluice-schedule`, the job template as Enqueue checks a
//! job, fields named `job.queue` and so on), then reads the schedule,
//! changes it and writes it on the revision it read, again from the read
//! if another writer came first. A credential sees and changes only
//! schedules whose template's queue it covers; others answer NOT_FOUND
//! as an unknown name does.

use std::sync::Arc;

use sluice_proto::v1 as pb;
use sluice_schedule::Millis;
use tokio::sync::Notify;
use tracing::info;
use uuid::Uuid;

use super::convert::{self, Limits};
use super::error::RequestError;
use super::outbound;
use crate::auth::Grant;
use crate::backend::{BackendError, Expect, SharedBackend, StoredSchedule};
use crate::clock::{Clock, TokioClock};
use crate::schedules::now_millis;
use crate::schedules::record::{self, Record, add_run, calendar, tick_job, timestamp_of};

type Result<T> = std::result::Result<T, RequestError>;

/// Reads and writes of one change before it gives up (each lost to a
/// concurrent writer).
const ATTEMPTS: usize = 8;

/// What the schedule calls need besides the backend.
#[derive(Clone)]
pub struct ScheduleDesk {
    shared: SharedBackend,
    clock: TokioClock,
    limits: Limits,
    /// Wakes this broker's firing loop after a write.
    wake: Arc<Notify>,
}

impl ScheduleDesk {
    /// The desk over `shared`, checking templates with `limits`, waking
    /// `wake` after each write.
    pub fn new(shared: SharedBackend, limits: Limits, wake: Arc<Notify>) -> Self {
        Self {
            shared,
            clock: TokioClock::new(),
            limits,
            wake,
        }
    }

    fn now(&self) -> Millis {
        now_millis(&self.clock)
    }

    /// CreateSchedule.
    pub async fn create(
        &self,
        grant: &Grant,
        req: pb::CreateScheduleRequest,
    ) -> Result<pb::Schedule> {
        let now = self.now();
        let definition = self.checked(req.schedule, now)?;
        grant.check_queue(template_queue(&definition))?;
        for _ in 0..ATTEMPTS {
            let existing = self.read(&definition.name).await?;
            let (written, expect) = match existing {
                None => {
                    let mut fresh = definition.clone();
                    fresh.created_at = Some(timestamp_of(now));
                    fresh.updated_at = fresh.created_at;
                    let calendar = record::calendar(&fresh, now).map_err(spec_error)?;
                    let next = calendar.next_after(now);
                    (Record::encode(&fresh, 1, next), Expect::Absent)
                }
                Some(_) if !req.upsert => {
                    return Err(RequestError::ScheduleExists {
                        name: definition.name,
                    });
                }
                Some(old) => {
                    grant.check_queue(template_queue(&old.schedule))?;
                    let Some(replaced) = replace(&old, &definition, now)? else {
                        return self.view(old, true).await;
                    };
                    (replaced, Expect::Revision(old.stored.revision))
                }
            };
            if self.shared.put_schedule(written.clone(), expect).await? {
                info!(schedule = %definition.name, queue = template_queue(&definition), "schedule written");
                self.wake.notify_one();
                return self.view(decoded(written)?, true).await;
            }
        }
        Err(RequestError::ScheduleBusy {
            name: definition.name,
        })
    }

    /// GetSchedule.
    pub async fn get(&self, grant: &Grant, name: &str) -> Result<pb::Schedule> {
        let record = self.visible(grant, name).await?;
        self.view(record, true).await
    }

    /// ListSchedules: every schedule by name, or (`soonest` > 0) the
    /// `soonest` ones with the earliest next tick.
    pub async fn list(&self, grant: &Grant, soonest: u32) -> Result<pb::ListSchedulesResponse> {
        if soonest > sluice_limits::MAX_PAGE_SIZE {
            return Err(RequestError::invalid(
                "soonest",
                format!("is at most {}", sluice_limits::MAX_PAGE_SIZE),
            ));
        }
        let stored = match soonest {
            0 => self.shared.schedules().await?,
            // A scoped credential reads further: the soonest of its queues
            // may come after many of others.
            n if grant.every_queue() => self.shared.due_schedules(Millis::MAX, n as usize).await?,
            _ => self.shared.due_schedules(Millis::MAX, usize::MAX).await?,
        };
        let limit = if soonest == 0 {
            usize::MAX
        } else {
            soonest as usize
        };
        let mut schedules = Vec::new();
        for stored in stored {
            let record = decoded(stored)?;
            if schedules.len() < limit && grant.allows(template_queue(&record.schedule)) {
                schedules.push(self.view(record, false).await?);
            }
        }
        Ok(pb::ListSchedulesResponse { schedules })
    }

    /// DeleteSchedule.
    pub async fn delete(&self, grant: &Grant, name: &str) -> Result<()> {
        let record = self.visible(grant, name).await?;
        grant.check_queue(template_queue(&record.schedule))?;
        if !self.shared.delete_schedule(name).await? {
            return Err(unknown(name));
        }
        info!(schedule = %name, "schedule deleted");
        Ok(())
    }

    /// PauseSchedule (`paused`) or ResumeSchedule.
    pub async fn set_paused(
        &self,
        grant: &Grant,
        name: &str,
        paused: bool,
    ) -> Result<pb::Schedule> {
        for _ in 0..ATTEMPTS {
            let record = self.visible(grant, name).await?;
            grant.check_queue(template_queue(&record.schedule))?;
            if record.schedule.paused == paused {
                return self.view(record, true).await;
            }
            let now = self.now();
            // Resumed: from the next tick on; ticks of the pause are not caught up.
            let next = match paused {
                true => None,
                false => calendar(&record.schedule, 0)
                    .ok()
                    .and_then(|c| c.next_after(now)),
            };
            let changed = record.changed(next, |s| {
                s.paused = paused;
                s.updated_at = Some(timestamp_of(now));
            });
            let expect = Expect::Revision(record.stored.revision);
            if self
                .shared
                .put_schedule(changed.stored.clone(), expect)
                .await?
            {
                info!(schedule = %name, paused, "schedule paused or resumed");
                self.wake.notify_one();
                return self.view(changed, true).await;
            }
        }
        Err(RequestError::ScheduleBusy { name: name.into() })
    }

    /// TriggerSchedule: one run now, recorded among the recent runs.
    pub async fn trigger(&self, grant: &Grant, name: &str) -> Result<pb::TriggerScheduleResponse> {
        let record = self.visible(grant, name).await?;
        grant.check_queue(template_queue(&record.schedule))?;
        let now = self.now();
        let job = tick_job(&record.schedule, now, false);
        let queue = job.queue.clone();
        let enqueued = self
            .shared
            .enqueue(vec![job], "TriggerSchedule is refused")
            .await?
            .pop()
            .ok_or(RequestError::Backend(BackendError::Internal))??;
        info!(job_id = %enqueued.job_id, queue, attempt = 0, schedule = %name, "schedule triggered");
        let run = pb::ScheduleRun {
            scheduled_for: Some(timestamp_of(now)),
            job_id: enqueued.job_id.to_string(),
            triggered: true,
            state: 0,
        };
        // Best effort: the job is enqueued whether or not its run is noted.
        let mut record = record;
        for _ in 0..ATTEMPTS {
            let changed = record.changed(record.stored.next_fire, |s| {
                add_run(&mut s.recent_runs, run.clone())
            });
            let expect = Expect::Revision(record.stored.revision);
            if self.shared.put_schedule(changed.stored, expect).await? {
                break;
            }
            match self.read(name).await? {
                Some(again) => record = again,
                None => break,
            }
        }
        Ok(pb::TriggerScheduleResponse {
            job_id: enqueued.job_id.to_string(),
        })
    }

    /// The definition of a CreateSchedule, checked; its state fields cleared.
    fn checked(&self, schedule: Option<pb::Schedule>, now: Millis) -> Result<pb::Schedule> {
        let mut s = schedule.ok_or_else(|| RequestError::invalid("schedule", "is required"))?;
        sluice_limits::check_schedule_name(&s.name)
            .map_err(|r| RequestError::invalid("name", r))?;
        let template = s.job.take().ok_or_else(|| {
            RequestError::invalid("job", "is required: the job each tick enqueues")
        })?;
        let checked = convert::new_job(
            pb::EnqueueRequest {
                queue: template.queue,
                job_type: template.job_type,
                payload: template.payload,
                headers: template.headers,
                priority: template.priority,
                max_attempts: template.max_attempts,
                timeout: template.timeout,
                run_at: None,
                idempotency_key: String::new(),
                key: template.key,
            },
            self.limits,
            self.clock.now(),
        )
        .map_err(in_template)?;
        s.job = Some(pb::JobTemplate {
            queue: checked.queue,
            job_type: checked.job_type,
            payload: checked.payload,
            headers: checked.headers.into_iter().collect(),
            priority: checked.priority,
            max_attempts: checked.max_attempts.unwrap_or(0),
            timeout: checked.timeout.map(sluice_proto::duration_to_pb),
            key: checked.key.unwrap_or_default(),
        });
        if pb::CatchUp::try_from(s.catch_up).is_err() {
            return Err(RequestError::invalid(
                "catch_up",
                format!("{} is not a CatchUp", s.catch_up),
            ));
        }
        if pb::Overlap::try_from(s.overlap).is_err() {
            return Err(RequestError::invalid(
                "overlap",
                format!("{} is not an Overlap", s.overlap),
            ));
        }
        calendar(&s, now).map_err(spec_error)?;
        // Kept by the broker, never taken from a request.
        s.paused = false;
        s.next_fire_at = None;
        s.last_fired_at = None;
        s.last_job_id.clear();
        s.created_at = None;
        s.updated_at = None;
        s.upcoming.clear();
        s.description.clear();
        s.last_job_state = 0;
        s.recent_runs.clear();
        Ok(s)
    }

    async fn read(&self, name: &str) -> Result<Option<Record>> {
        self.shared.schedule(name).await?.map(decoded).transpose()
    }

    /// The schedule `name`, if `grant` covers its queue.
    async fn visible(&self, grant: &Grant, name: &str) -> Result<Record> {
        sluice_limits::check_schedule_name(name).map_err(|r| RequestError::invalid("name", r))?;
        match self.read(name).await? {
            Some(record) if grant.allows(template_queue(&record.schedule)) => Ok(record),
            _ => Err(unknown(name)),
        }
    }

    /// The answer for `record`: its state, next fire times and words, and
    /// the state of its last job (with `runs`, of each recent run).
    async fn view(&self, record: Record, runs: bool) -> Result<pb::Schedule> {
        let Record {
            stored,
            mut schedule,
        } = record;
        schedule.next_fire_at = stored.next_fire.map(timestamp_of);
        if let Ok(calendar) = calendar(&schedule, 0) {
            schedule.description = calendar.describe();
            if let Some(next) = stored.next_fire {
                schedule.upcoming = calendar
                    .upcoming(next - 1, sluice_limits::SCHEDULE_UPCOMING)
                    .into_iter()
                    .map(timestamp_of)
                    .collect();
            }
        }
        schedule.last_job_state = self.state_of(&schedule.last_job_id).await;
        if runs {
            for run in &mut schedule.recent_runs {
                run.state = self.state_of(&run.job_id).await;
            }
        }
        Ok(schedule)
    }

    /// The contract's state of job `id` (UNSPECIFIED if unknown or gone).
    async fn state_of(&self, id: &str) -> i32 {
        let Ok(id) = Uuid::parse_str(id) else {
            return 0;
        };
        match self.shared.job(id).await {
            Ok(job) => outbound::state_to_pb(job.state).into(),
            Err(_) => 0,
        }
    }
}

/// `definition` replacing `old`: its state kept, the next tick kept if the
/// timing is unchanged (else the first after now and after the last
/// fired tick); `None` if nothing changes.
fn replace(old: &Record, definition: &pb::Schedule, now: Millis) -> Result<Option<StoredSchedule>> {
    let mut new = definition.clone();
    let kept = &old.schedule;
    new.created_at = kept.created_at;
    new.paused = kept.paused;
    new.last_fired_at = kept.last_fired_at;
    new.last_job_id.clone_from(&kept.last_job_id);
    new.recent_runs.clone_from(&kept.recent_runs);
    new.updated_at = kept.updated_at;
    if new == *kept {
        return Ok(None);
    }
    new.updated_at = Some(timestamp_of(now));
    let same_timing = record::timing(&new) == record::timing(kept);
    let next = if new.paused {
        None
    } else if same_timing {
        old.stored.next_fire
    } else {
        let after = kept
            .last_fired_at
            .as_ref()
            .map_or(now, |t| record::millis_of(t).max(now));
        calendar(&new, now).map_err(spec_error)?.next_after(after)
    };
    Ok(Some(Record::encode(&new, old.stored.revision + 1, next)))
}

fn template_queue(schedule: &pb::Schedule) -> &str {
    schedule
        .job
        .as_ref()
        .map_or(sluice_limits::DEFAULT_QUEUE, |j| j.queue.as_str())
}

fn unknown(name: &str) -> RequestError {
    RequestError::UnknownSchedule { name: name.into() }
}

fn spec_error(e: sluice_schedule::SpecError) -> RequestError {
    RequestError::invalid(e.field, e.reason)
}

/// A template field's refusal, named as the schedule's field.
fn in_template(e: RequestError) -> RequestError {
    match e {
        RequestError::InvalidArgument { field, reason } => RequestError::InvalidArgument {
            field: match field {
                "queue" => "job.queue",
                "job_type" => "job.job_type",
                "payload" => "job.payload",
                "headers" => "job.headers",
                "max_attempts" => "job.max_attempts",
                "timeout" => "job.timeout",
                other => other,
            },
            reason,
        },
        other => other,
    }
}

/// [`Record::decode`], a body that does not decode answered INTERNAL.
fn decoded(stored: StoredSchedule) -> Result<Record> {
    let name = stored.name.clone();
    Record::decode(stored).map_err(|e| {
        tracing::error!(schedule = %name, error = %e, "a schedule's record does not decode");
        RequestError::Backend(BackendError::Internal)
    })
}
