//! The process harness: runs the real `sluice-broker` and `sluice-worker`
//! binaries (built by `cargo test --workspace` beside the test
//! executables) on 127.0.0.1, captures their logs, and kills them on drop.
//! Every wait is bounded by [`WAIT`].

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::transport::Channel;

use crate::WAIT;

/// The path of a workspace binary, next to the test executable's directory.
/// `cargo test` does not build binaries of other packages, so a binary
/// older than the sources it is built from would test old code: that
/// fails here, saying how to rebuild.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    let rebuild = "run the suite with `scripts/test`, which builds it (or `cargo build --workspace --all-targets` first)";
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is missing: {rebuild}", path.display()));
    // Cargo lists the files a binary was built from in `<binary>.d`.
    let dep_info = std::fs::read_to_string(path.with_extension("d")).unwrap_or_default();
    let sources = dep_info
        .split_once(": ")
        .map_or("", |(_, sources)| sources)
        .split_whitespace()
        .map(Path::new);
    for source in sources {
        let changed = std::fs::metadata(source).and_then(|m| m.modified());
        if changed.is_ok_and(|changed| changed > built) {
            panic!(
                "{} is older than {}: {rebuild}",
                path.display(),
                source.display()
            );
        }
    }
    path
}

/// A child process whose standard error is collected as its log.
pub struct Process {
    child: Child,
    log: Arc<Mutex<Log>>,
}

/// What a process wrote to standard error so far.
#[derive(Default)]
struct Log {
    text: String,
    /// Standard error reached its end: the process exited (or closed it).
    closed: bool,
}

