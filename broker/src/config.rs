//! The broker's settings, with their defaults. Only `main.rs` reads flags
//! and environment variables into it; tests build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sluice_queue::QueueConfig;

/// Where the broker listens unless `--addr` says otherwise: loopback, so a
/// broker started without thought is not reachable from other hosts.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    50051,
));

/// Everything [`crate::server::run`] needs besides its listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules of the queue.
    pub queue: QueueConfig,
    /// Largest job payload accepted, in bytes.
    pub max_payload: usize,
    /// How long a drain waits for leased jobs to be resolved.
    pub drain_timeout: Duration,
    /// Where jobs are kept across restarts; `None` for memory only.
    pub data_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            max_payload: 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            data_dir: None,
        }
    }
}
