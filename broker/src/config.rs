//! The broker's settings, with their defaults. Only `main.rs` reads flags
//! and environment variables into it; tests build it directly.

use std::path::PathBuf;
use std::time::Duration;

use crate::queue::{Backoff, QueueConfig};

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
            queue: QueueConfig {
                max_attempts: 4,
                default_timeout: Duration::from_secs(60),
                lease_duration: Duration::from_secs(30),
                backoff: Backoff {
                    initial: Duration::from_millis(500),
                    max: Duration::from_secs(30),
                    jitter: 0.25,
                },
                retention: Duration::from_secs(3600),
                max_retained: 1_000_000,
                max_queue_size: None,
            },
            max_payload: 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            data_dir: None,
        }
    }
}
