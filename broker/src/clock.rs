//! Time as the broker sees it: [`Timestamp`], microseconds since the Unix
//! epoch, and the [`Clock`] that the service layer reads it from.
//!
//! The queue never reads a clock: every time-dependent call takes `now`, so
//! unit tests drive time by hand. The production clock is anchored to the wall
//! clock once and then advances with `tokio::time::Instant`, which makes it
//! monotonic (a wall-clock step cannot reorder deadlines) and lets service
//! tests run under tokio's paused time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: microseconds since the Unix epoch. Small and totally
/// ordered, so deadline sets can key on `(Timestamp, job)`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The timestamp `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The wall-clock time; times before the epoch read as the epoch.
    pub fn from_system_time(t: SystemTime) -> Self {
        let micros = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        Self(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// `self + d`, saturating at the end of representable time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(micros))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// Seconds and nanoseconds since the epoch, as protobuf's Timestamp wants them.
    pub fn to_unix_parts(self) -> (i64, i32) {
        let secs = i64::try_from(self.0 / 1_000_000).unwrap_or(i64::MAX);
        // Always below 1e9, so it fits.
        let nanos = (self.0 % 1_000_000) as i32 * 1_000;
        (secs, nanos)
    }
}

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

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Timestamp::from_micros(10);
        assert_eq!(t.saturating_add(Duration::from_micros(5)).as_micros(), 15);
        assert_eq!(
            Timestamp::from_micros(u64::MAX - 1)
                .saturating_add(Duration::from_secs(1))
                .as_micros(),
            u64::MAX
        );
        assert_eq!(
            t.saturating_since(Timestamp::from_micros(20)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_micros(1_500_000).to_unix_parts(),
            (1, 500_000_000)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(clock.now().saturating_since(start), Duration::from_secs(3));
    }
}
