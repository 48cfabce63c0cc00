//! The worker's timing constants that depend on each other, together, with
//! their relations checked at compile time.
//!
//! The chain, from the inside out, when a running job must stop (timeout,
//! operator cancel, lost lease, or the drain deadline):
//!
//! 1. The job task cancels the handler's context and gives it
//!    [`STOP_GRACE`] to return on its own.
//! 2. An exec handler answers by sending its process group SIGTERM and,
//!    [`KILL_GRACE`] later, SIGKILL, then reaps it: that fits within
//!    [`STOP_GRACE`], so an exec handler always returns by itself, with its
//!    processes gone, before its future would be dropped.
//! 3. A handler still running after [`STOP_GRACE`] is aborted; if it blocks
//!    its thread, the job task waits [`ABORT_GRACE`] more and then reports
//!    the job anyway.
//! 4. At the drain deadline the runner gives the jobs still running
//!    [`RELEASE_GRACE`] to stop and be released: longer than [`STOP_GRACE`]
//!    plus [`ABORT_GRACE`], so even a handler that ignores cancellation
//!    has been given up on by then, and longer than [`RELEASE_RETRY_FOR`],
//!    so the release of a job that stopped at once is retried in full.
//! 5. `main` then gives the runtime [`EXIT_GRACE`] to shut down. The
//!    default drain timeout, [`RELEASE_GRACE`] and [`EXIT_GRACE`] together
//!    fit in [`PROCESS_MANAGER_GRACE`], the time a process manager usually
//!    allows between SIGTERM and SIGKILL.
//!
//! Heartbeats come [`HEARTBEATS_PER_LEASE`] times per lease, so that one
//! lost heartbeat does not lose the lease.

use std::time::Duration;

use crate::defaults;

/// Between SIGTERM and SIGKILL to a stopped exec handler's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// How long a stopped handler gets to return on its own before its future
/// is dropped.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// How long the job task waits for an aborted handler task to end (it does
/// not when the handler blocks its thread) before it reports the job anyway.
pub const ABORT_GRACE: Duration = Duration::from_secs(1);

/// How long a release (of a job stopped by the drain, or of one that
/// arrived but was never started) is retried through connection loss: a
/// release must not hold up the exit.
pub const RELEASE_RETRY_FOR: Duration = Duration::from_secs(2);

/// How long the jobs still running at the drain deadline get to stop and
/// be released.
pub const RELEASE_GRACE: Duration = Duration::from_secs(4);

/// How long the `sluice-worker` binary lets its runtime shut down after the
/// worker returned, so that a blocking task (a DNS lookup) does not hold up
/// the exit.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);

/// The usual time between SIGTERM and SIGKILL of systemd and Kubernetes;
/// not the worker's to choose, but what its drain must fit in.
pub const PROCESS_MANAGER_GRACE: Duration = Duration::from_secs(30);

/// Longest a single unary call to the broker may take (enforced by the
/// client: the grpc-timeout header alone binds only the server), and so
/// the longest an exec job waits for its last progress report to be
/// answered before its Ack.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Heartbeats per lease duration: a job's lease is extended every
/// `lease_duration / HEARTBEATS_PER_LEASE`.
pub const HEARTBEATS_PER_LEASE: u32 = 3;

const _: () = assert!(
    KILL_GRACE.as_millis() < STOP_GRACE.as_millis(),
    "an exec handler must escalate to SIGKILL before its future is dropped"
);
const _: () = assert!(
    STOP_GRACE.as_millis() + ABORT_GRACE.as_millis() <= RELEASE_GRACE.as_millis(),
    "the drain must wait until every stopped handler has been given up on"
);
const _: () = assert!(
    RELEASE_RETRY_FOR.as_millis() < RELEASE_GRACE.as_millis(),
    "the drain must wait for the retries of a release"
);
const _: () = assert!(
    defaults::DRAIN_TIMEOUT.as_millis() + RELEASE_GRACE.as_millis() + EXIT_GRACE.as_millis()
        <= PROCESS_MANAGER_GRACE.as_millis(),
    "the default drain must end before a process manager kills the worker"
);
const _: () = assert!(
    HEARTBEATS_PER_LEASE >= 2,
    "one lost heartbeat must not lose the lease"
);
