//! The [`Clock`] that the service layer reads the queue's [`Timestamp`]s from.
//!
//! The queue never reads a clock: every time-dependent call takes `now`, so
//! unit tests drive time by hand. The production clock is anchored to the wall
//! clock once and then advances with `tokio::time::Instant`, which makes it
//! monotonic (a wall-clock step cannot reorder deadlines) and lets service
//! tests run under tokio's paused time.

use std::time::SystemTime;

pub use sluice_queue::Timestamp;

/// A source of `now` for the service layer.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The wall clock at creation, advanced by `tokio::time::Instant` since.
#[derive(Debug, Clone)]
pub struct TokioClock {
    wall_at_anchor: Timestamp,
    anchor: tokio::time::Instant,
}

impl TokioClock {
    /// Anchors the clock to the wall clock now.
    pub fn new() -> Self {
        Self {
            wall_at_anchor: Timestamp::from_system_time(SystemTime::now()),
            anchor: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant at which this clock reads `t` (now, if `t` is past).
    pub fn instant_at(&self, t: Timestamp) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        now + t.saturating_since(self.now())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.wall_at_anchor.saturating_add(self.anchor.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let start = clock.now();
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        assert_eq!(
            clock.now().saturating_since(start),
            std::time::Duration::from_secs(3)
        );
    }
}
