//! [`Timestamp`]: time as the queue sees it, microseconds since the Unix
//! epoch. The queue never reads a clock; callers pass `now`.

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
}
