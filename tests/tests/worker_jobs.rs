//! The real `sluice-worker` running exec handlers against the real broker:
//! exactly-once delivery, retries, dead letters, exit 65 and timeouts.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use sluice_e2e::{BrokerProcess, WorkerProcess, group_alive, job, read_number, scratch_dir};
use sluice_proto::v1 as pb;

#[tokio::test]
async fn many_jobs_across_two_workers_each_run_exactly_once() {
    let dir = scratch_dir("exactly-once");
    let broker = BrokerProcess::start(&[]);
    // One short line per run, appended atomically (O_APPEND, far below
    // PIPE_BUF): worker, job, start and end in ns, payload.
    let exec = |tag: &str| {
        format!(
            "email=s=$(date +%s%N); sleep 0.1; echo \"{tag} $SLUICE_JOB_ID $s $(date +%s%N) $(cat)\" >> {}/runs",
            dir.display()
        )
    };
    let _w1 = WorkerProcess::start(&broker, &["--concurrency", "4", "--exec", &exec("w1")]);
    let _w2 = WorkerProcess::start(&broker, &["--concurrency", "4", "--exec", &exec("w2")]);
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
    let mut spans: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
    for line in runs.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        *counts.entry(fields[1]).or_default() += 1;
        spans
            .entry(fields[0])
            .or_default()
            .push((fields[2].parse().unwrap(), fields[3].parse().unwrap()));
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
    assert_eq!(spans.len(), 2, "both workers ran jobs");
    for (worker, spans) in spans {
        let most = max_overlap(&spans);
        assert!(
            most <= 4,
            "{worker} ran {most} jobs at once with --concurrency 4"
        );
    }
}

/// The most intervals that overlap at any instant.
fn max_overlap(spans: &[(u64, u64)]) -> usize {
    let mut events: Vec<(u64, i32)> = spans.iter().flat_map(|&(s, e)| [(s, 1), (e, -1)]).collect();
    // Ends before starts at the same instant.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
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

/// A job of `job_type` with a single attempt.
fn once(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        max_attempts: 1,
        ..job(job_type, b"")
    }
}

/// A job of `job_type` with a single attempt of at most one second.
fn once_within_a_second(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        timeout: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..once(job_type)
    }
}

