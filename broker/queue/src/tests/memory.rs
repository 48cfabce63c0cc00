//! The memory high-water mark: the bytes counted after every kind of step,
//! retained jobs forgotten oldest first to make room, and refusals that
//! change nothing.

use super::*;

/// What a job of [`job`] ("{}", no headers) counts.
const PLAIN: u64 = JOB_OVERHEAD + 2;

/// The counts, checked against a recount over every job the queue holds.
fn held(q: &Queue) -> (u64, u64) {
    let all: u64 = q.jobs.range(..).map(|(_, j)| j.held_bytes()).sum();
    let retained: u64 = q
        .retained
        .iter()
        .map(|&(_, seq)| q.jobs[seq].held_bytes())
        .sum();
    assert_eq!(q.held_bytes(), all, "held bytes drifted from a recount");
    assert_eq!(q.retained_bytes(), retained, "retained bytes drifted");
    (q.held_bytes(), q.retained_bytes())
}

fn limited(max_memory: u64) -> Queue {
    Queue::new(
        QueueConfig {
            max_memory: Some(max_memory),
            ..config()
        },
        1,
    )
}

/// Leases the next job on a fresh one-slot consumer: (job id, lease id).
fn lease_next(q: &mut Queue, now: Timestamp) -> (Uuid, Uuid) {
    let consumer = q.open_consumer(consumer(1), now);
    let leased = delivered(q);
    q.close_consumer(consumer);
    leased[0]
}

fn failure(error: &str, dead: bool) -> Failure {
    Failure {
        error: error.into(),
        dead,
        ..Failure::default()
    }
}

#[test]
fn payload_headers_key_and_overhead_are_counted() {
    let mut q = Queue::new(config(), 1);
    assert_eq!(held(&q), (0, 0));
    enqueue(&mut q, job("t"), at(0));
    assert_eq!(held(&q), (PLAIN, 0));
    let rich = NewJob {
        payload: Bytes::from(vec![0u8; 1000]),
        headers: vec![("trace".into(), "abc".into())],
        idempotency_key: Some("key-1".into()),
        ..job("t")
    };
    enqueue(&mut q, rich.clone(), at(0));
    let rich_bytes = JOB_OVERHEAD + 1000 + 5 + 3 + 2 * 5;
    assert_eq!(held(&q), (PLAIN + rich_bytes, 0));
    assert!(q.enqueue(rich, at(1)).unwrap().duplicate);
    assert_eq!(
        held(&q),
        (PLAIN + rich_bytes, 0),
        "a duplicate adds nothing"
    );
}

#[test]
fn ack_retains_and_retention_expiry_frees() {
    let mut q = Queue::new(config(), 1);
    enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job("t"), at(0));
    let (id, lease) = lease_next(&mut q, at(1));
    assert_eq!(held(&q), (2 * PLAIN, 0), "a lease changes nothing");
    q.ack(id, lease, at(2)).unwrap();
    assert_eq!(held(&q), (2 * PLAIN, PLAIN));
    q.expire(at(2 + 3600));
    assert_eq!(held(&q), (PLAIN, 0));
}

#[test]
fn progress_and_results_are_counted_and_retained_with_the_job() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = lease_next(&mut q, at(1));
    assert!(!q.progress(id, lease, 10, "ten".into(), at(1)).unwrap());
    assert_eq!(held(&q), (PLAIN + 3, 0));
    q.progress(id, lease, 50, "fifty!".into(), at(2)).unwrap();
    assert_eq!(held(&q), (PLAIN + 6, 0), "a report replaces the last");
    let result = Bytes::from(vec![1u8; 100]);
    q.ack_with_result(id, lease, Some(result), at(3)).unwrap();
    assert_eq!(
        held(&q),
        (PLAIN + 106, PLAIN + 106),
        "retained with its result"
    );
    q.expire(at(3 + 3600));
    assert_eq!(held(&q), (0, 0));
}

#[test]
fn nack_counts_the_error_and_dead_jobs_stay_counted() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = lease_next(&mut q, at(0));
    q.nack(id, lease, failure("boom", false), at(1)).unwrap();
    assert_eq!(held(&q), (PLAIN + 4, 0));
    q.expire(at(10));
    let (_, lease) = lease_next(&mut q, at(10));
    q.nack(id, lease, failure("worse", true), at(11)).unwrap();
    assert_eq!(state(&q, id), JobState::Dead);
    assert_eq!(held(&q), (PLAIN + 5, 0), "the error is replaced");
    q.retry(id, at(12)).unwrap();
    assert_eq!(held(&q), (PLAIN + 5, 0));
    lease_next(&mut q, at(12));
    q.expire(at(12 + 30));
    assert_eq!(state(&q, id), JobState::Scheduled);
    assert_eq!(
        held(&q),
        (PLAIN + LEASE_EXPIRED.len() as u64, 0),
        "an expired lease records its error"
    );
}

#[test]
fn cancel_retains_and_purge_frees() {
    let mut q = Queue::new(config(), 1);
    let ready = enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job_at(50), at(0));
    q.cancel(ready, at(1)).unwrap();
    assert_eq!(held(&q), (2 * PLAIN, PLAIN));
    q.retry(ready, at(2)).unwrap();
    assert_eq!(
        held(&q),
        (2 * PLAIN, 0),
        "a retried job is no longer retained"
    );
    q.cancel(ready, at(3)).unwrap();
    let horizon = q.horizon();
    q.purge_step("default", JobState::Cancelled, None, horizon, at(0))
        .unwrap();
    assert_eq!(held(&q), (PLAIN, 0));
    q.purge_step("default", JobState::Scheduled, None, horizon, at(0))
        .unwrap();
    assert_eq!(held(&q), (0, 0));
}

