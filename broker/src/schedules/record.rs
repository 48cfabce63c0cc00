//! A schedule as the broker keeps it: the contract's own `Schedule`
//! message, encoded with protobuf as the body of a backend's
//! [`StoredSchedule`] (so the definition and its state evolve as the
//! contract does), with what the firing loop and the Admin calls read of
//! it: its timing, its policies, and the job of a tick.

use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use sluice_proto::v1 as pb;
use sluice_queue::NewJob;
use sluice_schedule::{Calendar, CatchUp, Millis, Overlap, SpecError, Timing, format_tick};

use crate::backend::StoredSchedule;

/// The header naming the schedule of a tick's job.
pub const SCHEDULE_HEADER: &str = "sluice-schedule";
/// The header holding the tick of a tick's job (RFC 3339, UTC).
pub const SCHEDULED_FOR_HEADER: &str = "sluice-scheduled-for";

/// Runs kept on a schedule (`recent_runs`).
pub const RECENT_RUNS: usize = 10;

/// A stored schedule read back.
#[derive(Debug, Clone)]
pub struct Record {
    /// The backend's row (name, revision, next tick).
    pub stored: StoredSchedule,
    /// The definition and its state.
    pub schedule: pb::Schedule,
}

impl Record {
    /// Decodes `stored`'s body.
    ///
    /// # Errors
    /// A body that is not a `Schedule` (a defect, or a damaged store).
    pub fn decode(stored: StoredSchedule) -> Result<Self, prost::DecodeError> {
        let schedule = pb::Schedule::decode(stored.body.clone())?;
        Ok(Self { stored, schedule })
    }

    /// The row to write for `schedule` at `revision`, due at `next_fire`.
    pub fn encode(
        schedule: &pb::Schedule,
        revision: u64,
        next_fire: Option<Millis>,
    ) -> StoredSchedule {
        let mut kept = schedule.clone();
        // Derived on every answer, never stored.
        kept.next_fire_at = None;
        kept.upcoming.clear();
        kept.description.clear();
        kept.last_job_state = 0;
        for run in &mut kept.recent_runs {
            run.state = 0;
        }
        StoredSchedule {
            name: schedule.name.clone(),
            revision,
            next_fire,
            body: Bytes::from(kept.encode_to_vec()),
        }
    }

    /// The same schedule changed by `change`, one revision on, due at
    /// `next_fire`.
    pub fn changed(
        &self,
        next_fire: Option<Millis>,
        change: impl FnOnce(&mut pb::Schedule),
    ) -> Self {
        let mut schedule = self.schedule.clone();
        change(&mut schedule);
        let stored = Self::encode(&schedule, self.stored.revision + 1, next_fire);
        Self { stored, schedule }
    }
}

/// The timing `schedule` gives.
pub fn timing(schedule: &pb::Schedule) -> Timing {
    Timing {
        cron: (!schedule.cron.is_empty()).then(|| schedule.cron.clone()),
        every: schedule
            .every
            .and_then(|d| Duration::try_from(d).ok().or(Some(Duration::ZERO))),
        time_zone: (!schedule.time_zone.is_empty()).then(|| schedule.time_zone.clone()),
        start_at: schedule.start_at.as_ref().map(millis_of),
        end_at: schedule.end_at.as_ref().map(millis_of),
        anchor: schedule.created_at.as_ref().map_or(0, millis_of),
    }
}

/// The calendar of `schedule`, checked as of `now`.
///
/// # Errors
/// The field of the timing at fault.
pub fn calendar(schedule: &pb::Schedule, now: Millis) -> Result<Calendar, SpecError> {
    Calendar::compile(&timing(schedule), now)
}

/// The catch-up policy of `schedule` (UNSPECIFIED is `skip`).
pub fn catch_up(schedule: &pb::Schedule) -> CatchUp {
    match pb::CatchUp::try_from(schedule.catch_up) {
        Ok(pb::CatchUp::One) => CatchUp::One,
        Ok(pb::CatchUp::All) => CatchUp::All,
        _ => CatchUp::Skip,
    }
}