impl Process {
    /// Spawns `command` and collects its standard error.
    pub fn spawn(command: Command) -> Self {
        Self::try_spawn(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Process::spawn`], saying why it could not start.
    ///
    /// # Errors
    /// When the program cannot be started.
    pub fn try_spawn(mut command: Command) -> Result<Self, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {:?}: {e}", command.get_program()))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.text.push_str(&line);
                log.text.push('\n');
            }
            sink.lock().unwrap().closed = true;
        });
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit, at most `timeout`, and then for its
    /// log to be read to the end (so that assertions on the log after an
    /// exit see all of it; bounded too, since a surviving child of the
    /// process may hold its standard error open).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let drained_by = Instant::now() + Duration::from_secs(2);
                while !self.log.lock().unwrap().closed && Instant::now() < drained_by {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().text.clone()
    }

    /// The URL of `/metrics`, from the line a binary started with
    /// `--http-addr` logs (`metrics at GET /metrics http_addr=...`).
    pub fn metrics_url(&self) -> String {
        const LINE: &str = "metrics at GET /metrics";
        let log = self.wait_for_log(LINE);
        let addr = log
            .lines()
            .find(|l| l.contains(LINE))
            .and_then(|l| l.split("http_addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no http_addr in the log:\n{log}"));
        format!("http://{addr}/metrics")
    }

    /// The `--http-addr` it listens on, from the same line as
    /// [`Process::metrics_url`].
    pub fn http_addr(&self) -> std::net::SocketAddr {
        let url = self.metrics_url();
        let addr = url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics");
        addr.parse()
            .unwrap_or_else(|e| panic!("{addr} is not an address: {e}"))
    }

    /// Waits until its log contains `needle`; returns that log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.try_wait_for_log(needle)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Process::wait_for_log`], saying why the line never came: the
    /// process exited first (noticed at once), or [`WAIT`] passed.
    ///
    /// # Errors
    /// Why `needle` never appeared, with the whole log.
    pub fn try_wait_for_log(&self, needle: &str) -> Result<String, String> {
        self.try_wait_for_log_within(needle, WAIT)
    }

    /// Like [`Process::try_wait_for_log`], waiting up to `wait` (a broker
    /// recovering a large data directory).
    ///
    /// # Errors
    /// Why `needle` never appeared, with the whole log.
    pub fn try_wait_for_log_within(&self, needle: &str, wait: Duration) -> Result<String, String> {
        let deadline = Instant::now() + wait;
        loop {
            let (log, closed) = {
                let log = self.log.lock().unwrap();
                (log.text.clone(), log.closed)
            };
            if log.contains(needle) {
                return Ok(log);
            }
            if closed {
                return Err(format!(
                    "the process exited before logging {needle:?}:\n{log}"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "log never contained {needle:?} in {wait:?}:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `sluice-broker` on 127.0.0.1.
pub struct BrokerProcess {
    pub process: Process,
    pub addr: String,
}

impl BrokerProcess {
    /// Starts the broker on an ephemeral port with extra flags.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts the broker on `addr` with extra flags and waits until it listens.
    pub fn start_on(addr: &str, args: &[&str]) -> Self {
        let mut command = Command::new(binary("sluice-broker"));
        command
            .args(["--addr", addr])
            .args(args)
            .env("RUST_LOG", "info,sluice_broker=debug");
        Self::spawn(command)
    }

    /// Runs `command`, which starts the broker, and waits until it listens.
    pub fn spawn(command: Command) -> Self {
        Self::launch(command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`BrokerProcess::spawn`], saying why the broker is not listening
    /// (for the load generator, which reports instead of panicking).
    /// `command` must log at info for `sluice_broker`.
    ///
    /// # Errors
    /// When the broker could not start, exited, or did not listen within [`WAIT`].
    pub fn launch(command: Command) -> Result<Self, String> {
        const LISTENING: &str = "sluice broker listening";
        let process = Process::try_spawn(command)?;
        let log = process.try_wait_for_log(LISTENING)?;
        let addr = log
            .lines()
            .find(|l| l.contains(LISTENING))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| format!("no address in the broker's log:\n{log}"))?
            .to_owned();
        Ok(Self { process, addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of `/metrics`, for a broker started with `--http-addr`.
    pub fn metrics_url(&self) -> String {
        self.process.metrics_url()
    }

    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect_timeout(WAIT)
            .connect()
            .await
            .unwrap()
    }

    pub async fn broker(&self) -> BrokerClient<Channel> {
        BrokerClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    pub fn signal(&self, signal: Signal) {
        self.process.signal(signal);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// Kills the broker with SIGKILL (a crash: no drain, no last write)
    /// and waits for its exit; returns its address, for a broker started
    /// again there with [`BrokerProcess::start_on`].
    pub fn crash(&mut self) -> String {
        self.signal(Signal::SIGKILL);
        self.wait_exit(WAIT).expect("SIGKILL ends the broker");
        self.addr.clone()
    }

    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn wait_for_log(&self, needle: &str) -> String {
        self.process.wait_for_log(needle)
    }

    /// Enqueues a job and returns its id.
    pub async fn enqueue(&self, req: pb::EnqueueRequest) -> String {
        self.broker()
            .await
            .enqueue(req)
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    /// Leases the next job of `queue` and `job_type` on a stream of its own
    /// (one slot), waiting at most [`WAIT`]. The stream has ended, as the
    /// broker sees it, when this returns (ListWorkers no longer lists it), so
    /// what the caller does next cannot race its closing; the lease stays
    /// with the job.
    pub async fn lease_one(&self, queue: &str, job_type: &str) -> pb::LeasedJob {
        static STREAMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let worker_id = format!(
            "lease-one-{}",
            STREAMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut stream = self
            .broker()
            .await
            .lease(pb::LeaseRequest {
                worker_id: worker_id.clone(),
                queues: vec![queue.into()],
                job_types: vec![job_type.into()],
                max_in_flight: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let leased = match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(leased))) => leased,
            other => panic!("no job of {queue}/{job_type} was leased in {WAIT:?}: {other:?}"),
        };
        drop(stream);
        let deadline = Instant::now() + WAIT;
        loop {
            let workers = self.workers().await;
            if !workers.iter().any(|w| w.worker_id == worker_id) {
                return leased;
            }
            assert!(
                Instant::now() < deadline,
                "the broker still lists {worker_id} {WAIT:?} after its stream was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The open Lease streams and Work sessions (ListWorkers).
    pub async fn workers(&self) -> Vec<pb::WorkerInfo> {
        self.admin()
            .await
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    /// The Stats row of `queue`, which must exist.
    pub async fn queue_stats(&self, queue: &str) -> pb::QueueStats {
        let stats = self
            .admin()
            .await
            .stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner();
        stats
            .queues
            .into_iter()
            .find(|q| q.queue == queue)
            .unwrap_or_else(|| panic!("Stats has no row for queue {queue:?}"))
    }

    pub async fn job(&self, job_id: &str) -> pb::Job {
        let req = pb::GetJobRequest {
            job_id: job_id.into(),
        };
        self.admin().await.get_job(req).await.unwrap().into_inner()
    }

    /// Waits until `job_id` is in `state`; returns the job.
    pub async fn wait_for_state(&self, job_id: &str, state: pb::JobState) -> pb::Job {
        let mut admin = self.admin().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let req = pb::GetJobRequest {
                job_id: job_id.into(),
            };
            let job = admin.get_job(req).await.unwrap().into_inner();
            if job.state() == state {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job never reached {state:?}: {job:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A `sluice-worker` connected to a broker.
pub struct WorkerProcess {
    pub process: Process,
}

impl WorkerProcess {
    /// Starts a worker of `broker` with extra flags and waits until its lease stream is open.
    pub fn start(broker: &BrokerProcess, args: &[&str]) -> Self {
        Self::start_at(&broker.url(), args, &[])
    }

    /// Starts a worker of the broker at `url` with extra flags and
    /// environment, and waits until its lease stream is open.
    pub fn start_at(url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let worker = Self::spawn_at(url, args, env);
        worker.process.wait_for_log("lease stream open");
        worker
    }

    /// Starts a worker of `broker` without waiting for anything.
    pub fn spawn(broker: &BrokerProcess, args: &[&str]) -> Self {
        Self::spawn_at(&broker.url(), args, &[])
    }

    /// Starts a worker of the broker at `url` without waiting for anything.
    pub fn spawn_at(url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_command(Self::command(url, args, env))
    }

    /// The command that starts a worker of the broker at `url`, for a test
    /// that changes it (whom it runs as, say) before [`WorkerProcess::spawn_command`].
    pub fn command(url: &str, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(binary("sluice-worker"));
        command
            .args(["--broker", url])
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied());
        command
    }

    /// Runs `command`, which starts a worker.
    pub fn spawn_command(command: Command) -> Self {
        Self {
            process: Process::spawn(command),
        }
    }
}
