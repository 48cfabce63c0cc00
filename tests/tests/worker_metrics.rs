//! The worker binary's `/metrics` on `--http-addr`: jobs started,
//! succeeded, failed, timed out and released by type, run times, slots in
//! flight and free, and reconnections, read by the Prometheus project's
//! OpenMetrics parser after a known set of jobs.

#![allow(clippy::unwrap_used)]

use sluice_e2e::metrics::{Scrape, scrape_until};
use sluice_e2e::{BrokerProcess, WorkerProcess, job};
use sluice_proto::v1 as pb;

fn single_attempt(job_type: &str, timeout_secs: i64) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        max_attempts: 1,
        timeout: Some(prost_types::Duration {
            seconds: timeout_secs,
            nanos: 0,
        }),
        ..job(job_type, b"")
    }
}

#[tokio::test]
async fn the_worker_counts_each_outcome_by_job_type() {
    // A port with nothing on it yet: the worker reconnects until the
    // broker starts there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let worker = WorkerProcess::spawn_at(
        &format!("http://{addr}"),
        &[
            "--http-addr",
            "127.0.0.1:0",
            "--concurrency",
            "4",
            "--exec",
            "ok=true",
            "--exec",
            "bad=false",
            "--exec",
            "slow=sleep 30",
        ],
        &[],
    );
    let url = worker.process.metrics_url();
    let reconnects = |s: &Scrape| s.value("sluice_worker_reconnects_total", &[]);
    scrape_until(&url, "a reconnection", |s| reconnects(s) >= 1.0).await;
    let broker = BrokerProcess::start_on(&addr.to_string(), &[]);
    worker.process.wait_for_log("lease stream open");

    let mut ids = Vec::new();
    for (job_type, timeout) in [("ok", 60), ("ok", 60), ("bad", 60), ("slow", 1)] {
        ids.push(broker.enqueue(single_attempt(job_type, timeout)).await);
    }
    for (id, state) in ids.iter().zip([
        pb::JobState::Succeeded,
        pb::JobState::Succeeded,
        pb::JobState::Dead,
        pb::JobState::Dead,
    ]) {
        broker.wait_for_state(id, state).await;
    }
    // The broker records a resolution before the worker hears back.
    let of = |t: &'static str| [("job_type", t)];
    let done = scrape_until(&url, "every job resolved", |s| {
        s.get("sluice_worker_jobs_in_flight", &[]) == Some(0.0)
            && s.get("sluice_worker_jobs_failed_total", &of("slow")) == Some(1.0)
    })
    .await;
    let expected = [
        ("sluice_worker_jobs_started_total", "ok", 2.0),
        ("sluice_worker_jobs_succeeded_total", "ok", 2.0),
        ("sluice_worker_jobs_failed_total", "ok", 0.0),
        ("sluice_worker_jobs_started_total", "bad", 1.0),
        ("sluice_worker_jobs_failed_total", "bad", 1.0),
        ("sluice_worker_jobs_timed_out_total", "bad", 0.0),
        ("sluice_worker_jobs_started_total", "slow", 1.0),
        ("sluice_worker_jobs_failed_total", "slow", 1.0),
        ("sluice_worker_jobs_timed_out_total", "slow", 1.0),
        ("sluice_worker_jobs_released_total", "slow", 0.0),
        ("sluice_worker_job_run_seconds_count", "ok", 2.0),
        ("sluice_worker_job_run_seconds_count", "slow", 1.0),
    ];
    for (name, job_type, value) in expected {
        assert_eq!(done.value(name, &of(job_type)), value, "{name} {job_type}");
    }
    // The slow job ran about its one-second timeout.
    let slow = done.value("sluice_worker_job_run_seconds_sum", &of("slow"));
    assert!((1.0..10.0).contains(&slow), "{slow}");
    assert_eq!(done.value("sluice_worker_free_slots", &[]), 4.0);
    let before = reconnects(&done);
    assert!(before >= 1.0);

    // A broker restart: the worker reconnects once more.
    drop(broker);
    let _broker = BrokerProcess::start_on(&addr.to_string(), &[]);
    scrape_until(&url, "the reconnection after the restart", |s| {
        reconnects(s) > before
    })
    .await;
}
