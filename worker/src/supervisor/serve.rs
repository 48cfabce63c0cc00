//! The supervisor process (Linux): started once per worker, it runs every
//! exec job's command and outlives none of them. Three threads, no async
//! runtime:
//!
//! - the **requests** thread reads the worker's socket (standard input):
//!   a Start spawns `sh -c COMMAND` (`posix_spawn`) as the leader of a new
//!   process group, with the three descriptors that came with it as its
//!   standard input, standard error and descriptor 3, an empty signal mask and default
//!   dispositions (the supervisor blocks the signals its signals thread
//!   takes, and a mask is inherited: without this a command never saw the
//!   SIGTERM that stops it, only the SIGKILL after it); a Signal goes to a
//!   running job's group. End of file
//!   (the worker is gone, however it died) kills every job's group and
//!   exits.
//! - the **reaper** thread waits for children without reaping them
//!   (`waitid(WNOWAIT)`): when a job's leader exits, its group is killed
//!   while the leader is still an unreaped zombie (so the group's id
//!   cannot have been reused), then the leader is reaped and its exit
//!   reported. Other children (orphans of a command, reparented here
//!   because the supervisor is a child subreaper) are reaped as they end.
//! - the **signals** thread: the parent-death signal (SIGUSR1, armed with
//!   `PR_SET_PDEATHSIG`) kills every job's group and exits; SIGTERM,
//!   SIGINT and SIGHUP are ignored (a drain must not lose the exit
//!   statuses of the jobs it waits for).
//!
//! The supervisor refuses to run unless it leads its own process group:
//! it is the worker's child in a group of its own, never a process a
//! caller's signals to its group would reach. It is non-dumpable, since
//! it holds the environment of the jobs it starts.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::io::{IoSliceMut, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawnp};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, recvmsg};

use super::protocol::{self, Event, JobId, Request};
use super::{PARENT_PID_ENV, SUPERVISOR_ENV_PREFIX, exit_code_of};

/// The signals only the signals thread takes (blocked in every other
/// thread): the parent-death signal, and those a drain must not act on.
const TAKEN_SIGNALS: [Signal; 4] = [
    Signal::SIGUSR1,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
];

/// Jobs running, by the pid of their leader (their group's id).
#[derive(Default)]
struct Jobs {
    running: HashMap<i32, JobId>,
    /// Children spawned so far: the reaper, finding none, sleeps until
    /// this moves.
    spawns: u64,
}

struct Shared {
    /// The commands' environment: the supervisor's, less its own variables
    /// (`SLUICE_SUPERVISOR_*`), each as its name and its `NAME=VALUE`
    /// entry, read and encoded once rather than for every job.
    base_env: Vec<(OsString, CString)>,
    jobs: Mutex<Jobs>,
    /// Wakes the reaper when a child is spawned.
    spawned: Condvar,
    /// The events' way back to the worker.
    events: Mutex<UnixStream>,
}

impl Shared {
    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, event: &Event) {
        let mut frame = Vec::new();
        protocol::encode_event(event, &mut frame);
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        // The worker is gone if this fails: the requests thread sees it.
        let _ = events.write_all(&frame);
    }

    /// SIGKILL to every running job's group.
    fn kill_all(&self) {
        for &leader in self.jobs().running.keys() {
            let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
        }
    }
}

