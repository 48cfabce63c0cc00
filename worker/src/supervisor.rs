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
//! command, kills what the command left running in the group, reaps it (it
//! is a child subreaper, so orphans of the command become its children
//! rather than init's, which in a container may be the worker itself), and
//! exits with the command's status (128 + N for signal N) for the worker.
//!
//! What remains possible: a process that leaves the group (`setsid`,
//! `setpgid`, a daemonizing double fork into a new session) escapes both
//! the worker's kills and this one.
//!
//! Because the supervisor is the embedding program itself, a program that
//! forgot [`run_if_requested`] would start itself once per job. So
//! [`run_if_requested`] records that it ran, and
//! [`crate::exec::ExecHandler::new`] refuses to build a handler before it
//! did. The supervisor needs Linux (`PR_SET_PDEATHSIG`, child subreaper,
//! `/proc`); elsewhere exec handlers are refused when they are built.

use std::ffi::OsString;
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(target_os = "linux")]
use linux::supervise;

/// The first argument that turns an executable into a supervisor.
pub const SUPERVISE_ARG: &str = "__sluice_supervise";

/// The environment variable that carries the worker's pid, so that a
/// supervisor whose worker died before it armed the death signal notices.
pub const PARENT_PID_ENV: &str = "SLUICE_SUPERVISOR_PARENT";

/// The prefix of the supervisor's own variables, which it removes before
/// starting the command.
pub const SUPERVISOR_ENV_PREFIX: &str = "SLUICE_SUPERVISOR_";

/// Set by [`run_if_requested`]: exec handlers may be built only once this
/// program can serve as their supervisor.
static CALLED: AtomicBool = AtomicBool::new(false);

/// If this process was started as a supervisor, supervises and exits;
/// otherwise returns. Call it first in `main` of any program that uses
/// [`crate::exec::ExecHandler`], before starting a runtime: building an
/// exec handler fails until it has been called.
pub fn run_if_requested() {
    // The flag publishes nothing else: relaxed suffices.
    CALLED.store(true, Ordering::Relaxed);
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == SUPERVISE_ARG) {
        let command: Vec<OsString> = args.collect();
        std::process::exit(supervise(&command));
    }
}

/// Whether [`run_if_requested`] ran in this process.
pub(crate) fn was_called() -> bool {
    CALLED.load(Ordering::Relaxed)
}

/// Not reached: exec handlers, which start supervisors, are refused here.
#[cfg(not(target_os = "linux"))]
fn supervise(_command: &[OsString]) -> i32 {
    eprintln!("sluice supervisor: exec handlers need Linux");
    2
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// The supervisor proper: `PR_SET_PDEATHSIG`, child subreaper and `/proc`
/// are Linux's.
#[cfg(target_os = "linux")]
mod linux {
    use std::ffi::OsString;

    use nix::sys::signal::{Signal, kill, killpg};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::{Pid, getpgrp, getpid, getppid};
    use tokio::signal::unix::{SignalKind, signal};

    use super::{PARENT_PID_ENV, SUPERVISOR_ENV_PREFIX, exit_code};

    pub(super) fn supervise(command: &[OsString]) -> i32 {
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
            // Best effort: without it, orphans are reaped by init instead.
            let _ = nix::sys::prctl::set_child_subreaper(true);
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            // Its own variables are not the command's (`hardening`).
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with(SUPERVISOR_ENV_PREFIX) {
                    command.env_remove(name);
                }
            }
            let mut child = match command.spawn() {
                Ok(child) => child,
                Err(e) => {
                    eprintln!("sluice supervisor: cannot run {program:?}: {e}");
                    return 127;
                }
            };
            loop {
                tokio::select! {
                    status = child.wait() => {
                        sweep_group();
                        return status.map_or(1, exit_code);
                    }
                    _ = parent_died.recv() => kill_group(),
                    // Sent to the whole group by the worker: the command gets it
                    // too; the supervisor stays to report its status.
                    _ = terminate.recv() => {}
                }
            }
        })
    }

    fn parent_is_gone() -> bool {
        let expected = std::env::var(PARENT_PID_ENV)
            .ok()
            .and_then(|p| p.parse::<i32>().ok());
        expected.is_some_and(|pid| getppid() != Pid::from_raw(pid))
    }

    /// Kills every other live process of this process group and reaps the
    /// children this supervisor has (its command's orphans included).
    fn sweep_group() {
        let (me, group) = (getpid(), getpgrp());
        for pid in group_members(group) {
            if pid != me {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The live (not zombie) processes whose process group is `group`, from /proc.
    fn group_members(group: Pid) -> Vec<Pid> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    // After the parenthesised name: state, ppid, pgrp.
                    let mut fields = stat
                        .rsplit_once(')')
                        .map_or("", |(_, rest)| rest)
                        .split_whitespace();
                    let state = fields.next();
                    let pgrp = fields.nth(1).and_then(|p| p.parse::<i32>().ok());
                    state != Some("Z") && pgrp == Some(group.as_raw())
                })
            })
            .map(Pid::from_raw)
            .collect()
    }

    fn kill_group() -> ! {
        let _ = killpg(getpgrp(), Signal::SIGKILL);
        // SIGKILL to our own group includes us; this is not reached.
        std::process::exit(137)
    }
}
