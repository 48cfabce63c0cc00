//! A private PostgreSQL server for tests. [`TestPostgres`] owns one cluster:
//! a fresh directory under the system's temporary directory holding its data
//! (`data/`), its log (`postgres.log`) and its Unix socket, and the server on
//! it, listening on a 127.0.0.1 port of its own that it keeps across
//! restarts, with `fsync` and `synchronous_commit` on, so that a test sees the
//! durability a deployment has. Dropping it stops the server (immediate mode)
//! and removes the directory. [`shared`] is one cluster per test binary, in
//! which each test takes a fresh database instead of running `initdb` again.
//!
//! All the programs (`initdb`, `pg_ctl`, `createdb`, `psql`) come from one
//! directory, so client and server are one version: the one `initdb` on PATH
//! really lives in (symlinks resolved), else the newest of Debian's
//! `/usr/lib/postgresql/*/bin`. With neither, starting fails saying what to
//! install; `scripts/test` installs Debian's package, so tests fail rather
//! than skip.
//!
//! PostgreSQL refuses to run as root. Under root the server side (`initdb`,
//! `pg_ctl`, the watchdog) runs as the user `postgres`, which Debian's package
//! creates, and which owns the directory. The clients connect over TCP as the
//! role `sluice` (trust authentication: the server listens on loopback only).
//!
//! Cleanup does not rely on `Drop`: a static (the shared cluster) is never
//! dropped, and a killed test process drops nothing. So every cluster has a
//! watchdog, a detached shell blocked reading a pipe whose write end only
//! this process holds; when the process ends, however it ends, the pipe
//! closes, and the watchdog stops the server and removes the directory.
//!
//! `PG*` variables are removed from every program's environment, so that a
//! developer's `PGHOST` or `PGDATABASE` does not change what a test sees.

mod programs;

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::unistd::{Gid, Uid, chown};

use self::programs::{SERVER_ACCOUNT, server_account, server_bin_dir};
use crate::WAIT;
use crate::cli::{CliOutput, command_line, run_within};

/// The role tests connect as: the superuser `initdb` creates.
const ROLE: &str = "sluice";
/// How long `pg_ctl` waits for a start, stop or restart (its `-t`): a start
/// after an immediate stop replays the WAL first.
const PG_CTL_WAIT: Duration = Duration::from_secs(60);
/// The bound on `initdb` and `pg_ctl` as processes: `pg_ctl`'s own wait, and
/// a margin for it to report.
const SERVER_COMMAND_LIMIT: Duration = PG_CTL_WAIT.saturating_add(WAIT);
/// Starts on a freshly picked port: between the port's release and the
/// server's bind another process may take it.
const START_ATTEMPTS: u32 = 3;
/// The longest [`TestPostgres::start`] takes: `initdb` and each attempt at a
/// start, each bounded by [`SERVER_COMMAND_LIMIT`].
pub const START_LIMIT: Duration = SERVER_COMMAND_LIMIT.saturating_mul(1 + START_ATTEMPTS);
/// Lines of the server's log quoted when it fails.
const LOG_TAIL_LINES: usize = 20;

/// Numbers for unique names (directories, databases) within this process.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One private PostgreSQL cluster on 127.0.0.1; stopped and removed on drop.
pub struct TestPostgres {
    /// Where `initdb` came from; every other program comes from here too.
    bin: PathBuf,
    /// The temporary directory: `data/`, the log and the socket.
    dir: PathBuf,
    /// Fixed for the cluster's life, so restarts keep its URLs valid.
    port: u16,
    /// The server's uid and gid when the tests run as root; None: our own.
    account: Option<(Uid, Gid)>,
    /// The watchdog; its standard input is the pipe that tells it we are gone.
    watchdog: Option<Child>,
}

/// The test binary's one shared cluster, started on first use; each test
/// takes its own database in it with [`TestPostgres::fresh_database`].
/// Stopping or restarting it would disturb the other tests: a test that
/// does that starts its own [`TestPostgres`].
///
/// # Errors
///
/// Why the cluster could not start, the same for every caller (see
/// [`TestPostgres::start`]).
pub fn shared() -> Result<&'static TestPostgres, String> {
    static SHARED: OnceLock<Result<TestPostgres, String>> = OnceLock::new();
    SHARED
        .get_or_init(TestPostgres::start)
        .as_ref()
        .map_err(Clone::clone)
}

