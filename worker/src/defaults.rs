//! The worker's defaults, one definition each: the [`crate::WorkerBuilder`]
//! starts from them and the `sluice-worker` binary shows them as its flag
//! defaults (the README's table is checked against `--help` by a test).

use std::time::Duration;

/// The broker a worker connects to unless told otherwise: the broker's own
/// default address.
pub const BROKER_URL: &str = "http://127.0.0.1:50051";
/// The environment variable that holds the worker's token (there is no
/// flag for it: a flag's value shows in `ps`). Exec handlers do not inherit
/// it.
pub const TOKEN_ENV: &str = "SLUICE_TOKEN";
/// Jobs run at once.
pub const CONCURRENCY: usize = 1;
/// The lease asked for each job; heartbeats extend it every third of it.
pub const LEASE_DURATION: Duration = Duration::from_secs(30);
/// How long a drain waits for running jobs: below the 30 s a process
/// manager (systemd, Kubernetes) usually grants between SIGTERM and SIGKILL.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(25);