/// Runs the supervisor until its worker is gone; returns the exit code.
pub(super) fn serve() -> i32 {
    if getpgrp() != getpid() {
        eprintln!(
            "sluice supervisor: refusing to run outside a process group of its own \
             (it is started by sluice-worker, as the leader of a new group)"
        );
        return 2;
    }
    // Before any thread: every thread inherits the mask, and only the
    // signals thread takes these.
    let signals: SigSet = TAKEN_SIGNALS.into_iter().collect();
    if signals.thread_block().is_err()
        || nix::sys::prctl::set_pdeathsig(Some(Signal::SIGUSR1)).is_err()
    {
        eprintln!("sluice supervisor: cannot arm the parent-death signal");
        return 2;
    }
    let expected_parent = std::env::var(PARENT_PID_ENV)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if expected_parent.is_some_and(|pid| getppid() != Pid::from_raw(pid)) {
        // The worker died before the death signal was armed.
        return 2;
    }
    let _ = nix::sys::prctl::set_dumpable(false);
    // Best effort: without it, a command's orphans are reaped by init.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    // Standard input is the socket the worker made for us.
    let socket = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("sluice supervisor: {e}");
            return 2;
        }
    };
    let events = match socket.try_clone() {
        Ok(events) => events,
        Err(e) => {
            eprintln!("sluice supervisor: {e}");
            return 2;
        }
    };
    // Its own variables are not the commands'.
    let base_env = std::env::vars_os()
        .filter(|(name, _)| !name.to_string_lossy().starts_with(SUPERVISOR_ENV_PREFIX))
        .filter_map(|(name, value)| Some((name.clone(), env_entry(name, value).ok()?)))
        .collect();
    let shared = Arc::new(Shared {
        base_env,
        jobs: Mutex::default(),
        spawned: Condvar::new(),
        events: Mutex::new(events),
    });
    let reaper = shared.clone();
    let threads = [
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reap(&reaper)),
        std::thread::Builder::new().name("signals".into()).spawn({
            let shared = shared.clone();
            move || wait_for_signals(&shared, &signals)
        }),
    ];
    if threads.iter().any(Result::is_err) {
        eprintln!("sluice supervisor: cannot start its threads");
        return 2;
    }
    read_requests(&socket, &shared);
    // The worker is gone: so are its jobs.
    shared.kill_all();
    0
}

/// Reads and serves the worker's requests until its socket closes.
fn read_requests(socket: &UnixStream, shared: &Shared) {
    let mut buffer = Vec::new();
    let mut fds: std::collections::VecDeque<OwnedFd> = std::collections::VecDeque::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let message = match recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(message) => message,
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => return,
        };
        for received in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = received {
                fds.extend(received);
            }
        }
        let n = message.bytes;
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        loop {
            match protocol::decode_request(&mut buffer) {
                Ok(Some(request)) => serve_request(request, &mut fds, shared),
                Ok(None) => break,
                Err(why) => {
                    eprintln!("sluice supervisor: a bad request from the worker: {why}");
                    return;
                }
            }
        }
    }
}

fn serve_request(request: Request, fds: &mut std::collections::VecDeque<OwnedFd>, shared: &Shared) {
    match request {
        Request::Start { id, command, env } => {
            let (Some(stdin), Some(stderr), Some(reports)) =
                (fds.pop_front(), fds.pop_front(), fds.pop_front())
            else {
                shared.send(&Event::Failed {
                    id,
                    message: "the supervisor got no descriptors for the job".into(),
                });
                return;
            };
            // Held across the spawn: the reaper must not take the new
            // child for an orphan before it is known.
            let mut jobs = shared.jobs();
            match spawn_sh(&command, env, [&stdin, &stderr, &reports], &shared.base_env) {
                Ok(pid) => {
                    // Reaped by the reaper.
                    jobs.running.insert(pid.as_raw(), id);
                    jobs.spawns += 1;
                    drop(jobs);
                    shared.spawned.notify_one();
                }
                Err(message) => {
                    drop(jobs);
                    shared.send(&Event::Failed { id, message });
                }
            }
        }
        Request::Signal { id, signal } => {
            let Ok(signal) = Signal::try_from(signal) else {
                return;
            };
            let jobs = shared.jobs();
            // Only while its leader is unreaped: the group id is its own.
            if let Some((&leader, _)) = jobs.running.iter().find(|(_, job)| **job == id) {
                let _ = killpg(Pid::from_raw(leader), signal);
            }
        }
    }
}

