//! The exec supervisor: one long-lived process per worker, between the
//! worker and its exec jobs' commands, so that no command outlives a
//! worker that died, and no process or runtime is started per job but the
//! command's own `sh`.
//!
//! The worker starts its own executable with [`SUPERVISE_ARG`] as the
//! leader of a new process group, on the first exec job (`client.rs`).
//! The supervisor (`serve.rs`) starts each command as `sh -c COMMAND`, the
//! leader of a process group of its own, and tells the worker how it
//! ended, or why it could not start (`protocol.rs`). It guarantees:
//!
//! - **No leftovers.** When a command's `sh` exits, the supervisor kills
//!   its whole group before reaping `sh` (whose pid is the group's id, so
//!   the id cannot have been reused), taking down what the command left
//!   running in it; orphans reparented to it (it is a child subreaper) are
//!   reaped.
//! - **Timeouts.** The worker's SIGTERM, then SIGKILL after the grace, go
//!   through the supervisor to the job's group, only while its leader is
//!   unreaped.
//! - **The worker's death.** When the worker dies, by any signal, the
//!   supervisor learns it twice over: its socket to the worker closes, and
//!   the parent-death signal (`PR_SET_PDEATHSIG`) arrives. Either kills
//!   every job's group, then the supervisor exits.
//! - **Its own group.** It refuses to run unless it leads its own process
//!   group, so that it is never a process whose group is its caller's.
//! - **No secrets.** It is started without the worker's `SLUICE_TOKEN`,
//!   drops its own `SLUICE_SUPERVISOR_*` variables before any command
//!   runs, and is non-dumpable (it holds the jobs' environments).
//!
//! What remains possible: a process that leaves its group (`setsid`,
//! `setpgid`, a daemonizing double fork into a new session) escapes the
//! group kills; it is still reaped by the supervisor if it ends.
//!
//! Because the supervisor is the embedding program itself, a program that
//! forgot [`run_if_requested`] would start itself as the supervisor. So
//! [`run_if_requested`] records that it ran, and
//! [`crate::exec::ExecHandler::new`] refuses to build a handler before it
//! did. The supervisor needs Linux (`PR_SET_PDEATHSIG`, child subreaper,
//! `waitid`); elsewhere exec handlers are refused when they are built.

#[cfg(target_os = "linux")]
mod client;
pub(crate) mod protocol;
#[cfg(target_os = "linux")]
mod serve;

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_os = "linux")]
pub(crate) use client::Supervisor;

/// The first argument that turns an executable into a supervisor.
pub const SUPERVISE_ARG: &str = "__sluice_supervise";

/// The environment variable that carries the worker's pid, so that a
/// supervisor whose worker died before it armed the death signal notices.
pub const PARENT_PID_ENV: &str = "SLUICE_SUPERVISOR_PARENT";

/// The prefix of the supervisor's own variables, which it removes before
/// starting any command.
pub const SUPERVISOR_ENV_PREFIX: &str = "SLUICE_SUPERVISOR_";

/// Set by [`run_if_requested`]: exec handlers may be built only once this
/// program can serve as their supervisor.
static CALLED: AtomicBool = AtomicBool::new(false);

/// If this process was started as a supervisor, supervises and exits;
/// otherwise returns. Call it first in `main` of any program that uses
/// [`crate::exec::ExecHandler`], before starting a runtime or a thread:
/// building an exec handler fails until it has been called.
pub fn run_if_requested() {
    // The flag publishes nothing else: relaxed suffices.
    CALLED.store(true, Ordering::Relaxed);
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == SUPERVISE_ARG)
    {
        std::process::exit(supervise());
    }
}

/// Whether [`run_if_requested`] ran in this process.
pub(crate) fn was_called() -> bool {
    CALLED.load(Ordering::Relaxed)
}

#[cfg(target_os = "linux")]
fn supervise() -> i32 {
    serve::serve()
}

/// Not reached: exec handlers, which start supervisors, are refused here.
#[cfg(not(target_os = "linux"))]
fn supervise() -> i32 {
    eprintln!("sluice supervisor: exec handlers need Linux");
    2
}

/// The exit code a shell would report for a child's `status`: its exit
/// status, or 128 + N for signal N.
#[cfg(target_os = "linux")]
fn exit_code_of(status: nix::sys::wait::WaitStatus) -> i32 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => 1,
    }
}