#[tokio::test]
async fn job_over_its_timeout_is_nacked_and_its_process_group_is_gone() {
    let dir = scratch_dir("timeout");
    let broker = BrokerProcess::start(&[]);
    let exec = format!(
        "slow=sleep 30 & echo $! > {dir}/pid; cut -d' ' -f5 /proc/$$/stat > {dir}/pgid; wait",
        dir = dir.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let id = broker.enqueue(once_within_a_second("slow")).await;
    let pgid = read_number(&dir.join("pgid"));
    let pid = read_number(&dir.join("pid"));
    let dead = broker.wait_for_state(&id, pb::JobState::Dead).await;
    assert_eq!(dead.last_error, "timed out after 1s");
    // Stopped before the Nack: nothing of the group is left by then.
    assert!(
        !group_alive(pgid),
        "the handler's group {pgid} outlived its job"
    );
    assert!(
        !sluice_e2e::is_alive(pid),
        "the handler's child {pid} outlived its job"
    );
}

#[tokio::test]
async fn a_handler_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = scratch_dir("kill-grace");
    let broker = BrokerProcess::start(&[]);
    // Notes when SIGTERM came (seconds since the epoch) and goes on.
    let exec = format!(
        "stubborn=trap 'date +%s.%N > {dir}/term' TERM; \
         cut -d' ' -f5 /proc/$$/stat > {dir}/pgid; while :; do sleep 0.05; done",
        dir = dir.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let id = broker.enqueue(once_within_a_second("stubborn")).await;
    let pgid = read_number(&dir.join("pgid"));
    let dead = broker.wait_for_state(&id, pb::JobState::Dead).await;
    let gone_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(dead.last_error, "timed out after 1s");
    assert!(!group_alive(pgid), "SIGKILL left group {pgid} alive");
    let term_at: f64 = sluice_e2e::wait_for_file(&dir.join("term"))
        .trim()
        .parse()
        .unwrap();
    // SIGKILL waited for the grace (2 s) after SIGTERM: a slow machine can
    // only make this longer.
    assert!(
        gone_at - term_at >= 1.9,
        "the group died {:.2} s after SIGTERM",
        gone_at - term_at
    );
}

#[tokio::test]
async fn a_long_standard_error_keeps_its_last_4_kib() {
    let broker = BrokerProcess::start(&[]);
    // 10,000 bytes of `a`, then the cause at the end, as real errors go.
    let exec = "noisy=head -c 10000 /dev/zero | tr '\\0' a >&2; echo ' the real cause' >&2; exit 1";
    let _worker = WorkerProcess::start(&broker, &["--exec", exec]);
    let id = broker.enqueue(once("noisy")).await;
    let dead = broker.wait_for_state(&id, pb::JobState::Dead).await;
    let error = dead.last_error;
    assert!(error.ends_with("a the real cause"), "{error:?}");
    assert!(
        (4000..=4096).contains(&error.len()),
        "kept {} bytes",
        error.len()
    );
    assert!(
        error
            .trim_end_matches(" the real cause")
            .bytes()
            .all(|b| b == b'a')
    );
}

#[tokio::test]
async fn a_handler_killed_by_a_signal_is_retried() {
    let broker = BrokerProcess::start(&["--backoff-initial", "50ms"]);
    let exec = r#"fragile=[ "$SLUICE_ATTEMPT" -ge 2 ] || kill -KILL $$"#;
    let _worker = WorkerProcess::start(&broker, &["--exec", exec]);
    let id = broker.enqueue(job("fragile", b"")).await;
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    // 128 + SIGKILL, as a shell reports it.
    assert_eq!(
        (done.attempt, done.last_error.as_str()),
        (2, "exit status 137")
    );
}

#[tokio::test]
async fn the_broker_default_timeout_applies_to_a_job_that_sets_none() {
    let broker = BrokerProcess::start(&["--default-timeout", "1s"]);
    let _worker = WorkerProcess::start(&broker, &["--exec", "slow=sleep 30"]);
    let id = broker.enqueue(once("slow")).await;
    let dead = broker.wait_for_state(&id, pb::JobState::Dead).await;
    assert_eq!(dead.last_error, "timed out after 1s");
}

#[tokio::test]
async fn processes_a_command_leaves_behind_are_killed_when_it_exits() {
    let dir = scratch_dir("leftovers");
    let broker = BrokerProcess::start(&[]);
    let exec = format!(
        "leaky=sleep 30 & echo $! > {dir}/pid; exit 0",
        dir = dir.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--exec", &exec]);
    let id = broker.enqueue(job("leaky", b"")).await;
    let pid = read_number(&dir.join("pid"));
    broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert!(
        sluice_e2e::wait_gone(pid, std::time::Duration::from_secs(5)),
        "the command's leftover {pid} outlived it"
    );
}

#[tokio::test]
async fn a_handler_cannot_read_the_workers_environment() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let dir = scratch_dir("worker-secrets");
    // The handler writes here as the worker's user.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // An open broker takes the token and ignores it: what matters is that
    // the worker holds one in its environment.
    let token = "secret-worker-token-0123456789";
    let broker = BrokerProcess::start(&[]);
    // The handler's parent is its supervisor, whose parent is the worker.
    let exec = format!(
        "peek=cd {d} && worker=$(cut -d' ' -f4 /proc/$PPID/stat) && \
         if cat /proc/$worker/environ > environ 2> error; then echo read; else echo refused; fi > result && \
         env > handler-env",
        d = dir.display()
    );
    let mut command = WorkerProcess::command(
        &broker.url(),
        &["--exec", &exec],
        &[("SLUICE_TOKEN", token)],
    );
    // Root may read any process: as root, run the worker (and so its
    // handlers) as an unprivileged account, as the deployment files do.
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        command.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw());
    }
    let worker = WorkerProcess::spawn_command(command);
    worker.process.wait_for_log("lease stream open");
    let id = broker.enqueue(job("peek", b"")).await;
    broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    let result = std::fs::read_to_string(dir.join("result")).unwrap();
    assert_eq!(
        result.trim(),
        "refused",
        "the handler read the worker's environment"
    );
    let environ = std::fs::read(dir.join("environ")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&environ).contains(token));
    let env = std::fs::read_to_string(dir.join("handler-env")).unwrap();
    assert!(!env.contains(token), "{env}");
    assert!(!env.contains("SLUICE_SUPERVISOR_"), "{env}");
}

#[tokio::test]
async fn a_payload_of_any_size_reaches_standard_input_whole() {
    let dir = scratch_dir("payload-sizes");
    let broker = BrokerProcess::start(&[]);
    // Counts what arrives on standard input; `ignore` never reads it.
    let count = format!("count=wc -c > {}/bytes-$SLUICE_JOB_ID", dir.display());
    let _worker = WorkerProcess::start(&broker, &["--exec", &count, "--exec", "ignore=true"]);
    // Below, at and above a pipe's page, and far above its 64 KiB.
    for size in [0, 4095, 4096, 4097, 300_000] {
        let payload = vec![b'x'; size];
        let id = broker.enqueue(job("count", &payload)).await;
        broker.wait_for_state(&id, pb::JobState::Succeeded).await;
        assert_eq!(read_number(&dir.join(format!("bytes-{id}"))), size as i32);
        let ignored = broker.enqueue(job("ignore", &payload)).await;
        broker
            .wait_for_state(&ignored, pb::JobState::Succeeded)
            .await;
    }
}
