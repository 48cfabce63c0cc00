//! `sluice stats`, `sluice workers` and `sluice queue pause|resume|purge`
//! against the real broker: JSON field by field, the tables' headers and
//! rows, and purge's confirmation (asked on a terminal, refused without
//! one unless --yes).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_e2e::cli::{PtyRun, enqueue, sluice};
use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess};

/// The Stats row of `queue` from `sluice -o json stats`.
fn queue_row(broker: &BrokerProcess, queue: &str) -> Value {
    let stats = sluice(broker, &["-o", "json", "stats"]).ok().json();
    stats["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == queue)
        .unwrap_or_else(|| panic!("no row for {queue}: {stats:#}"))
        .clone()
}

#[test]
fn stats_shows_each_queue_in_json_and_as_a_table() {
    let broker = BrokerProcess::start(&[]);
    assert_eq!(sluice(&broker, &["stats"]).ok().stdout, "no queues yet\n");
    let empty = sluice(&broker, &["-o", "json", "stats"]).ok().json();
    assert_eq!(empty, json!({"queues": [], "recent_failures": []}));

    for _ in 0..2 {
        enqueue(&broker, &["--queue", "orders", "--type", "t"]);
    }
    enqueue(
        &broker,
        &["--queue", "orders", "--type", "t", "--delay", "1h"],
    );
    sluice(&broker, &["queue", "pause", "idle"]).ok();

    let orders = queue_row(&broker, "orders");
    assert_eq!(orders["ready"], 2);
    assert_eq!(orders["scheduled"], 1);
    assert_eq!(orders["leased"], 0);
    assert_eq!(orders["succeeded"], 0);
    assert_eq!(orders["dead"], 0);
    assert_eq!(orders["cancelled"], 0);
    assert_eq!(orders["paused"], false);
    assert_eq!(orders["enqueued_total"], 3);
    assert_eq!(orders["acked_total"], 0);
    assert_eq!(orders["nacked_total"], 0);
    assert_eq!(orders["expired_total"], 0);
    assert_eq!(orders["dead_total"], 0);
    assert!(
        orders["oldest_ready_age"].as_f64().unwrap() >= 0.0,
        "{orders:#}"
    );
    // Rates run from the broker's first sample (at start) once a second
    // has passed: enqueues show, nothing was acked or failed.
    let deadline = Instant::now() + WAIT;
    let orders = loop {
        let orders = queue_row(&broker, "orders");
        if orders["enqueued_per_second"].as_f64().unwrap() > 0.0 {
            break orders;
        }
        assert!(Instant::now() < deadline, "no enqueue rate: {orders:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(orders["acked_per_second"].as_f64(), Some(0.0), "{orders:#}");
    assert_eq!(
        orders["failed_per_second"].as_f64(),
        Some(0.0),
        "{orders:#}"
    );
    let idle = queue_row(&broker, "idle");
    assert_eq!(idle["paused"], true);
    assert_eq!(idle["oldest_ready_age"], Value::Null, "nothing ready: null");

    let table = sluice(&broker, &["stats"]).ok();
    let lines = table.lines();
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(lines[0]),
        [
            "QUEUE", "READY", "SCHED", "LEASED", "DEAD", "PAUSED", "OLDEST", "ENQ/S", "ACK/S",
            "FAIL/S"
        ]
    );
    let idle_row = lines.iter().find(|l| l.starts_with("idle")).unwrap();
    assert_eq!(
        cells(idle_row),
        ["idle", "0", "0", "0", "0", "yes", "-", "0", "0", "0"]
    );
    let orders_row = cells(lines.iter().find(|l| l.starts_with("orders")).unwrap());
    assert_eq!(orders_row[..6], ["orders", "2", "1", "0", "0", "no"]);
    assert!(
        lines.iter().all(|l| l.chars().count() <= 80),
        "{}",
        table.stdout
    );
}

#[test]
fn workers_lists_each_lease_stream_with_its_jobs_in_flight() {
    let broker = BrokerProcess::start(&[]);
    assert_eq!(
        sluice(&broker, &["workers"]).ok().stdout,
        "no workers connected\n"
    );
    let _worker = WorkerProcess::start(
        &broker,
        &[
            "--worker-id",
            "w-cli",
            "--queues",
            "a,b",
            "--concurrency",
            "3",
            "--exec",
            "slow=sleep 30",
        ],
    );
    enqueue(&broker, &["--queue", "a", "--type", "slow"]);
    let deadline = Instant::now() + WAIT;
    let worker = loop {
        let doc = sluice(&broker, &["-o", "json", "workers"]).ok().json();
        let worker = doc["workers"][0].clone();
        if worker["in_flight"] == 1 {
            break worker;
        }
        assert!(Instant::now() < deadline, "never in flight: {doc:#}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(worker["worker_id"], "w-cli");
    assert_eq!(worker["queues"], json!(["a", "b"]));
    assert_eq!(worker["job_types"], json!(["slow"]));
    assert_eq!(worker["max_in_flight"], 3);
    let since = humantime::parse_rfc3339(worker["connected_since"].as_str().unwrap()).unwrap();
    assert!(since.elapsed().unwrap() < WAIT, "{worker:#}");

    let table = sluice(&broker, &["workers"]).ok();
    let lines = table.lines();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["WORKER", "QUEUES", "TYPES", "IN", "FLIGHT", "CONNECTED"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row[..4], ["w-cli", "a,b", "slow", "1/3"]);
    assert_eq!(row.last(), Some(&"ago"));
}

#[test]
fn pause_and_resume_change_the_queue_and_say_so() {
    let broker = BrokerProcess::start(&[]);
    enqueue(&broker, &["--queue", "q", "--type", "t"]);
    let out = sluice(&broker, &["queue", "pause", "q"]).ok();
    assert_eq!(out.stdout, "queue q paused\n");
    assert_eq!(queue_row(&broker, "q")["paused"], true);
    let out = sluice(&broker, &["-o", "json", "queue", "resume", "q"]).ok();
    assert_eq!(out.json(), json!({"queue": "q", "paused": false}));
    assert_eq!(queue_row(&broker, "q")["paused"], false);
    let bad = sluice(&broker, &["queue", "pause", "no spaces"]).exited(1);
    assert!(
        bad.stderr.starts_with("sluice: INVALID_ARGUMENT: "),
        "{bad:?}"
    );
}

#[test]
fn purge_needs_yes_without_a_terminal_and_asks_on_one() {
    let broker = BrokerProcess::start(&[]);
    for _ in 0..3 {
        enqueue(&broker, &["--queue", "p", "--type", "t"]);
    }
    let refused = sluice(&broker, &["queue", "purge", "p", "--state", "ready"]).exited(2);
    assert!(refused.stderr.contains("--yes"), "{refused:?}");
    assert_eq!(queue_row(&broker, "p")["ready"], 3, "nothing purged");
    sluice(&broker, &["queue", "purge", "p"]).exited(2);

    // On a terminal: asked, with the count; "n" keeps the jobs.
    let url = broker.url();
    let mut no = PtyRun::start(
        &["--broker", &url, "queue", "purge", "p", "--state", "ready"],
        80,
        24,
    );
    no.wait_for(0, &["Purge 3 READY jobs of queue p? [y/N]"]);
    no.type_keys(b"n\n");
    assert!(no.wait_exit(WAIT).unwrap().success());
    // The last output may still be on its way out of the terminal.
    no.wait_for(0, &["nothing purged"]);
    assert_eq!(queue_row(&broker, "p")["ready"], 3);

    let mut yes = PtyRun::start(
        &["--broker", &url, "queue", "purge", "p", "--state", "ready"],
        80,
        24,
    );
    yes.wait_for(0, &["[y/N]"]);
    yes.type_keys(b"y\n");
    assert!(yes.wait_exit(WAIT).unwrap().success());
    yes.wait_for(0, &["purged 3 READY jobs of queue p"]);
    assert_eq!(queue_row(&broker, "p")["ready"], 0);

    enqueue(&broker, &["--queue", "p", "--type", "t"]);
    let out = sluice(
        &broker,
        &[
            "-o", "json", "queue", "purge", "p", "--state", "ready", "--yes",
        ],
    )
    .ok();
    assert_eq!(
        out.json(),
        json!({"queue": "p", "state": "READY", "purged": 1})
    );
}
