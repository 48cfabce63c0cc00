//! The worker clients, through one harness: every scenario runs against
//! each client's scenario worker (the same handlers, by the same names:
//! `clients/python/tests/scenario_worker.py`,
//! `clients/typescript/scenarios/scenario_worker.mjs`, and `sluice-worker`
//! with an exec handler of each name, built by [`Client::scenario_command`])
//! and the real broker, and a client passes only if every scenario does: the README's hello
//! world, every outcome (ack, retry, an exception, dead, a timeout), a long
//! job's heartbeats, an operator's cancel, progress and a result, a payload
//! past gRPC's default message limit, credit never exceeded, the drain on
//! SIGTERM and 130 on a second signal, TLS with tokens and a refusal, a
//! broker restart between jobs and mid-job (memory-only and on a data
//! directory), a connection cut and one frozen by a proxy, and a stale
//! lease after a pause. Then
//! what is each client's own: the Python package's stubs, types (mypy,
//! strict), pip install and unit checks (tests/check_units.py); the TypeScript package's types (tsc, strict)
//! and unit tests; each one's producers.
//!
//! Needs python3 with grpcio, grpcio-tools and mypy, and Node 20 with the
//! TypeScript package built (`scripts/test` sees to both).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use sluice_e2e::in_process::eventually;
use sluice_e2e::proxy::Proxy;
use sluice_e2e::tls::TestPki;
use sluice_e2e::{BrokerProcess, Process, WAIT, job, scratch_dir, wait_for_file};
use sluice_proto::v1 as pb;

#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    TypeScript,
    /// `sluice-worker` with exec handlers, on the Rust library.
    Rust,
}

impl Client {
    fn dir(self) -> PathBuf {
        let name = match self {
            Client::Python => "clients/python",
            Client::TypeScript => "clients/typescript",
            Client::Rust => "worker",
        };
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
    }

    /// The client's interpreter with `args`, in its folder.
    fn command(self, args: &[&str]) -> Command {
        let mut command = match self {
            Client::Python => {
                let mut c = Command::new("python3");
                c.env("PYTHONPATH", self.dir()).env("PYTHONUNBUFFERED", "1");
                c
            }
            Client::TypeScript => {
                assert!(
                    self.dir().join("dist/index.js").exists(),
                    "clients/typescript is not built: run scripts/test, or npm ci && npm run build there"
                );
                // In its folder `sluice-client` resolves to the package itself.
                Command::new("node")
            }
            Client::Rust => Command::new(sluice_e2e::binary("sluice-worker")),
        };
        command.args(args).current_dir(self.dir());
        command
    }

    /// The hello-world worker: its file (which the README shows) and the
    /// command that runs it.
    fn hello_world(self) -> (Option<&'static str>, Command) {
        match self {
            Client::Python => (
                Some("examples/hello_worker.py"),
                self.command(&["examples/hello_worker.py"]),
            ),
            Client::TypeScript => (
                Some("examples/hello_worker.mjs"),
                self.command(&["examples/hello_worker.mjs"]),
            ),
            Client::Rust => (
                None,
                self.command(&[
                    "--concurrency",
                    "4",
                    "--exec",
                    "hello=echo \"hello, $(cat)\"",
                ]),
            ),
        }
    }

    /// Enqueues a job of `job_type` at `url` and prints its id.
    fn producer(self, url: &str, job_type: &str) -> Command {
        let mut command = match self {
            Client::Python => self.command(&["tests/produce.py", url, job_type, "x"]),
            Client::TypeScript => self.command(&["scenarios/produce.mjs", url, job_type, "x"]),
            Client::Rust => Command::new(sluice_e2e::binary("sluice")),
        };
        if let Client::Rust = self {
            command.args(["enqueue", "--broker", url, "--type", job_type]);
        }
        command
    }

