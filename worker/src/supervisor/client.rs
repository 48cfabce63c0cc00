//! The worker's side of its supervisor: starts it once, on the first job
//! (and again if it died), and runs each job's command through it.
//!
//! The supervisor is this executable again, started by a thread of its
//! own that then reads the supervisor's events until it ends: Linux sends
//! the parent-death signal when the *thread* that forked a process exits,
//! so that thread must live as long as the supervisor. Events go to the
//! job that waits for them; if the supervisor dies, every job waiting
//! hears so, and the next job starts a new one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{IoSlice, Read as _, Write as _};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::signal::Signal;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
use tokio::sync::oneshot;
use tracing::warn;

use super::protocol::{self, Event, JobId, Request};
use super::{PARENT_PID_ENV, SUPERVISE_ARG};

/// How a job ended: its exit code, or why it could not start.
type Ended = Result<i32, String>;

/// One running supervisor.
struct Conn {
    socket: Mutex<UnixStream>,
    waiting: Mutex<HashMap<JobId, oneshot::Sender<Ended>>>,
    next_id: AtomicU64,
    alive: AtomicBool,
}

impl Conn {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, oneshot::Sender<Ended>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends `request`, with `fds` alongside its first byte.
    fn send(&self, request: &Request, fds: &[OwnedFd]) -> std::io::Result<()> {
        let mut frame = Vec::new();
        protocol::encode_request(request, &mut frame);
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() && !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(std::io::Error::other(
                "too many descriptors for one message",
            ));
        }
        let mut socket = self.socket.lock().unwrap_or_else(PoisonError::into_inner);
        let sent = sendmsg(
            &*socket,
            &[IoSlice::new(&frame)],
            &mut control,
            SendFlags::empty(),
        )?;
        socket.write_all(&frame[sent..])
    }

    /// Reads events until the supervisor's socket closes, then tells every
    /// job still waiting.
    fn read_events(&self, mut socket: UnixStream) {
        let mut buffer = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        'read: loop {
            let n = match socket.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            buffer.extend_from_slice(&chunk[..n]);
            loop {
                match protocol::decode_event(&mut buffer) {
                    Ok(Some(event)) => self.deliver(event),
                    Ok(None) => break,
                    Err(why) => {
                        warn!(error = why, "a bad event from the exec supervisor");
                        break 'read;
                    }
                }
            }
        }
        self.alive.store(false, Ordering::Release);
        // Dropping the senders tells each job the supervisor is gone.
        self.waiting().clear();
    }

    fn deliver(&self, event: Event) {
        let (id, ended) = match event {
            Event::Failed { id, message } => (id, Err(message)),
            Event::Exited { id, code } => (id, Ok(code)),
        };
        if let Some(waiter) = self.waiting().remove(&id) {
            let _ = waiter.send(ended);
        }
    }
}

/// The worker's supervisor, started on first use.
pub struct Supervisor {
    /// This executable, which serves as the supervisor.
    program: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
}

/// A job's command, running under the supervisor.
pub struct RunningJob {
    id: JobId,
    conn: Arc<Conn>,
    exited: oneshot::Receiver<Ended>,
    ended: bool,
}

impl Supervisor {
    /// A supervisor that `program` (this executable) serves.
    pub fn new(program: PathBuf) -> Self {
        Self {
            program,
            conn: Mutex::new(None),
        }
    }

    /// The running supervisor, started if there is none.
    fn conn(&self) -> Result<Arc<Conn>, String> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = conn.as_ref().filter(|c| c.alive.load(Ordering::Acquire)) {
            return Ok(c.clone());
        }
        let started = self.launch()?;
        *conn = Some(started.clone());
        Ok(started)
    }

    fn launch(&self) -> Result<Arc<Conn>, String> {
        let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
        let reader = ours.try_clone().map_err(|e| e.to_string())?;
        let conn = Arc::new(Conn {
            socket: Mutex::new(ours),
            waiting: Mutex::default(),
            next_id: AtomicU64::new(1),
            alive: AtomicBool::new(true),
        });
        let mut command = Command::new(&self.program);
        command
            .arg(SUPERVISE_ARG)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .process_group(0)
            // The worker's credential is not the jobs'.
            .env_remove(crate::defaults::TOKEN_ENV)
            .env(PARENT_PID_ENV, std::process::id().to_string());
        let (spawned_tx, spawned) = std::sync::mpsc::channel();
        let events = conn.clone();
        std::thread::Builder::new()
            .name("sluice-supervisor".into())
            .spawn(move || {
                let mut child = match command.spawn() {
                    Ok(child) => child,
                    Err(e) => {
                        let _ = spawned_tx.send(Err(format!("cannot start the supervisor: {e}")));
                        return;
                    }
                };
                // The command (and its copy of the socket) is dropped: only
                // the supervisor holds its end now.
                drop(command);
                let _ = spawned_tx.send(Ok(()));
                events.read_events(reader);
                if let Ok(status) = child.wait()
                    && !status.success()
                {
                    warn!(%status, "the exec supervisor ended; the next job starts another");
                }
            })
            .map_err(|e| format!("cannot start the supervisor's thread: {e}"))?;
        spawned
            .recv()
            .map_err(|_| "the supervisor's thread ended".to_owned())??;
        Ok(conn)
    }

    /// Runs `sh -c command` with `env`, `stdin`, `stderr` and `reports`
    /// (its descriptor 3), whose copies here are closed once sent. Does not
    /// wait for the start: a command that cannot start ends at once,
    /// [`RunningJob::exited`] says why.
    ///
    /// # Errors
    /// Why the supervisor could not be started or reached.
    pub fn start(
        &self,
        command: &str,
        env: Vec<(OsString, OsString)>,
        [stdin, stderr, reports]: [OwnedFd; 3],
    ) -> Result<RunningJob, String> {
        let conn = self.conn()?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (ended, exited) = oneshot::channel();
        conn.waiting().insert(id, ended);
        let request = Request::Start {
            id,
            command: command.into(),
            env,
        };
        if let Err(e) = conn.send(&request, &[stdin, stderr, reports]) {
            conn.waiting().remove(&id);
            return Err(format!("cannot reach the supervisor: {e}"));
        }
        Ok(RunningJob {
            id,
            conn,
            exited,
            ended: false,
        })
    }
}

impl RunningJob {
    /// Sends `signal` to the command's process group, if it still runs.
    pub fn signal(&self, signal: Signal) {
        let _ = self.conn.send(
            &Request::Signal {
                id: self.id,
                signal: signal as i32,
            },
            &[],
        );
    }

    /// The command's exit code (128 + N for signal N), once it and its
    /// group are gone.
    ///
    /// # Errors
    /// The command could not start, or the supervisor died first (its
    /// jobs' groups were killed with it).
    pub async fn exited(&mut self) -> Result<i32, String> {
        let ended = (&mut self.exited)
            .await
            .unwrap_or_else(|_| Err("the supervisor ended while the command ran".to_owned()));
        self.ended = true;
        ended
    }
}

impl Drop for RunningJob {
    /// An attempt dropped while its command runs: SIGTERM to its group,
    /// SIGKILL after the grace (from a thread: it must happen even while
    /// the runtime shuts down). The supervisor signals only a group whose
    /// leader it has not reaped, so a late signal reaches nothing else.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.signal(Signal::SIGTERM);
        let (conn, id) = (self.conn.clone(), self.id);
        std::thread::spawn(move || {
            std::thread::sleep(crate::timing::KILL_GRACE);
            let _ = conn.send(
                &Request::Signal {
                    id,
                    signal: Signal::SIGKILL as i32,
                },
                &[],
            );
        });
    }
}
