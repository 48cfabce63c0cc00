//! `sluice enqueue` and `sluice jobs list|get|retry|cancel` against the real
//! broker: every flag of enqueue reaches the job, payloads come back as
//! JSON, text or base64, trace context comes from the flags or the
//! environment and is checked, and retry/cancel report each refusal.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use sluice_e2e::cli::{self, enqueue, sluice, wait_for_state};
use sluice_e2e::{BrokerProcess, WorkerProcess, scratch_dir};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[test]
fn enqueue_sets_every_field_and_jobs_get_shows_them() {
    let broker = BrokerProcess::start(&[]);
    let id = enqueue(
        &broker,
        &[
            "--queue",
            "mail",
            "--type",
            "send",
            "--json",
            r#"{"to": "ada@example.com", "n": 3}"#,
            "--priority",
            "-5",
            "--max-attempts",
            "7",
            "--timeout",
            "30s",
            "--idempotency-key",
            "order-1",
            "--key",
            "tenant-7",
            "--header",
            "tenant=acme",
            "--header",
            "x=a=b",
            "--delay",
            "1h",
        ],
    );
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let job = sluice(&broker, &["-o", "json", "jobs", "get", &id])
        .ok()
        .json();
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["queue"], "mail");
    assert_eq!(job["job_type"], "send");
    assert_eq!(job["key"], "tenant-7");
    assert_eq!(job["state"], "SCHEDULED");
    assert_eq!(job["priority"], -5);
    assert_eq!(job["attempt"], 0);
    assert_eq!(job["max_attempts"], 7);
    assert_eq!(job["timeout"], 30.0);
    assert_eq!(job["headers"], json!({"tenant": "acme", "x": "a=b"}));
    assert_eq!(
        job["payload"],
        json!({"encoding": "json", "value": {"to": "ada@example.com", "n": 3}})
    );
    assert_eq!(job["payload_bytes"], 33);
    assert_eq!(job["last_error"], json!(null));
    assert_eq!(job["worker_id"], json!(null));
    assert_eq!(job["finished_at"], json!(null));
    assert_eq!(job["cancel_requested"], false);
    let created = humantime::parse_rfc3339(job["created_at"].as_str().unwrap()).unwrap();
    let run_at = humantime::parse_rfc3339(job["run_at"].as_str().unwrap()).unwrap();
    let delay = run_at.duration_since(created).unwrap().as_secs();
    assert!(
        (3590..=3600).contains(&delay),
        "run_at is an hour on: {delay}s"
    );

    // The same key again: the same job, said to be a duplicate.
    let again = sluice(
        &broker,
        &[
            "-o",
            "json",
            "enqueue",
            "--queue",
            "mail",
            "--type",
            "send",
            "--idempotency-key",
            "order-1",
        ],
    )
    .ok()
    .json();
    assert_eq!(again, json!({"job_id": id, "duplicate": true}));

    // The human view: fields, headers, the payload pretty-printed.
    let text = sluice(&broker, &["jobs", "get", &id]).ok().stdout;
    assert!(text.contains(&format!("id:           {id}")), "{text}");
    assert!(text.contains("state:        SCHEDULED"), "{text}");
    assert!(text.contains("attempt:      0 of 7"), "{text}");
    assert!(text.contains("  tenant: acme"), "{text}");
    assert!(
        text.contains("payload (json, 33 bytes):\n{\n  \"n\": 3,"),
        "{text}"
    );
}

