//! Per-queue rates over the last minute for Stats: a sampler task records
//! every queue's counters every few seconds, and a rate is the growth of a
//! counter since the oldest sample that is at most a minute old (or since
//! the first sample, when the broker is younger).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use sluice_queue::{QueueStats, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::backend::SharedBackend;

/// The window the rates cover.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How often the counters are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The counters a rate is taken of: enqueued, acked, failed (nacked + expired).
type Totals = [u64; 3];

fn totals(stats: &QueueStats) -> Totals {
    let c = stats.counters;
    [c.enqueued, c.acked, c.nacked + c.expired]
}

/// Jobs per second over the window.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct QueueRates {
    /// Jobs enqueued.
    pub enqueued: f64,
    /// Attempts acknowledged.
    pub acked: f64,
    /// Attempts failed by Nack or lease expiry.
    pub failed: f64,
}

/// Samples, oldest first; one more than the window holds, so that the
/// oldest is a full window old once the broker has run that long.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Timestamp, HashMap<String, Totals>)>>,
}

impl Rates {
    /// Records `stats`, taken at `now`.
    pub fn sample(&self, stats: &[QueueStats], now: Timestamp) {
        let totals = stats.iter().map(|s| (s.queue.clone(), totals(s))).collect();
        let mut samples = self.lock();
        samples.push_back((now, totals));
        while samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_since(*t) >= RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// The rates of the queue `stats` describes, as of `now`.
    pub fn of(&self, stats: &QueueStats, now: Timestamp) -> QueueRates {
        let samples = self.lock();
        let Some((since, earlier)) = samples.front() else {
            return QueueRates::default();
        };
        let seconds = now.saturating_since(*since).as_secs_f64();
        if seconds < 1.0 {
            return QueueRates::default();
        }
        // A queue first seen after the sample started from zero.
        let before = earlier.get(&stats.queue).copied().unwrap_or_default();
        let now_totals = totals(stats);
        let [enqueued, acked, failed] =
            std::array::from_fn(|i| now_totals[i].saturating_sub(before[i]) as f64 / seconds);
        QueueRates {
            enqueued,
            acked,
            failed,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Timestamp, HashMap<String, Totals>)>> {
        // The samples are replaced whole: a panic cannot leave them torn.
        self.samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Samples the queue's counters into `rates` until `stop` is cancelled.
pub async fn sample(shared: SharedBackend, rates: std::sync::Arc<Rates>, stop: CancellationToken) {
    let mut every = tokio::time::interval(SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = every.tick() => {}
        }
        match shared.counters().await {
            Ok(reading) => rates.sample(&reading.queues, reading.now),
            // The broker failed: nothing changes any more.
            Err(_) if shared.failure().is_some() => break,
            // Unreachable for now (its database, say): sampled next time.
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_queue::Counters;

    fn stats(queue: &str, enqueued: u64, acked: u64, nacked: u64, expired: u64) -> QueueStats {
        QueueStats {
            queue: queue.into(),
            paused: false,
            counts: [0; 6],
            counters: Counters {
                enqueued,
                acked,
                nacked,
                expired,
                dead: 0,
            },
            ..QueueStats::default()
        }
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_micros(secs * 1_000_000)
    }

    #[test]
    fn rates_cover_the_last_minute_once_the_broker_is_older() {
        let rates = Rates::default();
        assert_eq!(
            rates.of(&stats("q", 5, 0, 0, 0), at(0)),
            QueueRates::default()
        );
        for t in (0..=120).step_by(5) {
            // 10 enqueued, 4 acked, 1 nacked and 1 expired per second.
            rates.sample(&[stats("q", 10 * t, 4 * t, t, t)], at(t));
        }
        let now = stats("q", 1250, 500, 125, 125);
        let r = rates.of(&now, at(125));
        assert_eq!((r.enqueued, r.acked, r.failed), (10.0, 4.0, 2.0));
        // A queue the samples never saw: counted from zero over the window
        // (65 s: from the youngest sample at least a minute old).
        let r = rates.of(&stats("new", 65, 0, 0, 0), at(125));
        assert_eq!(r.enqueued, 1.0);
    }

    #[test]
    fn a_young_broker_rates_over_its_uptime() {
        let rates = Rates::default();
        rates.sample(&[stats("q", 0, 0, 0, 0)], at(0));
        let r = rates.of(&stats("q", 40, 20, 0, 0), at(20));
        assert_eq!((r.enqueued, r.acked), (2.0, 1.0));
    }
}
