//! The README's grpcurl walk-through, run with the real grpcurl against the
//! real broker: list and describe through reflection, enqueue with a JSON
//! body, lease, ack, read Stats and the health check.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;
use sluice_e2e::{BrokerProcess, grpcurl, grpcurl_command};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn grpcurl_walkthrough_from_the_readme() {
    let broker = BrokerProcess::start(&[]);
    let addr = broker.addr.as_str();

    let services = grpcurl(&["-plaintext", addr, "list"]);
    for service in [
        "sluice.v1.Broker",
        "sluice.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(service),
            "{service} missing from:\n{services}"
        );
    }
    let described = grpcurl(&["-plaintext", addr, "describe", "sluice.v1.Broker"]);
    assert!(
        described.contains(
            "rpc Lease ( .sluice.v1.LeaseRequest ) returns ( stream .sluice.v1.LeasedJob )"
        ),
        "{described}"
    );

    let body = r#"{"job_type": "email", "payload": "eyJ0byI6ImFkYUBleGFtcGxlLmNvbSJ9", "headers": {"trace-id": "abc"}}"#;
    let enqueued = json(&grpcurl(&[
        "-plaintext",
        "-d",
        body,
        addr,
        "sluice.v1.Broker/Enqueue",
    ]));
    let job_id = enqueued["jobId"].as_str().unwrap().to_owned();

    // The Lease stream stays open; read the first message, then stop grpcurl.
    let mut lease = grpcurl_command(&[
        "-plaintext",
        "-d",
        r#"{"worker_id": "cli", "max_in_flight": 1}"#,
        addr,
        "sluice.v1.Broker/Lease",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut message = String::new();
    for line in BufReader::new(lease.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        message.push_str(&line);
        if line == "}" {
            break;
        }
    }
    lease.kill().unwrap();
    lease.wait().unwrap();
    let leased = json(&message);
    assert_eq!(leased["job"]["id"], job_id.as_str());
    assert_eq!(leased["job"]["state"], "JOB_STATE_LEASED");
    assert_eq!(leased["job"]["headers"]["trace-id"], "abc");
    let lease_id = leased["leaseId"].as_str().unwrap();

    let ack = format!(r#"{{"job_id": "{job_id}", "lease_id": "{lease_id}"}}"#);
    grpcurl(&["-plaintext", "-d", &ack, addr, "sluice.v1.Broker/Ack"]);
    let job = json(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!(r#"{{"job_id": "{job_id}"}}"#),
        addr,
        "sluice.v1.Admin/GetJob",
    ]));
    assert_eq!(job["state"], "JOB_STATE_SUCCEEDED");

    let stats = json(&grpcurl(&["-plaintext", addr, "sluice.v1.Admin/Stats"]));
    assert_eq!(stats["queues"][0]["queue"], "default");
    assert_eq!(stats["queues"][0]["ackedTotal"], "1");

    let health = json(&grpcurl(&[
        "-plaintext",
        addr,
        "grpc.health.v1.Health/Check",
    ]));
    assert_eq!(health["status"], "SERVING");
}
