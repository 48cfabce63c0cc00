//! Operator operations and bookkeeping: pause, cancel, retry,
//! idempotency, retention, queue size, purge, listing, stats and job ids.

use super::*;

#[test]
fn paused_queue_accepts_but_hands_out_nothing_until_resumed() {
    let mut q = Queue::new(config(), 1);
    q.pause("default").unwrap();
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    assert!(delivered(&mut q).is_empty());
    assert!(q.stats(at(0))[0].paused);
    q.resume("default", at(1));
    assert_eq!(delivered(&mut q)[0].0, id);
}

#[test]
fn cancel_ready_is_immediate_and_cancel_leased_waits_for_worker() {
    let mut q = Queue::new(config(), 1);
    let ready = enqueue(&mut q, job("t"), at(0));
    let scheduled = enqueue(&mut q, job_at(9), at(0));
    assert_eq!(q.cancel(ready, at(1)).unwrap(), JobState::Cancelled);
    assert_eq!(q.cancel(scheduled, at(1)).unwrap(), JobState::Cancelled);
    assert_eq!(
        q.next_deadline(),
        Some(at(1 + 3600)),
        "only retention remains"
    );
    assert!(matches!(
        q.cancel(ready, at(1)),
        Err(QueueError::WrongState { .. })
    ));

    q.open_consumer(consumer(2), at(2));
    let nacked = enqueue(&mut q, job("t"), at(2));
    let acked = enqueue(&mut q, job("t"), at(2));
    let leases = delivered(&mut q);
    q.cancel(nacked, at(3)).unwrap();
    q.cancel(acked, at(3)).unwrap();
    assert_eq!(state(&q, nacked), JobState::Leased);
    let r = q
        .nack(nacked, leases[0].1, Failure::default(), at(4))
        .unwrap();
    assert_eq!(r.state, JobState::Cancelled);
    q.ack(acked, leases[1].1, at(4)).unwrap();
    assert_eq!(
        state(&q, acked),
        JobState::Succeeded,
        "an ack still records success"
    );
}

#[test]
fn retry_revives_dead_and_cancelled_with_attempts_reset() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.nack(
        id,
        lease,
        Failure {
            dead: true,
            error: "bad".into(),
            ..Failure::default()
        },
        at(1),
    )
    .unwrap();
    assert!(matches!(
        q.retry(Uuid::from_u128(1), at(2)),
        Err(QueueError::UnknownJob { .. })
    ));
    q.retry(id, at(2)).unwrap();
    let (again, lease) = delivered(&mut q)[0];
    assert_eq!(again, id);
    assert_eq!(q.job(id).unwrap().attempt, 1);
    assert!(
        matches!(q.retry(id, at(2)), Err(QueueError::WrongState { .. })),
        "leased"
    );
    q.ack(id, lease, at(3)).unwrap();
    assert!(
        matches!(q.retry(id, at(3)), Err(QueueError::WrongState { .. })),
        "succeeded"
    );
}

#[test]
fn idempotency_key_returns_the_first_job_while_known() {
    let mut q = Queue::new(
        QueueConfig {
            retention: Duration::from_secs(10),
            ..config()
        },
        1,
    );
    let keyed = || NewJob {
        idempotency_key: Some("k1".into()),
        ..job("t")
    };
    let first = q.enqueue(keyed(), at(0)).unwrap();
    assert!(!first.duplicate);
    let second = q.enqueue(keyed(), at(1)).unwrap();
    assert_eq!(
        second,
        Enqueued {
            job_id: first.job_id,
            duplicate: true
        }
    );
    let other_queue = q
        .enqueue(
            NewJob {
                queue: "q2".into(),
                ..keyed()
            },
            at(1),
        )
        .unwrap();
    assert!(!other_queue.duplicate, "keys are per queue");
    assert_eq!(q.stats(at(0))[0].counters.enqueued, 1);

    q.cancel(first.job_id, at(2)).unwrap();
    assert!(
        q.enqueue(keyed(), at(3)).unwrap().duplicate,
        "retained jobs are still known"
    );
    q.expire(at(12));
    assert!(q.job(first.job_id).is_err(), "retention over");
    assert!(!q.enqueue(keyed(), at(13)).unwrap().duplicate);
}

