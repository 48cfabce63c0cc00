//! [`QueueConfig`]: the rules the queue applies, and their defaults. The
//! defaults here are the broker's flag defaults too: its flags and its
//! README table are checked against them.

use std::time::Duration;

use crate::Backoff;

/// Rules the queue applies; see the broker's flags for their meaning.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Attempts for a job that does not say.
    pub max_attempts: u32,
    /// Per-attempt run limit for a job that does not say.
    pub default_timeout: Duration,
    /// Lease length for a consumer that does not say.
    pub lease_duration: Duration,
    /// Delay before a failed job runs again.
    pub backoff: Backoff,
    /// How long SUCCEEDED and CANCELLED jobs stay visible.
    pub retention: Duration,
    /// Most SUCCEEDED and CANCELLED jobs kept at once; the oldest go first.
    pub max_retained: usize,
    /// Most unfinished jobs per queue; `None` for no limit.
    pub max_queue_size: Option<u64>,
    /// Most bytes the jobs may hold, as [`Queue::held_bytes`](crate::Queue::held_bytes)
    /// counts them; `None` for no limit. Its default is the broker's (a
    /// share of the machine's memory), which the queue cannot see.
    pub max_memory: Option<u64>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            // The first try and three retries.
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
            max_memory: None,
        }
    }
}
