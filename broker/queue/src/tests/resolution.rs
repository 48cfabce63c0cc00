//! Resolving leases: nack and backoff, expiry, extend, stale leases,
//! release, and the errors kept.

use super::*;
use sluice_limits::MAX_ERROR_BYTES;

#[test]
fn nack_schedules_retry_after_jittered_backoff_then_dead() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    let failure = Failure {
        error: "boom".into(),
        ..Failure::default()
    };
    let r = q.nack(id, lease, failure.clone(), at(1)).unwrap();
    assert_eq!(r.state, JobState::Scheduled);
    let delay = r.next_attempt_at.unwrap().saturating_since(at(1));
    assert!(
        delay >= Duration::from_millis(750) && delay <= Duration::from_millis(1250),
        "{delay:?}"
    );
    assert_eq!(q.job(id).unwrap().last_error, Some("boom"));

    q.expire(r.next_attempt_at.unwrap());
    let (_, lease) = delivered(&mut q)[0];
    assert_eq!(q.job(id).unwrap().attempt, 2);
    let r = q.nack(id, lease, failure.clone(), at(5)).unwrap();
    let delay = r.next_attempt_at.unwrap().saturating_since(at(5));
    assert!(
        delay >= Duration::from_millis(1500) && delay <= Duration::from_millis(2500),
        "{delay:?}"
    );

    q.expire(r.next_attempt_at.unwrap());
    let (_, lease) = delivered(&mut q)[0];
    let r = q
        .nack(
            id,
            lease,
            Failure {
                error: "third".into(),
                ..failure
            },
            at(10),
        )
        .unwrap();
    assert_eq!(
        r,
        FailureOutcome {
            state: JobState::Dead,
            next_attempt_at: None
        }
    );
    let view = q.job(id).unwrap();
    assert_eq!(
        (view.state, view.attempt, view.last_error),
        (JobState::Dead, 3, Some("third"))
    );
    assert_eq!(q.stats(at(0))[0].counters.dead, 1);
    assert_eq!(q.next_deadline(), None, "dead jobs have no deadline");
}

#[test]
fn nack_dead_skips_remaining_attempts_and_retry_after_overrides_backoff() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(2), at(0));
    let a = enqueue(&mut q, job("t"), at(0));
    let b = enqueue(&mut q, job("t"), at(0));
    let leases = delivered(&mut q);
    let r = q
        .nack(
            a,
            leases[0].1,
            Failure {
                dead: true,
                ..Failure::default()
            },
            at(1),
        )
        .unwrap();
    assert_eq!(r.state, JobState::Dead);
    assert_eq!(q.job(a).unwrap().attempt, 1);
    let failure = Failure {
        retry_after: Some(Duration::from_secs(7)),
        ..Failure::default()
    };
    let r = q.nack(b, leases[1].1, failure, at(1)).unwrap();
    assert_eq!(r.next_attempt_at, Some(at(8)));
}

#[test]
fn nack_with_zero_retry_after_is_ready_at_once() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    let failure = Failure {
        retry_after: Some(Duration::ZERO),
        ..Failure::default()
    };
    let r = q.nack(id, lease, failure, at(1)).unwrap();
    assert_eq!(r.state, JobState::Ready);
    let again = delivered(&mut q);
    assert_eq!(again[0].0, id, "the freed slot takes it again");
    assert_eq!(q.job(id).unwrap().attempt, 2);
}

#[test]
fn expired_lease_is_redelivered_with_an_attempt_counted() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.expire(at(29));
    assert_eq!(state(&q, id), JobState::Leased);
    q.expire(at(30));
    let view = q.job(id).unwrap();
    assert_eq!(
        (view.state, view.last_error),
        (JobState::Scheduled, Some(LEASE_EXPIRED))
    );
    assert_eq!(q.stats(at(0))[0].counters.expired, 1);
    assert!(matches!(
        q.ack(id, lease, at(31)),
        Err(QueueError::StaleLease { .. })
    ));
    q.expire(at(32));
    let (again, new_lease) = delivered(&mut q)[0];
    assert_eq!(again, id);
    assert_ne!(new_lease, lease);
    assert_eq!(q.job(id).unwrap().attempt, 2);
}

#[test]
fn expired_leases_exhaust_attempts() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, one_attempt(), at(0));
    q.expire(at(30));
    assert_eq!(state(&q, id), JobState::Dead);
    assert_eq!(q.job(id).unwrap().last_error, Some(LEASE_EXPIRED));
}

#[test]
fn extend_pushes_back_expiry_and_reports_cancel() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    let e = q
        .extend(id, lease, Some(Duration::from_secs(30)), at(20))
        .unwrap();
    assert_eq!(
        e,
        Extended {
            expires_at: at(50),
            cancel_requested: false
        }
    );
    q.expire(at(49));
    assert_eq!(state(&q, id), JobState::Leased);
    assert_eq!(q.cancel(id, at(49)).unwrap(), JobState::Leased);
    assert!(
        q.extend(id, lease, Some(Duration::from_secs(30)), at(49))
            .unwrap()
            .cancel_requested
    );
}

#[test]
fn stale_and_unknown_leases_are_refused_without_change() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    let wrong = Uuid::from_u128(7);
    assert!(matches!(
        q.ack(id, wrong, at(1)),
        Err(QueueError::StaleLease { .. })
    ));
    assert!(matches!(
        q.release(id, wrong, Duration::ZERO, at(1)),
        Err(QueueError::StaleLease { .. })
    ));
    assert_eq!(state(&q, id), JobState::Leased);
    assert_eq!(
        q.ack(wrong, lease, at(1)),
        Err(QueueError::UnknownJob { job_id: wrong })
    );
    q.ack(id, lease, at(1)).unwrap();
    let again = q.ack(id, lease, at(2));
    assert!(
        matches!(
            again,
            Err(QueueError::StaleLease {
                state: JobState::Succeeded,
                ..
            })
        ),
        "{again:?}"
    );
    assert!(q.nack(id, lease, Failure::default(), at(2)).is_err());
    assert!(q.extend(id, lease, None, at(2)).is_err());
    assert_eq!(q.stats(at(0))[0].counters.acked, 1);
}

