//! The real `sluice-worker` through deploys and failures: SIGTERM drain,
//! SIGKILL, a second signal, the drain timeout, broker restarts, long jobs
//! kept alive by heartbeats, operator cancel, and refusing to start without
//! handlers.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::{
    BrokerProcess, WAIT, WorkerProcess, group_alive, job, read_number, scratch_dir, wait_for_file,
    wait_gone, wait_group_gone,
};
use sluice_proto::v1 as pb;

/// A command that records its attempt, the pid of the `sleep {secs}` it
/// then waits for (in a child, as real scripts do), and its process group,
/// before succeeding. `pgid-N` is written last: once it exists, all are.
fn sleeper(dir: &Path, secs: &str) -> String {
    format!(
        "echo $SLUICE_ATTEMPT >> {dir}/attempts; sleep {secs} & echo $! > {dir}/pid-$SLUICE_ATTEMPT; \
         cut -d' ' -f5 /proc/$$/stat > {dir}/pgid-$SLUICE_ATTEMPT; wait",
        dir = dir.display()
    )
}

/// The sleep's pid and the process group of attempt `n`, once it runs.
fn handler_of(dir: &Path, n: u32) -> (i32, i32) {
    let pgid = read_number(&dir.join(format!("pgid-{n}")));
    (read_number(&dir.join(format!("pid-{n}"))), pgid)
}

/// The attempts handlers recorded so far (none before the first writes).
fn attempts(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("attempts")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("reading the attempts: {e}"),
    }
}