#[test]
fn payloads_come_from_stdin_or_a_file_and_show_as_text_or_base64() {
    let broker = BrokerProcess::start(&[]);
    let mut command = cli::command(&["--broker", &broker.url(), "enqueue", "--type", "t", "-"]);
    command.env("SLUICE_LOG", "ignored");
    let out = cli::run(command, Some(b"hello, world\n")).ok();
    let text_id = out.stdout.trim();
    let job = sluice(&broker, &["-o", "json", "jobs", "get", text_id])
        .ok()
        .json();
    assert_eq!(
        job["payload"],
        json!({"encoding": "text", "value": "hello, world\n"})
    );

    let dir = scratch_dir("cli-payload");
    let file = dir.join("payload.bin");
    std::fs::write(&file, [0xff, 0x00, 0x10]).unwrap();
    let bin_id = enqueue(
        &broker,
        &["--type", "t", "--payload-file", file.to_str().unwrap()],
    );
    let job = sluice(&broker, &["-o", "json", "jobs", "get", &bin_id])
        .ok()
        .json();
    assert_eq!(
        job["payload"],
        json!({"encoding": "base64", "value": "/wAQ"})
    );
    assert_eq!(job["payload_bytes"], 3);
    let text = sluice(&broker, &["jobs", "get", &bin_id]).ok().stdout;
    assert!(
        text.contains("payload (base64, 3 bytes):\n/wAQ\n"),
        "{text}"
    );

    // Two payloads, a payload that is not JSON, a stray argument: usage errors.
    let file = file.to_str().unwrap();
    for args in [
        &[
            "enqueue",
            "--type",
            "t",
            "--json",
            "{}",
            "--payload-file",
            file,
        ][..],
        &["enqueue", "--type", "t", "--json", "{not json"],
        &["enqueue", "--type", "t", "payload"],
        &[
            "enqueue",
            "--type",
            "t",
            "--delay",
            "1s",
            "--run-at",
            "2030-01-01T00:00:00Z",
        ],
    ] {
        let out = sluice(&broker, args).exited(2);
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
    let missing = sluice(
        &broker,
        &["enqueue", "--type", "t", "--payload-file", "/nonexistent/p"],
    )
    .exited(1);
    assert!(missing.stderr.contains("/nonexistent/p"), "{missing:?}");
}

#[test]
fn traceparent_comes_from_the_flag_or_the_environment_and_is_checked() {
    let broker = BrokerProcess::start(&[]);
    let headers = |id: &str| {
        sluice(&broker, &["-o", "json", "jobs", "get", id])
            .ok()
            .json()["headers"]
            .clone()
    };

    let from_flag = enqueue(
        &broker,
        &[
            "--type",
            "t",
            "--traceparent",
            TRACEPARENT,
            "--tracestate",
            "rojo=00f067aa0ba902b7",
        ],
    );
    assert_eq!(
        headers(&from_flag),
        json!({"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7"})
    );

    let from_env_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let mut command = cli::command(&["--broker", &broker.url(), "enqueue", "--type", "t"]);
    command
        .env("TRACEPARENT", from_env_parent)
        .env("TRACESTATE", "congo=t61rcWkgMzE");
    let from_env = cli::run(command, None).ok().stdout.trim().to_owned();
    assert_eq!(
        headers(&from_env),
        json!({"traceparent": from_env_parent, "tracestate": "congo=t61rcWkgMzE"})
    );

    // The flag wins over the environment.
    let mut command = cli::command(&[
        "--broker",
        &broker.url(),
        "enqueue",
        "--type",
        "t",
        "--traceparent",
        TRACEPARENT,
    ]);
    command.env("TRACEPARENT", from_env_parent);
    let both = cli::run(command, None).ok().stdout.trim().to_owned();
    assert_eq!(headers(&both)["traceparent"], TRACEPARENT);

    // Malformed, from the flag or the environment: usage errors, nothing enqueued.
    for bad in [
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ] {
        let out = sluice(&broker, &["enqueue", "--type", "t", "--traceparent", bad]).exited(2);
        assert!(out.stderr.contains("invalid traceparent"), "{out:?}");
        let mut command = cli::command(&["--broker", &broker.url(), "enqueue", "--type", "t"]);
        command.env("TRACEPARENT", bad);
        let out = cli::run(command, None).exited(2);
        assert!(out.stderr.contains("invalid traceparent"), "{out:?}");
    }
    let out = sluice(&broker, &["enqueue", "--type", "t", "--tracestate", "a=b"]).exited(2);
    assert!(out.stderr.contains("needs a traceparent"), "{out:?}");
    let out = sluice(
        &broker,
        &["enqueue", "--type", "t", "--header", "traceparent=x"],
    )
    .exited(2);
    assert!(out.stderr.contains("--traceparent"), "{out:?}");

    let listed = sluice(&broker, &["-o", "json", "jobs", "list"]).ok().json();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed:#}");
}

#[test]
fn jobs_list_filters_by_queue_and_state_with_a_limit() {
    let broker = BrokerProcess::start(&[]);
    let a: Vec<String> = (0..3)
        .map(|_| enqueue(&broker, &["--queue", "a", "--type", "ta"]))
        .collect();
    let later = enqueue(&broker, &["--queue", "a", "--type", "ta", "--delay", "1h"]);
    enqueue(&broker, &["--queue", "b", "--type", "tb"]);

    let ready = sluice(
        &broker,
        &[
            "-o", "json", "jobs", "list", "--queue", "a", "--state", "ready",
        ],
    )
    .ok()
    .json();
    let ids: Vec<&str> = ready["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, a.iter().map(String::as_str).collect::<Vec<_>>());
    let first = &ready["jobs"][0];
    assert_eq!(first["queue"], "a");
    assert_eq!(first["job_type"], "ta");
    assert_eq!(first["state"], "READY");
    assert_eq!(first["payload_bytes"], 0);
    assert!(first.get("payload").is_none(), "list leaves payloads out");

    let limited = sluice(&broker, &["-o", "json", "jobs", "list", "--limit", "2"])
        .ok()
        .json();
    assert_eq!(limited["jobs"].as_array().unwrap().len(), 2);

    let table = sluice(&broker, &["jobs", "list", "--queue", "a"]).ok();
    let lines = table.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID", "QUEUE", "TYPE", "STATE", "ATTEMPT", "PROGRESS", "LAST", "ERROR"
        ]
    );
    assert_eq!(lines.len(), 5, "{}", table.stdout);
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        [a[0].as_str(), "a", "ta", "READY", "0/4", "-"]
    );
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        [later.as_str(), "a", "ta", "SCHEDULED", "0/4", "-"]
    );

    let none = sluice(&broker, &["jobs", "list", "--state", "dead"]).ok();
    assert_eq!(none.stdout, "no jobs\n");
}

