//! Schedules: every Admin call, bad definitions, ticks enqueued on time
//! with their headers, the overlap policies, and schedules and their last
//! ticks kept across a restart with the catch-up policies applied, on
//! every backend (the restart is a broker stopped and another started on
//! the same store: `--data-dir` on the embedded one).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp as PbTimestamp;
use sluice_broker::config::StoreConfig;
use sluice_e2e::in_process::*;
use sluice_e2e::{all_jobs, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use tonic::Code;
use tonic::transport::Channel;

/// A change to a schedule that makes it invalid.
type Change = Box<dyn Fn(&mut pb::Schedule)>;

/// A schedule of `name` firing every `every` seconds into queue `queue`.
fn every(name: &str, every: u64, queue: &str) -> pb::Schedule {
    pb::Schedule {
        name: name.into(),
        every: Some(prost_types::Duration {
            seconds: every as i64,
            nanos: 0,
        }),
        job: Some(pb::JobTemplate {
            queue: queue.into(),
            job_type: "tick".into(),
            payload: b"{}".to_vec().into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn create(admin: &mut AdminClient<Channel>, schedule: pb::Schedule) -> pb::Schedule {
    admin
        .create_schedule(pb::CreateScheduleRequest {
            schedule: Some(schedule),
            upsert: false,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The names ListSchedules answers for `soonest`.
async fn soonest(admin: &mut AdminClient<Channel>, soonest: u32) -> Vec<String> {
    let listed = admin
        .list_schedules(pb::ListSchedulesRequest { soonest })
        .await
        .unwrap()
        .into_inner();
    listed.schedules.into_iter().map(|s| s.name).collect()
}

async fn get(admin: &mut AdminClient<Channel>, name: &str) -> Result<pb::Schedule, tonic::Status> {
    admin
        .get_schedule(pb::GetScheduleRequest { name: name.into() })
        .await
        .map(tonic::Response::into_inner)
}

/// The tick of a tick's job, in seconds since the epoch.
fn tick_of(job: &pb::Job) -> i64 {
    let header = &job.headers["sluice-scheduled-for"];
    let parsed = humantime::parse_rfc3339(header).unwrap();
    parsed
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn secs(t: &PbTimestamp) -> i64 {
    t.seconds
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

every_backend! {
    async fn every_schedule_call_works() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let mut nightly = every("nightly", 3600, "reports");
        nightly.every = None;
        nightly.cron = "30 2 * * *".into();
        nightly.time_zone = "Europe/Berlin".into();
        let created = create(&mut admin, nightly.clone()).await;
        assert_eq!(created.upcoming.len(), 5, "{created:?}");
        assert!(created.description.contains("02:30"), "{}", created.description);
        assert!(created.created_at.is_some() && created.next_fire_at == created.upcoming.first().cloned());
        // Each a day apart (on a DST day, 23 or 25 hours).
        for pair in created.upcoming.windows(2) {
            let gap = pair[1].seconds - pair[0].seconds;
            assert!([23, 24, 25].contains(&(gap / 3600)), "{gap}");
        }

        // Create again: ALREADY_EXISTS; upsert of the same: nothing changes.
        let again = admin
            .create_schedule(pb::CreateScheduleRequest { schedule: Some(nightly.clone()), upsert: false })
            .await;
        assert_eq!(code(again), Code::AlreadyExists);
        let same = admin
            .create_schedule(pb::CreateScheduleRequest { schedule: Some(nightly.clone()), upsert: true })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(same.updated_at, created.updated_at);
        // Upsert of another time: the next tick moves.
        nightly.cron = "45 4 * * *".into();
        let moved = admin
            .create_schedule(pb::CreateScheduleRequest { schedule: Some(nightly), upsert: true })
            .await
            .unwrap()
            .into_inner();
        assert_ne!(moved.next_fire_at, created.next_fire_at);
        assert!(moved.description.contains("04:45"), "{}", moved.description);
        assert_eq!(moved.created_at, created.created_at);

        create(&mut admin, every("often", 3600, "other")).await;
        let listed = admin
            .list_schedules(pb::ListSchedulesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .schedules;
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["nightly", "often"]);
        // The soonest first, from the order by next tick.
        let mut by_fire: Vec<&pb::Schedule> = listed.iter().collect();
        by_fire.sort_by_key(|s| s.next_fire_at.map(|t| t.seconds));
        let by_fire: Vec<&str> = by_fire.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(soonest(&mut admin, 5).await, by_fire);
        assert_eq!(soonest(&mut admin, 1).await, by_fire[..1]);
        let refused = admin
            .list_schedules(pb::ListSchedulesRequest { soonest: 1001 })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("soonest"), "{}", refused.message());

        // Paused: no next tick; resumed: one again.
        let paused = admin
            .pause_schedule(pb::PauseScheduleRequest { name: "nightly".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(paused.paused && paused.next_fire_at.is_none() && paused.upcoming.is_empty());
        // A paused schedule has no next tick: it is not among the soonest.
        assert_eq!(soonest(&mut admin, 5).await, ["often"]);
        let resumed = admin
            .resume_schedule(pb::ResumeScheduleRequest { name: "nightly".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(!resumed.paused && resumed.next_fire_at.is_some());

        // Trigger: one job now, named by the schedule, among its runs.
        let triggered = admin
            .trigger_schedule(pb::TriggerScheduleRequest { name: "nightly".into() })
            .await
            .unwrap()
            .into_inner();
        let job = b.job(&triggered.job_id).await;
        assert_eq!(job.queue, "reports");
        assert_eq!(job.headers["sluice-schedule"], "nightly");
        assert!((tick_of(&job) - now_secs()).abs() <= 5);
        let read = get(&mut admin, "nightly").await.unwrap();
        assert_eq!(read.recent_runs.len(), 1);
        assert!(read.recent_runs[0].triggered);
        assert_eq!(read.recent_runs[0].job_id, triggered.job_id);
        assert_eq!(read.recent_runs[0].state(), pb::JobState::Ready);

        admin
            .delete_schedule(pb::DeleteScheduleRequest { name: "nightly".into() })
            .await
            .unwrap();
        assert_eq!(code(get(&mut admin, "nightly").await), Code::NotFound);
        let gone = admin
            .delete_schedule(pb::DeleteScheduleRequest { name: "nightly".into() })
            .await;
        assert_eq!(code(gone), Code::NotFound);
        let trigger_gone = admin
            .trigger_schedule(pb::TriggerScheduleRequest { name: "nightly".into() })
            .await;
        assert_eq!(code(trigger_gone), Code::NotFound);
    }
}

every_backend! {
    async fn bad_definitions_are_refused_naming_the_field() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let past = PbTimestamp { seconds: now_secs() - 3600, nanos: 0 };
        let cases: Vec<(&str, Change)> = vec![
            ("cron", Box::new(|s| { s.every = None; s.cron = "61 * * * *".into(); })),
            ("cron", Box::new(|s| { s.every = None; s.cron = "0 0 30 2 *".into(); })),
            ("cron", Box::new(|s| { s.cron = "* * * * *".into(); })),
            ("cron", Box::new(|s| { s.every = None; })),
            ("every", Box::new(|s| { s.every = Some(prost_types::Duration { seconds: 0, nanos: 500_000_000 }); })),
            ("time_zone", Box::new(|s| { s.time_zone = "Mars/Olympus_Mons".into(); })),
            ("end_at", Box::new(move |s| { s.end_at = Some(past); })),
            ("name", Box::new(|s| { s.name = "no spaces".into(); })),
            ("job", Box::new(|s| { s.job = None; })),
            ("job.queue", Box::new(|s| { s.job.as_mut().unwrap().queue = "bad queue".into(); })),
            ("job.job_type", Box::new(|s| { s.job.as_mut().unwrap().job_type = String::new(); })),
            ("catch_up", Box::new(|s| { s.catch_up = 9; })),
        ];
        for (field, change) in cases {
            let mut schedule = every("bad", 60, "default");
            change(&mut schedule);
            let refused = admin
                .create_schedule(pb::CreateScheduleRequest { schedule: Some(schedule.clone()), upsert: false })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::InvalidArgument, "{schedule:?}: {refused:?}");
            assert!(refused.message().starts_with(&format!("{field}: ")), "{field}: {}", refused.message());
        }
        assert_eq!(code(get(&mut admin, "bad").await), Code::NotFound);
        // The broker serves on.
        create(&mut admin, every("good", 60, "default")).await;
    }
}

every_backend! {
    async fn each_tick_is_enqueued_once_on_time_with_its_headers() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let mut schedule = every("pulse", 1, "pulse");
        schedule.job.as_mut().unwrap().headers.insert("team".into(), "ops".into());
        create(&mut admin, schedule).await;
        let mut ticks = Vec::new();
        eventually("three ticks", || {
            let mut admin = admin.clone();
            async move { all_jobs(&mut admin, "pulse").await.len() >= 3 }
        })
        .await;
        for job in all_jobs(&mut admin, "pulse").await {
            assert_eq!(job.headers["sluice-schedule"], "pulse");
            assert_eq!(job.headers["team"], "ops");
            assert_eq!(job.job_type, "tick");
            let tick = tick_of(&job);
            // Enqueued within a second of its tick (the broker's clock).
            let created = job.created_at.as_ref().unwrap();
            let lag_ms = (created.seconds - tick) * 1000 + i64::from(created.nanos / 1_000_000);
            assert!((0..1000).contains(&lag_ms), "tick {tick} enqueued {lag_ms} ms after it");
            ticks.push(tick);
        }
        let mut unique = ticks.clone();
        unique.dedup();
        assert_eq!(unique, ticks, "ticks in order, each once");
        let read = get(&mut admin, "pulse").await.unwrap();
        let last = read.last_fired_at.as_ref().map(secs).unwrap();
        assert!(last >= *ticks.last().unwrap());
        assert!(!read.last_job_id.is_empty());
        assert!(read.next_fire_at.as_ref().map(secs).unwrap() > last);
    }
}

every_backend! {
    async fn overlap_skip_and_cancel_previous_hold_while_a_job_is_unfinished() {
        let b = TestBroker::start().await;
        let mut admin = b.admin.clone();
        let mut skip = every("skipper", 1, "skip");
        skip.overlap = pb::Overlap::Skip.into();
        let mut cancel = every("canceller", 1, "cancel");
        cancel.overlap = pb::Overlap::CancelPrevious.into();
        create(&mut admin, skip).await;
        create(&mut admin, cancel).await;
        // No worker: every job stays READY.
        eventually("three ticks of the canceller", || {
            let mut admin = admin.clone();
            async move { all_jobs(&mut admin, "cancel").await.len() >= 3 }
        })
        .await;
        let cancelled = all_jobs(&mut admin, "cancel").await;
        let (last, earlier) = cancelled.split_last().unwrap();
        assert_eq!(last.state(), pb::JobState::Ready);
        for job in earlier {
            assert_eq!(job.state(), pb::JobState::Cancelled, "{job:?}");
        }
        // The skipper's first job is still READY: every later tick skipped.
        assert_eq!(all_jobs(&mut admin, "skip").await.len(), 1);
        let read = get(&mut admin, "skipper").await.unwrap();
        assert!(read.last_fired_at.as_ref().map(secs) < read.next_fire_at.as_ref().map(secs));
        assert_eq!(read.last_job_state(), pb::JobState::Ready);
    }
}

every_backend! {
    async fn a_restart_keeps_schedules_and_catches_up_as_each_policy_says() {
        let mut config = test_config();
        if matches!(config.store, StoreConfig::Local { .. }) {
            config.store = StoreConfig::data_dir(scratch_dir("schedules-restart"));
        }
        let b = TestBroker::with_config(config.clone()).await;
        let mut admin = b.admin.clone();
        for (name, policy) in [("skip", pb::CatchUp::Skip), ("one", pb::CatchUp::One), ("all", pb::CatchUp::All)] {
            let mut schedule = every(name, 1, name);
            schedule.catch_up = policy.into();
            create(&mut admin, schedule).await;
        }
        eventually("a tick of each", || {
            let mut admin = admin.clone();
            async move {
                for name in ["skip", "one", "all"] {
                    if all_jobs(&mut admin, name).await.is_empty() {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        let before: BTreeMap<&str, pb::Schedule> = {
            let mut m = BTreeMap::new();
            for name in ["skip", "one", "all"] {
                m.insert(name, get(&mut admin, name).await.unwrap());
            }
            m
        };
        b.begin_shutdown();
        b.stopped().await;
        let stopped_at = now_secs();
        // Down for longer than a tick stays on time (10 s): the ticks of
        // the first seconds down are missed.
        tokio::time::sleep(Duration::from_secs(14)).await;
        let restarted_at = now_secs();
        let b = TestBroker::with_config(config).await;
        let mut admin = b.admin.clone();
        for (name, was) in &before {
            let now = get(&mut admin, name).await.unwrap();
            assert_eq!(now.created_at, was.created_at, "{name} kept");
        }
        // Caught up: a tick after the restart fired for each.
        eventually("a tick after the restart", || {
            let mut admin = admin.clone();
            async move {
                for name in ["skip", "one", "all"] {
                    let jobs = all_jobs(&mut admin, name).await;
                    if !jobs.iter().any(|j| tick_of(j) > restarted_at) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        for (name, was) in &before {
            let last_before = was.last_fired_at.as_ref().map(secs).unwrap();
            let ticks: Vec<i64> = all_jobs(&mut admin, name).await.iter().map(tick_of).collect();
            let mut sorted = ticks.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), ticks.len(), "{name}: a tick fired twice: {ticks:?}");
            // Ticks surely missed: after the last fired and older than 10 s
            // when the restarted broker began (its first pass is later).
            let missed: Vec<i64> = (last_before + 1..restarted_at - 10).filter(|t| *t > stopped_at).collect();
            assert!(!missed.is_empty());
            let fired_missed = missed.iter().filter(|t| ticks.contains(t)).count();
            match *name {
                "skip" => assert_eq!(fired_missed, 0, "skip fired missed ticks: {ticks:?}"),
                "one" => assert!(fired_missed <= 1, "one fired {fired_missed}: {ticks:?}"),
                _ => assert_eq!(fired_missed, missed.len(), "all left out some: {ticks:?}"),
            }
            // And from the restart on, every tick once, without a gap.
            let after: Vec<i64> = sorted.iter().copied().filter(|t| *t >= restarted_at).collect();
            for pair in after.windows(2) {
                assert_eq!(pair[1] - pair[0], 1, "{name}: a gap after the restart: {after:?}");
            }
        }
    }
}
