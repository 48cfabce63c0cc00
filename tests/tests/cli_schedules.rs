//! `sluice schedules` against the real broker: create from flags (the
//! next five fire times printed) and from a file, get, list, pause,
//! resume, trigger and delete, `apply` idempotent and with `--prune`, and
//! bad flags and files refused before anything is sent.

#![allow(clippy::unwrap_used)]

use sluice_e2e::cli::sluice;
use sluice_e2e::{BrokerProcess, WorkerProcess, scratch_dir, wait_for_file};

const FILE: &str = r#"
[[schedule]]
name = "nightly"
cron = "30 2 * * *"
time_zone = "America/New_York"
queue = "reports"
type = "report.build"
json = '{"full": true}'
headers = { team = "data" }
catch_up = "one"
overlap = "skip"

[[schedule]]
name = "pulse"
every = "90s"
type = "ping"
"#;

#[test]
fn create_get_list_pause_resume_trigger_and_delete() {
    let broker = BrokerProcess::start(&[]);
    let created = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "hourly",
            "--cron",
            "15 * * * *",
            "--tz",
            "Asia/Kolkata",
            "--queue",
            "q",
            "--type",
            "t",
            "--json",
            r#"{"a": 1}"#,
            "--catch-up",
            "all",
            "--overlap",
            "cancel-previous",
        ],
    )
    .ok();
    // The next five fire times: at :15 in Kolkata, which is :45 UTC.
    let times: Vec<&str> = created
        .lines()
        .into_iter()
        .skip_while(|l| *l != "next fire times:")
        .skip(1)
        .take(5)
        .collect();
    assert_eq!(times.len(), 5, "{}", created.stdout);
    for t in times {
        assert!(t.trim().ends_with(":45:00Z"), "{t}");
    }
    assert!(
        created.stdout.contains("catch-up:      all"),
        "{}",
        created.stdout
    );
    assert!(created.stdout.contains("overlap:       cancel-previous"));

    let json = sluice(&broker, &["-o", "json", "schedules", "get", "hourly"])
        .ok()
        .json();
    assert_eq!(json["name"], "hourly");
    assert_eq!(json["cron"], "15 * * * *");
    assert_eq!(json["time_zone"], "Asia/Kolkata");
    assert_eq!(json["job"]["queue"], "q");
    assert_eq!(json["job"]["payload"]["value"]["a"], 1);
    assert_eq!(json["catch_up"], "all");
    assert_eq!(json["upcoming"].as_array().unwrap().len(), 5);
    assert_eq!(json["paused"], false);

    let again = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "hourly",
            "--every",
            "1m",
            "--type",
            "t",
        ],
    )
    .exited(1);
    assert!(again.stderr.contains("exists"), "{}", again.stderr);

    sluice(&broker, &["schedules", "pause", "hourly"]).ok();
    let listed = sluice(&broker, &["schedules", "list"]).ok();
    assert!(listed.lines()[0].starts_with("NAME"), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("hourly") && listed.stdout.contains("yes"),
        "{}",
        listed.stdout
    );
    sluice(&broker, &["schedules", "resume", "hourly"]).ok();
    let job_id = sluice(&broker, &["schedules", "trigger", "hourly"])
        .ok()
        .stdout;
    let job = sluice(&broker, &["-o", "json", "jobs", "get", job_id.trim()])
        .ok()
        .json();
    assert_eq!(job["headers"]["sluice-schedule"], "hourly");
    assert_eq!(job["queue"], "q");
    sluice(&broker, &["schedules", "delete", "hourly"]).ok();
    let gone = sluice(&broker, &["schedules", "get", "hourly"]).exited(1);
    assert!(
        gone.stderr.contains("NOT_FOUND") || gone.stderr.contains("no schedule"),
        "{}",
        gone.stderr
    );
}