#[test]
fn retry_and_cancel_report_each_job_and_all_dead_retries_a_whole_queue() {
    let broker = BrokerProcess::start(&[]);
    let worker = WorkerProcess::start(
        &broker,
        &["--queues", "q", "--exec", "boom=echo it broke >&2; exit 1"],
    );
    let dead: Vec<String> = (0..3)
        .map(|_| {
            enqueue(
                &broker,
                &["--queue", "q", "--type", "boom", "--max-attempts", "1"],
            )
        })
        .collect();
    for id in &dead {
        let job = wait_for_state(&broker, id, "DEAD");
        let error = job["last_error"].as_str().unwrap();
        assert!(error.contains("it broke"), "{job:#}");
        assert_eq!(job["attempt"], 1);
    }
    drop(worker);

    // One id: retried, back to READY with its attempts reset.
    let one = sluice(&broker, &["-o", "json", "jobs", "retry", &dead[0]])
        .ok()
        .json();
    assert_eq!(one, json!({"retried": [{"job_id": dead[0]}], "failed": []}));
    let job = sluice(&broker, &["-o", "json", "jobs", "get", &dead[0]])
        .ok()
        .json();
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("READY"), Some(0))
    );

    // A READY job cannot be retried: FAILED_PRECONDITION, exit 1.
    let refused = sluice(&broker, &["jobs", "retry", &dead[0]]).exited(1);
    assert!(
        refused.stderr.starts_with("sluice: FAILED_PRECONDITION: "),
        "{refused:?}"
    );

    // --all-dead: the two still dead.
    let all = sluice(
        &broker,
        &["-o", "json", "jobs", "retry", "--all-dead", "--queue", "q"],
    )
    .ok()
    .json();
    assert_eq!(all["queue"], "q");
    assert_eq!(all["failed"], json!([]));
    let mut retried: Vec<&str> = all["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap())
        .collect();
    retried.sort_unstable();
    let mut expected = vec![dead[1].as_str(), dead[2].as_str()];
    expected.sort_unstable();
    assert_eq!(retried, expected);
    let again = sluice(&broker, &["jobs", "retry", "--all-dead", "--queue", "q"]).ok();
    assert_eq!(again.stdout, "retried 0 of 0 jobs in queue q\n");
    sluice(&broker, &["jobs", "retry", "--all-dead"]).exited(2);
    sluice(&broker, &["jobs", "retry"]).exited(2);

    // Cancel two READY jobs and an unknown one: each reported, exit 1.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let out = sluice(
        &broker,
        &["-o", "json", "jobs", "cancel", &dead[1], &dead[2], unknown],
    )
    .exited(1);
    let doc = out.json();
    assert_eq!(
        doc["cancelled"],
        json!([
            {"job_id": dead[1], "state": "CANCELLED"},
            {"job_id": dead[2], "state": "CANCELLED"},
        ])
    );
    assert_eq!(doc["failed"][0]["job_id"], unknown);
    assert_eq!(doc["failed"][0]["code"], "NOT_FOUND");
    assert!(out.stderr.contains("1 of 3 requests failed"), "{out:?}");

    let table = sluice(&broker, &["jobs", "cancel", &dead[0]]).ok();
    assert_eq!(
        table.stdout,
        format!("{}  CANCELLED\ncancelled 1 of 1 jobs\n", dead[0])
    );
}

