//! The exec handler: runs a shell command per job, as `sluice-worker
//! --exec TYPE=COMMAND` does.
//!
//! The command runs as `sh -c COMMAND` under a [`crate::supervisor`], in a
//! process group of its own, with the payload on standard input and the job
//! in the environment (`SLUICE_JOB_ID`, `SLUICE_JOB_TYPE`, `SLUICE_QUEUE`,
//! `SLUICE_ATTEMPT`, `SLUICE_MAX_ATTEMPTS`, `SLUICE_HEADER_<NAME>`, and
//! `TRACEPARENT`/`TRACESTATE` from the job's trace headers), and
//! without the worker's `SLUICE_TOKEN` (its credential, not the job's). Exit 0
//! acks; exit 65 (`EX_DATAERR`) fails the job for good; any other exit or a
//! signal fails the attempt; the last 4 KiB of standard error become the
//! error. When the attempt is stopped (timeout, cancel, shutdown) the group
//! gets SIGTERM, then SIGKILL after [`KILL_GRACE`] (which fits within the
//! job task's stop grace, see [`crate::timing`]); when the command exits, the
//! supervisor kills what is left of its group.
//!
//! The supervisor is the embedding program itself, so an [`ExecHandler`]
//! can be built only on Linux and only after
//! [`crate::supervisor::run_if_requested`] ran.

use std::path::PathBuf;
use std::process::Stdio;

use sluice_trace::TraceContext;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;

use crate::error::WorkerError;
use crate::handler::{Handler, HandlerFuture, Job, JobContext, JobError, JobResult};
use crate::supervisor::{self, PARENT_PID_ENV, SUPERVISE_ARG, exit_code};

/// The exit status that means "the input is bad, retrying cannot help".
pub const EX_DATAERR: i32 = 65;
/// How much of standard error becomes the job's error.
pub const STDERR_TAIL: usize = 4096;
pub use crate::timing::KILL_GRACE;

/// Runs `sh -c COMMAND` for each job.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    command: String,
    supervisor: PathBuf,
}

impl ExecHandler {
    /// A handler running `command`; the current executable serves as the
    /// supervisor, so its `main` must call [`crate::supervisor::run_if_requested`]
    /// first. Building one makes this process non-dumpable
    /// ([`crate::hardening::hide_from_handlers`]): the commands run as its
    /// user, and must not read its environment or memory.
    ///
    /// # Errors
    /// [`WorkerError::ExecNeedsLinux`] off Linux,
    /// [`WorkerError::SupervisorNotInstalled`] when
    /// [`crate::supervisor::run_if_requested`] has not run,
    /// [`WorkerError::Hardening`] when the process cannot be made
    /// non-dumpable, and [`WorkerError::CurrentExe`] when the current
    /// executable's path cannot be found.
    pub fn new(command: impl Into<String>) -> Result<Self, WorkerError> {
        Self::with_supervisor(command.into(), supervisor::was_called())
    }

    /// [`ExecHandler::new`], told whether the supervisor is installed (a
    /// test cannot rely on a process-wide flag).
    fn with_supervisor(command: String, installed: bool) -> Result<Self, WorkerError> {
        if !cfg!(target_os = "linux") {
            return Err(WorkerError::ExecNeedsLinux);
        }
        if !installed {
            return Err(WorkerError::SupervisorNotInstalled);
        }
        crate::hardening::hide_from_handlers()?;
        Ok(Self {
            command,
            supervisor: std::env::current_exe().map_err(WorkerError::CurrentExe)?,
        })
    }
}

impl Handler for ExecHandler {
    fn call(&self, job: Job, ctx: JobContext) -> HandlerFuture {
        Box::pin(run(self.clone(), job, ctx))
    }
}

/// The process group of a running command: SIGTERM then SIGKILL to all of
/// it if the attempt is dropped before the command exits.
struct Group {
    pgid: Pid,
    exited: bool,
}

impl Group {
    fn signal(&self, signal: Signal) {
        // ESRCH (already gone) is fine.
        let _ = killpg(self.pgid, signal);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        self.signal(Signal::SIGTERM);
        let pgid = self.pgid;
        // A thread, not a task: it must run even if the runtime is shutting down.
        std::thread::spawn(move || {
            std::thread::sleep(KILL_GRACE);
            let _ = killpg(pgid, Signal::SIGKILL);
        });
    }
}