impl TestPostgres {
    /// Creates a cluster in a fresh temporary directory and starts it.
    ///
    /// # Errors
    ///
    /// PostgreSQL's server is not installed; under root, the user `postgres`
    /// does not exist; or `initdb` or the start failed (with their output,
    /// or the end of the server's log).
    pub fn start() -> Result<Self, String> {
        let bin = server_bin_dir()?;
        let account = server_account()?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // pg_ctl hands the server's options to a shell, unquoted.
        if !dir
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+'))
        {
            return Err(format!(
                "the temporary directory {} has characters PostgreSQL's options cannot carry: set TMPDIR to a plain path",
                dir.display()
            ));
        }
        // A leftover of an earlier process that had our pid.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let mut postgres = Self {
            bin,
            dir,
            port: 0,
            account,
            watchdog: None,
        };
        // From here on, an error drops `postgres`, which cleans up.
        if let Some((uid, gid)) = account {
            chown(&postgres.dir, Some(uid), Some(gid)).map_err(|e| {
                format!(
                    "could not give {} to the user `{SERVER_ACCOUNT}`: {e}",
                    postgres.dir.display()
                )
            })?;
        }
        postgres.watchdog = Some(postgres.spawn_watchdog()?);
        postgres.initdb()?;
        let mut attempt = 1;
        loop {
            postgres.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("could not pick a free port on 127.0.0.1: {e}"))?
                .port();
            let logged = postgres.log().len();
            let Err(e) = postgres.pg_ctl_start() else {
                return Ok(postgres);
            };
            let port_taken = postgres
                .log()
                .get(logged..)
                .is_some_and(|new| new.contains("Address already in use"));
            if !port_taken || attempt == START_ATTEMPTS {
                return Err(e);
            }
            attempt += 1;
        }
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory that holds the cluster's data, log and socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `postgres://sluice@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the database `name` (a plain SQL identifier); fails the test
    /// if `createdb` fails.
    pub fn create_database(&self, name: &str) {
        let mut command = self.client("createdb");
        command.arg(name);
        expect_success(
            &command_name("createdb", name),
            run_within(command, None, WAIT),
        );
    }

    /// Creates a database with a name not used before in this process;
    /// returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("fresh_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.create_database(&name);
        self.url(&name)
    }

    /// Runs `sql` with `psql -At` (unaligned, tuples only; rows on lines,
    /// columns separated by `|`) in `database`, a name or a URL from
    /// [`url`](Self::url); returns its output without the last newline.
    /// Fails the test, with `psql`'s errors, if any statement fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut command = self.client("psql");
        command
            .args(["-At", "-X", "-v", "ON_ERROR_STOP=1", "-d", database, "-c"])
            .arg(sql);
        let output = expect_success(
            &command_name("psql -c", sql),
            run_within(command, None, WAIT),
        );
        let stdout = output.stdout;
        stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned()
    }

    /// `pg_ctl restart -m fast`: clients are disconnected, open transactions
    /// are rolled back, and the server comes back on the same port with the
    /// same options. Fails the test if it does not.
    pub fn restart_fast(&self) {
        let mut command = self.pg_ctl("restart");
        command.args(["-m", "fast"]);
        self.with_start_options(&mut command);
        if let Err(e) = self.run_server(command) {
            panic!("PostgreSQL did not restart: {e}");
        }
    }

    /// `pg_ctl stop -m immediate`: the server quits without a checkpoint, as
    /// after a crash. Fails the test if it does not stop.
    pub fn stop_immediate(&self) {
        if let Err(e) = self.stop("immediate") {
            panic!("PostgreSQL did not stop: {e}");
        }
    }

    /// Starts the stopped server again, on the same port with the same
    /// options. Fails the test if it does not start.
    pub fn start_again(&self) {
        if let Err(e) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again: {e}");
        }
    }

    /// The running server's process id (the postmaster's), from its pid file.
    pub fn server_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Runs `initdb`. `--no-sync` only skips flushing the new files: the
    /// server itself runs with fsync on. The C locale keeps the developer's
    /// locale settings out of the cluster.
    fn initdb(&self) -> Result<(), String> {
        let mut command = self.server("initdb");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["--auth=trust", "-U", ROLE, "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        self.run_server(command).map(drop)
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        let mut command = self.pg_ctl("start");
        self.with_start_options(&mut command);
        self.run_server(command).map(drop)
    }

    fn stop(&self, mode: &str) -> Result<(), String> {
        let mut command = self.pg_ctl("stop");
        command.args(["-m", mode]);
        self.run_server(command).map(drop)
    }

    /// `pg_ctl ACTION -D DATA -w -t SECONDS`.
    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.server("pg_ctl");
        command
            .arg(action)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-w")
            .arg("-t")
            .arg(PG_CTL_WAIT.as_secs().to_string());
        command
    }

    /// The log file and the server's options, for a start or a restart.
    /// The log file also keeps the server off `pg_ctl`'s output pipes, which
    /// would otherwise stay open as long as the server runs.
    fn with_start_options(&self, command: &mut Command) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c fsync=on -c synchronous_commit=on -c max_connections=300 \
             -c shared_buffers=128MB",
            self.port,
            self.dir.display()
        );
        command
            .arg("-l")
            .arg(self.log_path())
            .arg("-o")
            .arg(options);
    }

    /// `program` from the bin directory, run as the server's account, in
    /// the cluster's directory (which that account can enter).
    fn server(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        command.current_dir(&self.dir);
        self.as_server_account(&mut command);
        command
    }

    fn as_server_account(&self, command: &mut Command) {
        without_pg_environment(command);
        if let Some((uid, gid)) = self.account {
            // std drops root's supplementary groups before it changes uid.
            command.uid(uid.as_raw()).gid(gid.as_raw());
        }
    }

    /// `program` from the bin directory, connecting as `sluice` over TCP.
    fn client(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        without_pg_environment(&mut command);
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", ROLE]);
        command
    }

    /// Runs a server program; on failure, its output and the log's end.
    fn run_server(&self, command: Command) -> Result<CliOutput, String> {
        let name = command_line(&command);
        let failure = match run_within(command, None, SERVER_COMMAND_LIMIT) {
            Ok(output) if output.code == 0 => return Ok(output),
            Ok(output) => format!(
                "{name} exited with {}:\n{}{}",
                output.code, output.stdout, output.stderr
            ),
            Err(e) if self.account.is_some() => format!(
                "{e}\n(it runs as the user `{SERVER_ACCOUNT}`, who must be able to enter {})",
                self.dir.display()
            ),
            Err(e) => e,
        };
        Err(format!("{failure}\n{}", self.log_tail()))
    }

    /// The end of the server's log, introduced, for a failure's message.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        if lines.is_empty() {
            return format!("{} is empty", self.log_path().display());
        }
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "the end of {}:\n{}",
            self.log_path().display(),
            tail.join("\n")
        )
    }

    /// A shell in a process group of its own (a terminal's Ctrl-C does not
    /// reach it), blocked on standard input until this process is gone;
    /// then it stops the server and removes the directory.
    fn spawn_watchdog(&self) -> Result<Child, String> {
        const SCRIPT: &str = r#"cat >/dev/null
"$1" stop -D "$2" -m immediate -w -t "$3" >/dev/null 2>&1
rm -rf "$4""#;
        let mut command = Command::new("sh");
        self.as_server_account(&mut command);
        command
            .current_dir("/")
            .args(["-c", SCRIPT, "sluice-pg-watchdog"])
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(PG_CTL_WAIT.as_secs().to_string())
            .arg(&self.dir)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // std makes its pipes close-on-exec: no other child inherits the
        // write end, so only this process's exit closes it.
        command
            .spawn()
            .map_err(|e| format!("could not start the cleanup watchdog (sh): {e}"))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self.stop("immediate");
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            // Its end of input: it finds nothing left to clean, and exits.
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// Fails the test unless the client program succeeded; returns its output.
fn expect_success(name: &str, result: Result<CliOutput, String>) -> CliOutput {
    match result {
        Ok(output) if output.code == 0 => output,
        Ok(output) => panic!(
            "{name} exited with {}: {}",
            output.code,
            output.stderr.trim_end()
        ),
        Err(e) => panic!("{e}"),
    }
}

fn command_name(program: &str, argument: &str) -> String {
    format!("{program} {argument:?}")
}

fn without_pg_environment(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
}
