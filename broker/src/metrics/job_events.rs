//! Job counters and the wait and run-time histograms, fed by the queue's
//! [`Observer`] on every transition.
//!
//! The observer keeps, per (queue, job type) id pair, clones of the metric
//! handles it updates (each an `Arc` inside), so an event costs a hash
//! lookup and an atomic add, without allocating. Job types past
//! [`MAX_JOB_TYPE_LABELS`], and queues past [`MAX_QUEUE_LABELS`], share the
//! label [`sluice_limits::OTHER_JOB_TYPE`] (by [`LabelCap`]), so producers cannot grow the scrape without
//! bound.

use std::collections::HashMap;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice_limits::{JOB_SECONDS_BUCKETS, LabelCap, MAX_JOB_TYPE_LABELS, MAX_QUEUE_LABELS};
use sluice_queue::{JobEvent, JobLabels, Observer};

/// The labels of every job metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobTypeLabels {
    /// The job's queue.
    pub queue: String,
    /// Its type; [`sluice_limits::OTHER_JOB_TYPE`] for either past its cap.
    pub job_type: String,
}

/// A histogram of job durations.
fn job_seconds() -> Histogram {
    Histogram::new(JOB_SECONDS_BUCKETS)
}

type Histograms = Family<JobTypeLabels, Histogram, fn() -> Histogram>;

/// The counters, by [`JobEvent`] (see [`counter_of`]): name and help.
const COUNTERS: [(&str, &str); 11] = [
    ("jobs_enqueued", "Jobs accepted by Enqueue and EnqueueBatch"),
    (
        "jobs_duplicates",
        "Enqueues refused as duplicates of a known idempotency key (no job added)",
    ),
    ("jobs_leased", "Jobs handed to workers (attempts started)"),
    ("jobs_acked", "Attempts acknowledged (job SUCCEEDED)"),
    (
        "jobs_nacked",
        "Attempts failed by Nack (retried unless also dead-lettered)",
    ),
    (
        "jobs_expired",
        "Attempts whose lease ran out: the worker timed out, hung or died",
    ),
    ("jobs_dead_lettered", "Jobs that went DEAD"),
    (
        "jobs_released",
        "Jobs given back by their worker without using an attempt",
    ),
    ("jobs_cancelled", "Jobs CANCELLED by an operator"),
    (
        "jobs_retried",
        "DEAD or CANCELLED jobs sent back to READY by an operator",
    ),
    ("jobs_purged", "Jobs deleted by PurgeQueue"),
];

/// The index in [`COUNTERS`] of the counter `event` adds to.
fn counter_of(event: JobEvent) -> usize {
    match event {
        JobEvent::Enqueued => 0,
        JobEvent::Duplicate => 1,
        JobEvent::Leased { .. } => 2,
        JobEvent::Acked { .. } => 3,
        JobEvent::Nacked { .. } => 4,
        JobEvent::Expired { .. } => 5,
        JobEvent::DeadLettered => 6,
        JobEvent::Released => 7,
        JobEvent::Cancelled => 8,
        JobEvent::Retried => 9,
        JobEvent::Purged => 10,
    }
}

/// The job metrics' families, registered once.
#[derive(Debug, Clone)]
struct Families {
    counters: [Family<JobTypeLabels, Counter>; COUNTERS.len()],
    wait: Histograms,
    run: Histograms,
}

/// One label pair's handles.
#[derive(Debug)]
struct Handles {
    counters: [Counter; COUNTERS.len()],
    wait: Histogram,
    run: Histogram,
}

/// The [`Observer`] the broker installs on its queue.
#[derive(Debug)]
pub struct JobMetrics {
    families: Families,
    /// By (queue id, job type id).
    handles: HashMap<(u32, u32), Handles>,
    queues: LabelCap<u32>,
    job_types: LabelCap<u32>,
}