async fn run(handler: ExecHandler, job: Job, ctx: JobContext) -> JobResult {
    // A broker refuses such headers now; a job kept from before would
    // fail to start on every attempt.
    if let Some((name, _)) = job.headers.iter().find(|(_, value)| value.contains('\0')) {
        return Err(JobError::permanent(format!(
            "header {name:?} holds a NUL byte, which no environment variable can carry"
        )));
    }
    let mut command = Command::new(&handler.supervisor);
    command
        .args([SUPERVISE_ARG, "sh", "-c", &handler.command])
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        // The worker's credential is not the job's.
        .env_remove(crate::defaults::TOKEN_ENV)
        .env(PARENT_PID_ENV, std::process::id().to_string())
        .env("SLUICE_JOB_ID", &job.id)
        .env("SLUICE_JOB_TYPE", &job.job_type)
        .env("SLUICE_QUEUE", &job.queue)
        .env("SLUICE_ATTEMPT", job.attempt.to_string())
        .env("SLUICE_MAX_ATTEMPTS", job.max_attempts.to_string());
    for (name, value) in &job.headers {
        command.env(header_env_name(name), value);
    }
    // The producer's trace context, under the names OpenTelemetry's
    // environment-variable propagation uses, so the handler's own spans
    // join the trace; passed unchanged.
    let headers = job.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    if let Some(trace) = TraceContext::from_headers(headers) {
        command.env("TRACEPARENT", trace.parent.as_str());
        if let Some(state) = trace.state {
            command.env("TRACESTATE", state);
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| JobError::retry(format!("cannot start the handler: {e}")))?;
    let pid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| JobError::retry("handler exited at once"))?;
    let mut group = Group {
        pgid: Pid::from_raw(pid),
        exited: false,
    };

    if let Some(mut stdin) = child.stdin.take() {
        let payload = job.payload.clone();
        // A command that does not read its input closes the pipe: not an error.
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let mut stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        let mut tail = Vec::new();
        if let Some(stderr) = stderr.as_mut() {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
        }
        tail
    });

    let status = tokio::select! {
        status = child.wait() => status,
        () = ctx.cancelled() => {
            group.signal(Signal::SIGTERM);
            let status = match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    group.signal(Signal::SIGKILL);
                    child.wait().await
                }
            };
            group.exited = true;
            return Err(JobError::retry(format!("stopped: {}", status.map_or_else(|e| e.to_string(), |s| s.to_string()))));
        }
    };
    // The supervisor killed what the command left running in its group;
    // once it is reaped its pid (the group's id) may be reused, so the
    // group is not signalled again.
    group.exited = true;
    let status = status.map_err(|e| JobError::retry(format!("waiting for the handler: {e}")))?;
    let tail = match tokio::time::timeout(Duration::from_secs(1), tail).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        _ => String::new(),
    };
    match exit_code(status) {
        0 => Ok(()),
        code => {
            let message = if tail.is_empty() {
                format!("exit status {code}")
            } else {
                tail
            };
            Err(if code == EX_DATAERR {
                JobError::permanent(message)
            } else {
                JobError::retry(message)
            })
        }
    }
}

/// `SLUICE_HEADER_` and the header's name upper-cased, with every character
/// that is not an ASCII letter or digit as `_`.
pub fn header_env_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SLUICE_HEADER_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn exec_handler_is_refused_until_the_supervisor_is_installed() {
        let refused = ExecHandler::with_supervisor("true".into(), false);
        assert!(
            matches!(refused, Err(WorkerError::SupervisorNotInstalled)),
            "{refused:?}"
        );
        let message = WorkerError::SupervisorNotInstalled.to_string();
        assert!(
            message.contains("sluice_worker::supervisor::run_if_requested()"),
            "{message}"
        );
        let built = ExecHandler::with_supervisor("true".into(), true);
        assert!(built.is_ok(), "{built:?}");
    }

    #[cfg(not(target_os = "linux"))]
    #[test]
    fn exec_handler_is_refused_off_linux() {
        let refused = ExecHandler::with_supervisor("true".into(), true);
        assert!(
            matches!(refused, Err(WorkerError::ExecNeedsLinux)),
            "{refused:?}"
        );
    }

    #[test]
    fn header_names_become_env_names() {
        assert_eq!(header_env_name("trace-id"), "SLUICE_HEADER_TRACE_ID");
        assert_eq!(header_env_name("X.Ümlaut 1"), "SLUICE_HEADER_X__MLAUT_1");
    }
}