#[test]
fn retained_jobs_are_bounded_by_count_too() {
    let mut q = Queue::new(
        QueueConfig {
            max_retained: 2,
            ..config()
        },
        1,
    );
    let ids: Vec<Uuid> = (0..3).map(|_| enqueue(&mut q, job("t"), at(0))).collect();
    for (i, &id) in ids.iter().enumerate() {
        q.cancel(id, at(i as u64)).unwrap();
    }
    assert!(q.job(ids[0]).is_err(), "oldest finished job dropped");
    assert!(q.job(ids[1]).is_ok() && q.job(ids[2]).is_ok());
    assert_eq!(q.stats(at(0))[0].count(JobState::Cancelled), 2);
}

#[test]
fn full_queue_refuses_until_a_job_finishes() {
    let mut q = Queue::new(
        QueueConfig {
            max_queue_size: Some(2),
            ..config()
        },
        1,
    );
    enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job_at(5), at(0));
    let err = q.enqueue(job("t"), at(0)).unwrap_err();
    assert_eq!(
        err,
        QueueError::QueueFull {
            queue: "default".into(),
            limit: 2
        }
    );
    assert!(
        q.enqueue(
            NewJob {
                queue: "other".into(),
                ..job("t")
            },
            at(0)
        )
        .is_ok()
    );
    q.open_consumer(consumer(1), at(0));
    let (id, lease) = delivered(&mut q)[0];
    assert!(q.enqueue(job("t"), at(0)).is_err(), "leased jobs count");
    q.ack(id, lease, at(1)).unwrap();
    assert!(q.enqueue(job("t"), at(1)).is_ok());
}

#[test]
fn purge_deletes_one_state_and_never_leased_jobs() {
    let mut q = Queue::new(config(), 1);
    let a = enqueue(&mut q, job("t"), at(0));
    let b = enqueue(&mut q, job("t"), at(0));
    let scheduled = enqueue(&mut q, job_at(9), at(0));
    q.open_consumer(consumer(1), at(0));
    let (leased, _) = delivered(&mut q)[0];
    assert_eq!(leased, a);
    assert_eq!(
        q.purge_step("default", JobState::Leased, None, q.horizon(), at(0)),
        Err(QueueError::PurgeLeased)
    );
    assert!(matches!(
        q.purge_step("nope", JobState::Ready, None, q.horizon(), at(0)),
        Err(QueueError::UnknownQueue { .. })
    ));
    assert_eq!(
        q.purge_step("default", JobState::Ready, None, q.horizon(), at(0)),
        Ok((1, None))
    );
    assert!(q.job(b).is_err());
    let until = q.horizon();
    let late = enqueue(&mut q, job_at(20), at(1));
    assert_eq!(
        q.purge_step("default", JobState::Scheduled, None, until, at(0)),
        Ok((1, None))
    );
    assert!(
        q.job(late).is_ok(),
        "jobs enqueued after the purge began are spared"
    );
    assert!(q.job(scheduled).is_err());
    assert_eq!(
        q.next_deadline(),
        Some(at(20)),
        "the spared job, then the lease at 30"
    );
    assert_eq!(state(&q, a), JobState::Leased);
}

#[test]
fn list_pages_through_jobs_in_creation_order() {
    let mut q = Queue::new(config(), 1);
    let ids: Vec<Uuid> = (0..5).map(|_| enqueue(&mut q, job("t"), at(0))).collect();
    q.cancel(ids[1], at(1)).unwrap();
    let all = JobFilter::default();
    let page = q.list(&all, None, 2);
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids[..2]);
    let page = q.list(&all, page.next, 10);
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), ids[2..]);
    assert_eq!(page.next, None);
    let cancelled = JobFilter {
        state: Some(JobState::Cancelled),
        queue: Some("default".into()),
        ..Default::default()
    };
    assert_eq!(q.list(&cancelled, None, 10).jobs[0].id, ids[1]);
    let unknown = JobFilter {
        queue: Some("nope".into()),
        state: None,
        ..Default::default()
    };
    assert!(q.list(&unknown, None, 10).jobs.is_empty());
}

