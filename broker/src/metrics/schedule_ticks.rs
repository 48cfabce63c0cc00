//! The schedules' metrics, fed by the firing loop ([`TickObserver`]): ticks
//! fired and skipped, and the lag from a tick's time to its enqueue, per
//! schedule and its template's queue. Schedules past
//! [`MAX_QUEUE_LABELS`] share the label [`sluice_limits::OTHER_JOB_TYPE`],
//! as queues do, so the scrape stays bounded.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice_limits::{LabelCap, MAX_QUEUE_LABELS};

use crate::schedules::{Skipped, TickObserver};

/// The labels of the tick metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
    queue: String,
}

/// The labels of skipped ticks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkippedLabels {
    schedule: String,
    queue: String,
    reason: &'static str,
}

/// Buckets of the lag, in seconds: 1 ms to 1 min.
const LAG_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 60.0,
];

fn lag_histogram() -> Histogram {
    Histogram::new(LAG_BUCKETS)
}

/// The tick metrics; see the module doc.
pub struct ScheduleMetrics {
    fired: Family<ScheduleLabels, Counter>,
    skipped: Family<SkippedLabels, Counter>,
    lag: Family<ScheduleLabels, Histogram, fn() -> Histogram>,
    names: Mutex<LabelCap<String>>,
}

impl ScheduleMetrics {
    /// Registers the tick metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            fired: Family::default(),
            skipped: Family::default(),
            lag: Family::new_with_constructor(lag_histogram),
            names: Mutex::new(LabelCap::new(MAX_QUEUE_LABELS)),
        };
        registry.register(
            "schedule_ticks_fired",
            "Schedule ticks that enqueued a job",
            metrics.fired.clone(),
        );
        registry.register(
            "schedule_ticks_skipped",
            "Schedule ticks skipped by policy (reason: catch_up or overlap)",
            metrics.skipped.clone(),
        );
        registry.register_with_unit(
            "schedule_tick_lag",
            "From a tick's time to its job's enqueue",
            Unit::Seconds,
            metrics.lag.clone(),
        );
        metrics
    }

    fn labels(&self, schedule: &str, queue: &str) -> ScheduleLabels {
        let schedule = match self.names.lock() {
            Ok(mut names) => names.label(schedule.to_owned(), schedule).to_owned(),
            Err(_) => sluice_limits::OTHER_JOB_TYPE.to_owned(),
        };
        ScheduleLabels {
            schedule,
            queue: queue.to_owned(),
        }
    }
}

impl TickObserver for ScheduleMetrics {
    fn fired(&self, schedule: &str, queue: &str, lag: Duration) {
        let labels = self.labels(schedule, queue);
        self.fired.get_or_create(&labels).inc();
        self.lag.get_or_create(&labels).observe(lag.as_secs_f64());
    }

    fn skipped(&self, schedule: &str, queue: &str, why: Skipped, count: u64) {
        let ScheduleLabels { schedule, queue } = self.labels(schedule, queue);
        self.skipped
            .get_or_create(&SkippedLabels {
                schedule,
                queue,
                reason: why.as_str(),
            })
            .inc_by(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_counted_per_schedule_and_queue() {
        let mut registry = Registry::with_prefix("sluice");
        let metrics = ScheduleMetrics::register(&mut registry);
        metrics.fired("nightly", "reports", Duration::from_millis(3));
        metrics.skipped("nightly", "reports", Skipped::Overlap, 2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(text.contains(
            "sluice_schedule_ticks_fired_total{schedule=\"nightly\",queue=\"reports\"} 1"
        ));
        assert!(text.contains(
            "sluice_schedule_ticks_skipped_total{schedule=\"nightly\",queue=\"reports\",reason=\"overlap\"} 2"
        ));
        assert!(text.contains("sluice_schedule_tick_lag_seconds_count"));
    }
}