    /// What the worker logs once its session is open.
    fn open_log(self) -> &'static str {
        match self {
            Client::Python | Client::TypeScript => "session open",
            Client::Rust => "lease stream open",
        }
    }

    /// What the worker logs when the broker refuses it for want of a token.
    fn refused_log(self) -> &'static str {
        match self {
            Client::Python | Client::TypeScript => "UNAUTHENTICATED",
            Client::Rust => "the broker refuses the lease stream",
        }
    }

    /// How the scenario worker's `boom` handler's failure is reported.
    fn boom(self) -> &'static str {
        match self {
            Client::Python => "RuntimeError: boom",
            Client::TypeScript => "TypeError: boom",
            Client::Rust => "boom",
        }
    }

    fn scenario_command(self, url: &str, out: &Path, lease: &str) -> Command {
        let mut command = match self {
            Client::Python => {
                self.command(&["tests/scenario_worker.py", out.to_str().unwrap(), lease])
            }
            Client::TypeScript => self.command(&[
                "scenarios/scenario_worker.mjs",
                out.to_str().unwrap(),
                lease,
            ]),
            Client::Rust => {
                let lease = format!("{lease}s");
                let mut c = self.command(&[
                    "--concurrency",
                    "4",
                    "--lease-duration",
                    &lease,
                    "--drain-timeout",
                    "20s",
                ]);
                for handler in exec_scenarios(out) {
                    c.args(["--exec", &handler]);
                }
                c.env("RUST_LOG", "info");
                c
            }
        };
        command.env("SLUICE_BROKER", url);
        command
    }

    /// The scenario worker of `broker`, recording into `out`; started once
    /// its session is open.
    fn scenario_worker(self, broker: &BrokerProcess, out: &Path, lease: &str) -> Process {
        self.scenario_worker_at(&broker.url(), out, lease)
    }

    /// [`Client::scenario_worker`] of the broker at `url` (a proxy's).
    fn scenario_worker_at(self, url: &str, out: &Path, lease: &str) -> Process {
        let worker = Process::spawn(self.scenario_command(url, out, lease));
        worker.wait_for_log(self.open_log());
        worker
    }
}

/// The scenario worker's handlers as `sluice-worker` exec handlers
/// (`TYPE=COMMAND`), recording into `out` as the other clients' do.
fn exec_scenarios(out: &Path) -> Vec<String> {
    let out = out.display();
    let record = |name: &str| format!("echo \"$SLUICE_JOB_ID $SLUICE_ATTEMPT\" >> {out}/{name}");
    let stopped = |name: &str| format!("trap '{}; exit 143' TERM", record(name));
    vec![
        format!("ok={}", record("ok")),
        format!("sync={}", record("sync")),
        format!("flaky={}; [ \"$SLUICE_ATTEMPT\" -gt 1 ]", record("flaky")),
        "boom=echo boom >&2; exit 1".to_owned(),
        // 65 (EX_DATAERR): no retry can help.
        "dead=echo no retry can help >&2; exit 65".to_owned(),
        format!("slow={}; sleep 60 & wait", stopped("slow-stopped")),
        format!(
            "hold={}; {}; while [ ! -e {out}/go ]; do sleep 0.05; done; {}",
            record("started"),
            stopped("hold-stopped"),
            record("held")
        ),
        format!("size=echo \"$SLUICE_JOB_ID $(wc -c | tr -d ' ')\" >> {out}/size"),
        // Progress and the result on descriptor 3 (see `sluice_worker::exec`).
        format!(
            "report=p=$(cat); echo \"progress 50 half of $p\" >&3; {}; \
             while [ ! -e {out}/go-report ]; do sleep 0.05; done; echo \"result done: $p\" >&3",
            record("report-started")
        ),
    ]
}

/// A test per client of `async fn $scenario(client: Client)`, on a
/// runtime with threads of its own: a test that waits for a log line
/// blocks its thread, and a [`Proxy`] runs on the test's runtime.
macro_rules! every_client {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn python() {
                super::$scenario(super::Client::Python).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn typescript() {
                super::$scenario(super::Client::TypeScript).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust() {
                super::$scenario(super::Client::Rust).await;
            }
        }
    };
}