#[test]
fn stats_count_states_per_queue() {
    let mut q = Queue::new(config(), 1);
    enqueue(&mut q, job("t"), at(0));
    enqueue(&mut q, job_at(5), at(0));
    enqueue(
        &mut q,
        NewJob {
            queue: "b".into(),
            ..job("t")
        },
        at(0),
    );
    q.open_consumer(consumer(1), at(0));
    let stats = q.stats(at(0));
    assert_eq!(
        stats.iter().map(|s| s.queue.as_str()).collect::<Vec<_>>(),
        ["b", "default"]
    );
    let d = &stats[1];
    assert_eq!(
        (
            d.count(JobState::Leased),
            d.count(JobState::Scheduled),
            d.count(JobState::Ready)
        ),
        (1, 1, 0)
    );
    assert_eq!(stats[0].count(JobState::Ready), 1);
    assert_eq!(q.unfinished_count(), 3);
}

#[test]
fn retry_respects_max_queue_size_and_cancel_survives_zero_retention() {
    let mut q = Queue::new(
        QueueConfig {
            max_queue_size: Some(1),
            max_retained: 1,
            ..config()
        },
        1,
    );
    let a = enqueue(&mut q, job("t"), at(0));
    q.cancel(a, at(1)).unwrap();
    let b = enqueue(&mut q, job("t"), at(1));
    assert!(matches!(
        q.retry(a, at(2)),
        Err(QueueError::QueueFull { .. })
    ));
    assert_eq!(q.cancel(b, at(3)).unwrap(), JobState::Cancelled);
    assert!(
        q.job(a).is_err(),
        "max_retained 1 forgot the older cancelled job"
    );
}

#[test]
fn job_ids_lead_to_their_job_and_no_other() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job("t"), at(0));
    assert_eq!(id.get_version_num(), 8);
    assert_eq!(q.job(id).unwrap().id, id);
    // Same instance, a seq that was never used.
    let mut forged = *id.as_bytes();
    forged[0] ^= 0x40;
    let forged = Uuid::from_bytes(forged);
    assert_eq!(
        q.job(forged).unwrap_err(),
        QueueError::UnknownJob { job_id: forged }
    );
    // Another broker's id for the same seq.
    let mut theirs = Queue::new(config(), 2);
    let their_id = enqueue(&mut theirs, job("t"), at(0));
    assert!(q.job(their_id).is_err());
    assert!(q.job(Uuid::new_v4()).is_err());
}

#[test]
fn list_shows_only_the_queues_of_its_scope() {
    let mut q = Queue::new(config(), 1);
    let mut in_queue = |queue: &str| {
        let new = NewJob {
            queue: queue.into(),
            ..job("t")
        };
        enqueue(&mut q, new, at(0))
    };
    let orders = in_queue("orders");
    in_queue("billing");
    let eu = in_queue("tenant.eu");
    let scoped = JobFilter {
        scope: QueueScope::Only(vec![
            QueuePattern::Exact("orders".into()),
            QueuePattern::Prefix("tenant.".into()),
        ]),
        ..Default::default()
    };
    let listed: Vec<Uuid> = q
        .list(&scoped, None, 10)
        .jobs
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(listed, [orders, eu]);
}

#[test]
fn a_dead_letter_arrives_dead_without_room_or_key_and_can_be_retried() {
    let mut q = Queue::new(
        QueueConfig {
            max_queue_size: Some(1),
            ..config()
        },
        1,
    );
    enqueue(&mut q, job("t"), at(0));
    assert!(
        matches!(
            q.enqueue(job("t"), at(0)),
            Err(QueueError::QueueFull { .. })
        ),
        "the queue is full for runnable jobs"
    );
    let dead = || NewJob {
        dead_letter: Some("header sluice-type is missing".into()),
        idempotency_key: Some("k".into()),
        ..job("t")
    };
    let id = enqueue(&mut q, dead(), at(1));
    let again = enqueue(&mut q, dead(), at(1));
    assert_ne!(id, again, "a dead letter holds no idempotency key");
    let view = q.job(id).unwrap();
    assert_eq!(view.state, JobState::Dead);
    assert_eq!(view.attempt, 0);
    assert_eq!(view.last_error, Some("header sluice-type is missing"));
    let stats = q.stats(at(0));
    assert_eq!(stats[0].counts[JobState::Dead.index()], 2);
    q.open_consumer(consumer(2), at(2));
    let leased = delivered(&mut q);
    assert_eq!(leased.len(), 1, "only the runnable job is leased");
    q.ack(leased[0].0, leased[0].1, at(2)).unwrap();
    q.retry(id, at(3)).unwrap();
    assert_eq!(delivered(&mut q)[0].0, id);
}
