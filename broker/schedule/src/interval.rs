//! Interval schedules (`every`): ticks at `base + k * every` seconds for
//! every integer `k`, in elapsed time, whatever the zone's clocks do.

use std::time::Duration;

use sluice_limits::{MAX_SCHEDULE_INTERVAL, MIN_SCHEDULE_INTERVAL};

/// The grid of an interval schedule, in whole seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interval {
    /// One tick of the grid.
    pub(crate) base: i64,
    /// Seconds between ticks, at least 1.
    pub(crate) every: i64,
}

impl Interval {
    /// The interval of a schedule, in seconds.
    ///
    /// # Errors
    /// Why `every` is refused: not whole seconds, or outside
    /// [`MIN_SCHEDULE_INTERVAL`] to [`MAX_SCHEDULE_INTERVAL`].
    pub(crate) fn seconds(every: Duration) -> Result<i64, String> {
        if every.subsec_nanos() != 0 {
            return Err(format!(
                "must be whole seconds, got {}ms",
                every.as_millis()
            ));
        }
        if every < MIN_SCHEDULE_INTERVAL {
            return Err(format!(
                "must be at least {}s",
                MIN_SCHEDULE_INTERVAL.as_secs()
            ));
        }
        if every > MAX_SCHEDULE_INTERVAL {
            return Err(format!(
                "must be at most {} days",
                MAX_SCHEDULE_INTERVAL.as_secs() / 86_400
            ));
        }
        // At most 366 days of seconds: fits.
        Ok(every.as_secs() as i64)
    }

    /// The first tick at or after `secs`.
    pub(crate) fn at_or_after(&self, secs: i64) -> Option<i64> {
        let k = secs.checked_sub(self.base)?.div_euclid(self.every);
        let tick = self.base.checked_add(k.checked_mul(self.every)?)?;
        if tick < secs {
            tick.checked_add(self.every)
        } else {
            Some(tick)
        }
    }

    /// The last tick at or before `secs`.
    pub(crate) fn at_or_before(&self, secs: i64) -> Option<i64> {
        let k = secs.checked_sub(self.base)?.div_euclid(self.every);
        self.base.checked_add(k.checked_mul(self.every)?)
    }

    /// How many ticks lie in `first..=last` (seconds).
    pub(crate) fn count(&self, first: i64, last: i64) -> u64 {
        match (self.at_or_after(first), self.at_or_before(last)) {
            (Some(low), Some(high)) if low <= high => ((high - low) / self.every + 1) as u64,
            _ => 0,
        }
    }
}
