//! `sluice top`: `--once` prints one plain-text frame (queues, workers,
//! the running jobs with their progress, the schedules due soonest, recent
//! failures from a worker whose jobs fail), and the live view runs
//! in a pseudo-terminal: it draws and refreshes, keeps running with an
//! error line when the broker goes away, quits on `q` with status 0, and
//! gives the terminal back (alternate screen left, cursor shown, cooked
//! mode).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use sluice_e2e::cli::{PtyRun, enqueue, sluice, wait_for_state};
use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess};

/// A broker with 3 jobs waiting in `waiting`, two jobs of `flaky` that
/// failed for good on worker `w-top`, which stays connected, and an
/// hourly schedule.
fn busy_broker() -> (BrokerProcess, WorkerProcess) {
    let broker = BrokerProcess::start(&[]);
    let worker = WorkerProcess::start(
        &broker,
        &[
            "--worker-id",
            "w-top",
            "--queues",
            "flaky",
            "--exec",
            "fail=echo disk full >&2; exit 1",
        ],
    );
    for _ in 0..2 {
        let id = enqueue(
            &broker,
            &["--queue", "flaky", "--type", "fail", "--max-attempts", "1"],
        );
        wait_for_state(&broker, &id, "DEAD");
    }
    for _ in 0..3 {
        enqueue(&broker, &["--queue", "waiting", "--type", "later"]);
    }
    sluice(
        &broker,
        &[
            "schedules",
            "create",
            "hourly-digest",
            "--every",
            "1h",
            "--queue",
            "digests",
            "--type",
            "digest",
        ],
    )
    .ok();
    (broker, worker)
}

/// The whitespace-separated cells of the first line starting with `first`.
fn row<'a>(frame: &'a str, first: &str) -> Vec<&'a str> {
    frame
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{frame}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn top_once_prints_queues_workers_and_failures_as_plain_text() {
    let (broker, _worker) = busy_broker();
    // A running job that reported its progress.
    let running = broker
        .enqueue(sluice_e2e::job_in("imports", "csv", b""))
        .await;
    let leased = broker.lease_one("imports", "csv").await;
    broker
        .broker()
        .await
        .progress(sluice_proto::v1::ProgressRequest {
            job_id: running.clone(),
            lease_id: leased.lease_id,
            percent: 40,
            message: "400 of 1000 rows".into(),
        })
        .await
        .unwrap();
    let frame = sluice(&broker, &["top", "--once"]).ok().stdout;
    assert!(!frame.contains('\x1b'), "escape codes in {frame:?}");
    assert!(frame.lines().all(|l| l.chars().count() <= 100), "{frame}");
    assert!(
        frame.starts_with(&format!("sluice top  {}", broker.url())),
        "{frame}"
    );
    assert_eq!(
        row(&frame, "QUEUE"),
        [
            "QUEUE", "READY", "SCHED", "LEASED", "DEAD", "PAUSED", "OLDEST", "ENQ/S", "ACK/S",
            "FAIL/S"
        ]
    );
    let waiting = row(&frame, "waiting");
    assert_eq!(waiting[..6], ["waiting", "3", "0", "0", "0", "no"]);
    assert_ne!(waiting[6], "-", "an oldest ready age: {frame}");
    let flaky = row(&frame, "flaky");
    assert_eq!(flaky[..6], ["flaky", "0", "0", "0", "2", "no"]);
    let worker = row(&frame, "w-top");
    assert_eq!(worker[..3], ["w-top", "flaky", "0/1"]);
    let failures: Vec<&str> = frame.lines().filter(|l| l.contains("disk full")).collect();
    assert_eq!(failures.len(), 2, "{frame}");
    for failure in failures {
        let cells: Vec<&str> = failure.split_whitespace().collect();
        assert_eq!(cells[1..5], ["flaky", "fail", "1", "yes"], "{frame}");
    }
    assert!(frame.contains("Recent failures"), "{frame}");
    assert!(frame.contains("Running jobs"), "{frame}");
    let job = row(&frame, &running);
    assert_eq!(job[1..3], ["imports", "csv"], "{frame}");
    assert!(job[3].starts_with("1/"), "{frame}");
    assert_eq!(job[4..6], ["40%", "400"], "{frame}");
    // The schedule, due within the hour, its timing in words, no job yet.
    let schedule = frame
        .lines()
        .find(|l| l.contains("hourly-digest"))
        .unwrap_or_else(|| panic!("no schedule in:\n{frame}"));
    let cells: Vec<&str> = schedule.split_whitespace().collect();
    // Under the hour: minutes and seconds ("59m58s").
    assert!(cells[0].contains('m') && cells[0].ends_with('s'), "{frame}");
    assert_eq!(
        cells[1..],
        ["hourly-digest", "digests", "every", "hour", "-"],
        "{frame}"
    );
    assert!(frame.contains("Schedules due soon"), "{frame}");
}

#[test]
fn top_runs_in_a_terminal_refreshes_survives_the_broker_and_quits_on_q() {
    let (mut broker, _worker) = busy_broker();
    let url = broker.url();
    let mut top = PtyRun::start(&["--broker", &url, "top", "--interval", "200ms"], 100, 30);
    // Full screen: the alternate screen, then a frame with the queue and
    // its count. (Only changed cells are written: a word at a time.)
    let screen = top.wait_for(0, &["\x1b[?1049h", "waiting", "Queues", "w-top", "disk"]);

    // A refresh shows the change: pausing the queue turns its PAUSED cell
    // from "no" to "yes", three cells written together. (A count would
    // not do: from 10 to 11 only one digit is rewritten.)
    let seen = screen.len();
    sluice(&broker, &["queue", "pause", "waiting"]).ok();
    top.wait_for(seen, &["yes"]);

    // The broker goes away: the view stays, with the error on its status line.
    broker.signal(Signal::SIGKILL);
    broker.wait_exit(WAIT).unwrap();
    let seen = top.screen().len();
    top.wait_for(seen, &["error:"]);
    assert!(
        top.wait_exit(Duration::from_millis(300)).is_none(),
        "top exited"
    );

    top.type_keys(b"q");
    let status = top
        .wait_exit(Duration::from_secs(5))
        .expect("q did not quit");
    assert!(status.success(), "{status:?}");
    // Read once the last bytes are out of the terminal.
    let screen = top.wait_for(seen, &["\x1b[?1049l", "\x1b[?25h"]);
    let left = screen
        .rfind("\x1b[?1049l")
        .expect("never left the alternate screen");
    assert!(left > screen.rfind("\x1b[?1049h").unwrap(), "{screen:?}");
    assert!(
        screen[left..].contains("\x1b[?25h"),
        "cursor not shown: {screen:?}"
    );
    assert!(top.cooked(), "the terminal was left in raw mode");
}
