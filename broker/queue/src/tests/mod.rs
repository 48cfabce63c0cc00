//! Unit tests of the queue state machine: every rule, with time passed by
//! hand. The helpers live here; the tests, one file per area, below.

mod admin;
mod delivery;
mod durable;
mod flow;
mod layering;
mod memory;
mod names;
mod observer;
mod properties;
mod resolution;

use std::time::Duration;

use super::transitions::truncate_error;
use super::*;

const SEC: u64 = 1_000_000;

fn config() -> QueueConfig {
    QueueConfig {
        max_attempts: 3,
        default_timeout: Duration::from_secs(60),
        lease_duration: Duration::from_secs(30),
        backoff: Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.25,
        },
        retention: Duration::from_secs(3600),
        max_retained: 1000,
        max_queue_size: None,
        max_memory: None,
    }
}

fn at(secs: u64) -> Timestamp {
    Timestamp::from_micros(1_000 * SEC + secs * SEC)
}

fn job(job_type: &str) -> NewJob {
    NewJob {
        queue: "default".into(),
        job_type: job_type.into(),
        payload: Bytes::from_static(b"{}"),
        ..NewJob::default()
    }
}

/// A job of type "t" with a single attempt.
fn one_attempt() -> NewJob {
    NewJob {
        max_attempts: Some(1),
        ..job("t")
    }
}

/// A job of type "t" due at `at(secs)`.
fn job_at(secs: u64) -> NewJob {
    NewJob {
        run_at: Some(at(secs)),
        ..job("t")
    }
}

fn consumer(max_in_flight: u32) -> ConsumerSpec {
    ConsumerSpec {
        worker_id: "w1".into(),
        queues: vec!["default".into()],
        job_types: vec![],
        max_in_flight,
        lease_duration: None,
        held_leases: vec![],
    }
}

/// The ids of the jobs delivered since the last call, with their lease ids.
fn delivered(q: &mut Queue) -> Vec<(Uuid, Uuid)> {
    let mut out = Vec::new();
    q.drain_deliveries(&mut out);
    out.into_iter()
        .map(|d| {
            let job = q.delivered_job(d);
            (job.id, job.lease.expect("delivered jobs are leased").id)
        })
        .collect()
}

fn enqueue(q: &mut Queue, new: NewJob, now: Timestamp) -> Uuid {
    q.enqueue(new, now).expect("enqueue").job_id
}

fn state(q: &Queue, id: Uuid) -> JobState {
    q.job(id).expect("job is known").state
}
