//! The real `sluice-worker` through deploys and failures: SIGTERM drain,
//! SIGKILL, a second signal, a broker restart, long jobs kept alive by
//! heartbeats, operator cancel, and refusing to start without handlers.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess, job, scratch_dir, wait_for_file, wait_gone};
use sluice_proto::v1 as pb;

/// A command that records its pid and its attempt, then sleeps `secs`
/// (in a child, as real scripts do) before succeeding.
fn sleeper(dir: &Path, secs: &str) -> String {
    format!(
        "sleep {secs} & echo $! > {dir}/pid-$SLUICE_ATTEMPT; echo $SLUICE_ATTEMPT >> {dir}/attempts; wait",
        dir = dir.display()
    )
}

#[tokio::test]
async fn sigterm_lets_the_running_job_finish_and_leaves_the_rest_ready() {
    let dir = scratch_dir("sigterm");
    let broker = BrokerProcess::start(&[]);
    let mut worker = WorkerProcess::start(
        &broker,
        &["--exec", &format!("work={}", sleeper(&dir, "1.5"))],
    );
    let running = broker.enqueue(job("work", b"")).await;
    let waiting = broker.enqueue(job("work", b"")).await;
    wait_for_file(&dir.join("pid-1"));

    let signalled = Instant::now();
    worker.process.signal(Signal::SIGTERM);
    let status = worker
        .process
        .wait_exit(WAIT)
        .expect("worker should exit after its job");
    assert!(status.success(), "{status:?}\n{}", worker.process.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit within the job's remaining time"
    );

    let done = broker.job(&running).await;
    assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
    let untouched = broker.job(&waiting).await;
    assert_eq!(
        (untouched.state(), untouched.attempt),
        (pb::JobState::Ready, 0)
    );
    let log = worker.process.log();
    assert!(
        log.contains("worker stopped processed=1 failed=0 retried=0 released=0"),
        "{log}"
    );
}

#[tokio::test]
async fn sigkilled_worker_takes_its_handler_along_and_the_job_comes_back() {
    let dir = scratch_dir("sigkill");
    let broker = BrokerProcess::start(&["--backoff-initial", "50ms"]);
    let exec = format!("work={}", sleeper(&dir, "30"));
    let first = WorkerProcess::start(&broker, &["--lease-duration", "2s", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let pid: i32 = wait_for_file(&dir.join("pid-1")).trim().parse().unwrap();

    first.process.signal(Signal::SIGKILL);
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "handler {pid} outlived its SIGKILLed worker"
    );

    let quick = format!("work=echo $SLUICE_ATTEMPT >> {}/attempts", dir.display());
    let _second = WorkerProcess::start(&broker, &["--exec", &quick]);
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts")).unwrap(),
        "1\n2\n"
    );
}

#[tokio::test]
async fn second_signal_exits_at_once_with_failure() {
    let dir = scratch_dir("second-signal");
    let broker = BrokerProcess::start(&[]);
    let mut worker = WorkerProcess::start(
        &broker,
        &["--exec", &format!("work={}", sleeper(&dir, "30"))],
    );
    broker.enqueue(job("work", b"")).await;
    let pid: i32 = wait_for_file(&dir.join("pid-1")).trim().parse().unwrap();
    worker.process.signal(Signal::SIGTERM);
    worker.process.wait_for_log("draining");
    worker.process.signal(Signal::SIGINT);
    let status = worker
        .process
        .wait_exit(Duration::from_secs(3))
        .expect("second signal should exit at once");
    assert!(!status.success(), "{status:?}");
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "handler {pid} outlived its worker"
    );
}

#[tokio::test]
async fn drain_timeout_releases_jobs_still_running() {
    let dir = scratch_dir("drain-timeout");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "30"));
    let mut worker = WorkerProcess::start(&broker, &["--drain-timeout", "500ms", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let pid: i32 = wait_for_file(&dir.join("pid-1")).trim().parse().unwrap();
    worker.process.signal(Signal::SIGTERM);
    let status = worker
        .process
        .wait_exit(WAIT)
        .expect("worker should exit after the drain timeout");
    assert!(status.success(), "{status:?}");
    let released = broker.job(&id).await;
    assert_eq!(
        (released.state(), released.attempt),
        (pb::JobState::Ready, 0)
    );
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "handler {pid} outlived the release"
    );
    assert!(
        worker.process.log().contains("released=1"),
        "{}",
        worker.process.log()
    );
}

#[tokio::test]
async fn worker_reconnects_after_the_broker_restarts() {
    let dir = scratch_dir("restart");
    let mut broker = BrokerProcess::start(&[]);
    let exec = format!("work=echo $SLUICE_JOB_ID >> {}/runs", dir.display());
    let worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let before = broker.enqueue(job("work", b"")).await;
    broker
        .wait_for_state(&before, pb::JobState::Succeeded)
        .await;

    let addr = broker.addr.clone();
    broker.signal(Signal::SIGKILL);
    broker.wait_exit(WAIT).unwrap();
    worker.process.wait_for_log("reconnecting to the broker");
    let broker = BrokerProcess::start_on(&addr, &[]);
    let after = broker.enqueue(job("work", b"")).await;
    broker.wait_for_state(&after, pb::JobState::Succeeded).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        format!("{before}\n{after}\n")
    );
}

#[tokio::test]
async fn long_job_is_kept_alive_by_heartbeats_and_runs_once() {
    let dir = scratch_dir("heartbeat");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "3.5"));
    let _worker = WorkerProcess::start(&broker, &["--lease-duration", "1s", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts")).unwrap(),
        "1\n"
    );
    let stats = broker
        .admin()
        .await
        .stats(pb::StatsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.queues[0].expired_total, 0);
}

#[tokio::test]
async fn cancel_job_stops_a_running_job_within_a_heartbeat() {
    let dir = scratch_dir("cancel");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "30"));
    let _worker = WorkerProcess::start(&broker, &["--lease-duration", "1500ms", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let pid: i32 = wait_for_file(&dir.join("pid-1")).trim().parse().unwrap();
    let cancelled_at = Instant::now();
    let req = pb::CancelJobRequest { job_id: id.clone() };
    broker.admin().await.cancel_job(req).await.unwrap();
    let job = broker.wait_for_state(&id, pb::JobState::Cancelled).await;
    assert_eq!(job.last_error, "cancelled");
    // A heartbeat comes every 500ms; allow for scheduling on a busy machine.
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        cancelled_at.elapsed()
    );
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "handler {pid} outlived the cancel"
    );
}

#[tokio::test]
async fn worker_without_handlers_refuses_to_start() {
    let broker = BrokerProcess::start(&[]);
    let mut worker = WorkerProcess::spawn(&broker, &[]);
    let status = worker.process.wait_exit(WAIT).expect("should exit");
    assert!(!status.success());
    assert!(
        worker
            .process
            .log()
            .contains("no handlers: give at least one --exec TYPE=COMMAND"),
        "{}",
        worker.process.log()
    );
}
