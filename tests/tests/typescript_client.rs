//! The TypeScript client (`clients/typescript`, npm package `sluice-client`)
//! against the real broker: it builds with tsc (strict) and its unit tests
//! pass under Node's runner, the README's hello-world worker runs a job,
//! its producer enqueues (one job, and a batch with a refusal), and its
//! worker acks, retries, fails, times out, extends a long job's lease, stops
//! a cancelled one, drains on SIGTERM, exits 130 on a second signal, works
//! over TLS with tokens and reconnects after a broker restart. Needs Node
//! 20 and the package built (`scripts/test` runs `npm ci` and `npm run
//! build` in its folder).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sys::signal::Signal;
use sluice_e2e::tls::TestPki;
use sluice_e2e::{BrokerProcess, Process, WAIT, job, scratch_dir, wait_for_file};
use sluice_proto::v1 as pb;

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/typescript")
}

/// `node ARGS` in the package's folder (where `sluice-client` resolves to
/// the package itself), once it is built.
fn node(args: &[&str]) -> Command {
    assert!(
        client_dir().join("dist/index.js").exists(),
        "clients/typescript is not built: run scripts/test, or npm ci && npm run build there"
    );
    let mut command = Command::new("node");
    command.args(args).current_dir(client_dir());
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().expect("node must be installed");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The scenario worker (clients/typescript/scenarios/scenario_worker.mjs)
/// of `broker`, recording into `out`; started once its session is open.
fn scenario_worker(broker: &BrokerProcess, out: &Path, lease: &str) -> Process {
    let worker = Process::spawn(scenario_command(&broker.url(), out, lease));
    worker.wait_for_log("session open");
    worker
}

fn scenario_command(url: &str, out: &Path, lease: &str) -> Command {
    let mut command = node(&[
        "scenarios/scenario_worker.mjs",
        out.to_str().unwrap(),
        lease,
    ]);
    command.env("SLUICE_BROKER", url);
    command
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn typed(job_type: &str, max_attempts: u32, timeout_secs: i64) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        max_attempts,
        timeout: Some(prost_types::Duration {
            seconds: timeout_secs,
            nanos: 0,
        }),
        ..job(job_type, b"")
    }
}