#[tokio::test]
async fn jobs_get_shows_a_payloads_escape_sequences_instead_of_sending_them() {
    let broker = BrokerProcess::start(&[]);
    // A producer's text payload that would retitle the terminal and clear
    // the screen, and a worker's error with a bell and a C1 control.
    let payload = "line one\n\x1b]0;pwned\x07\x1b[2J\u{9b}31m";
    let mut job = sluice_e2e::job("hostile", payload.as_bytes());
    job.max_attempts = 1;
    let id = broker.enqueue(job).await;
    let leased = broker.lease_one("default", "hostile").await;
    broker
        .broker()
        .await
        .nack(sluice_proto::v1::NackRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id,
            error: "bad\x07\x1b[31m input".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let shown = sluice(&broker, &["jobs", "get", &id]).ok();
    assert!(
        !shown.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "a control character reached the terminal: {:?}",
        shown.stdout
    );
    assert!(shown.stdout.contains("line one\n"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains(r"\x1b]0;pwned\x07\x1b[2J\u{9b}31m"),
        "{}",
        shown.stdout
    );
    // JSON carries the bytes, escaped by JSON's own rules.
    let json = sluice(&broker, &["-o", "json", "jobs", "get", &id]).ok();
    assert!(!json.stdout.contains('\x1b'));
    assert_eq!(json.json()["payload"]["value"], payload);
}

#[tokio::test]
async fn jobs_get_and_list_show_progress_and_the_result() {
    let broker = BrokerProcess::start(&[]);
    let id = broker.enqueue(sluice_e2e::job("import", b"")).await;
    let leased = broker.lease_one("default", "import").await;
    let mut client = broker.broker().await;
    client
        .progress(sluice_proto::v1::ProgressRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            percent: 40,
            message: "400 of 1000 rows\x1b[2J".into(),
        })
        .await
        .unwrap();
    let listed = sluice(&broker, &["jobs", "list"]).ok();
    let row: Vec<&str> = listed.lines()[1].split_whitespace().collect();
    assert_eq!(
        row[..4],
        [id.as_str(), "default", "import", "LEASED"],
        "{}",
        listed.stdout
    );
    assert_eq!(row[5..8], ["40%", "400", "of"], "{}", listed.stdout);

    client
        .ack(sluice_proto::v1::AckRequest {
            job_id: id.clone(),
            lease_id: leased.lease_id,
            result: br#"{"rows": 1000}"#.to_vec().into(),
        })
        .await
        .unwrap();
    let shown = sluice(&broker, &["jobs", "get", &id]).ok().stdout;
    let field = |name: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in:\n{shown}"))
            .to_owned()
    };
    assert!(field("progress").contains("40% (attempt 1, "), "{shown}");
    assert!(
        shown.contains("progress message:\n400 of 1000 rows\\x1b[2J\n"),
        "shown, its escape sequence not obeyed: {shown}"
    );
    assert!(
        shown.ends_with("result (json, 14 bytes):\n{\n  \"rows\": 1000\n}\n"),
        "{shown}"
    );
    let json = sluice(&broker, &["-o", "json", "jobs", "get", &id])
        .ok()
        .json();
    assert_eq!(json["progress"]["percent"], 40);
    assert_eq!(json["progress"]["attempt"], 1);
    assert_eq!(json["result"]["encoding"], "json");
    assert_eq!(json["result"]["value"]["rows"], 1000);
    assert_eq!(json["result_bytes"], 14);
}