impl JobMetrics {
    /// Registers the job metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let counters: [Family<JobTypeLabels, Counter>; COUNTERS.len()] =
            std::array::from_fn(|_| Family::default());
        for ((name, help), family) in COUNTERS.iter().zip(&counters) {
            registry.register(*name, *help, family.clone());
        }
        let wait = Histograms::new_with_constructor(job_seconds);
        let run = Histograms::new_with_constructor(job_seconds);
        registry.register_with_unit(
            "job_wait",
            "From due (READY) to leased, per attempt",
            Unit::Seconds,
            wait.clone(),
        );
        registry.register_with_unit(
            "job_run",
            "From leased to acked, nacked or expired, per attempt",
            Unit::Seconds,
            run.clone(),
        );
        Self {
            families: Families {
                counters,
                wait,
                run,
            },
            handles: HashMap::new(),
            queues: LabelCap::new(MAX_QUEUE_LABELS),
            job_types: LabelCap::new(MAX_JOB_TYPE_LABELS),
        }
    }

    fn handles(&mut self, labels: JobLabels<'_>) -> &Handles {
        let key = (labels.queue_id, labels.job_type_id);
        if !self.handles.contains_key(&key) {
            let label = JobTypeLabels {
                queue: self.queues.label(labels.queue_id, labels.queue).to_owned(),
                job_type: self
                    .job_types
                    .label(labels.job_type_id, labels.job_type)
                    .to_owned(),
            };
            let families = &self.families;
            let handles = Handles {
                counters: std::array::from_fn(|i| families.counters[i].get_or_create_owned(&label)),
                wait: families.wait.get_or_create_owned(&label),
                run: families.run.get_or_create_owned(&label),
            };
            self.handles.insert(key, handles);
        }
        &self.handles[&key]
    }
}

impl Observer for JobMetrics {
    fn job_event(&mut self, labels: JobLabels<'_>, event: JobEvent) {
        let handles = self.handles(labels);
        handles.counters[counter_of(event)].inc();
        match event {
            JobEvent::Leased { waited } => handles.wait.observe(waited.as_secs_f64()),
            JobEvent::Acked { ran } | JobEvent::Nacked { ran } | JobEvent::Expired { ran } => {
                handles.run.observe(ran.as_secs_f64());
            }
            _ => {}
        }
    }

    fn name_forgotten(&mut self, id: u32) {
        self.handles
            .retain(|&(queue, job_type), _| queue != id && job_type != id);
        self.queues.forget(&id);
        self.job_types.forget(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types_past_the_cap_share_the_other_label() {
        let mut registry = Registry::default();
        let mut metrics = JobMetrics::register(&mut registry);
        let names: Vec<String> = (0..=MAX_JOB_TYPE_LABELS)
            .map(|n| format!("type-{n}"))
            .collect();
        for (id, name) in names.iter().enumerate() {
            let labels = JobLabels {
                queue_id: 0,
                queue: "q",
                job_type_id: u32::try_from(id).unwrap(),
                job_type: name,
            };
            metrics.job_event(labels, JobEvent::Enqueued);
            // A second event of a known type lands on the same series.
            metrics.job_event(labels, JobEvent::Enqueued);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let enqueued: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("jobs_enqueued_total{"))
            .collect();
        assert_eq!(enqueued.len(), MAX_JOB_TYPE_LABELS + 1, "{enqueued:?}");
        assert!(enqueued.contains(&r#"jobs_enqueued_total{queue="q",job_type="type-0"} 2"#));
        let last = format!("type-{MAX_JOB_TYPE_LABELS}");
        assert!(!text.contains(&last));
        assert!(enqueued.contains(&r#"jobs_enqueued_total{queue="q",job_type="other"} 2"#));
    }

    #[test]
    fn a_reclaimed_id_counts_under_its_new_name() {
        let mut registry = Registry::default();
        let mut metrics = JobMetrics::register(&mut registry);
        let labels = |queue| JobLabels {
            queue_id: 0,
            queue,
            job_type_id: 1,
            job_type: "t",
        };
        metrics.job_event(labels("old"), JobEvent::Enqueued);
        metrics.name_forgotten(0);
        metrics.job_event(labels("new"), JobEvent::Enqueued);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for queue in ["old", "new"] {
            let series = format!(r#"jobs_enqueued_total{{queue="{queue}",job_type="t"}} 1"#);
            assert!(text.contains(&series), "{series} in {text}");
        }
    }
}
