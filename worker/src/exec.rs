//! The exec handler: runs a shell command per job, as `sluice-worker
//! --exec TYPE=COMMAND` does.
//!
//! The command runs as `sh -c COMMAND`, started by the worker's one
//! [`crate::supervisor`] in a process group of its own, with the payload
//! on standard input and the job in the environment (`SLUICE_JOB_ID`,
//! `SLUICE_JOB_TYPE`, `SLUICE_QUEUE`, `SLUICE_ATTEMPT`,
//! `SLUICE_MAX_ATTEMPTS`, `SLUICE_HEADER_<NAME>`, and
//! `TRACEPARENT`/`TRACESTATE` from the job's trace headers), and without
//! the worker's `SLUICE_TOKEN` (its credential, not the job's). Exit 0
//! acks; exit 65 (`EX_DATAERR`) fails the job for good; any other exit or a
//! signal fails the attempt; the last 4 KiB of standard error become the
//! error. Descriptor 3 is the command's report channel ([`output`]): a
//! line `progress PERCENT [MESSAGE]` reports its progress at once, and the
//! last line `result TEXT` becomes the result its Ack carries. When the attempt is stopped (timeout, cancel, shutdown) the group
//! gets SIGTERM, then SIGKILL after [`KILL_GRACE`] (which fits within the
//! job task's stop grace, see [`crate::timing`]); when the command exits, the
//! supervisor kills what is left of its group.
//!
//! The supervisor is the embedding program itself, so an [`ExecHandler`]
//! can be built only on Linux and only after
//! [`crate::supervisor::run_if_requested`] ran.

use std::ffi::OsString;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice_trace::TraceContext;

use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt as _;
use tokio_util::task::AbortOnDropHandle;
#[cfg(target_os = "linux")]
use tracing::warn;

#[cfg(target_os = "linux")]
mod output;

use crate::error::WorkerError;
use crate::handler::{Handler, HandlerFuture, Job, JobContext, JobError, JobResult};
use crate::supervisor;

/// The exit status that means "the input is bad, retrying cannot help".
pub const EX_DATAERR: i32 = 65;
/// How much of standard error becomes the job's error.
pub const STDERR_TAIL: usize = 4096;
/// Payloads up to this size are written to the command's standard input
/// at once, without a task: a new pipe holds at least one page.
#[cfg(target_os = "linux")]
const PIPE_BUF: usize = 4096;
#[cfg(target_os = "linux")]
use crate::timing::CALL_TIMEOUT;
pub use crate::timing::KILL_GRACE;

/// Runs `sh -c COMMAND` for each job.
#[derive(Clone)]
pub struct ExecHandler {
    command: String,
    #[cfg(target_os = "linux")]
    supervisor: Arc<supervisor::Supervisor>,
}

