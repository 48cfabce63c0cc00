//! The per-job supervisor: a tiny process between the worker and the job's
//! `sh -c`, so that no handler process outlives a worker that died.
//!
//! The worker starts its own executable with [`SUPERVISE_ARG`] as the leader
//! of a new process group; the supervisor runs the command in that group.
//! It asks Linux for a signal when its parent (the worker) dies
//! (`PR_SET_PDEATHSIG`) and answers it by killing its whole process group,
//! which takes down `sh` and everything `sh` forked (Debian's dash forks
//! even the last command, so a parent-death signal on `sh` alone would
//! miss its children). It ignores SIGTERM sent to the group, waits for the
//! command, and exits with its status (128 + N for signal N) for the worker.
//!
//! What remains possible: a process that leaves the group (`setsid`,
//! `setpgid`, a daemonizing double fork into a new session) escapes both
//! the worker's kills and this one.

use std::ffi::OsString;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp, getppid};
use tokio::signal::unix::{SignalKind, signal};

/// The first argument that turns an executable into a supervisor.
pub const SUPERVISE_ARG: &str = "__sluice_supervise";

/// The environment variable that carries the worker's pid, so that a
/// supervisor whose worker died before it armed the death signal notices.
pub const PARENT_PID_ENV: &str = "SLUICE_SUPERVISOR_PARENT";

/// If this process was started as a supervisor, supervises and exits;
/// otherwise returns. Call it first in `main` of any program that uses
/// [`crate::exec::ExecHandler`], before starting a runtime.
pub fn run_if_requested() {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == SUPERVISE_ARG) {
        let command: Vec<OsString> = args.collect();
        std::process::exit(supervise(&command));
    }
}

fn supervise(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        eprintln!("sluice supervisor: no command given");
        return 2;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice supervisor: {e}");
            return 2;
        }
    };
    runtime.block_on(async {
        // Handlers first: the death signal must not find the default action.
        let (Ok(mut parent_died), Ok(mut terminate)) = (
            signal(SignalKind::user_defined1()),
            signal(SignalKind::terminate()),
        ) else {
            eprintln!("sluice supervisor: cannot install signal handlers");
            return 2;
        };
        if nix::sys::prctl::set_pdeathsig(Some(Signal::SIGUSR1)).is_err() || parent_is_gone() {
            kill_group();
        }
        let mut child = match tokio::process::Command::new(program).args(args).spawn() {
            Ok(child) => child,
            Err(e) => {
                eprintln!("sluice supervisor: cannot run {program:?}: {e}");
                return 127;
            }
        };
        loop {
            tokio::select! {
                status = child.wait() => return status.map_or(1, exit_code),
                _ = parent_died.recv() => kill_group(),
                // Sent to the whole group by the worker: the command gets it
                // too; the supervisor stays to report its status.
                _ = terminate.recv() => {}
            }
        }
    })
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn parent_is_gone() -> bool {
    let expected = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    expected.is_some_and(|pid| getppid() != Pid::from_raw(pid))
}

fn kill_group() -> ! {
    let _ = killpg(getpgrp(), Signal::SIGKILL);
    // SIGKILL to our own group includes us; this is not reached.
    std::process::exit(137)
}
