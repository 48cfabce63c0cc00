//! Delays between reconnect and retry attempts: exponential with jitter, so
//! that workers that lost the broker together do not return in lockstep.

use std::time::Duration;

use rand::Rng as _;

const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

/// The delay before retry number `attempt` (from 0): 100ms doubling to 5s, ±25%.
pub fn delay(attempt: u32) -> Duration {
    let base = INITIAL.saturating_mul(1u32 << attempt.min(16)).min(MAX);
    base.mul_f64(rand::rng().random_range(0.75..=1.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_then_caps_with_jitter() {
        for _ in 0..50 {
            let first = delay(0);
            assert!(
                first >= Duration::from_millis(75) && first <= Duration::from_millis(125),
                "{first:?}"
            );
            let late = delay(40);
            assert!(
                late >= Duration::from_millis(3750) && late <= Duration::from_millis(6250),
                "{late:?}"
            );
        }
    }
}
