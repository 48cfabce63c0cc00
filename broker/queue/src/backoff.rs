//! Retry delay after a failed attempt: exponential with jitter, as a pure
//! function so that its bounds are tested without randomness or time.

use std::time::Duration;

/// Exponential backoff: `initial`, doubled per failed attempt, capped at `max`,
/// then spread by ±`jitter` (a fraction, 0.25 for ±25%).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub initial: Duration,
    /// Upper bound before jitter.
    pub max: Duration,
    /// Fraction of the delay by which it may be spread either way.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before the attempt that follows failed attempt number
    /// `attempt` (from 1), with `unit` a uniform sample of `[0, 1)` that
    /// places it within the jitter band.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let base = self
            .initial
            .checked_mul(1u32.checked_shl(doublings).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        let spread = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(spread.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(30),
        jitter: 0.25,
    };

    #[test]
    fn delay_doubles_per_attempt_without_jitter() {
        let mid = 0.5; // the middle of the jitter band
        assert_eq!(BACKOFF.delay(1, mid), Duration::from_millis(500));
        assert_eq!(BACKOFF.delay(2, mid), Duration::from_secs(1));
        assert_eq!(BACKOFF.delay(3, mid), Duration::from_secs(2));
        assert_eq!(BACKOFF.delay(6, mid), Duration::from_secs(16));
    }

    #[test]
    fn delay_is_capped_at_max_even_for_huge_attempts() {
        assert_eq!(BACKOFF.delay(7, 0.5), Duration::from_secs(30));
        assert_eq!(BACKOFF.delay(u32::MAX, 0.5), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_a_quarter_either_way() {
        assert_eq!(BACKOFF.delay(2, 0.0), Duration::from_millis(750));
        assert_eq!(BACKOFF.delay(2, 1.0), Duration::from_millis(1250));
        for i in 0..100 {
            let d = BACKOFF.delay(3, f64::from(i) / 100.0);
            assert!(
                d >= Duration::from_millis(1500) && d <= Duration::from_millis(2500),
                "{d:?}"
            );
        }
    }
}
