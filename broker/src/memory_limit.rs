//! The memory the broker runs under, for `--max-memory`'s default, and the
//! parser of byte sizes (`512MiB`) the flag takes.
//!
//! The limit is the smallest of the cgroup v2 limit (`memory.max` of the
//! process's cgroup or an ancestor, found through `/proc/self/cgroup`;
//! `max` means none), the cgroup v1 limit (`memory.limit_in_bytes` of the
//! memory hierarchy; values near `i64::MAX` mean none) and the physical
//! memory (`MemTotal` of `/proc/meminfo`). A file that is missing or does
//! not parse is skipped, never fatal: with nothing readable there is no
//! limit. The queue never calls this (it does no I/O); `main` does, once.
//! Parsing is separate from reading, so the tests feed sample file
//! contents instead of this machine's.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the cgroup v2 hierarchy, and the v1 memory hierarchy, are mounted.
const CGROUP_V2_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_V1_ROOT: &str = "/sys/fs/cgroup/memory";

/// A cgroup v1 limit at or above this means "no limit": the kernel shows
/// an unlimited group as `PAGE_COUNTER_MAX` pages, about `i64::MAX` bytes.
const V1_UNLIMITED: u64 = 1 << 62;

/// What `--max-memory` defaults to: this share of the limit the broker
/// runs under, leaving the rest for buffers, the allocator and the store's
/// page cache.
pub const DEFAULT_SHARE: (u64, u64) = (1, 2);

/// Which limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The process's cgroup v2 `memory.max`.
    CgroupV2,
    /// The process's cgroup v1 `memory.limit_in_bytes`.
    CgroupV1,
    /// The machine's physical memory.
    PhysicalMemory,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::CgroupV2 => "cgroup v2 memory.max",
            Source::CgroupV1 => "cgroup v1 memory.limit_in_bytes",
            Source::PhysicalMemory => "physical memory",
        })
    }
}

/// The memory limit the process runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimit {
    /// The limit in bytes.
    pub bytes: u64,
    /// Where it comes from.
    pub source: Source,
}

impl MemoryLimit {
    /// `--max-memory`'s default under this limit: [`DEFAULT_SHARE`] of it.
    pub fn default_max_memory(self) -> u64 {
        self.bytes / DEFAULT_SHARE.1 * DEFAULT_SHARE.0
    }
}

/// The memory limit of this process, read from `/proc` and `/sys`; `None`
/// when none of them can be read.
pub fn detect() -> Option<MemoryLimit> {
    detect_with(|path| std::fs::read_to_string(path).ok())
}

/// [`detect`] over the files `read` returns.
fn detect_with(read: impl Fn(&Path) -> Option<String>) -> Option<MemoryLimit> {
    let cgroups = read(Path::new("/proc/self/cgroup")).unwrap_or_default();
    let v2 = cgroup_path(&cgroups, |controllers| controllers.is_empty())
        .and_then(|path| smallest_limit(CGROUP_V2_ROOT, path, "memory.max", parse_v2, &read))
        .map(|bytes| (bytes, Source::CgroupV2));
    let v1 = smallest_limit(
        CGROUP_V1_ROOT,
        cgroup_path(&cgroups, |c| c.split(',').any(|c| c == "memory")).unwrap_or("/"),
        "memory.limit_in_bytes",
        parse_v1,
        &read,
    )
    .map(|bytes| (bytes, Source::CgroupV1));
    let physical = read(Path::new("/proc/meminfo"))
        .and_then(|m| parse_mem_total(&m))
        .map(|bytes| (bytes, Source::PhysicalMemory));
    [v2, v1, physical]
        .into_iter()
        .flatten()
        .min_by_key(|&(bytes, _)| bytes)
        .map(|(bytes, source)| MemoryLimit { bytes, source })
}

/// The path, in `/proc/self/cgroup`, of the hierarchy whose controllers
/// field (`0::/path` for v2, `4:memory:/path` for v1) passes `wanted`.
fn cgroup_path(proc_self_cgroup: &str, wanted: impl Fn(&str) -> bool) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        wanted(controllers).then_some(path)
    })
}

/// The smallest limit in `file` of the cgroup at `path` under `root` and
/// of its ancestors up to `root` (a parent's limit binds its children).
fn smallest_limit(
    root: &str,
    path: &str,
    file: &str,
    parse: fn(&str) -> Option<u64>,
    read: &impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let root = Path::new(root);
    let group: PathBuf = root.join(path.trim_start_matches('/'));
    group
        .ancestors()
        .take_while(|dir| dir.starts_with(root))
        .filter_map(|dir| read(&dir.join(file)))
        .filter_map(|contents| parse(&contents))
        .min()
}