/// The overlap policy of `schedule` (UNSPECIFIED is `allow`).
pub fn overlap(schedule: &pb::Schedule) -> Overlap {
    match pb::Overlap::try_from(schedule.overlap) {
        Ok(pb::Overlap::Skip) => Overlap::Skip,
        Ok(pb::Overlap::CancelPrevious) => Overlap::CancelPrevious,
        _ => Overlap::Allow,
    }
}

/// The idempotency key of `name`'s tick at `tick`.
pub fn tick_key(name: &str, tick: Millis) -> String {
    format!("schedule:{name}:{}", format_tick(tick))
}

/// The job of `schedule`'s tick at `tick` (its template was checked when
/// the schedule was written); `key` for a tick of the timing, none for a
/// trigger.
pub fn tick_job(schedule: &pb::Schedule, tick: Millis, keyed: bool) -> NewJob {
    let template = schedule.job.clone().unwrap_or_default();
    let mut headers: Vec<(String, String)> = template
        .headers
        .into_iter()
        .filter(|(k, _)| k != SCHEDULE_HEADER && k != SCHEDULED_FOR_HEADER)
        .collect();
    headers.push((SCHEDULE_HEADER.to_owned(), schedule.name.clone()));
    headers.push((SCHEDULED_FOR_HEADER.to_owned(), format_tick(tick)));
    headers.sort();
    NewJob {
        queue: if template.queue.is_empty() {
            sluice_limits::DEFAULT_QUEUE.to_owned()
        } else {
            template.queue
        },
        job_type: template.job_type,
        payload: template.payload,
        headers,
        priority: template.priority,
        max_attempts: (template.max_attempts != 0).then_some(template.max_attempts),
        timeout: template.timeout.and_then(|d| Duration::try_from(d).ok()),
        run_at: None,
        idempotency_key: keyed.then(|| tick_key(&schedule.name, tick)),
        key: (!template.key.is_empty()).then_some(template.key),
        dead_letter: None,
    }
}

/// A contract timestamp in milliseconds since the epoch.
pub fn millis_of(t: &prost_types::Timestamp) -> Millis {
    t.seconds.saturating_mul(1000) + i64::from(t.nanos / 1_000_000)
}

/// Milliseconds since the epoch as a contract timestamp.
pub fn timestamp_of(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// `run` added in front of `runs`, keeping the newest [`RECENT_RUNS`].
pub fn add_run(runs: &mut Vec<pb::ScheduleRun>, run: pb::ScheduleRun) {
    runs.insert(0, run);
    runs.truncate(RECENT_RUNS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nightly() -> pb::Schedule {
        pb::Schedule {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            time_zone: "Europe/Berlin".into(),
            job: Some(pb::JobTemplate {
                queue: String::new(),
                job_type: "report".into(),
                headers: [("sluice-schedule".to_owned(), "forged".to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_tick_job_names_its_schedule_and_tick_and_carries_the_key() {
        let tick = 1_765_076_400_000; // 2025-12-07T03:00:00Z
        let job = tick_job(&nightly(), tick, true);
        assert_eq!(job.queue, "default");
        assert_eq!(
            job.idempotency_key.as_deref(),
            Some("schedule:nightly:2025-12-07T03:00:00Z")
        );
        assert_eq!(
            job.headers,
            [
                ("sluice-schedule".to_owned(), "nightly".to_owned()),
                (
                    "sluice-scheduled-for".to_owned(),
                    "2025-12-07T03:00:00Z".to_owned()
                ),
            ]
        );
        assert_eq!(tick_job(&nightly(), tick, false).idempotency_key, None);
    }

    #[test]
    fn a_record_round_trips_without_the_derived_fields() {
        let mut schedule = nightly();
        schedule.description = "derived".into();
        schedule.upcoming.push(timestamp_of(1));
        let stored = Record::encode(&schedule, 3, Some(42));
        let back = Record::decode(stored).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.stored.revision, 3);
        assert_eq!(back.stored.next_fire, Some(42));
        assert!(back.schedule.description.is_empty() && back.schedule.upcoming.is_empty());
        assert_eq!(back.schedule.cron, "0 3 * * *");
    }

    #[test]
    fn timestamps_convert_both_ways() {
        for ms in [0, 1_765_076_400_123, -1500] {
            assert_eq!(millis_of(&timestamp_of(ms)), ms);
        }
    }
}
