//! Gauges read from the queue at scrape time, under one short lock: jobs
//! per state, the age of the oldest READY job (queue latency) and the
//! pause flag per queue, the READY jobs flow control holds back per queue
//! and reason, the open lease streams and their free slots, the
//! bytes the jobs hold against `--max-memory`, and with `--data-dir` the
//! data file's size and the last commit's duration.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use sluice_queue::JobState;

use crate::backend::{GaugeReading, SharedBackend};

/// Every job state, with its label value.
const STATES: [(JobState, &str); 6] = [
    (JobState::Scheduled, "scheduled"),
    (JobState::Ready, "ready"),
    (JobState::Leased, "leased"),
    (JobState::Succeeded, "succeeded"),
    (JobState::Dead, "dead"),
    (JobState::Cancelled, "cancelled"),
];

/// The scrape-time gauges of one broker.
pub struct QueueGauges {
    shared: SharedBackend,
    /// `--max-memory`, if any.
    max_memory: Option<u64>,
}

impl fmt::Debug for QueueGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("QueueGauges")
    }
}

impl QueueGauges {
    /// Gauges of `shared`, whose jobs may hold up to `max_memory` bytes.
    pub fn new(shared: SharedBackend, max_memory: Option<u64>) -> Self {
        Self { shared, max_memory }
    }
}

impl Collector for QueueGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        // A failed broker has nothing to report but its failure (in the log).
        let Some(GaugeReading {
            stats,
            workers,
            held,
            store,
        }) = self.shared.gauges()
        else {
            return Ok(());
        };
        let now = stats.now;
        let queues: Vec<_> = stats
            .queues
            .into_iter()
            .map(|s| {
                let age = s
                    .oldest_ready_due
                    .map_or(0.0, |due| now.saturating_since(due).as_secs_f64());
                (s, age)
            })
            .collect();

        let mut jobs = encoder.encode_descriptor(
            "jobs",
            "Jobs in each state now, per queue",
            None,
            MetricType::Gauge,
        )?;
        for (stats, _) in &queues {
            for (state, name) in STATES {
                let labels = [("queue", stats.queue.as_str()), ("state", name)];
                ConstGauge::new(stats.count(state)).encode(jobs.encode_family(&labels)?)?;
            }
        }
        let mut age = encoder.encode_descriptor(
            "queue_oldest_ready_age",
            "How long the oldest READY job of the queue has been due (0 when none is ready)",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (stats, seconds) in &queues {
            let labels = [("queue", stats.queue.as_str())];
            ConstGauge::new(*seconds).encode(age.encode_family(&labels)?)?;
        }
        let mut paused = encoder.encode_descriptor(
            "queue_paused",
            "1 while the queue is paused, else 0",
            None,
            MetricType::Gauge,
        )?;
        for (stats, _) in &queues {
            let labels = [("queue", stats.queue.as_str())];
            ConstGauge::new(i64::from(stats.paused)).encode(paused.encode_family(&labels)?)?;
        }
        let mut held_back = encoder.encode_descriptor(
            "queue_held_jobs",
            "READY jobs that flow control holds back now, per queue with limits and reason (key_limit, queue_limit, rate, key_delay)",
            None,
            MetricType::Gauge,
        )?;
        for (stats, _) in queues
            .iter()
            .filter(|(s, _)| !s.flow.limits.is_empty() || s.flow.waiting.iter().any(|&n| n > 0))
        {
            for reason in sluice_queue::HoldReason::ALL {
                let labels = [("queue", stats.queue.as_str()), ("reason", reason.name())];
                ConstGauge::new(stats.flow.waiting(reason))
                    .encode(held_back.encode_family(&labels)?)?;
            }
        }
        let streams = workers.len() as u64;
        let free: u64 = workers
            .iter()
            .map(|w| u64::from(w.max_in_flight.saturating_sub(w.in_flight)))
            .sum();
        ConstGauge::new(streams).encode(encoder.encode_descriptor(
            "lease_streams",
            "Open Lease and LeaseBatches streams (connected workers)",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(free).encode(encoder.encode_descriptor(
            "lease_stream_free_slots",
            "Jobs the open lease streams would take now (their free credit)",
            None,
            MetricType::Gauge,
        )?)?;
        if let Some((held, retained)) = held {
            ConstGauge::new(held).encode(encoder.encode_descriptor(
                "jobs_held",
                "Bytes the jobs hold, as --max-memory counts them",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?)?;
            ConstGauge::new(retained).encode(encoder.encode_descriptor(
                "jobs_retained",
                "Of those, the bytes of retained SUCCEEDED and CANCELLED jobs, forgotten first to make room",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?)?;
        }
        if let Some(max_memory) = self.max_memory.filter(|_| held.is_some()) {
            ConstGauge::new(max_memory).encode(encoder.encode_descriptor(
                "jobs_max_memory",
                "--max-memory: past it, Enqueue and RetryJob are refused",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?)?;
        }
        if let Some(store) = store {
            ConstGauge::new(store.file_bytes).encode(encoder.encode_descriptor(
                "store_file",
                "Size of the --data-dir files: the database and its journal",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?)?;
            let commit = store.last_commit.map_or(0.0, |d| d.as_secs_f64());
            ConstGauge::new(commit).encode(encoder.encode_descriptor(
                "store_last_commit",
                "How long the last commit to --data-dir took, fsync included",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
    }
}