fn run(mut command: Command) -> Output {
    let output = command
        .output()
        .expect("the client's interpreter must be installed");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
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

every_client!(hello_world_runs_a_job);
async fn hello_world_runs_a_job(client: Client) {
    let (file, mut command) = client.hello_world();
    if let Some(file) = file {
        let source = std::fs::read_to_string(client.dir().join(file)).unwrap();
        assert!(source.lines().count() <= 15, "{source}");
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
                .unwrap();
        assert!(
            readme.contains(&source),
            "the README shows the hello world as it is"
        );
    }
    let broker = BrokerProcess::start(&[]);
    command.env("SLUICE_BROKER", broker.url());
    let mut worker = Process::spawn(command);
    worker.wait_for_log(client.open_log());
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

every_client!(acks_retries_fails_and_times_out);
async fn acks_retries_fails_and_times_out(client: Client) {
    let out = scratch_dir(&format!("client-outcomes-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let worker = client.scenario_worker(&broker, &out, "30");
    let ok = broker.enqueue(job("ok", b"")).await;
    let sync = broker.enqueue(job("sync", b"")).await;
    let flaky = broker.enqueue(typed("flaky", 3, 60)).await;
    let boom = broker.enqueue(typed("boom", 1, 60)).await;
    let dead = broker.enqueue(typed("dead", 5, 60)).await;
    let slow = broker.enqueue(typed("slow", 1, 1)).await;

    broker.wait_for_state(&ok, pb::JobState::Succeeded).await;
    let done = broker.wait_for_state(&sync, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    if let Client::Python = client {
        // The plain function ran in the pool, not on the loop's thread.
        let thread = std::fs::read_to_string(out.join("sync-thread")).unwrap();
        assert!(thread.starts_with("sluice-job"), "{thread}");
    }
    let done = broker.wait_for_state(&flaky, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
    let failed = broker.wait_for_state(&boom, pb::JobState::Dead).await;
    assert_eq!(failed.last_error, client.boom());
    let failed = broker.wait_for_state(&dead, pb::JobState::Dead).await;
    assert_eq!(
        (failed.attempt, failed.last_error.as_str()),
        (1, "no retry can help")
    );
    let failed = broker.wait_for_state(&slow, pb::JobState::Dead).await;
    assert_eq!(failed.last_error, "timed out after 1s");
    // The handler saw the stop (a cancellation, or its signal aborted).
    wait_for_file(&out.join("slow-stopped"));
    assert!(worker.log().contains("job succeeded"), "{}", worker.log());
}

every_client!(extends_a_long_jobs_lease_and_stops_a_cancelled_one);
async fn extends_a_long_jobs_lease_and_stops_a_cancelled_one(client: Client) {
    let out = scratch_dir(&format!("client-leases-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let _worker = client.scenario_worker(&broker, &out, "3");
    // Held past two lease durations: only heartbeats keep it.
    let long = broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    tokio::time::sleep(Duration::from_secs(7)).await;
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
    wait_for_file(&out.join("hold-stopped"));
}

every_client!(drains_on_sigterm_and_exits_at_once_on_a_second_signal);
async fn drains_on_sigterm_and_exits_at_once_on_a_second_signal(client: Client) {
    let out = scratch_dir(&format!("client-drain-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let mut worker = client.scenario_worker(&broker, &out, "30");
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

    let out = scratch_dir(&format!("client-second-signal-{client:?}"));
    let mut worker = client.scenario_worker(&broker, &out, "30");
    broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    worker.signal(Signal::SIGTERM);
    worker.wait_for_log("draining");
    worker.signal(Signal::SIGTERM);
    let status = worker.wait_exit(WAIT).expect("exits at once");
    assert_eq!(status.code(), Some(130), "{}", worker.log());
}

every_client!(receives_a_payload_past_grpcs_default_message_limit);
/// A 6 MiB payload (the broker's `--max-payload` raised to 8 MiB) reaches
/// the handler whole: a client keeping gRPC's default receive limit
/// (4 MiB) would lose its session instead (protocol, C5).
async fn receives_a_payload_past_grpcs_default_message_limit(client: Client) {
    let out = scratch_dir(&format!("client-size-{client:?}"));
    let broker = BrokerProcess::start(&["--max-payload", "8388608"]);
    let _worker = client.scenario_worker(&broker, &out, "30");
    let payload = vec![b'x'; 6 << 20];
    let id = broker.enqueue(job("size", &payload)).await;
    wait_for_file(&out.join("size"));
    assert_eq!(lines(&out.join("size")), vec![format!("{id} {}", 6 << 20)]);
    // (GetJob would answer with the payload, past this harness's own limit.)
    eventually("the job is acked", || async {
        broker.queue_stats("default").await.acked_total == 1
    })
    .await;
}

every_client!(reports_progress_and_returns_a_result);
/// A handler's progress shows on the running job, and what it returns is
/// the SUCCEEDED job's result.
async fn reports_progress_and_returns_a_result(client: Client) {
    let out = scratch_dir(&format!("client-report-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let _worker = client.scenario_worker(&broker, &out, "30");
    let id = broker.enqueue(job("report", b"x")).await;
    wait_for_file(&out.join("report-started"));
    // Sent by the client's own task, soon after the handler handed it over.
    eventually("the progress report", || async {
        broker.job(&id).await.progress.is_some()
    })
    .await;
    let running = broker.job(&id).await;
    assert_eq!(running.state(), pb::JobState::Leased);
    let progress = running.progress.expect("progress while it runs");
    assert_eq!(
        (
            progress.percent,
            progress.message.as_str(),
            progress.attempt
        ),
        (50, "half of x", 1)
    );
    std::fs::write(out.join("go-report"), "").unwrap();
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(String::from_utf8_lossy(&done.result), "done: x");
    assert_eq!(done.progress.map(|p| p.percent), Some(50));
}

const PRODUCER_TOKEN: &str = "producer-token-0123456789abcdef";
const WORKER_TOKEN: &str = "worker-token-0123456789abcdef";

every_client!(over_tls_with_tokens_jobs_run_and_a_worker_without_a_token_is_refused);
/// Over TLS with tokens (the worker also over mTLS), with the Rust
/// worker's environment variables; a worker without a token is refused
/// and exits 1 saying so; the token is never logged.
async fn over_tls_with_tokens_jobs_run_and_a_worker_without_a_token_is_refused(client: Client) {
    let dir = scratch_dir(&format!("client-tls-{client:?}"));
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
    let cert = pki.client("client-worker").unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let tls = |command: &mut Command| {
        command
            .env("SLUICE_TLS_CA", &pki.ca)
            .env("SLUICE_TLS_CERT", &cert.cert)
            .env("SLUICE_TLS_KEY", &cert.key)
            .env_remove("SLUICE_TOKEN");
    };

    let mut refused = client.scenario_command(&url, &out, "30");
    tls(&mut refused);
    let mut refused = Process::spawn(refused);
    let status = refused.wait_exit(WAIT).expect("a refused worker exits");
    assert_eq!(status.code(), Some(1), "{}", refused.log());
    assert!(
        refused.log().contains(client.refused_log()),
        "{}",
        refused.log()
    );

    let mut command = client.scenario_command(&url, &out, "30");
    tls(&mut command);
    command.env("SLUICE_TOKEN", WORKER_TOKEN);
    let worker = Process::spawn(command);
    worker.wait_for_log(client.open_log());
    let mut produce = client.producer(&url, "ok");
    tls(&mut produce);
    produce.env("SLUICE_TOKEN", PRODUCER_TOKEN);
    let output = run(produce);
    let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    wait_for_file(&out.join("ok"));
    assert_eq!(lines(&out.join("ok")), vec![format!("{id} 1")]);
    assert!(
        !worker.log().contains(WORKER_TOKEN),
        "the token is never logged"
    );
}

every_client!(reconnects_after_the_broker_restarts);
/// A broker that restarts on the same address is picked up again without
/// restarting the worker.
async fn reconnects_after_the_broker_restarts(client: Client) {
    let out = scratch_dir(&format!("client-restart-{client:?}"));
    let mut broker = BrokerProcess::start(&[]);
    let worker = client.scenario_worker(&broker, &out, "30");
    let before = broker.enqueue(job("ok", b"")).await;
    broker
        .wait_for_state(&before, pb::JobState::Succeeded)
        .await;
    let addr = broker.crash();
    worker.wait_for_log("reconnecting to the broker");
    let broker = BrokerProcess::start_on(&addr, &[]);
    let after = broker.enqueue(job("ok", b"")).await;
    broker.wait_for_state(&after, pb::JobState::Succeeded).await;
    assert_eq!(lines(&out.join("ok")).len(), 2);
}

every_client!(never_holds_more_jobs_than_its_concurrency);
/// Credit: twelve long jobs wait, and the worker (concurrency 4) holds and
/// runs four at a time, never more, until they may end.
async fn never_holds_more_jobs_than_its_concurrency(client: Client) {
    let out = scratch_dir(&format!("client-credit-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let _worker = client.scenario_worker(&broker, &out, "30");
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(broker.enqueue(typed("hold", 1, 60)).await);
    }
    eventually("four jobs start", || async {
        lines(&out.join("started")).len() >= 4
    })
    .await;
    // Sampled a while: the count never passes the concurrency.
    for _ in 0..20 {
        assert_eq!(lines(&out.join("started")).len(), 4);
        assert_eq!(broker.queue_stats("default").await.leased, 4);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let workers = broker.workers().await;
    assert_eq!(
        (workers[0].max_in_flight, workers[0].in_flight),
        (4, 4),
        "{workers:?}"
    );
    std::fs::write(out.join("go"), "").unwrap();
    for id in &ids {
        broker.wait_for_state(id, pb::JobState::Succeeded).await;
    }
    assert_eq!(lines(&out.join("held")).len(), 12);
}

every_client!(a_broker_restart_mid_job_in_memory);
/// A memory-only broker killed while a job runs comes back without it:
/// the attempt is stopped (its lease is unknown) and not reported, and the
/// worker takes new jobs again.
async fn a_broker_restart_mid_job_in_memory(client: Client) {
    broker_restart_mid_job(client, false).await;
}

every_client!(a_broker_restart_mid_job_on_a_data_dir);
/// A broker on `--data-dir` killed while a job runs gives the job back
/// (leases are not durable): the old attempt is stopped without a report,
/// and the job runs again, once, to its end.
async fn a_broker_restart_mid_job_on_a_data_dir(client: Client) {
    broker_restart_mid_job(client, true).await;
}

async fn broker_restart_mid_job(client: Client, durable: bool) {
    let name = format!("client-restart-mid-job-{durable}-{client:?}");
    let out = scratch_dir(&name);
    let data = scratch_dir(&format!("{name}-data"));
    let data = data.to_str().unwrap();
    let flags: &[&str] = if durable { &["--data-dir", data] } else { &[] };
    let mut broker = BrokerProcess::start(flags);
    // Heartbeats every second: the lost lease is noticed at once.
    let worker = client.scenario_worker(&broker, &out, "3");
    let id = broker.enqueue(typed("hold", 3, 60)).await;
    wait_for_file(&out.join("started"));
    let addr = broker.crash();
    let broker = BrokerProcess::start_on(&addr, flags);
    let back = std::time::Instant::now();
    // The old attempt's heartbeat finds its lease unknown: it stops.
    wait_for_file(&out.join("hold-stopped"));
    if durable {
        // The job runs again: a second start, then it may end.
        eventually("the job runs again", || async {
            lines(&out.join("started")).len() == 2
        })
        .await;
        std::fs::write(out.join("go"), "").unwrap();
        let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
        assert_eq!(done.attempt, 1, "the broker's death cost no attempt");
        assert_eq!(lines(&out.join("held")), vec![format!("{id} 1")]);
    } else {
        assert_eq!(
            broker
                .admin()
                .await
                .get_job(pb::GetJobRequest { job_id: id.clone() })
                .await
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
    }
    let next = broker.enqueue(job("ok", b"")).await;
    broker.wait_for_state(&next, pb::JobState::Succeeded).await;
    println!(
        "{client:?}: taking jobs again {:.1} s after the broker was back",
        back.elapsed().as_secs_f64()
    );
    let acked = broker.queue_stats("default").await.acked_total;
    assert_eq!(acked, if durable { 2 } else { 1 }, "{}", worker.log());
}

every_client!(a_cut_connection_is_replaced_and_the_running_job_ends_once);
/// A proxy drops the connection and refuses new ones for 2 s while a job
/// runs: the worker reconnects, the job keeps its lease and is acked once.
async fn a_cut_connection_is_replaced_and_the_running_job_ends_once(client: Client) {
    let out = scratch_dir(&format!("client-cut-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let proxy = Proxy::start(&broker.addr).await;
    // A heartbeat every 3.3 s: the channel's own reconnection after a
    // refused connect (about a second in grpcio and grpc-js) fits between
    // them with room on a loaded machine; a 4 s lease did not.
    let worker = client.scenario_worker_at(&proxy.url(), &out, "10");
    let id = broker.enqueue(typed("hold", 1, 60)).await;
    wait_for_file(&out.join("started"));
    proxy.cut(Duration::from_secs(2));
    worker.wait_for_log("reconnecting to the broker");
    // Past the lease: only heartbeats that got through keep it.
    tokio::time::sleep(Duration::from_secs(11)).await;
    std::fs::write(out.join("go"), "").unwrap();
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    let stats = broker.queue_stats("default").await;
    assert_eq!((stats.acked_total, stats.expired_total), (1, 0));
    assert_eq!(lines(&out.join("held")), vec![format!("{id} 1")]);
}

every_client!(a_connection_that_dies_silently_is_noticed);
/// A proxy freezes the connection (nothing passes, nothing closes): an idle
/// worker's keepalive notices within two rounds, it reconnects, and the
/// next job runs. A worker on a dead stream never sits idle for good.
async fn a_connection_that_dies_silently_is_noticed(client: Client) {
    let out = scratch_dir(&format!("client-silent-{client:?}"));
    let broker = BrokerProcess::start(&[]);
    let proxy = Proxy::start(&broker.addr).await;
    let worker = client.scenario_worker_at(&proxy.url(), &out, "30");
    proxy.freeze();
    // Two keepalive rounds at most, with room for a slow machine.
    let keepalive = Duration::from_secs(45);
    worker
        .try_wait_for_log_within("reconnecting to the broker", keepalive)
        .unwrap();
    // The new session opens; the broker's own keepalive closes the frozen
    // one, which would otherwise be sent the next job.
    let deadline = std::time::Instant::now() + keepalive;
    loop {
        let workers = broker.workers().await;
        if workers.len() == 1 && worker.log().matches(client.open_log()).count() >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{workers:?}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = broker.enqueue(job("ok", b"")).await;
    broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(lines(&out.join("ok")), vec![format!("{id} 1")]);
}

every_client!(a_stale_lease_after_a_pause_is_stopped_and_not_reported);
/// A worker paused (SIGSTOP) past its job's lease: the broker gives the job
/// to the next attempt; the resumed worker stops the stale one without a
/// report, and the job succeeds once, on its second attempt.
async fn a_stale_lease_after_a_pause_is_stopped_and_not_reported(client: Client) {
    let out = scratch_dir(&format!("client-pause-{client:?}"));
    let broker = BrokerProcess::start(&["--backoff-initial", "1s", "--backoff-max", "1s"]);
    let worker = client.scenario_worker(&broker, &out, "2");
    let id = broker.enqueue(typed("hold", 3, 60)).await;
    wait_for_file(&out.join("started"));
    worker.signal(Signal::SIGSTOP);
    eventually("the lease expires", || async {
        broker.queue_stats("default").await.expired_total == 1
    })
    .await;
    worker.signal(Signal::SIGCONT);
    wait_for_file(&out.join("hold-stopped"));
    eventually("the second attempt starts", || async {
        lines(&out.join("started")).len() == 2
    })
    .await;
    std::fs::write(out.join("go"), "").unwrap();
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
    let stats = broker.queue_stats("default").await;
    assert_eq!(
        (stats.acked_total, stats.nacked_total, stats.expired_total),
        (1, 0, 1)
    );
    assert_eq!(lines(&out.join("held")), vec![format!("{id} 2")]);
}

// What is each client's own.

#[test]
fn python_units_pass() {
    let output = run(Client::Python.command(&["tests/check_units.py"]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("units pass"));
}

#[test]
fn python_stubs_match_the_proto() {
    let output = run(Client::Python.command(&["tests/check_stubs.py"]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("4 stubs match proto/"));
}

#[test]
fn python_package_type_checks() {
    run(Client::Python.command(&["-m", "mypy", "sluice_client", "examples", "tests"]));
}

#[test]
fn python_package_installs_with_pip_from_its_folder() {
    let target = scratch_dir("python-install");
    run(Client::Python.command(&[
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--target",
        target.to_str().unwrap(),
        ".",
    ]));
    // Imported from the installed copy, not the source folder.
    let mut import = Command::new("python3");
    import
        .args(["-c", "import sluice_client; print(sluice_client.__file__)"])
        .current_dir(&target)
        .env("PYTHONPATH", &target);
    let file = String::from_utf8(run(import).stdout).unwrap();
    assert!(file.starts_with(target.to_str().unwrap()), "{file}");
    assert!(target.join("sluice_client/py.typed").exists());
    assert!(
        target
            .join("sluice_client/_proto/sluice/v1/broker_pb2.pyi")
            .exists()
    );
}

#[test]
fn typescript_package_type_checks_and_its_unit_tests_pass() {
    let client = Client::TypeScript;
    run(client.command(&["node_modules/typescript/bin/tsc", "-p", ".", "--noEmit"]));
    let output = run(client.command(&["--test", "test/units.test.mjs"]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("# fail 0"));
}

/// The jobs each client's producers enqueued (`ids`): "one" with key
/// `k1` and header `lang`, "two" on queue `other` with priority 5 and a
/// 90 s timeout, "three" from a batch whose other job was refused, "four"
/// on a stream after 100 keyed jobs (50 keys) and a refusal.
async fn check_produced(broker: &BrokerProcess, ids: &[String], lang: &str) {
    assert_eq!(ids.len(), 4, "{ids:?}");
    let first = broker.job(&ids[0]).await;
    assert_eq!(first.payload.as_ref(), b"one");
    assert_eq!(first.headers.get("lang").map(String::as_str), Some(lang));
    let second = broker.job(&ids[1]).await;
    assert_eq!((second.queue.as_str(), second.priority), ("other", 5));
    assert_eq!(second.timeout.unwrap().seconds, 90);
    assert_eq!(broker.job(&ids[2]).await.payload.as_ref(), b"three");
    assert_eq!(broker.job(&ids[3]).await.payload.as_ref(), b"four");
    let streamed = broker.queue_stats("default").await;
    // one, three, four, and 50 streamed jobs (the other 50 duplicates).
    assert_eq!(streamed.enqueued_total, 53, "{streamed:?}");
}

fn ids_of(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn python_producers_enqueue_one_job_and_a_batch() {
    let broker = BrokerProcess::start(&[]);
    let script = r#"
import asyncio, sys
from sluice_client import AsyncProducer, BrokerError, JobSpec, Producer
url = sys.argv[1]
with Producer(broker=url) as p:
    first = p.enqueue("t", b"one", idempotency_key="k1", headers={"lang": "py"})
    again = p.enqueue("t", b"one", idempotency_key="k1")
    assert again.duplicate and again.job_id == first.job_id, again
    print(first.job_id)
async def main():
    async with AsyncProducer(broker=url) as p:
        one = await p.enqueue("t", b"two", queue="other", priority=5, timeout=90)
        print(one.job_id)
        batch = await p.enqueue_batch([JobSpec("t", b"three"), JobSpec("", b"bad")])
        assert batch[0].error is None and batch[1].error is not None, batch
        assert batch[1].error.code.name == "INVALID_ARGUMENT", batch[1].error
        print(batch[0].job_id)
        # One stream, many jobs at once: a result each, a refusal alone.
        async with p.stream() as s:
            keyed = [s.enqueue("streamed", b"", idempotency_key=f"s{i % 50}") for i in range(100)]
            results = await asyncio.gather(*keyed)
            assert sum(not r.duplicate for r in results) == 50, results
            try:
                await s.enqueue("", b"bad")
                raise AssertionError("a job without a type was enqueued")
            except BrokerError as e:
                assert e.code.name == "INVALID_ARGUMENT", e
            print((await s.enqueue("t", b"four")).job_id)
asyncio.run(main())
"#;
    let output = run(Client::Python.command(&["-c", script, &broker.url()]));
    check_produced(&broker, &ids_of(&output), "py").await;
}

#[tokio::test]
async fn typescript_producer_enqueues_one_job_and_a_batch() {
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
// One stream, many jobs at once: a result each, a refusal alone.
const s = p.stream();
const results = await Promise.all(Array.from({ length: 100 }, (_, i) => s.enqueue({ jobType: "streamed", idempotencyKey: `s${i % 50}` })));
assert.equal(results.filter((r) => !r.duplicate).length, 50);
await assert.rejects(s.enqueue({ jobType: "", payload: "bad" }), (e) => e.code === 3);
const fourth = await s.enqueue({ jobType: "t", payload: "four" });
await s.close();
console.log([first.jobId, second.jobId, batch[0].jobId, fourth.jobId].join("\n"));
p.close();
"#;
    let output =
        run(Client::TypeScript.command(&["--input-type=module", "-e", script, &broker.url()]));
    check_produced(&broker, &ids_of(&output), "ts").await;
}
