//! A private Redis server for tests. [`TestRedis`] owns one `redis-server`
//! (Debian's `redis-server` package, which `scripts/test` installs): a
//! fresh directory under the system's temporary directory holding its AOF
//! and its log, a 127.0.0.1 port of its own that it keeps across
//! restarts, `appendonly yes` with `appendfsync always` (every write on
//! disk before Redis answers, the durability a deployment asks for with
//! `--redis-require-fsync`), and 4,096 databases. Dropping it kills the
//! server and removes the directory. [`shared`] is one server per test
//! binary, in which each test takes a fresh database instead of starting
//! a server.
//!
//! Cleanup does not rely on `Drop` (a static is never dropped, a killed
//! test process drops nothing): a watchdog shell blocked on a pipe only
//! this process holds kills the server and removes the directory when the
//! process ends, however it ends.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::WAIT;

/// Databases of a server: each test of a binary takes its own.
pub const DATABASES: u32 = 4096;

/// Numbers for unique directory names within this process.
static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// The program, from PATH or Debian's place.
fn server_program() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            "redis-server is not installed: `apt-get install redis-server` (scripts/test does)"
                .to_owned()
        })
}

/// One private Redis server on 127.0.0.1; killed and removed on drop.
pub struct TestRedis {
    program: PathBuf,
    dir: PathBuf,
    port: u16,
    server: Option<Child>,
    watchdog: Option<Child>,
    next_database: AtomicU32,
    /// Settings beyond the defaults above, as `redis-server` flags.
    extra: Vec<String>,
}

/// The test binary's one shared server, started on first use; each test
/// takes its own database in it with [`TestRedis::fresh_database`].
///
/// # Errors
/// Why the server could not start, the same for every caller.
pub fn shared() -> Result<&'static TestRedis, String> {
    static SHARED: OnceLock<Result<TestRedis, String>> = OnceLock::new();
    SHARED
        .get_or_init(TestRedis::start)
        .as_ref()
        .map_err(Clone::clone)
}

impl TestRedis {
    /// Starts a server in a fresh temporary directory.
    ///
    /// # Errors
    /// The server is not installed or does not start (with its log).
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// Like [`TestRedis::start`], with more `redis-server` flags (another
    /// `--appendfsync`, a `--maxmemory-policy`, TLS: with `--tls-port` the
    /// server listens on TLS only, at [`TestRedis::port`]).
    ///
    /// # Errors
    /// As [`TestRedis::start`].
    pub fn start_with(extra: &[&str]) -> Result<Self, String> {
        let program = server_program()?;
        let dir = std::env::temp_dir().join(format!(
            "sluice-redis-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("could not pick a free port on 127.0.0.1: {e}"))?
            .port();
        let mut redis = Self {
            program,
            dir,
            port,
            server: None,
            watchdog: None,
            next_database: AtomicU32::new(0),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        redis.start_again_checked()?;
        Ok(redis)
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/DB`.
    pub fn url(&self, database: u32) -> String {
        format!("redis://127.0.0.1:{}/{database}", self.port)
    }

    /// A database no test of this process used before; its URL.
    pub fn fresh_database(&self) -> String {
        let database = self.next_database.fetch_add(1, Ordering::Relaxed);
        assert!(
            database < DATABASES,
            "every database of the test Redis is taken"
        );
        self.url(database)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// The directory of the server's AOF and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Runs one command (its words) on database `database`; its reply as
    /// RESP text.
    pub fn command(&self, database: u32, words: &[&str]) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("the test Redis");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = resp(&["SELECT", &database.to_string()]);
        request.push_str(&resp(words));
        // QUIT: Redis answers +OK and closes, so the reply ends at EOF.
        request.push_str(&resp(&["QUIT"]));
        stream.write_all(request.as_bytes()).unwrap();
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .expect("the test Redis's reply");
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let reply = reply.strip_prefix("+OK\r\n").unwrap_or(&reply);
        reply.strip_suffix("+OK\r\n").unwrap_or(reply).to_owned()
    }

    /// Kills the server (SIGKILL: a crash); its AOF stays.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts the killed server again, on the same port, from its AOF.
    /// Fails the test if it does not start.
    pub fn start_again(&mut self) {
        if let Err(e) = self.start_again_checked() {
            panic!("Redis did not start again: {e}");
        }
    }

    fn start_again_checked(&mut self) -> Result<(), String> {
        let tls = self.extra.iter().any(|a| a == "--tls-port");
        let port = self.port.to_string();
        let mut command = Command::new(&self.program);
        if tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--databases", &DATABASES.to_string()])
            .args(["--daemonize", "no", "--logfile", "redis.log"])
            .args(self.extra.iter().filter(|a| *a != "--tls-port"))
            .current_dir(&self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = command
            .spawn()
            .map_err(|e| format!("redis-server could not start: {e}"))?;
        let pid = server.id();
        self.server = Some(server);
        self.note_pid();
        if self.watchdog.is_none() {
            self.watchdog = Some(self.spawn_watchdog(pid)?);
        }
        let started = Instant::now();
        let logged = self.log().matches("Ready to accept connections").count();
        loop {
            let ready = if tls {
                self.log().matches("Ready to accept connections").count() > logged
            } else {
                self.ping()
            };
            if ready {
                return Ok(());
            }
            if started.elapsed() > WAIT {
                return Err(format!(
                    "redis-server did not answer PING in {WAIT:?}; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PING (and has loaded its data).
    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0; 7];
        stream
            .read(&mut reply)
            .is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
    }

    /// A shell in a process group of its own, blocked on standard input
    /// until this process is gone; then it kills the server (the first,
    /// and the one whose pid `server.pid` holds after a restart) and
    /// removes the directory.
    fn spawn_watchdog(&self, pid: u32) -> Result<Child, String> {
        const SCRIPT: &str = r#"cat >/dev/null
kill -9 "$1" 2>/dev/null
[ -f "$2/server.pid" ] && kill -9 "$(cat "$2/server.pid")" 2>/dev/null
rm -rf "$2""#;
        Command::new("sh")
            .current_dir("/")
            .args(["-c", SCRIPT, "sluice-redis-watchdog"])
            .arg(pid.to_string())
            .arg(&self.dir)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start the cleanup watchdog (sh): {e}"))
    }

    /// Records the running server's pid for the watchdog.
    fn note_pid(&self) {
        if let Some(server) = &self.server {
            let _ = std::fs::write(self.dir.join("server.pid"), server.id().to_string());
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            drop(watchdog.stdin.take());
            let _ = watchdog.wait();
        }
    }
}

/// `words` as a RESP array of bulk strings.
fn resp(words: &[&str]) -> String {
    let mut out = format!("*{}\r\n", words.len());
    for w in words {
        out.push_str(&format!("${}\r\n{w}\r\n", w.len()));
    }
    out
}