#[test]
fn enqueue_lines_sends_a_file_over_one_stream_and_reports_each_job() {
    let broker = BrokerProcess::start(&[]);
    let dir = scratch_dir("enqueue-lines");
    let file = dir.join("jobs.jsonl");
    let jobs = concat!(
        r#"{"type": "send", "queue": "mail", "json": {"to": "ada@example.com"}, "idempotency_key": "k1", "key": "acme", "headers": {"tenant": "acme"}}"#,
        "\n\n",
        r#"{"type": "", "payload": "a job without a type"}"#,
        "\n",
        r#"{"type": "send", "payload": "plain", "priority": 3, "delay": "1h", "max_attempts": 2, "timeout": "30s"}"#,
        "\n"
    );
    std::fs::write(&file, jobs).unwrap();
    let out = sluice(&broker, &["enqueue-lines", file.to_str().unwrap()]).exited(1);
    let lines = out.lines();
    assert_eq!(lines.len(), 3, "{out:#?}");
    assert!(lines[0].starts_with("1  "), "{out:#?}");
    assert!(lines[1].starts_with("4  "), "{out:#?}");
    assert_eq!(lines[2], "enqueued 2 of 3 jobs");
    assert!(
        out.stderr.contains("line 3: INVALID_ARGUMENT: job_type"),
        "{out:#?}"
    );
    let first = lines[0].trim_start_matches("1  ");
    let job = sluice(&broker, &["-o", "json", "jobs", "get", first])
        .ok()
        .json();
    assert_eq!(job["queue"], "mail");
    assert_eq!(job["key"], "acme");
    assert_eq!(job["headers"]["tenant"], "acme");
    assert_eq!(job["payload"]["value"], json!({"to": "ada@example.com"}));
    let fourth = lines[1].trim_start_matches("4  ");
    let job = sluice(&broker, &["-o", "json", "jobs", "get", fourth])
        .ok()
        .json();
    assert_eq!(job["state"], "SCHEDULED");
    assert_eq!(
        (job["priority"].clone(), job["max_attempts"].clone()),
        (json!(3), json!(2))
    );

    // Again, from standard input, as JSON: the keyed job is a duplicate.
    let mut command = cli::command(&[
        "--broker",
        &broker.url(),
        "-o",
        "json",
        "enqueue-lines",
        "-",
    ]);
    command.env_remove("SLUICE_BROKER");
    let again = cli::run(command, Some(jobs.as_bytes())).exited(1).json();
    assert_eq!(again["enqueued"][0]["job_id"], first);
    assert_eq!(again["enqueued"][0]["duplicate"], true);
    assert_eq!(again["enqueued"][1]["duplicate"], false);
    assert_eq!(again["failed"][0]["line"], 3);
    assert_eq!(again["failed"][0]["code"], "INVALID_ARGUMENT");

    // A line that is not a job refuses the whole input before connecting.
    std::fs::write(
        &file,
        "{\"type\": \"send\"}\n{\"type\": \"send\", \"colour\": 1}\n",
    )
    .unwrap();
    let refused = sluice(&broker, &["enqueue-lines", file.to_str().unwrap()]).exited(2);
    assert!(
        refused.stderr.contains("line 2: unknown field \"colour\""),
        "{refused:#?}"
    );
    let stats = sluice(&broker, &["-o", "json", "stats"]).ok().json();
    let enqueued: u64 = stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["enqueued_total"].as_u64().unwrap_or(0))
        .sum();
    // Two, then the unkeyed one again: nothing of the refused input.
    assert_eq!(
        enqueued, 3,
        "nothing of the refused input was sent: {stats:#}"
    );
}