#[test]
fn max_retained_trimming_frees_retained_bytes() {
    let mut q = Queue::new(
        QueueConfig {
            max_retained: 1,
            ..config()
        },
        1,
    );
    for _ in 0..3 {
        enqueue(&mut q, job("t"), at(0));
    }
    for _ in 0..3 {
        let (id, lease) = lease_next(&mut q, at(1));
        q.ack(id, lease, at(2)).unwrap();
    }
    assert_eq!(held(&q), (PLAIN, PLAIN));
}

#[test]
fn a_restored_queue_counts_what_the_original_did() {
    let mut q = Queue::new(config(), 1);
    q.track_changes();
    let dead = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = lease_next(&mut q, at(0));
    q.nack(dead, lease, failure("gone", true), at(1)).unwrap();
    let cancelled = enqueue(&mut q, job("t"), at(1));
    q.cancel(cancelled, at(1)).unwrap();
    let keyed = NewJob {
        idempotency_key: Some("k".into()),
        headers: vec![("h".into(), "v".into())],
        ..job_at(100)
    };
    enqueue(&mut q, keyed, at(1));
    enqueue(&mut q, job("t"), at(1));
    let mut changes = Vec::new();
    q.take_changes(&mut changes);
    let mut restorer = Restorer::new(config(), 2, at(2));
    for change in changes {
        if let Change::Put { record, .. } = change {
            restorer.add(record).unwrap();
        }
    }
    let restored = restorer.finish(StoreMeta::default()).unwrap();
    assert_eq!(held(&restored), held(&q));
    assert_eq!(held(&q), (4 * PLAIN + 4 + 2 + 2, PLAIN));
}

#[test]
fn enqueue_over_the_mark_forgets_the_oldest_retained_jobs_first() {
    let mut q = limited(3 * PLAIN);
    let first = enqueue(&mut q, job("t"), at(0));
    let second = enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job("t"), at(0));
    for _ in 0..2 {
        let (id, lease) = lease_next(&mut q, at(1));
        q.ack(id, lease, at(2)).unwrap();
    }
    assert_eq!(held(&q), (3 * PLAIN, 2 * PLAIN));
    enqueue(&mut q, job("t"), at(3));
    assert!(q.job(first).is_err(), "the oldest retained job went first");
    assert_eq!(state(&q, second), JobState::Succeeded);
    assert_eq!(held(&q), (3 * PLAIN, PLAIN));
    enqueue(&mut q, job("t"), at(3));
    assert!(q.job(second).is_err());
    assert_eq!(held(&q), (3 * PLAIN, 0));
}

#[test]
fn a_refused_enqueue_changes_nothing() {
    let mut q = limited(2 * PLAIN + 1);
    q.track_changes();
    enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job("t"), at(0));
    let mut changes = Vec::new();
    q.take_changes(&mut changes);
    let (stats, horizon) = (q.stats(at(0)), q.horizon());
    let keyed = NewJob {
        idempotency_key: Some("k".into()),
        ..job("t")
    };
    assert_eq!(
        q.enqueue(keyed.clone(), at(1)),
        Err(QueueError::OverMemory {
            held: 2 * PLAIN,
            needed: PLAIN + 2,
            limit: 2 * PLAIN + 1
        })
    );
    assert_eq!(held(&q), (2 * PLAIN, 0));
    assert_eq!((q.stats(at(0)), q.horizon()), (stats, horizon));
    changes.clear();
    q.take_changes(&mut changes);
    assert!(changes.is_empty(), "nothing reaches the store");
    assert!(q.idempotency.is_empty(), "the key stays free");
    assert_eq!(q.list(&JobFilter::default(), None, 10).jobs.len(), 2);
    let message = QueueError::OverMemory {
        held: 1,
        needed: 2,
        limit: 3,
    }
    .to_string();
    assert!(message.contains("over --max-memory"), "{message}");
}

#[test]
fn leases_acks_and_nacks_work_over_the_mark_and_free_room() {
    let mut q = limited(2 * PLAIN + 10);
    let a = enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job("t"), at(0));
    let (_, lease) = lease_next(&mut q, at(1));
    q.nack(a, lease, failure(&"x".repeat(20), true), at(2))
        .unwrap();
    assert_eq!(held(&q), (2 * PLAIN + 20, 0), "a nack may pass the mark");
    assert!(matches!(
        q.enqueue(job("t"), at(3)),
        Err(QueueError::OverMemory { .. })
    ));
    assert!(matches!(
        q.retry(a, at(3)),
        Err(QueueError::OverMemory { needed: 0, .. })
    ));
    assert_eq!(state(&q, a), JobState::Dead);
    let (b, lease) = lease_next(&mut q, at(4));
    q.ack(b, lease, at(5)).unwrap();
    q.retry(a, at(6)).unwrap();
    assert!(
        q.job(b).is_err(),
        "the retained job made room for the retry"
    );
    assert_eq!(held(&q), (PLAIN + 20, 0));
}

#[test]
fn a_retried_cancelled_job_is_not_forgotten_to_make_room_for_itself() {
    let mut q = limited(2 * PLAIN + 10);
    let a = enqueue(&mut q, job("t"), at(0));
    let b = enqueue(&mut q, job_at(60), at(0));
    q.cancel(b, at(1)).unwrap();
    let (_, lease) = lease_next(&mut q, at(1));
    q.nack(a, lease, failure(&"x".repeat(20), true), at(2))
        .unwrap();
    assert_eq!(held(&q), (2 * PLAIN + 20, PLAIN));
    assert!(matches!(
        q.retry(b, at(3)),
        Err(QueueError::OverMemory { .. })
    ));
    assert_eq!(state(&q, b), JobState::Cancelled);
    assert_eq!(held(&q), (2 * PLAIN + 20, PLAIN));
}
