//! The broker under test: started by the bench as a child process (so its
//! CPU time and peak memory can be read from /proc), or an address given.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

/// A broker the bench started; killed on drop.
pub struct BrokerProcess {
    child: Child,
    pub addr: String,
}

impl BrokerProcess {
    /// Starts `binary` on a free loopback port with `args`.
    pub fn start(binary: &str, args: &[String]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(binary)
            .args(["--addr", &addr])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return Ok(Self { child, addr });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        bail!("{binary} did not listen on {addr} within 5s")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks: f64 = fields
        .get(11)
        .zip(fields.get(12))
        .map_or(Ok(0.0), |(u, s)| {
            Ok::<f64, std::num::ParseIntError>((u.parse::<u64>()? + s.parse::<u64>()?) as f64)
        })?;
    Ok(ticks / clock_ticks_per_second())
}

/// Resident memory now and at its peak, in bytes.
pub fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn clock_ticks_per_second() -> f64 {
    // Linux reports /proc times in USER_HZ, 100 on every mainstream platform.
    100.0
}