/// Waits until `n` attempts have started.
async fn wait_for_attempts(dir: &Path, n: usize) {
    let deadline = Instant::now() + WAIT;
    while attempts(dir).lines().count() < n {
        assert!(
            Instant::now() < deadline,
            "waited {WAIT:?} for {n} attempts to start: {:?}",
            attempts(dir)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that records its attempt, says it started, and runs until
/// the test creates `go`: its end is the test's to choose.
fn held_open(dir: &Path) -> String {
    format!(
        "echo $SLUICE_ATTEMPT >> {dir}/attempts; echo started > {dir}/started; \
         while [ ! -e {dir}/go ]; do sleep 0.05; done",
        dir = dir.display()
    )
}

#[tokio::test]
async fn sigterm_lets_running_jobs_finish_and_leaves_the_rest_ready() {
    let dir = scratch_dir("sigterm");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "1.5"));
    let mut worker = WorkerProcess::start(&broker, &["--concurrency", "2", "--exec", &exec]);
    let running = [
        broker.enqueue(job("work", b"")).await,
        broker.enqueue(job("work", b"")).await,
    ];
    let waiting = broker.enqueue(job("work", b"")).await;
    // Both slots busy, so the third job is not leased.
    wait_for_attempts(&dir, 2).await;

    let signalled = Instant::now();
    worker.process.signal(Signal::SIGTERM);
    let status = worker
        .process
        .wait_exit(WAIT)
        .expect("worker should exit after its jobs");
    assert!(status.success(), "{status:?}\n{}", worker.process.log());
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit within the jobs' remaining time"
    );

    for id in &running {
        let done = broker.job(id).await;
        assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
    }
    let untouched = broker.job(&waiting).await;
    assert_eq!(
        (untouched.state(), untouched.attempt),
        (pb::JobState::Ready, 0)
    );
    let log = worker.process.log();
    assert!(
        log.contains("worker stopped processed=2 failed=0 retried=0 released=0"),
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
    let (pid, pgid) = handler_of(&dir, 1);

    first.process.signal(Signal::SIGKILL);
    assert!(
        wait_gone(pid, Duration::from_secs(3)),
        "handler {pid} outlived its SIGKILLed worker"
    );
    assert!(
        wait_group_gone(pgid, Duration::from_secs(1)),
        "group {pgid} outlived its worker"
    );

    let quick = format!("work=echo $SLUICE_ATTEMPT >> {}/attempts", dir.display());
    let _second = WorkerProcess::start(&broker, &["--exec", &quick]);
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(
        (done.attempt, done.last_error.as_str()),
        (2, "lease expired")
    );
    assert_eq!(attempts(&dir), "1\n2\n");
}

#[tokio::test]
async fn second_signal_exits_at_once_with_status_130() {
    let dir = scratch_dir("second-signal");
    let broker = BrokerProcess::start(&[]);
    let mut worker = WorkerProcess::start(
        &broker,
        &["--exec", &format!("work={}", sleeper(&dir, "30"))],
    );
    broker.enqueue(job("work", b"")).await;
    let (_, pgid) = handler_of(&dir, 1);
    worker.process.signal(Signal::SIGTERM);
    worker.process.wait_for_log("draining");
    worker.process.signal(Signal::SIGINT);
    let status = worker
        .process
        .wait_exit(Duration::from_secs(3))
        .expect("second signal should exit at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert!(
        wait_group_gone(pgid, Duration::from_secs(3)),
        "handler group {pgid} outlived its worker"
    );
}

#[tokio::test]
async fn drain_timeout_stops_and_releases_jobs_still_running() {
    let dir = scratch_dir("drain-timeout");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "30"));
    let mut worker = WorkerProcess::start(&broker, &["--drain-timeout", "500ms", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let (_, pgid) = handler_of(&dir, 1);
    worker.process.signal(Signal::SIGTERM);
    let status = worker
        .process
        .wait_exit(WAIT)
        .expect("worker should exit after the drain timeout");
    assert!(status.success(), "{status:?}");
    // The handler is stopped before the job is released.
    assert!(
        !group_alive(pgid),
        "handler group {pgid} outlived the release"
    );
    let released = broker.job(&id).await;
    assert_eq!(
        (released.state(), released.attempt),
        (pb::JobState::Ready, 0)
    );
    assert!(
        worker.process.log().contains("released=1"),
        "{}",
        worker.process.log()
    );
}

#[tokio::test]
async fn idle_worker_reconnects_after_the_broker_restarts() {
    let dir = scratch_dir("restart");
    let mut broker = BrokerProcess::start(&[]);
    let exec = format!("work=echo $SLUICE_JOB_ID >> {}/runs", dir.display());
    let worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let before = broker.enqueue(job("work", b"")).await;
    broker
        .wait_for_state(&before, pb::JobState::Succeeded)
        .await;

    let addr = broker.crash();
    worker.process.wait_for_log("reconnecting to the broker");
    let broker = BrokerProcess::start_on(&addr, &[]);
    let after = broker.enqueue(job("work", b"")).await;
    broker.wait_for_state(&after, pb::JobState::Succeeded).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        format!("{before}\n{after}\n")
    );
}

