//! The `sluice-worker` flags and variables do what the README says: each
//! one changes what the worker does, and a setting only the broker refuses
//! stops the worker with the broker's reason.

#![allow(clippy::unwrap_used)]

use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess, scratch_dir};
use sluice_proto::v1 as pb;

fn in_queue(queue: &str, job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: queue.into(),
        job_type: job_type.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn queues_worker_id_exec_variable_and_json_logs_each_take_effect() {
    let dir = scratch_dir("worker-flags");
    let broker = BrokerProcess::start(&[]);
    // Two handlers from SLUICE_EXEC, one per line.
    let exec = format!(
        "mail=echo $SLUICE_JOB_TYPE $SLUICE_QUEUE >> {dir}/runs\nsms=echo $SLUICE_JOB_TYPE $SLUICE_QUEUE >> {dir}/runs",
        dir = dir.display()
    );
    let worker = WorkerProcess::start_at(
        &broker.url(),
        &[
            "--queues",
            "eu,us",
            "--worker-id",
            "eu-us-7",
            "--log-format",
            "json",
        ],
        &[("SLUICE_EXEC", &exec)],
    );

    let workers = broker.workers().await;
    assert_eq!(workers.len(), 1, "{workers:?}");
    assert_eq!(workers[0].worker_id, "eu-us-7");
    assert_eq!(workers[0].queues, ["eu", "us"]);
    let mut job_types = workers[0].job_types.clone();
    job_types.sort();
    assert_eq!(job_types, ["mail", "sms"]);

    let eu = broker.enqueue(in_queue("eu", "mail")).await;
    let us = broker.enqueue(in_queue("us", "sms")).await;
    let elsewhere = broker.enqueue(in_queue("default", "mail")).await;
    broker.wait_for_state(&eu, pb::JobState::Succeeded).await;
    broker.wait_for_state(&us, pb::JobState::Succeeded).await;
    let mut runs: Vec<String> = std::fs::read_to_string(dir.join("runs"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    runs.sort();
    assert_eq!(runs, ["mail eu", "sms us"]);
    // Not one of its queues.
    assert_eq!(broker.job(&elsewhere).await.state(), pb::JobState::Ready);

    // Every line of the log is a JSON object with a level and a message.
    // (The broker records an Ack before it answers: the worker logs the
    // outcome once the answer arrives.)
    let log = worker.process.wait_for_log(r#""message":"job succeeded""#);
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn a_setting_only_the_broker_refuses_stops_the_worker_with_the_brokers_reason() {
    let broker = BrokerProcess::start(&[]);
    // Valid names, but more queues than one Lease stream may name: the
    // worker's own checks pass and the broker refuses the stream.
    let queues: Vec<String> = (0..=sluice_limits::MAX_LEASE_FILTERS)
        .map(|i| format!("q{i}"))
        .collect();
    let queues = queues.join(",");
    let mut worker = WorkerProcess::spawn(&broker, &["--queues", &queues, "--exec", "t=true"]);
    let status = worker.process.wait_exit(WAIT).expect("the worker stops");
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = worker.process.log();
    assert!(
        log.contains("the broker refused the lease stream") && log.contains("queues: at most"),
        "{log}"
    );
}

#[test]
fn a_token_sent_over_plaintext_to_another_host_is_warned_about() {
    // 0.0.0.0 is not a loopback name, yet a connection to it stays on
    // this host: the warning is shown and nothing leaves the machine.
    let broker = BrokerProcess::start(&[]);
    let port = broker.addr.rsplit_once(':').unwrap().1;
    let url = format!("http://0.0.0.0:{port}");
    let token = "plain-worker-token-0123456789";
    let warned = WorkerProcess::start_at(&url, &["--exec", "t=true"], &[("SLUICE_TOKEN", token)]);
    let log = warned.process.wait_for_log("over plaintext http://");
    assert!(log.contains("0.0.0.0") && !log.contains(token), "{log}");
    let quiet = WorkerProcess::start_at(
        &broker.url(),
        &["--exec", "t=true"],
        &[("SLUICE_TOKEN", token)],
    );
    assert!(!quiet.process.log().contains("over plaintext http://"));
    // The CLI says so on standard error, and works.
    let mut cli = sluice_e2e::cli::command(&["--broker", &url, "stats"]);
    cli.env("SLUICE_TOKEN", token);
    let output = sluice_e2e::cli::run(cli, None).ok();
    assert!(
        output
            .stderr
            .contains("warning: sending the token to 0.0.0.0 over plaintext http://"),
        "{}",
        output.stderr
    );
    assert!(!output.stderr.contains(token));
}
