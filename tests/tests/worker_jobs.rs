//! The real `sluice-worker` running exec handlers against the real broker:
//! exactly-once delivery, retries, dead letters, exit 65 and timeouts.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use sluice_e2e::{BrokerProcess, WorkerProcess, job, scratch_dir, wait_for_file, wait_gone};
use sluice_proto::v1 as pb;

#[tokio::test]
async fn many_jobs_across_two_workers_each_run_exactly_once() {
    let dir = scratch_dir("exactly-once");
    let broker = BrokerProcess::start(&[]);
    // One short line per run, appended atomically (O_APPEND, far below PIPE_BUF).
    let exec = format!(
        "email=echo \"$SLUICE_JOB_ID $(cat)\" >> {}/runs",
        dir.display()
    );
    let _w1 = WorkerProcess::start(&broker, &["--concurrency", "4", "--exec", &exec]);
    let _w2 = WorkerProcess::start(&broker, &["--concurrency", "4", "--exec", &exec]);
    let mut ids = Vec::new();
    for i in 0..60 {
        ids.push(
            broker
                .enqueue(job("email", format!("payload-{i}").as_bytes()))
                .await,
        );
    }
    for id in &ids {
        broker.wait_for_state(id, pb::JobState::Succeeded).await;
    }
    let runs = std::fs::read_to_string(dir.join("runs")).unwrap();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in runs.lines() {
        *counts.entry(line.split(' ').next().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.len(), ids.len(), "{runs}");
    assert!(
        counts.values().all(|&n| n == 1),
        "a job ran twice: {counts:?}"
    );
    assert!(
        runs.contains("payload-59"),
        "the payload reaches standard input"
    );
}

#[tokio::test]
async fn failing_handlers_retry_then_succeed_or_die() {
    let broker = BrokerProcess::start(&["--backoff-initial", "50ms", "--backoff-max", "100ms"]);
    let _worker = WorkerProcess::start(
        &broker,
        &[
            "--concurrency",
            "3",
            "--exec",
            r#"flaky=[ "$SLUICE_ATTEMPT" -ge 3 ] || { echo "attempt $SLUICE_ATTEMPT of $SLUICE_MAX_ATTEMPTS failed" >&2; exit 1; }"#,
            "--exec",
            "broken=echo noise; echo \"disk on fire ($SLUICE_HEADER_TRACE_ID)\" >&2; exit 3",
            "--exec",
            "bad_input=echo 'payload is not JSON' >&2; exit 65",
        ],
    );
    let flaky = broker.enqueue(job("flaky", b"")).await;
    let mut broken_req = job("broken", b"");
    broken_req.max_attempts = 3;
    broken_req.headers.insert("trace-id".into(), "t-42".into());
    let broken = broker.enqueue(broken_req).await;
    let bad_input = broker.enqueue(job("bad_input", b"{")).await;

    let done = broker.wait_for_state(&flaky, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 3);
    assert_eq!(done.last_error, "attempt 2 of 4 failed");

    let dead = broker.wait_for_state(&broken, pb::JobState::Dead).await;
    assert_eq!(
        (dead.attempt, dead.last_error.as_str()),
        (3, "disk on fire (t-42)")
    );

    let dead = broker.wait_for_state(&bad_input, pb::JobState::Dead).await;
    assert_eq!(
        (dead.attempt, dead.last_error.as_str()),
        (1, "payload is not JSON")
    );
}

#[tokio::test]
async fn job_over_its_timeout_is_nacked_and_its_process_group_is_gone() {
    let dir = scratch_dir("timeout");
    let broker = BrokerProcess::start(&[]);
    let exec = format!("slow=sleep 30 & echo $! > {}/pid; wait", dir.display());
    let _worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let mut req = job("slow", b"");
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    req.max_attempts = 1;
    let id = broker.enqueue(req).await;
    let pid: i32 = wait_for_file(&dir.join("pid")).trim().parse().unwrap();
    let dead = broker.wait_for_state(&id, pb::JobState::Dead).await;
    assert_eq!(dead.last_error, "timed out after 1s");
    assert!(
        wait_gone(pid, Duration::from_secs(5)),
        "the handler's child {pid} outlived its job"
    );
}