/// A cgroup v2 `memory.max`: bytes, or `max` for none.
fn parse_v2(contents: &str) -> Option<u64> {
    contents.trim().parse().ok()
}

/// A cgroup v1 `memory.limit_in_bytes`: bytes, near `i64::MAX` for none.
fn parse_v1(contents: &str) -> Option<u64> {
    contents
        .trim()
        .parse()
        .ok()
        .filter(|&bytes| bytes < V1_UNLIMITED)
}

/// `MemTotal` of `/proc/meminfo`, in bytes (the file says kB, meaning KiB).
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Parses a byte size: plain bytes (`1048576`), or a number with a unit:
/// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024), `kB`, `MB`, `GB`, `TB`
/// (powers of 1000) or `B`. At least one byte.
///
/// # Errors
/// A message saying what is wrong, for clap to show.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size: write bytes, or e.g. 512MiB or 2GiB"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB"
            ));
        }
    };
    match number.checked_mul(scale) {
        Some(0) => Err("must be at least 1 byte".to_owned()),
        Some(bytes) => Ok(bytes),
        None => Err(format!("{text:?} is too large")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const MEMINFO: &str = "MemTotal:        8041220 kB\nMemFree:          123456 kB\n";
    const PHYSICAL: u64 = 8_041_220 * 1024;

    fn detect_in(files: &[(&str, &str)]) -> Option<MemoryLimit> {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, c)| (PathBuf::from(p), (*c).to_owned()))
            .collect();
        detect_with(|path| files.get(path).cloned())
    }

    fn limit(bytes: u64, source: Source) -> Option<MemoryLimit> {
        Some(MemoryLimit { bytes, source })
    }

    #[test]
    fn a_cgroup_v2_limit_below_physical_memory_applies() {
        let found = detect_in(&[
            ("/proc/self/cgroup", "0::/system.slice/sluice.service\n"),
            (
                "/sys/fs/cgroup/system.slice/sluice.service/memory.max",
                "536870912\n",
            ),
            ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(found, limit(512 << 20, Source::CgroupV2));
        assert_eq!(found.map(MemoryLimit::default_max_memory), Some(256 << 20));
    }

    #[test]
    fn a_parent_cgroup_limit_binds_its_children() {
        let found = detect_in(&[
            ("/proc/self/cgroup", "0::/a/b\n"),
            ("/sys/fs/cgroup/a/b/memory.max", "max\n"),
            ("/sys/fs/cgroup/a/memory.max", "1073741824\n"),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(found, limit(1 << 30, Source::CgroupV2));
    }

    #[test]
    fn cgroup_v2_max_means_physical_memory() {
        let found = detect_in(&[
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/memory.max", "max\n"),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(found, limit(PHYSICAL, Source::PhysicalMemory));
    }

    #[test]
    fn a_cgroup_v1_limit_applies_and_its_unlimited_value_does_not() {
        let v1 = "12:pids:/docker/abc\n4:cpu,memory:/docker/abc\n";
        let found = detect_in(&[
            ("/proc/self/cgroup", v1),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "268435456\n",
            ),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(found, limit(256 << 20, Source::CgroupV1));
        let unlimited = detect_in(&[
            ("/proc/self/cgroup", v1),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(unlimited, limit(PHYSICAL, Source::PhysicalMemory));
    }

    #[test]
    fn a_cgroup_limit_above_physical_memory_is_physical_memory() {
        let found = detect_in(&[
            ("/proc/self/cgroup", "0::/big\n"),
            ("/sys/fs/cgroup/big/memory.max", "1099511627776\n"),
            ("/proc/meminfo", MEMINFO),
        ]);
        assert_eq!(found, limit(PHYSICAL, Source::PhysicalMemory));
    }

    #[test]
    fn unreadable_or_garbled_files_mean_no_limit() {
        assert_eq!(detect_in(&[]), None);
        assert_eq!(
            detect_in(&[
                ("/proc/self/cgroup", "garbage"),
                ("/sys/fs/cgroup/memory.max", "lots\n"),
                ("/proc/meminfo", "MemTotal: many kB\n"),
            ]),
            None
        );
    }

    #[test]
    fn sizes_take_plain_bytes_and_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2 GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64KiB"), Ok(64 << 10));
        assert_eq!(parse_bytes("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_bytes("10B"), Ok(10));
        for bad in ["", "MiB", "1.5GiB", "-1", "12 parsecs", "0", "0GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse_bytes("99999999999TiB").is_err());
    }
}