#[test]
fn apply_makes_the_list_match_a_file_idempotently() {
    let broker = BrokerProcess::start(&[]);
    let dir = scratch_dir("cli-schedules-apply");
    let file = dir.join("schedules.toml");
    std::fs::write(&file, FILE).unwrap();
    let path = file.to_str().unwrap();
    sluice(
        &broker,
        &["schedules", "create", "old", "--every", "1h", "--type", "t"],
    )
    .ok();

    let first = sluice(
        &broker,
        &["-o", "json", "schedules", "apply", "--file", path],
    )
    .ok()
    .json();
    assert_eq!(first[0]["result"], "created");
    assert_eq!(first[1]["result"], "created");
    let second = sluice(
        &broker,
        &["-o", "json", "schedules", "apply", "--file", path],
    )
    .ok()
    .json();
    assert_eq!(second[0]["result"], "unchanged");
    assert_eq!(second[1]["result"], "unchanged");

    std::fs::write(&file, FILE.replace("90s", "2m")).unwrap();
    let pruned = sluice(&broker, &["schedules", "apply", "--file", path, "--prune"]).ok();
    assert!(
        pruned.stdout.contains("pulse") && pruned.stdout.contains("updated"),
        "{}",
        pruned.stdout
    );
    assert!(
        pruned.stdout.contains("old") && pruned.stdout.contains("deleted"),
        "{}",
        pruned.stdout
    );

    let list = sluice(&broker, &["-o", "json", "schedules", "list"])
        .ok()
        .json();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly", "pulse"]);
    let nightly = &list[0];
    assert_eq!(nightly["job"]["headers"]["team"], "data");
    assert_eq!(nightly["overlap"], "skip");
    assert_eq!(list[1]["every"], 120.0);

    // `create --file` creates each schedule of a file.
    let other = dir.join("other.toml");
    std::fs::write(
        &other,
        "[[schedule]]\nname = \"x\"\nevery = \"5m\"\ntype = \"t\"\n",
    )
    .unwrap();
    sluice(
        &broker,
        &["schedules", "create", "--file", other.to_str().unwrap()],
    )
    .ok();
    sluice(&broker, &["schedules", "get", "x"]).ok();
}

#[test]
fn bad_flags_and_files_are_refused_saying_why() {
    let broker = BrokerProcess::start(&[]);
    let dir = scratch_dir("cli-schedules-bad");
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntype = \"t\"\ncron_expr = \"x\"\n",
    )
    .unwrap();
    let bad_file = sluice(
        &broker,
        &["schedules", "apply", "--file", file.to_str().unwrap()],
    )
    .exited(2);
    assert!(
        bad_file
            .stderr
            .contains("bad.toml:1: schedule \"a\": unknown key \"cron_expr\""),
        "{}",
        bad_file.stderr
    );

    let bad_cron = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "a",
            "--cron",
            "99 * * * *",
            "--type",
            "t",
        ],
    )
    .exited(1);
    assert!(bad_cron.stderr.contains("cron: "), "{}", bad_cron.stderr);
    let bad_zone = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "a",
            "--cron",
            "@daily",
            "--tz",
            "Nowhere/Land",
            "--type",
            "t",
        ],
    )
    .exited(1);
    assert!(
        bad_zone.stderr.contains("time_zone: "),
        "{}",
        bad_zone.stderr
    );
    let bad_policy = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "a",
            "--every",
            "1m",
            "--type",
            "t",
            "--catch-up",
            "most",
        ],
    )
    .exited(2);
    assert!(
        bad_policy.stderr.contains("skip, one or all"),
        "{}",
        bad_policy.stderr
    );
    let both = sluice(
        &broker,
        &[
            "schedules",
            "create",
            "a",
            "--every",
            "1m",
            "--cron",
            "@daily",
            "--type",
            "t",
        ],
    )
    .exited(2);
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
    let list = sluice(&broker, &["schedules", "list"]).ok();
    assert_eq!(list.stdout, "no schedules\n");
}

/// A tick run by `sluice-worker --exec` sees which schedule and which tick
/// it is as variables (the job's headers).
#[test]
fn an_exec_handler_sees_the_schedule_and_the_tick() {
    let dir = scratch_dir("cli-schedules-exec");
    let seen = dir.join("seen");
    let broker = BrokerProcess::start(&[]);
    let command = format!(
        "tick=echo \"$SLUICE_HEADER_SLUICE_SCHEDULE $SLUICE_HEADER_SLUICE_SCHEDULED_FOR\" > {}.part && mv {0}.part {0}",
        seen.display()
    );
    let _worker = WorkerProcess::start(&broker, &["--queues", "ticks", "--exec", &command]);
    sluice(
        &broker,
        &[
            "schedules",
            "create",
            "every-second",
            "--every",
            "1s",
            "--queue",
            "ticks",
            "--type",
            "tick",
        ],
    )
    .ok();
    let line = wait_for_file(&seen);
    let (name, tick) = line.trim().split_once(' ').unwrap();
    assert_eq!(name, "every-second");
    // The tick: RFC 3339 in UTC, whole seconds.
    assert!(
        humantime::parse_rfc3339(tick).is_ok() && tick.ends_with('Z'),
        "{line:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
