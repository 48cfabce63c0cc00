//! The worker's Prometheus metrics, for the `sluice-worker` binary's
//! `--http-addr` or a program's own registry: jobs started, succeeded,
//! failed, timed out and released, and their run time, by job type; jobs
//! in flight and free concurrency slots; reconnections of the lease stream.
//!
//! Register once with [`WorkerMetrics::register`] and hand the result to
//! [`crate::WorkerBuilder::metrics`]. Handles per job type are made on
//! first use and kept; job types past [`MAX_JOB_TYPE_LABELS`] share the
//! label [`sluice_limits::OTHER_JOB_TYPE`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sluice_limits::{JOB_SECONDS_BUCKETS, LabelCap, MAX_JOB_TYPE_LABELS};

/// The `Content-Type` of a `GET /metrics` answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `registry` as OpenMetrics text, the body of a `GET /metrics` answer
/// (of `sluice-worker --http-addr` and of `sluice-kafka --http-addr`).
pub fn openmetrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// How an attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Succeeded,
    /// Nacked: the handler failed, timed out or was cancelled.
    Failed,
    /// Given back without using an attempt.
    Released,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobTypeLabel {
    job_type: String,
}

type Counters = Family<JobTypeLabel, Counter>;

#[derive(Debug, Clone)]
struct TypeHandles {
    started: Counter,
    succeeded: Counter,
    failed: Counter,
    timed_out: Counter,
    released: Counter,
    run: Histogram,
}

/// The worker's metrics; see the module docs.
#[derive(Debug)]
pub struct WorkerMetrics {
    started: Counters,
    succeeded: Counters,
    failed: Counters,
    timed_out: Counters,
    released: Counters,
    run: Family<JobTypeLabel, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
    free_slots: Gauge,
    reconnects: Counter,
    /// Handles by job type, and which types have a label of their own.
    by_type: Mutex<(HashMap<String, TypeHandles>, LabelCap<String>)>,
}

fn job_seconds() -> Histogram {
    Histogram::new(JOB_SECONDS_BUCKETS)
}

impl WorkerMetrics {
    /// Registers the worker's metrics in `registry` (the binary's has the
    /// prefix `sluice_worker`).
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Self {
            started: Counters::default(),
            succeeded: Counters::default(),
            failed: Counters::default(),
            timed_out: Counters::default(),
            released: Counters::default(),
            run: Family::new_with_constructor(job_seconds),
            in_flight: Gauge::default(),
            free_slots: Gauge::default(),
            reconnects: Counter::default(),
            by_type: Mutex::new((HashMap::new(), LabelCap::new(MAX_JOB_TYPE_LABELS))),
        };
        let counters = [
            (
                "jobs_started",
                "Attempts started (a handler ran)",
                &metrics.started,
            ),
            ("jobs_succeeded", "Attempts acked", &metrics.succeeded),
            (
                "jobs_failed",
                "Attempts nacked: the handler failed, timed out or was cancelled",
                &metrics.failed,
            ),
            (
                "jobs_timed_out",
                "Attempts stopped at the job's timeout (their nack, once reported, counts as failed)",
                &metrics.timed_out,
            ),
            (
                "jobs_released",
                "Jobs given back without using an attempt (shutdown, no free slot)",
                &metrics.released,
            ),
        ];
        for (name, help, family) in counters {
            registry.register(name, help, family.clone());
        }
        registry.register_with_unit(
            "job_run",
            "Handler run time per attempt",
            Unit::Seconds,
            metrics.run.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Jobs leased to this worker and not yet resolved",
            metrics.in_flight.clone(),
        );
        registry.register(
            "free_slots",
            "Concurrency slots not running a job",
            metrics.free_slots.clone(),
        );
        registry.register(
            "reconnects",
            "Times the lease stream was opened again after it broke or could not open",
            metrics.reconnects.clone(),
        );
        Arc::new(metrics)
    }

    fn handles(&self, job_type: &str) -> TypeHandles {
        // The map only grows by whole entries: a panic cannot tear it.
        let mut guard = self.by_type.lock().unwrap_or_else(PoisonError::into_inner);
        let (by_type, cap) = &mut *guard;
        if let Some(handles) = by_type.get(job_type) {
            return handles.clone();
        }
        let label = JobTypeLabel {
            job_type: cap.label(job_type.to_owned(), job_type).to_owned(),
        };
        let handles = TypeHandles {
            started: self.started.get_or_create_owned(&label),
            succeeded: self.succeeded.get_or_create_owned(&label),
            failed: self.failed.get_or_create_owned(&label),
            timed_out: self.timed_out.get_or_create_owned(&label),
            released: self.released.get_or_create_owned(&label),
            run: self.run.get_or_create_owned(&label),
        };
        by_type.insert(job_type.to_owned(), handles.clone());
        handles
    }

    /// The worker runs up to `concurrency` jobs at once.
    pub(crate) fn set_slots(&self, concurrency: usize) {
        self.free_slots
            .set(i64::try_from(concurrency).unwrap_or(i64::MAX));
    }

    /// A job was leased to this worker; `+1` in flight until [`Self::resolved`].
    pub(crate) fn leased(&self) {
        self.in_flight.inc();
    }

    /// A job of `job_type` took a slot and its handler started.
    pub(crate) fn started(&self, job_type: &str) {
        self.handles(job_type).started.inc();
        self.free_slots.dec();
    }

    /// The handler of a job of `job_type` stopped after `ran`, giving its
    /// slot back; `timed_out` if it was stopped at the job's timeout.
    pub(crate) fn stopped(&self, job_type: &str, ran: Duration, timed_out: bool) {
        let handles = self.handles(job_type);
        handles.run.observe(ran.as_secs_f64());
        if timed_out {
            handles.timed_out.inc();
        }
        self.free_slots.inc();
    }

    /// A leased job of `job_type` is no longer this worker's: reported as
    /// `ended`, or `None` when its outcome could not be reported (its lease
    /// runs out at the broker).
    pub(crate) fn resolved(&self, job_type: &str, ended: Option<Ended>) {
        self.in_flight.dec();
        let handles = self.handles(job_type);
        match ended {
            Some(Ended::Succeeded) => handles.succeeded.inc(),
            Some(Ended::Failed) => handles.failed.inc(),
            Some(Ended::Released) => handles.released.inc(),
            None => 0,
        };
    }

    /// The lease stream is being opened again.
    pub(crate) fn reconnecting(&self) {
        self.reconnects.inc();
    }
}