#[test]
fn release_gives_back_without_using_an_attempt_and_keeps_place() {
    let mut q = Queue::new(config(), 1);
    let first = enqueue(&mut q, job("t"), at(0));
    let c = q.open_consumer(consumer(1), at(0));
    let (_, lease) = delivered(&mut q)[0];
    let second = enqueue(&mut q, job("t"), at(1));
    q.close_consumer(c);
    assert_eq!(
        q.release(first, lease, Duration::ZERO, at(2)).unwrap(),
        JobState::Ready
    );
    assert_eq!(q.job(first).unwrap().attempt, 0);
    q.open_consumer(consumer(1), at(3));
    assert_eq!(
        delivered(&mut q)[0].0,
        first,
        "released job is still ahead of {second}"
    );
}

#[test]
fn release_with_delay_schedules() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job("t"), at(0));
    q.open_consumer(consumer(1), at(0));
    let (_, lease) = delivered(&mut q)[0];
    assert_eq!(
        q.release(id, lease, Duration::from_secs(5), at(1)).unwrap(),
        JobState::Scheduled
    );
    assert_eq!(q.job(id).unwrap().run_at, at(6));
}

#[test]
fn release_of_cancelled_job_ends_it_cancelled() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.cancel(id, at(1)).unwrap();
    assert_eq!(
        q.release(id, lease, Duration::ZERO, at(2)).unwrap(),
        JobState::Cancelled
    );
}

#[test]
fn long_errors_keep_their_end() {
    let long = format!("{}é{}", "x".repeat(5000), "the cause");
    let kept = truncate_error(long);
    assert!(kept.len() <= MAX_ERROR_BYTES);
    assert!(kept.ends_with("the cause"));
}

#[test]
fn stale_delivery_is_not_returned_and_a_lost_job_does_not_panic() {
    let mut q = Queue::new(
        QueueConfig {
            max_retained: 1,
            ..config()
        },
        1,
    );
    let c = q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, one_attempt(), at(0));
    let mut out = Vec::new();
    q.drain_deliveries(&mut out);
    q.expire(at(30));
    assert_eq!(state(&q, id), JobState::Dead);
    assert!(!q.is_current(out[0]));
    q.return_undelivered(out[0], at(31));
    assert_eq!(
        state(&q, id),
        JobState::Dead,
        "a stale delivery changes nothing"
    );
    q.purge_step("default", JobState::Dead, None, q.horizon(), at(0))
        .unwrap();
    q.close_consumer(c);
    q.return_undelivered(out[0], at(32));
}

#[test]
fn extend_without_length_uses_the_leases_own() {
    let mut q = Queue::new(config(), 1);
    let spec = ConsumerSpec {
        lease_duration: Some(Duration::from_secs(300)),
        ..consumer(1)
    };
    q.open_consumer(spec, at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    assert_eq!(
        q.extend(id, lease, None, at(10)).unwrap().expires_at,
        at(310)
    );
}

#[test]
fn retry_delays_spread_over_the_jitter_band_across_many_jobs() {
    let mut q = Queue::new(config(), 7);
    q.open_consumer(consumer(500), at(0));
    for _ in 0..500 {
        enqueue(&mut q, job("t"), at(0));
    }
    let failure = Failure {
        error: "boom".into(),
        ..Failure::default()
    };
    let delays: Vec<Duration> = delivered(&mut q)
        .into_iter()
        .map(|(id, lease)| {
            let r = q.nack(id, lease, failure.clone(), at(1)).unwrap();
            r.next_attempt_at.unwrap().saturating_since(at(1))
        })
        .collect();
    // config(): 1s initial, jitter 0.25: every delay within 750-1250 ms.
    let (min, max) = (Duration::from_millis(750), Duration::from_millis(1250));
    assert!(delays.iter().all(|d| (min..=max).contains(d)), "{delays:?}");
    let distinct: std::collections::BTreeSet<Duration> = delays.iter().copied().collect();
    assert!(
        distinct.len() > 400,
        "only {} distinct delays",
        distinct.len()
    );
    // Both ends of the band are reached, not just its middle.
    let lowest = distinct.first().copied().unwrap_or_default();
    let highest = distinct.last().copied().unwrap_or_default();
    assert!(lowest < Duration::from_millis(800), "lowest {lowest:?}");
    assert!(highest > Duration::from_millis(1200), "highest {highest:?}");
}

#[test]
fn zero_jitter_doubles_the_delay_exactly() {
    let mut exact = config();
    exact.backoff.jitter = 0.0;
    exact.max_attempts = 7;
    let mut q = Queue::new(exact, 1);
    q.open_consumer(consumer(1), at(0));
    let id = enqueue(&mut q, job("t"), at(0));
    let failure = Failure {
        error: "boom".into(),
        ..Failure::default()
    };
    let mut now = at(1);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let (_, lease) = delivered(&mut q)[0];
        let r = q.nack(id, lease, failure.clone(), now).unwrap();
        let due = r.next_attempt_at.unwrap();
        delays.push(due.saturating_since(now).as_secs_f64());
        now = due;
        q.expire(now);
    }
    // config(): 1s initial, 30s max.
    assert_eq!(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]);
}
