//! The real `sluice-broker`'s flags: out of range, it refuses to start
//! saying why; in range, each does what the README says.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use sluice_e2e::{BrokerProcess, Process, WAIT, binary, job, scratch_dir};
use sluice_proto::v1 as pb;

fn refused(args: &[&str]) -> String {
    let mut command = Command::new(binary("sluice-broker"));
    command.args(["--addr", "127.0.0.1:0"]).args(args);
    let mut broker = Process::spawn(command);
    let status = broker
        .wait_exit(WAIT)
        .expect("the broker should refuse to start");
    assert!(!status.success(), "{args:?} was accepted");
    broker.log()
}

#[test]
fn durations_out_of_range_are_refused() {
    assert!(refused(&["--default-timeout", "0s"]).contains("--default-timeout must be 1s to 24h"));
    assert!(refused(&["--lease-duration", "2d"]).contains("--lease-duration must be 1s to 24h"));
    assert!(
        refused(&["--backoff-initial", "1m", "--backoff-max", "1s"])
            .contains("--backoff-initial must not exceed --backoff-max")
    );
}

#[test]
fn attempts_and_retention_limits_are_refused() {
    assert!(refused(&["--max-attempts", "0"]).contains("max-attempts"));
    assert!(refused(&["--max-attempts", "10001"]).contains("max-attempts"));
    assert!(refused(&["--max-retained", "0"]).contains("max-retained"));
}

#[tokio::test]
async fn a_memory_only_broker_says_so_at_startup_and_a_durable_one_does_not() {
    let memory = BrokerProcess::start(&[]);
    memory.wait_for_log("broker serving");
    assert!(
        memory.log().contains("memory-only (no --data-dir)"),
        "{}",
        memory.log()
    );
    let dir = scratch_dir("flags-durable");
    let durable = BrokerProcess::start(&["--data-dir", dir.to_str().unwrap()]);
    let log = durable.wait_for_log("broker serving");
    assert!(log.contains("recovered the data directory"), "{log}");
    assert!(!log.contains("memory-only"), "{log}");
}

#[tokio::test]
async fn retention_forgets_finished_jobs_after_its_time() {
    let broker = BrokerProcess::start(&["--retention", "1s"]);
    let id = broker.enqueue(job("t", b"")).await;
    let leased = broker.lease_one("default", "t").await;
    broker
        .broker()
        .await
        .ack(pb::AckRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut admin = broker.admin().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = admin
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await;
        match found {
            Err(status) if status.code() == tonic::Code::NotFound => break,
            Ok(job) => assert_eq!(job.into_inner().state(), pb::JobState::Succeeded),
            Err(status) => panic!("{status:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job was kept past --retention 1s for {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
