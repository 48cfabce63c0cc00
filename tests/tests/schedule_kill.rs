//! Schedules under broker kills, on every shared store: three brokers over
//! one store, a one-second schedule, and one broker killed (SIGKILL) and
//! started again every few seconds for over a minute while workers finish
//! each tick's job at once (so a finished job no longer holds its
//! idempotency key: exactly once must hold by the fire's own revision
//! check). Every tick of the window must have fired exactly once: no
//! duplicate, none missed, each enqueued within the documented bound of
//! its time.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use sluice_e2e::scale_out::{broker_on, workers_of};
use sluice_e2e::{BrokerProcess, WAIT, all_jobs};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;

/// How long the brokers are killed and restarted.
const WINDOW: Duration = Duration::from_secs(65);

/// The most a tick may be enqueued after its time (README, Schedules).
const BOUND: Duration = Duration::from_secs(3);

fn secs_of(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

async fn every_tick_fires_once_while_a_broker_is_killed_again_and_again(url: &str) {
    let mut brokers: Vec<BrokerProcess> = (0..3).map(|_| broker_on(url, &[])).collect();
    // Workers on the two brokers that live: each tick's job succeeds at once.
    let _workers = workers_of(&brokers[1..], &[""], None);
    let mut admin = AdminClient::new(brokers[1].channel().await);
    admin
        .create_schedule(pb::CreateScheduleRequest {
            schedule: Some(pb::Schedule {
                name: "pulse".into(),
                every: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                job: Some(pb::JobTemplate {
                    job_type: "t".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            upsert: false,
        })
        .await
        .unwrap();
    let first = secs_of(SystemTime::now()) + 1;
    let start = Instant::now();
    let mut kills = 0;
    let pauses = [2, 3, 4, 5];
    while start.elapsed() < WINDOW {
        tokio::time::sleep(Duration::from_secs(pauses[kills % pauses.len()])).await;
        brokers[0].signal(Signal::SIGKILL);
        assert!(brokers[0].wait_exit(WAIT).is_some());
        kills += 1;
        brokers[0] = broker_on(url, &[]);
    }
    let last = secs_of(SystemTime::now()) - 1;
    admin
        .pause_schedule(pb::PauseScheduleRequest {
            name: "pulse".into(),
        })
        .await
        .unwrap();

    // Every job of the queue, by its tick.
    let mut by_tick: BTreeMap<i64, Vec<pb::Job>> = BTreeMap::new();
    for job in all_jobs(&mut admin, "default").await {
        let tick = humantime::parse_rfc3339(&job.headers["sluice-scheduled-for"]).unwrap();
        by_tick.entry(secs_of(tick)).or_default().push(job);
    }
    let window: Vec<i64> = (first..=last).collect();
    let missed: Vec<i64> = window
        .iter()
        .copied()
        .filter(|t| !by_tick.contains_key(t))
        .collect();
    let duplicates: Vec<i64> = by_tick
        .iter()
        .filter(|(_, jobs)| jobs.len() > 1)
        .map(|(t, _)| *t)
        .collect();
    let lags: Vec<i64> = window
        .iter()
        .filter_map(|t| by_tick.get(t))
        .flatten()
        .map(|job| {
            let created = job.created_at.as_ref().unwrap();
            let tick =
                secs_of(humantime::parse_rfc3339(&job.headers["sluice-scheduled-for"]).unwrap());
            (created.seconds - tick) * 1000 + i64::from(created.nanos / 1_000_000)
        })
        .collect();
    let max_lag = lags.iter().copied().max().unwrap_or(0);
    let succeeded = by_tick
        .values()
        .flatten()
        .filter(|j| j.state() == pb::JobState::Succeeded)
        .count();
    println!(
        "{}: ticks in the window {}, jobs {}, succeeded {succeeded}, duplicates {}, missed {}, \
         kills {kills}, largest lag {max_lag} ms",
        url.split(':').next().unwrap_or_default(),
        window.len(),
        by_tick.values().map(Vec::len).sum::<usize>(),
        duplicates.len(),
        missed.len(),
    );
    assert!(kills >= 15, "{kills} kills");
    assert!(duplicates.is_empty(), "ticks fired twice: {duplicates:?}");
    assert!(missed.is_empty(), "ticks missed: {missed:?}");
    assert!(
        max_lag < BOUND.as_millis() as i64,
        "a tick was enqueued {max_lag} ms after its time"
    );
    // Finished jobs gave their keys back: a second fire of a tick would
    // have added a job, not met a duplicate.
    assert!(succeeded > window.len() / 2, "{succeeded} succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_every_tick_fires_once_while_a_broker_is_killed_again_and_again() {
    let pg = sluice_e2e::postgres::shared().unwrap_or_else(|e| panic!("{e}"));
    every_tick_fires_once_while_a_broker_is_killed_again_and_again(&pg.fresh_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_every_tick_fires_once_while_a_broker_is_killed_again_and_again() {
    let redis = sluice_e2e::redis::shared().unwrap_or_else(|e| panic!("{e}"));
    every_tick_fires_once_while_a_broker_is_killed_again_and_again(&redis.fresh_database()).await;
}
