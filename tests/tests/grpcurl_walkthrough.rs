//! The README's grpcurl walk-through, run with the real grpcurl against the
//! real broker: list and describe through reflection, enqueue with a JSON
//! body, lease, ack, read Stats and the health check.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use serde_json::Value;
use sluice_e2e::{BrokerProcess, grpcurl, grpcurl_command};

/// A job's state, as Admin/GetJob tells grpcurl.
fn job_state(addr: &str, job_id: &str) -> Value {
    json(&grpcurl(&[
        "-plaintext",
        "-d",
        &format!(r#"{{"job_id": "{job_id}"}}"#),
        addr,
        "sluice.v1.Admin/GetJob",
    ]))["state"]
        .clone()
}

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
    assert_eq!(job_state(addr, &job_id), "JOB_STATE_SUCCEEDED");

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

/// The JSON messages grpcurl printed, one after another.
fn messages(text: &str) -> Vec<Value> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|m| m.unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
        .collect()
}

/// Reads grpcurl's output up to the end of its next message (a line `}`).
fn next_message(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    let mut message = String::new();
    for line in lines {
        let line = line.unwrap();
        message.push_str(&line);
        if line == "}" {
            return json(&message);
        }
    }
    panic!("grpcurl ended before a whole message: {message}");
}

#[test]
fn grpcurl_streams_from_the_readme() {
    use std::io::Write as _;

    let broker = BrokerProcess::start(&[]);
    let addr = broker.addr.as_str();

    // EnqueueStream, its requests from stdin (-d @): a result per request,
    // tagged with its seq; the bad one fails alone.
    let mut producer = grpcurl_command(&[
        "-plaintext",
        "-d",
        "@",
        addr,
        "sluice.v1.Broker/EnqueueStream",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    producer
        .stdin
        .take()
        .unwrap()
        .write_all(
            br#"{"seq": 1, "job": {"job_type": "email", "payload": "eyJ0byI6ImFkYUBleGFtcGxlLmNvbSJ9"}}
{"seq": 2, "job": {"job_type": ""}}
"#,
        )
        .unwrap();
    let output = producer.wait_with_output().unwrap();
    assert!(output.status.success());
    let results: Vec<Value> = messages(&String::from_utf8(output.stdout).unwrap())
        .iter()
        .flat_map(|m| m["results"].as_array().unwrap().clone())
        .collect();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0]["seq"], "1");
    let job_id = results[0]["jobId"].as_str().unwrap().to_owned();
    assert_eq!(results[1]["seq"], "2");
    assert_eq!(results[1]["code"], 3, "INVALID_ARGUMENT");
    assert!(
        results[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("job_type")
    );

    // A Work session: open, take the job, ack it on the same stream, close.
    let mut session = grpcurl_command(&["-plaintext", "-d", "@", addr, "sluice.v1.Broker/Work"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    stdin
        .write_all(b"{\"open\": {\"worker_id\": \"cli\", \"max_in_flight\": 1}}\n")
        .unwrap();
    let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
    let jobs = next_message(&mut lines);
    let leased = &jobs["jobs"][0];
    assert_eq!(leased["job"]["id"], job_id.as_str());
    let lease_id = leased["leaseId"].as_str().unwrap();
    writeln!(
        stdin,
        r#"{{"seq": 1, "ack": {{"job_id": "{job_id}", "lease_id": "{lease_id}"}}}}"#
    )
    .unwrap();
    drop(stdin);
    let answered = next_message(&mut lines);
    assert_eq!(answered["results"][0]["seq"], "1");
    assert!(answered["results"][0].get("code").is_none(), "{answered}");
    assert!(session.wait().unwrap().success());
    assert_eq!(job_state(addr, &job_id), "JOB_STATE_SUCCEEDED");
}