/// RESOURCE_EXHAUSTED on opening a session (every lease stream the broker
/// allows is open) is a wait, not a refusal: the worker retries with its
/// backoff, and runs jobs once a place frees.
#[tokio::test]
async fn a_worker_without_a_free_lease_stream_waits_for_one() {
    let dir = scratch_dir("streams-full");
    let broker = BrokerProcess::start(&["--max-lease-streams", "1"]);
    let holder = broker
        .broker()
        .await
        .lease(pb::LeaseRequest {
            worker_id: "holder".into(),
            queues: vec!["elsewhere".into()],
            job_types: vec!["x".into()],
            max_in_flight: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let exec = format!("work=echo $SLUICE_JOB_ID >> {}/runs", dir.display());
    let mut worker = WorkerProcess::spawn(&broker, &["--exec", &exec]);
    // Refused twice, so retried at least once after the refusal.
    let log = worker.process.wait_for_log("attempt=2");
    assert!(log.contains("--max-lease-streams"), "{log}");
    assert!(worker.process.is_running(), "{}", worker.process.log());
    drop(holder);
    let id = broker.enqueue(job("work", b"")).await;
    broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        format!("{id}\n")
    );
}

/// A broker that drains says so on the worker's session: the worker takes
/// no more jobs from it, tries another session (refused while it drains),
/// and reports the job it was running, so the broker stops as soon as
/// that job is done, long before its drain timeout.
#[tokio::test]
async fn a_draining_broker_gets_the_running_job_reported() {
    let dir = scratch_dir("broker-drains");
    let data = dir.join("data");
    let data_dir = data.to_str().unwrap();
    let mut broker = BrokerProcess::start(&["--data-dir", data_dir, "--drain-timeout", "60s"]);
    let exec = format!("work={}", held_open(&dir));
    let worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    wait_for_file(&dir.join("started"));
    broker.signal(Signal::SIGTERM);
    worker.process.wait_for_log("reconnecting to the broker");
    std::fs::write(dir.join("go"), "").unwrap();
    let status = broker
        .wait_exit(WAIT)
        .expect("the broker stops once the job is reported");
    assert!(status.success(), "{status:?}\n{}", broker.log());
    assert!(broker.log().contains("still_leased=0"), "{}", broker.log());
    let broker = BrokerProcess::start(&["--data-dir", data_dir]);
    let done = broker.job(&id).await;
    assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
    assert_eq!(attempts(&dir), "1\n");
}

#[tokio::test]
async fn busy_worker_survives_a_broker_restart_and_frees_its_slot() {
    let dir = scratch_dir("restart-busy");
    let mut broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", held_open(&dir));
    let worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    broker.enqueue(job("work", b"")).await;
    wait_for_file(&dir.join("started"));

    // The memory-only broker forgets the running job; the worker's report
    // of it is refused, and its slot must not stay taken.
    let addr = broker.crash();
    let broker = BrokerProcess::start_on(&addr, &[]);
    std::fs::write(dir.join("go"), "").unwrap();
    worker
        .process
        .wait_for_log("could not report the job's outcome; its lease will expire");
    let after = broker.enqueue(job("work", b"")).await;
    let done = broker.wait_for_state(&after, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(attempts(&dir), "1\n1\n");
}

#[tokio::test]
async fn long_job_is_kept_alive_by_heartbeats_and_runs_once() {
    let dir = scratch_dir("heartbeat");
    let broker = BrokerProcess::start(&[]);
    // More than two lease durations long; heartbeats every second leave
    // a machine stalled for two seconds time to extend the 3 s lease.
    let exec = format!("work={}", sleeper(&dir, "7"));
    let _worker = WorkerProcess::start(&broker, &["--lease-duration", "3s", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(attempts(&dir), "1\n");
    assert_eq!(broker.queue_stats("default").await.expired_total, 0);
}

/// Heartbeats go on while the worker drains: a job more than two lease
/// durations long, signalled as it starts, finishes on its first lease.
#[tokio::test]
async fn heartbeats_go_on_while_the_worker_drains() {
    let dir = scratch_dir("drain-heartbeat");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "7"));
    let mut worker = WorkerProcess::start(&broker, &["--lease-duration", "3s", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    wait_for_attempts(&dir, 1).await;
    worker.process.signal(Signal::SIGTERM);
    let status = worker
        .process
        .wait_exit(WAIT)
        .expect("the worker exits once its job is done");
    assert!(status.success(), "{status:?}\n{}", worker.process.log());
    let done = broker.job(&id).await;
    assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
    assert_eq!(attempts(&dir), "1\n");
    assert_eq!(broker.queue_stats("default").await.expired_total, 0);
}

#[tokio::test]
async fn cancel_job_stops_a_running_job_within_a_heartbeat() {
    let dir = scratch_dir("cancel");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("work={}", sleeper(&dir, "30"));
    let _worker = WorkerProcess::start(&broker, &["--lease-duration", "1500ms", "--exec", &exec]);
    let id = broker.enqueue(job("work", b"")).await;
    let (_, pgid) = handler_of(&dir, 1);
    let cancelled_at = Instant::now();
    let req = pb::CancelJobRequest { job_id: id.clone() };
    broker.admin().await.cancel_job(req).await.unwrap();
    let job = broker.wait_for_state(&id, pb::JobState::Cancelled).await;
    assert_eq!(job.last_error, "cancelled");
    // A heartbeat comes every 500ms; the margin is for a busy machine.
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(4),
        "took {:?}",
        cancelled_at.elapsed()
    );
    assert!(
        !group_alive(pgid),
        "handler group {pgid} outlived the cancel"
    );
}

#[tokio::test]
async fn worker_without_handlers_refuses_to_start() {
    let broker = BrokerProcess::start(&[]);
    let mut worker = WorkerProcess::spawn(&broker, &[]);
    let status = worker.process.wait_exit(WAIT).expect("should exit");
    assert!(!status.success());
    let log = worker.process.log();
    assert!(
        log.contains("no handlers: give at least one --exec TYPE=COMMAND"),
        "{log}"
    );
}

#[tokio::test]
async fn worker_refuses_a_setting_out_of_range_before_it_connects() {
    let broker = BrokerProcess::start(&[]);
    // The broker grants leases of 24h at most: rather than retry forever,
    // the worker refuses at once.
    let mut worker =
        WorkerProcess::spawn(&broker, &["--lease-duration", "48h", "--exec", "t=true"]);
    let status = worker.process.wait_exit(WAIT).expect("should exit");
    assert!(!status.success());
    let log = worker.process.log();
    assert!(log.contains("lease_duration: must be 1s to 24h"), "{log}");
}

#[tokio::test]
async fn a_sigkilled_worker_leaves_no_process_of_its_eight_running_commands() {
    let dir = scratch_dir("sigkill-eight");
    let broker = BrokerProcess::start(&[]);
    // Each command notes its shell (its group's leader), the sleep it
    // waits for, and its parent (the supervisor).
    let exec = format!(
        "work=sleep 30 & echo \"$$ $! $PPID\" > {dir}/job-$SLUICE_JOB_ID.tmp; \
         mv {dir}/job-$SLUICE_JOB_ID.tmp {dir}/job-$SLUICE_JOB_ID; wait",
        dir = dir.display()
    );
    let worker = WorkerProcess::start(&broker, &["--concurrency", "8", "--exec", &exec]);
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(broker.enqueue(job("work", b"")).await);
    }
    let mut pids = Vec::new();
    let mut supervisors = std::collections::HashSet::new();
    for id in &ids {
        let noted = wait_for_file(&dir.join(format!("job-{id}")));
        let numbers: Vec<i32> = noted
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let [shell, sleep, parent] = numbers[..] else {
            panic!("{noted:?}")
        };
        pids.extend([shell, sleep]);
        supervisors.insert(parent);
    }
    assert_eq!(supervisors.len(), 1, "one supervisor runs every command");
    let supervisor = *supervisors.iter().next().unwrap();
    assert_ne!(supervisor, worker.process.pid());

    worker.process.signal(Signal::SIGKILL);
    for pid in pids.iter().chain([&supervisor]) {
        assert!(
            wait_gone(*pid, Duration::from_secs(3)),
            "{pid} outlived its SIGKILLed worker"
        );
    }
    for shell in pids.iter().step_by(2) {
        assert!(!group_alive(*shell), "group {shell} outlived its worker");
    }
}

#[tokio::test]
async fn a_supervisor_outside_a_group_of_its_own_refuses_and_spares_its_callers_group() {
    use std::os::unix::process::CommandExt as _;
    let dir = scratch_dir("supervisor-group");
    // The shell leads a new group and runs the supervisor inside it: the
    // supervisor is not its group's leader. The shell, the caller whose
    // group it would share, lives on to write down what happened.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "\"$0\" __sluice_supervise < /dev/null 2> {d}/stderr; echo $? > {d}/code; echo alive > {d}/caller",
            d = dir.display()
        ))
        .arg(sluice_e2e::binary("sluice-worker"))
        .process_group(0)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(read_number(&dir.join("code")), 2);
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(
        stderr.contains("refusing to run outside a process group of its own"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("caller")).unwrap().trim(),
        "alive"
    );
}