/// Waits for children: see the module doc.
fn reap(shared: &Shared) {
    loop {
        let spawns_before = shared.jobs().spawns;
        let pid = match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
            Ok(status) => status.pid(),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // No child at all: sleep until the next spawn (counted, so
                // that one made meanwhile is not missed).
                let mut jobs = shared.jobs();
                while jobs.spawns == spawns_before {
                    jobs = shared
                        .spawned
                        .wait(jobs)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                continue;
            }
        };
        let Some(pid) = pid else { continue };
        let job = shared.jobs().running.get(&pid.as_raw()).copied();
        if job.is_some() {
            // What the command left in its group goes with it, while the
            // leader's pid (the group's id) is still reserved.
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let code = waitpid(pid, None).map_or(1, exit_code_of);
        if let Some(id) = job {
            shared.jobs().running.remove(&pid.as_raw());
            shared.send(&Event::Exited { id, code });
        }
    }
}

/// `NAME=VALUE`, as an environment entry for `posix_spawn`.
fn env_entry(name: OsString, value: OsString) -> Result<CString, std::ffi::NulError> {
    let mut bytes = name.into_vec();
    bytes.push(b'=');
    bytes.extend(value.into_vec());
    CString::new(bytes)
}

/// Starts `sh -c COMMAND` with the job's `env` over `base_env` (the
/// supervisor's own, less its variables), `stdin`, `stderr` and `reports` as descriptors 0, 2
/// and 3 (1 is the supervisor's, the worker's standard output), as the leader of a new
/// process group, with no signal blocked and SIGTERM, SIGINT, SIGHUP,
/// SIGUSR1 and SIGPIPE at their default action.
fn spawn_sh(
    command: &OsString,
    env: Vec<(OsString, OsString)>,
    [stdin, stderr, reports]: [&OwnedFd; 3],
    base_env: &[(OsString, CString)],
) -> Result<Pid, String> {
    let nul = |_| "a NUL byte in the command or its environment".to_owned();
    let args = [
        CString::new("sh").map_err(nul)?,
        CString::new("-c").map_err(nul)?,
        CString::new(command.as_bytes()).map_err(nul)?,
    ];
    // The job's variables win over the supervisor's of the same name.
    let mut envp: Vec<CString> = base_env
        .iter()
        .filter(|(name, _)| !env.iter().any(|(n, _)| n == name))
        .map(|(_, entry)| entry.clone())
        .collect();
    for (name, value) in env {
        envp.push(env_entry(name, value).map_err(nul)?);
    }
    let failed = |what: &str, e: nix::Error| format!("cannot start sh ({what}): {e}");
    let mut actions = PosixSpawnFileActions::init().map_err(|e| failed("file actions", e))?;
    actions
        .add_dup2(stdin.as_raw_fd(), 0)
        .and_then(|()| actions.add_dup2(stderr.as_raw_fd(), 2))
        .and_then(|()| actions.add_dup2(reports.as_raw_fd(), 3))
        .map_err(|e| failed("file actions", e))?;
    let mut attr = PosixSpawnAttr::init().map_err(|e| failed("attributes", e))?;
    // Those the supervisor blocks, and SIGPIPE, which Rust ignores.
    let defaults: SigSet = TAKEN_SIGNALS.into_iter().chain([Signal::SIGPIPE]).collect();
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .and_then(|()| attr.set_pgroup(Pid::from_raw(0)))
    .and_then(|()| attr.set_sigmask(&SigSet::empty()))
    .and_then(|()| attr.set_sigdefault(&defaults))
    .map_err(|e| failed("attributes", e))?;
    posix_spawnp(c"sh", &actions, &attr, &args, &envp).map_err(|e| failed("spawn", e))
}

/// Serves the blocked signals: see the module doc.
fn wait_for_signals(shared: &Shared, signals: &SigSet) {
    loop {
        if let Ok(Signal::SIGUSR1) = signals.wait() {
            shared.kill_all();
            std::process::exit(137);
        }
    }
}
