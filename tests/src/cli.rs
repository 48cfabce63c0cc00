//! The `sluice` CLI as a child process: [`sluice`] runs it against a
//! broker with arguments and returns its exit code, standard output and
//! standard error, bounded by [`WAIT`]. The environment is cleared of
//! `SLUICE_*` and `TRACEPARENT`/`TRACESTATE`, so a developer's shell does
//! not change what a test sees; tests add what they mean to test.
//! [`run_within`] runs any other program the same way, with its own limit.

use std::io::{Read, Write as _};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{BrokerProcess, WAIT, binary};

/// What one run of `sluice` did.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit status (-1 if killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Fails unless it exited 0; returns itself.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "sluice failed: {self:#?}");
        self
    }

    /// Fails unless it exited `code`; returns itself.
    #[track_caller]
    pub fn exited(self, code: i32) -> Self {
        assert_eq!(self.code, code, "sluice exited otherwise: {self:#?}");
        self
    }

    /// Standard output as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Standard output's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// `sluice` with a clean environment and `args`, ready to run.
pub fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary("sluice"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SLUICE_") || key == "TRACEPARENT" || key == "TRACESTATE" {
            command.env_remove(key);
        }
    }
    command.args(args);
    command
}

/// Runs `sluice --broker URL args...` against `broker`.
pub fn sluice(broker: &BrokerProcess, args: &[&str]) -> CliOutput {
    let mut command = command(&["--broker", &broker.url()]);
    command.args(args);
    run(command, None)
}

/// Runs `command` with `stdin` (or no standard input), waiting at most
/// [`WAIT`]; kills it and fails after that.
pub fn run(command: Command, stdin: Option<&[u8]>) -> CliOutput {
    run_within(command, stdin, WAIT).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs any `command` as [`run`] does, waiting at most `limit`.
///
/// # Errors
///
/// If it cannot start, its input cannot be written, or it is still running
/// after `limit` (then it is killed): what happened, naming the program.
pub fn run_within(
    mut command: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Result<CliOutput, String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = command_line(&command);
    let mut child = command
        .spawn()
        .map_err(|e| format!("{name} could not start: {e}"))?;
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // Dropping the pipe is the end of input.
        if let Err(e) = pipe.write_all(bytes) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not take its input: {e}"));
        }
    }
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("{name} could not be waited for: {e}"))?
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{name} did not exit within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(CliOutput {
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    })
}

/// `command`'s program and arguments, separated by spaces, for messages.
pub fn command_line(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until `sluice jobs get ID` says `state`; returns the job's JSON.
pub fn wait_for_state(broker: &BrokerProcess, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = sluice(broker, &["-o", "json", "jobs", "get", id])
            .ok()
            .json();
        if job["state"] == state {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never reached {state}: {job:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Enqueues a job with `sluice enqueue` and these flags; returns its id.
pub fn enqueue(broker: &BrokerProcess, flags: &[&str]) -> String {
    let mut args = vec!["enqueue"];
    args.extend_from_slice(flags);
    let out = sluice(broker, &args).ok();
    out.stdout.trim().to_owned()
}

/// `sluice` running in a pseudo-terminal of its own (as its controlling
/// terminal, through `setsid --ctty`), its screen output collected.
pub struct PtyRun {
    child: std::process::Child,
    /// Writes to the terminal: what the user types.
    keyboard: std::fs::File,
    /// The terminal's slave side, kept to read its modes after the exit.
    slave: std::os::fd::OwnedFd,
    screen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl PtyRun {
    /// Starts `sluice args...` in a `cols` x `rows` pseudo-terminal.
    pub fn start(args: &[&str], cols: u16, rows: u16) -> Self {
        use nix::pty::{Winsize, openpty};
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(&size, None::<&nix::sys::termios::Termios>).unwrap();
        let mut command = Command::new("setsid");
        command.arg("--ctty").arg(binary("sluice")).args(args);
        for (key, _) in std::env::vars() {
            if key.starts_with("SLUICE_") {
                command.env_remove(key);
            }
        }
        command
            .env("TERM", "xterm-256color")
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        let child = command.spawn().unwrap();
        drop(command);
        let keyboard = std::fs::File::from(pty.master.try_clone().unwrap());
        let mut screen_side = std::fs::File::from(pty.master);
        let screen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every slave descriptor is closed.
            while let Ok(n) = screen_side.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            keyboard,
            slave: pty.slave,
            screen,
        }
    }

    /// Everything written to the terminal so far, lossily as text.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the screen output holds every one of `needles` (after
    /// byte `from`); returns the whole output.
    #[track_caller]
    pub fn wait_for(&self, from: usize, needles: &[&str]) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            let tail = screen.get(from..).unwrap_or("");
            if needles.iter().all(|n| tail.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needles:?}: {tail:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `keys`.
    pub fn type_keys(&mut self, keys: &[u8]) {
        self.keyboard.write_all(keys).unwrap();
    }

    /// Waits for the exit, at most `timeout`; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the terminal is back in cooked mode (canonical input, echo).
    pub fn cooked(&self) -> bool {
        use nix::sys::termios::{LocalFlags, tcgetattr};
        let modes = tcgetattr(&self.slave).unwrap();
        modes
            .local_flags
            .contains(LocalFlags::ICANON | LocalFlags::ECHO)
    }
}

impl Drop for PtyRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
