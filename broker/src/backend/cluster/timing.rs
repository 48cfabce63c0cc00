//! The intervals every shared store keeps alike, defined once (the
//! README's Scale-out section states them).

use std::time::Duration;

/// How often, by default, each broker looks for work without a
/// notification: claims, due jobs, expired leases and the slots of its
/// streams are found within this interval where notifications are lost,
/// unavailable or behind a pooler.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How often, by default, queues that hold nothing (no job, no pause) are
/// removed with their counters.
pub const QUEUE_SWEEP: Duration = Duration::from_secs(60);

/// How often a broker renews its record (its streams and counters).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// A broker not heard from for this long is gone: its streams leave
/// ListWorkers and its counters join those of brokers gone.
pub const BROKER_GONE_AFTER: Duration = Duration::from_secs(10);

/// How often the gauges of /metrics are read from the store (they count
/// every job, which is not free on a large history).
pub const GAUGES_EVERY: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reach the store again (the
/// health check, LISTEN, SUBSCRIBE).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long making one connection to the store may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
