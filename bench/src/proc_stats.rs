//! What the bench reads of a broker process from /proc: its CPU time and
//! its memory. (The broker itself is started by the workspace's process
//! harness, `sluice_e2e::BrokerProcess`.)

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: i32) -> anyhow::Result<f64> {
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
pub fn memory(pid: i32) -> anyhow::Result<(u64, u64)> {
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

/// CPU seconds the whole machine has been busy (every core, every
/// process: the brokers, their store, the load), from /proc/stat.
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().unwrap_or_default();
    // user nice system idle iowait irq softirq steal ...: busy is all but
    // idle and iowait.
    let ticks: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Ok(busy as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // Linux reports /proc times in USER_HZ, 100 on every mainstream platform.
    100.0
}