#[test]
fn the_package_type_checks_and_its_unit_tests_pass() {
    run(node(&[
        "node_modules/typescript/bin/tsc",
        "-p",
        ".",
        "--noEmit",
    ]));
    let output = run(node(&["--test", "test/units.test.mjs"]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("# fail 0"));
}

#[tokio::test]
async fn the_hello_world_worker_runs_a_job() {
    let source = std::fs::read_to_string(client_dir().join("examples/hello_worker.mjs")).unwrap();
    assert!(source.lines().count() <= 15, "{source}");
    let readme = std::fs::read_to_string(client_dir().join("../../README.md")).unwrap();
    assert!(
        readme.contains(&source),
        "the README shows the hello world as it is"
    );
    let broker = BrokerProcess::start(&[]);
    let mut command = node(&["examples/hello_worker.mjs"]);
    command.env("SLUICE_BROKER", broker.url());
    let mut worker = Process::spawn(command);
    worker.wait_for_log("session open");
    let id = broker.enqueue(job("hello", b"world")).await;
    broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    worker.signal(Signal::SIGTERM);
    assert!(
        worker.wait_exit(WAIT).unwrap().success(),
        "{}",
        worker.log()
    );
    assert!(
        worker.log().contains("worker stopped processed=1"),
        "{}",
        worker.log()
    );
}

#[tokio::test]
async fn the_producers_enqueue_one_job_and_a_batch() {
    let broker = BrokerProcess::start(&[]);
    let script = r#"
import assert from "node:assert/strict";
import { Producer } from "sluice-client";
const p = new Producer({ broker: process.argv[1] });
const first = await p.enqueue({ jobType: "t", payload: "one", idempotencyKey: "k1", headers: { lang: "ts" } });
const again = await p.enqueue({ jobType: "t", payload: "one", idempotencyKey: "k1" });
assert.ok(again.duplicate && again.jobId === first.jobId);
const second = await p.enqueue({ jobType: "t", payload: "two", queue: "other", priority: 5, timeout: 90 });
const batch = await p.enqueueBatch([{ jobType: "t", payload: "three" }, { jobType: "", payload: "bad" }]);
assert.equal(batch[0].error, undefined);
assert.equal(batch[1].error.code, 3);
console.log([first.jobId, second.jobId, batch[0].jobId].join("\n"));
p.close();
"#;
    let output = run(node(&["--input-type=module", "-e", script, &broker.url()]));
    let ids: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let first = broker.job(&ids[0]).await;
    assert_eq!(first.payload.as_ref(), b"one");
    assert_eq!(first.headers.get("lang").map(String::as_str), Some("ts"));
    let second = broker.job(&ids[1]).await;
    assert_eq!((second.queue.as_str(), second.priority), ("other", 5));
    assert_eq!(second.timeout.unwrap().seconds, 90);
    assert_eq!(broker.job(&ids[2]).await.payload.as_ref(), b"three");
}

#[tokio::test]
async fn the_worker_acks_retries_fails_and_times_out() {
    let out = scratch_dir("ts-outcomes");
    let broker = BrokerProcess::start(&[]);
    let worker = scenario_worker(&broker, &out, "30");
    let ok = broker.enqueue(job("ok", b"")).await;
    let sync = broker.enqueue(job("sync", b"")).await;
    let flaky = broker.enqueue(typed("flaky", 3, 60)).await;
    let boom = broker.enqueue(typed("boom", 1, 60)).await;
    let dead = broker.enqueue(typed("dead", 5, 60)).await;
    let slow = broker.enqueue(typed("slow", 1, 1)).await;

    broker.wait_for_state(&ok, pb::JobState::Succeeded).await;
    let done = broker.wait_for_state(&sync, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    let done = broker.wait_for_state(&flaky, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
    let failed = broker.wait_for_state(&boom, pb::JobState::Dead).await;
    assert_eq!(failed.last_error, "TypeError: boom");
    let failed = broker.wait_for_state(&dead, pb::JobState::Dead).await;
    assert_eq!(
        (failed.attempt, failed.last_error.as_str()),
        (1, "no retry can help")
    );
    let failed = broker.wait_for_state(&slow, pb::JobState::Dead).await;
    assert_eq!(failed.last_error, "timed out after 1s");
    wait_for_file(&out.join("slow-aborted"));
    let log = worker.log();
    assert!(log.contains("job succeeded"), "{log}");
}

#[tokio::test]
async fn the_worker_extends_a_long_jobs_lease_and_stops_a_cancelled_one() {
    let out = scratch_dir("ts-leases");
    let broker = BrokerProcess::start(&[]);
    let _worker = scenario_worker(&broker, &out, "3");
    // Held past two lease durations: only heartbeats keep it.
    let long = broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    assert_eq!(broker.job(&long).await.state(), pb::JobState::Leased);
    std::fs::write(out.join("go"), "").unwrap();
    let done = broker.wait_for_state(&long, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(broker.queue_stats("default").await.expired_total, 0);

    std::fs::remove_file(out.join("go")).unwrap();
    std::fs::remove_file(out.join("started")).unwrap();
    let cancelled = broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    broker
        .admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: cancelled.clone(),
        })
        .await
        .unwrap();
    broker
        .wait_for_state(&cancelled, pb::JobState::Cancelled)
        .await;
    wait_for_file(&out.join("hold-aborted"));
}

#[tokio::test]
async fn the_worker_drains_on_sigterm_and_exits_at_once_on_a_second_signal() {
    let out = scratch_dir("ts-drain");
    let broker = BrokerProcess::start(&[]);
    let mut worker = scenario_worker(&broker, &out, "30");
    let running = broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    worker.signal(Signal::SIGTERM);
    worker.wait_for_log("draining");
    // Leased nothing more while draining.
    let waiting = broker.enqueue(job("ok", b"")).await;
    std::fs::write(out.join("go"), "").unwrap();
    let status = worker.wait_exit(WAIT).expect("exits once its job is done");
    assert!(status.success(), "{status:?}\n{}", worker.log());
    let done = broker.job(&running).await;
    assert_eq!((done.state(), done.attempt), (pb::JobState::Succeeded, 1));
    let untouched = broker.job(&waiting).await;
    assert_eq!(
        (untouched.state(), untouched.attempt),
        (pb::JobState::Ready, 0)
    );

    let out = scratch_dir("ts-second-signal");
    let mut worker = scenario_worker(&broker, &out, "30");
    broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    worker.signal(Signal::SIGTERM);
    worker.wait_for_log("draining");
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(WAIT).expect("exits at once");
    assert_eq!(status.code(), Some(130), "{}", worker.log());
}

const PRODUCER_TOKEN: &str = "producer-token-0123456789abcdef";
const WORKER_TOKEN: &str = "worker-token-0123456789abcdef";

/// Over TLS with tokens (the worker also over mTLS): the same environment
/// variables as the Rust worker; a worker without a token is refused and
/// exits 1 saying so.
#[tokio::test]
async fn over_tls_with_tokens_jobs_run_and_a_worker_without_a_token_is_refused() {
    let dir = scratch_dir("ts-tls");
    let pki = TestPki::new(&dir.join("pki")).unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "producer {PRODUCER_TOKEN}\nworker {WORKER_TOKEN}\nadmin admin-token-0123456789abcdef\n"
        ),
    )
    .unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let broker = BrokerProcess::start(&[
        "--tls-cert",
        &path(&pki.server_cert),
        "--tls-key",
        &path(&pki.server_key),
        "--tls-client-ca",
        &path(&pki.ca),
        "--auth-tokens",
        &path(&tokens),
    ]);
    let url = format!("https://{}", broker.addr);
    let client = pki.client("ts-worker").unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let tls_env = |command: &mut Command| {
        command
            .env("SLUICE_TLS_CA", &pki.ca)
            .env("SLUICE_TLS_CERT", &client.cert)
            .env("SLUICE_TLS_KEY", &client.key);
    };

    let mut refused = scenario_command(&url, &out, "30");
    tls_env(&mut refused);
    let mut refused = Process::spawn(refused);
    let status = refused.wait_exit(WAIT).expect("a refused worker exits");
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    assert!(
        refused.log().contains("UNAUTHENTICATED"),
        "{}",
        refused.log()
    );

    let mut command = scenario_command(&url, &out, "30");
    tls_env(&mut command);
    command.env("SLUICE_TOKEN", WORKER_TOKEN);
    let worker = Process::spawn(command);
    worker.wait_for_log("session open");
    let script = r#"
import { Producer } from "sluice-client";
const p = new Producer({ broker: process.argv[1] });
console.log((await p.enqueue({ jobType: "ok", payload: "over tls" })).jobId);
p.close();
"#;
    let mut produce = node(&["--input-type=module", "-e", script, &url]);
    produce
        .env("SLUICE_TLS_CA", &pki.ca)
        .env("SLUICE_TLS_CERT", &client.cert)
        .env("SLUICE_TLS_KEY", &client.key)
        .env("SLUICE_TOKEN", PRODUCER_TOKEN);
    let output = run(produce);
    let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    wait_for_file(&out.join("ok"));
    assert!(
        lines(&out.join("ok"))[0] == format!("{id} 1"),
        "{:?}",
        lines(&out.join("ok"))
    );
    assert!(
        !worker.log().contains(WORKER_TOKEN),
        "the token is never logged"
    );
}

/// A broker that restarts on the same address is picked up again without
/// restarting the worker.
#[tokio::test]
async fn the_worker_reconnects_after_the_broker_restarts() {
    let out = scratch_dir("ts-restart");
    let mut broker = BrokerProcess::start(&[]);
    let worker = scenario_worker(&broker, &out, "30");
    let before = broker.enqueue(job("ok", b"")).await;
    broker
        .wait_for_state(&before, pb::JobState::Succeeded)
        .await;
    let addr = broker.addr.clone();
    broker.signal(Signal::SIGKILL);
    broker.wait_exit(WAIT).unwrap();
    worker.wait_for_log("reconnecting to the broker");
    let broker = BrokerProcess::start_on(&addr, &[]);
    let after = broker.enqueue(job("ok", b"")).await;
    broker.wait_for_state(&after, pb::JobState::Succeeded).await;
    assert_eq!(lines(&out.join("ok")).len(), 2);
}