impl std::fmt::Debug for ExecHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecHandler")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// The worker's one supervisor, shared by every exec handler.
#[cfg(target_os = "linux")]
fn shared_supervisor() -> Result<Arc<supervisor::Supervisor>, WorkerError> {
    static SUPERVISOR: OnceLock<Arc<supervisor::Supervisor>> = OnceLock::new();
    if let Some(s) = SUPERVISOR.get() {
        return Ok(s.clone());
    }
    let program = std::env::current_exe().map_err(WorkerError::CurrentExe)?;
    Ok(SUPERVISOR
        .get_or_init(|| Arc::new(supervisor::Supervisor::new(program)))
        .clone())
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
    #[cfg(target_os = "linux")]
    fn with_supervisor(command: String, installed: bool) -> Result<Self, WorkerError> {
        if !installed {
            return Err(WorkerError::SupervisorNotInstalled);
        }
        crate::hardening::hide_from_handlers()?;
        Ok(Self {
            command,
            supervisor: shared_supervisor()?,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn with_supervisor(_command: String, _installed: bool) -> Result<Self, WorkerError> {
        Err(WorkerError::ExecNeedsLinux)
    }
}

impl Handler for ExecHandler {
    fn call(&self, job: Job, ctx: JobContext) -> HandlerFuture {
        Box::pin(run(self.clone(), job, ctx))
    }
}

/// The command's environment beyond the supervisor's own: the job, its
/// headers and its trace context.
fn job_env(job: &Job) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("SLUICE_JOB_ID".into(), job.id.clone().into()),
        ("SLUICE_JOB_TYPE".into(), job.job_type.clone().into()),
        ("SLUICE_QUEUE".into(), job.queue.clone().into()),
        ("SLUICE_ATTEMPT".into(), job.attempt.to_string().into()),
        (
            "SLUICE_MAX_ATTEMPTS".into(),
            job.max_attempts.to_string().into(),
        ),
    ];
    for (name, value) in &job.headers {
        env.push((header_env_name(name).into(), value.into()));
    }
    // The producer's trace context, under the names OpenTelemetry's
    // environment-variable propagation uses, so the handler's own spans
    // join the trace; passed unchanged.
    let headers = job.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    if let Some(trace) = TraceContext::from_headers(headers) {
        env.push(("TRACEPARENT".into(), trace.parent.as_str().into()));
        if let Some(state) = trace.state {
            env.push(("TRACESTATE".into(), state.into()));
        }
    }
    env
}

#[cfg(not(target_os = "linux"))]
async fn run(_handler: ExecHandler, _job: Job, _ctx: JobContext) -> JobResult {
    Err(JobError::permanent("exec handlers need Linux"))
}

#[cfg(target_os = "linux")]
async fn run(handler: ExecHandler, job: Job, ctx: JobContext) -> JobResult {
    use nix::fcntl::OFlag;
    use tokio::net::unix::pipe;

    // A broker refuses such headers now; a job kept from before would
    // fail to start on every attempt.
    if let Some((name, _)) = job.headers.iter().find(|(_, value)| value.contains('\0')) {
        return Err(JobError::permanent(format!(
            "header {name:?} holds a NUL byte, which no environment variable can carry"
        )));
    }
    let cannot_start = |e: String| JobError::retry(format!("cannot start the handler: {e}"));
    let (stdin_read, stdin_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| cannot_start(e.to_string()))?;
    let (stderr_read, stderr_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| cannot_start(e.to_string()))?;
    let (reports_read, reports_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| cannot_start(e.to_string()))?;
    let stderr =
        pipe::Receiver::from_owned_fd(stderr_read).map_err(|e| cannot_start(e.to_string()))?;
    let reports =
        pipe::Receiver::from_owned_fd(reports_read).map_err(|e| cannot_start(e.to_string()))?;
    let mut running = handler
        .supervisor
        .start(
            &handler.command,
            job_env(&job),
            [stdin_read, stderr_write, reports_write],
        )
        .map_err(cannot_start)?;
    // Aborted if the attempt ends first: a descendant may hold a pipe open.
    let mut output = AbortOnDropHandle::new(tokio::spawn(output::read(
        stderr,
        reports,
        ctx.clone(),
        job.id.clone(),
    )));

    // A command that does not read its input closes the pipe: not an error.
    if job.payload.len() <= PIPE_BUF {
        use std::io::Write as _;
        // A new pipe holds at least a page: this write never waits.
        let _ = std::fs::File::from(stdin_write).write_all(&job.payload);
    } else {
        let mut stdin =
            pipe::Sender::from_owned_fd(stdin_write).map_err(|e| cannot_start(e.to_string()))?;
        let payload = job.payload.clone();
        tokio::spawn(async move {
            let _ = stdin.write_all(&payload).await;
        });
    }
    let code = tokio::select! {
        code = running.exited() => code,
        () = ctx.cancelled() => {
            running.signal(Signal::SIGTERM);
            let code = match tokio::time::timeout(KILL_GRACE, running.exited()).await {
                Ok(code) => code,
                Err(_) => {
                    running.signal(Signal::SIGKILL);
                    running.exited().await
                }
            };
            let how = match code {
                Ok(code) => format!("exit status {code}"),
                Err(e) => e,
            };
            return Err(JobError::retry(format!("stopped: {how}")));
        }
    };
    let code = code.map_err(JobError::retry)?;
    // A descendant may hold the pipes open: a second at most.
    let mut output = match tokio::time::timeout(Duration::from_secs(1), &mut output).await {
        Ok(Ok(output)) => Some(output),
        _ => None,
    };
    if let Some(reporter) = output.as_mut().and_then(|o| o.reporter.take()) {
        // The last progress report lands before the outcome, within a
        // call's bound.
        let _ = tokio::time::timeout(CALL_TIMEOUT, reporter).await;
    }
    match code {
        0 => match output {
            Some(output) => match output.result {
                Ok(Some(result)) => ctx.set_result(result),
                Ok(None) => Ok(()),
                Err(too_long) => Err(too_long),
            },
            None => {
                warn!(
                    job_id = job.id,
                    "standard error or descriptor 3 was still open a second after the command \
                     exited (a process it started holds it): the job is acked without a result"
                );
                Ok(())
            }
        },
        code => {
            let tail = output.map_or_else(String::new, |o| {
                String::from_utf8_lossy(&o.tail).trim().to_owned()
            });
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
