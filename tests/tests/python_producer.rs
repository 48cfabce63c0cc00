//! The polyglot proof: `examples/python/producer.py` (grpcio, stubs
//! generated at run time from proto/) enqueues jobs that a real
//! `sluice-worker` runs. Needs python3 with grpcio and grpcio-tools
//! (`.ci/run` installs them).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use sluice_e2e::{BrokerProcess, WorkerProcess, scratch_dir};
use sluice_proto::v1 as pb;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn python_producer_enqueues_jobs_a_worker_runs() {
    let dir = scratch_dir("python");
    let broker = BrokerProcess::start(&[]);
    let exec = format!(
        "greet=echo \"$(cat) $SLUICE_HEADER_LANG\" >> {}/greetings",
        dir.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--concurrency", "2", "--exec", &exec]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/producer.py");
    let output = Command::new("python3")
        .arg(&script)
        .args([
            "--broker",
            &broker.addr,
            "--job-type",
            "greet",
            "--count",
            "3",
        ])
        .args(["--payload", "hello from python", "--header", "lang=py"])
        // The producer's trace context, from the environment.
        .env("TRACEPARENT", TRACEPARENT)
        .env_remove("TRACESTATE")
        .output()
        .expect("python3 must be installed");
    assert!(
        output.status.success(),
        "producer failed (pip install grpcio grpcio-tools): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        let job = broker.wait_for_state(id, pb::JobState::Succeeded).await;
        assert_eq!(
            job.headers.get("traceparent").map(String::as_str),
            Some(TRACEPARENT)
        );
    }
    let greetings = std::fs::read_to_string(dir.join("greetings")).unwrap();
    assert_eq!(greetings, "hello from python py\n".repeat(3));
}

#[test]
fn python_producer_refuses_a_malformed_traceparent() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/producer.py");
    let output = Command::new("python3")
        .arg(&script)
        .args(["--job-type", "greet", "--traceparent", "00-abc-def-01"])
        .output()
        .expect("python3 must be installed");
    // argparse's usage error: exit 2, before any connection.
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not a W3C traceparent"), "{stderr}");
}
