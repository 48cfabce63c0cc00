//! What an observer hears: one event per transition, with its labels and
//! durations; and the bounded history of failed attempts.

use std::sync::{Arc, Mutex};

use super::*;

/// Every event heard, as (queue, job type, event).
#[derive(Debug, Default, Clone)]
struct Recorder(Arc<Mutex<Vec<(String, String, JobEvent)>>>);

impl Observer for Recorder {
    fn job_event(&mut self, labels: JobLabels<'_>, event: JobEvent) {
        let mut events = self.0.lock().expect("recorder lock");
        events.push((labels.queue.to_owned(), labels.job_type.to_owned(), event));
    }
}

impl Recorder {
    fn take(&self) -> Vec<JobEvent> {
        let mut events = self.0.lock().expect("recorder lock");
        events.drain(..).map(|(_, _, e)| e).collect()
    }
}

fn observed() -> (Queue, Recorder) {
    let mut q = Queue::new(config(), 1);
    let recorder = Recorder::default();
    q.set_observer(Box::new(recorder.clone()));
    (q, recorder)
}

fn nack(error: &str) -> Failure {
    Failure {
        error: error.into(),
        ..Failure::default()
    }
}

#[test]
fn each_transition_is_one_event_with_its_wait_and_run_times() {
    let (mut q, events) = observed();
    let keyed = NewJob {
        idempotency_key: Some("k".into()),
        ..job("email")
    };
    let id = enqueue(&mut q, keyed.clone(), at(0));
    enqueue(&mut q, keyed, at(0));
    q.open_consumer(consumer(1), at(3));
    let (_, lease) = delivered(&mut q)[0];
    q.nack(id, lease, nack("boom"), at(5)).unwrap();
    let labels = events.0.lock().unwrap()[0].clone();
    assert_eq!((labels.0.as_str(), labels.1.as_str()), ("default", "email"));
    assert_eq!(
        events.take(),
        [
            JobEvent::Enqueued,
            JobEvent::Duplicate,
            JobEvent::Leased {
                waited: Duration::from_secs(3)
            },
            JobEvent::Nacked {
                ran: Duration::from_secs(2)
            },
        ]
    );

    // The retry is due within 1.25 s; leased, then its lease runs out (30 s).
    q.expire(at(7));
    let (_, lease) = delivered(&mut q)[0];
    q.expire(at(40));
    let e = events.take();
    assert!(matches!(e[0], JobEvent::Leased { .. }), "{e:?}");
    assert_eq!(
        e[1..],
        [JobEvent::Expired {
            ran: Duration::from_secs(33)
        }]
    );
    assert!(
        q.ack(id, lease, at(40)).is_err(),
        "the expired lease is stale"
    );

    // Third and last attempt: dead, then retried by an operator, acked.
    q.expire(at(60));
    let (_, lease) = delivered(&mut q)[0];
    q.nack(id, lease, nack("again"), at(61)).unwrap();
    q.retry(id, at(62)).unwrap();
    let (_, lease) = delivered(&mut q)[0];
    q.ack(id, lease, at(64)).unwrap();
    let e = events.take();
    assert_eq!(
        e[1..],
        [
            JobEvent::Nacked {
                ran: Duration::from_secs(1)
            },
            JobEvent::DeadLettered,
            JobEvent::Retried,
            JobEvent::Leased {
                waited: Duration::ZERO
            },
            JobEvent::Acked {
                ran: Duration::from_secs(2)
            },
        ]
    );
}

#[test]
fn release_cancel_and_purge_are_counted_once_each() {
    let (mut q, events) = observed();
    let leased = enqueue(&mut q, job("t"), at(0));
    let waiting = enqueue(&mut q, job("t"), at(0));
    let doomed = enqueue(&mut q, job_at(100), at(0));
    q.open_consumer(consumer(1), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.cancel(waiting, at(1)).unwrap();
    // A leased job is cancelled when its worker gives it back, not before.
    q.cancel(leased, at(1)).unwrap();
    q.release(leased, lease, Duration::ZERO, at(2)).unwrap();
    q.purge_step("default", JobState::Scheduled, None, q.horizon(), at(0))
        .unwrap();
    let e = events.take();
    assert_eq!(
        e[3..],
        [
            JobEvent::Leased {
                waited: Duration::ZERO
            },
            JobEvent::Cancelled,
            JobEvent::Released,
            JobEvent::Cancelled,
            JobEvent::Purged,
        ]
    );
    assert_eq!(state(&q, leased), JobState::Cancelled);
    assert!(q.job(doomed).is_err());
}

#[test]
fn failed_attempts_are_kept_newest_first_up_to_the_limit() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let mut ids = Vec::new();
    for n in 0..=RECENT_FAILURES {
        let id = enqueue(&mut q, one_attempt(), at(0));
        let (_, lease) = delivered(&mut q)[0];
        q.nack(id, lease, nack(&format!("error {n}")), at(1))
            .unwrap();
        ids.push(id);
    }
    let failures: Vec<&FailedAttempt> = q.recent_failures().collect();
    assert_eq!(failures.len(), RECENT_FAILURES);
    let newest = failures[0];
    assert_eq!(newest.job_id, ids[RECENT_FAILURES]);
    assert_eq!(newest.error, format!("error {RECENT_FAILURES}"));
    assert_eq!((newest.attempt, newest.dead), (1, true));
    assert_eq!(
        (newest.queue.as_str(), newest.job_type.as_str()),
        ("default", "t")
    );
    assert_eq!(newest.worker_id, "w1");
    assert_eq!(newest.failed_at, at(1));
    // The first failure fell off the end.
    assert_eq!(failures[RECENT_FAILURES - 1].job_id, ids[1]);
}

#[test]
fn stats_show_when_the_oldest_ready_job_became_due() {
    let mut q = Queue::new(config(), 1);
    enqueue(&mut q, job("a"), at(5));
    enqueue(
        &mut q,
        NewJob {
            priority: 9,
            ..job("b")
        },
        at(8),
    );
    enqueue(&mut q, job_at(2), at(1)); // due at 2, before both
    assert_eq!(q.stats(at(0))[0].oldest_ready_due, Some(at(5)));
    q.expire(at(9));
    // Promoted at 9 but due since 2: it has waited longest.
    assert_eq!(q.stats(at(0))[0].oldest_ready_due, Some(at(2)));
}
