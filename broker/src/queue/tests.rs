//! Unit tests of the queue state machine: every rule, with time passed by hand.

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

#[test]
fn waiting_consumer_receives_job_enqueued_later() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
    assert!(delivered(&mut q).is_empty());
    let id = enqueue(&mut q, job("email"), at(1));
    let got = delivered(&mut q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, id);
    let view = q.job(id).unwrap();
    assert_eq!(view.state, JobState::Leased);
    assert_eq!(view.attempt, 1);
    assert_eq!(view.lease.unwrap().expires_at, at(31));
    assert_eq!(&*view.lease.unwrap().worker_id, "w1");
}

#[test]
fn higher_priority_first_then_fifo() {
    let mut q = Queue::new(config(), 1);
    let low1 = enqueue(&mut q, job("t"), at(0));
    let high = enqueue(
        &mut q,
        NewJob {
            priority: 5,
            ..job("t")
        },
        at(1),
    );
    let low2 = enqueue(&mut q, job("other"), at(2));
    q.open_consumer(consumer(3), at(3)).unwrap();
    let order: Vec<Uuid> = delivered(&mut q).into_iter().map(|d| d.0).collect();
    assert_eq!(order, vec![high, low1, low2]);
}

#[test]
fn max_in_flight_holds_and_ack_frees_one_slot() {
    let mut q = Queue::new(config(), 1);
    for _ in 0..5 {
        enqueue(&mut q, job("t"), at(0));
    }
    q.open_consumer(consumer(2), at(0)).unwrap();
    let first = delivered(&mut q);
    assert_eq!(first.len(), 2);
    assert_eq!(q.leased_count(), 2);
    q.ack(first[0].0, first[0].1, at(1)).unwrap();
    assert_eq!(
        delivered(&mut q).len(),
        1,
        "one slot freed, one job delivered"
    );
    assert_eq!(q.leased_count(), 2);
    assert_eq!(state(&q, first[0].0), JobState::Succeeded);
}

#[test]
fn scheduled_job_waits_for_run_at() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, job_at(10), at(0));
    assert_eq!(state(&q, id), JobState::Scheduled);
    assert_eq!(q.next_deadline(), Some(at(10)));
    q.expire(at(9));
    assert!(delivered(&mut q).is_empty());
    q.expire(at(10));
    assert_eq!(delivered(&mut q)[0].0, id);
}

#[test]
fn past_run_at_counts_as_now() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job_at(1), at(5));
    let view = q.job(id).unwrap();
    assert_eq!((view.state, view.run_at), (JobState::Ready, at(5)));
}

#[test]
fn nack_schedules_retry_after_jittered_backoff_then_dead() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
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
        Resolution {
            state: JobState::Dead,
            next_attempt_at: None
        }
    );
    let view = q.job(id).unwrap();
    assert_eq!(
        (view.state, view.attempt, view.last_error),
        (JobState::Dead, 3, Some("third"))
    );
    assert_eq!(q.stats()[0].counters.dead, 1);
    assert_eq!(q.next_deadline(), None, "dead jobs have no deadline");
}

#[test]
fn nack_dead_skips_remaining_attempts_and_retry_after_overrides_backoff() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(2), at(0)).unwrap();
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
    q.open_consumer(consumer(1), at(0)).unwrap();
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
    q.open_consumer(consumer(1), at(0)).unwrap();
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
    assert_eq!(q.stats()[0].counters.expired, 1);
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
    q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, one_attempt(), at(0));
    q.expire(at(30));
    assert_eq!(state(&q, id), JobState::Dead);
    assert_eq!(q.job(id).unwrap().last_error, Some(LEASE_EXPIRED));
}

#[test]
fn extend_pushes_back_expiry_and_reports_cancel() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
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
    q.open_consumer(consumer(1), at(0)).unwrap();
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
    assert_eq!(q.stats()[0].counters.acked, 1);
}

#[test]
fn release_gives_back_without_using_an_attempt_and_keeps_place() {
    let mut q = Queue::new(config(), 1);
    let first = enqueue(&mut q, job("t"), at(0));
    let c = q.open_consumer(consumer(1), at(0)).unwrap();
    let (_, lease) = delivered(&mut q)[0];
    let second = enqueue(&mut q, job("t"), at(1));
    q.close_consumer(c);
    assert_eq!(
        q.release(first, lease, Duration::ZERO, at(2)).unwrap(),
        JobState::Ready
    );
    assert_eq!(q.job(first).unwrap().attempt, 0);
    q.open_consumer(consumer(1), at(3)).unwrap();
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
    q.open_consumer(consumer(1), at(0)).unwrap();
    let (_, lease) = delivered(&mut q)[0];
    assert_eq!(
        q.release(id, lease, Duration::from_secs(5), at(1)).unwrap(),
        JobState::Scheduled
    );
    assert_eq!(q.job(id).unwrap().run_at, at(6));
}

#[test]
fn type_filter_only_hands_out_those_types() {
    let mut q = Queue::new(config(), 1);
    let email = enqueue(&mut q, job("email"), at(0));
    enqueue(&mut q, job("resize"), at(0));
    q.open_consumer(
        ConsumerSpec {
            job_types: vec!["email".into(), "sms".into()],
            ..consumer(5)
        },
        at(0),
    )
    .unwrap();
    let got = delivered(&mut q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, email);
    let sms = enqueue(&mut q, job("sms"), at(1));
    assert_eq!(delivered(&mut q)[0].0, sms);
}

#[test]
fn consumers_share_jobs_round_robin() {
    let mut q = Queue::new(config(), 1);
    let a = q.open_consumer(consumer(10), at(0)).unwrap();
    let b = q.open_consumer(consumer(10), at(0)).unwrap();
    for _ in 0..4 {
        enqueue(&mut q, job("t"), at(0));
    }
    let mut out = Vec::new();
    q.drain_deliveries(&mut out);
    let to_a = out.iter().filter(|d| d.consumer == a).count();
    let to_b = out.iter().filter(|d| d.consumer == b).count();
    assert_eq!((to_a, to_b), (2, 2));
}

#[test]
fn paused_queue_accepts_but_hands_out_nothing_until_resumed() {
    let mut q = Queue::new(config(), 1);
    q.pause("default").unwrap();
    q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, job("t"), at(0));
    assert!(delivered(&mut q).is_empty());
    assert!(q.stats()[0].paused);
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

    q.open_consumer(consumer(2), at(2)).unwrap();
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
fn release_of_cancelled_job_ends_it_cancelled() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.cancel(id, at(1)).unwrap();
    assert_eq!(
        q.release(id, lease, Duration::ZERO, at(2)).unwrap(),
        JobState::Cancelled
    );
}

#[test]
fn retry_revives_dead_and_cancelled_with_attempts_reset() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0)).unwrap();
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
    assert_eq!(q.stats()[0].counters.enqueued, 1);

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
    assert_eq!(q.stats()[0].count(JobState::Cancelled), 2);
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
    q.open_consumer(consumer(1), at(0)).unwrap();
    let (id, lease) = delivered(&mut q)[0];
    assert!(q.enqueue(job("t"), at(0)).is_err(), "leased jobs count");
    q.ack(id, lease, at(1)).unwrap();
    assert!(q.enqueue(job("t"), at(1)).is_ok());
}

#[test]
fn closed_consumer_keeps_its_leases_and_gets_nothing_new() {
    let mut q = Queue::new(config(), 1);
    let c = q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    q.close_consumer(c);
    assert!(q.workers().is_empty());
    let next = enqueue(&mut q, job("t"), at(1));
    q.ack(id, lease, at(2)).unwrap();
    assert!(delivered(&mut q).is_empty());
    assert_eq!(state(&q, next), JobState::Ready);
}

#[test]
fn undelivered_job_returns_to_ready_without_an_attempt() {
    let mut q = Queue::new(config(), 1);
    let c = q.open_consumer(consumer(1), at(0)).unwrap();
    let id = enqueue(&mut q, job("t"), at(0));
    let mut out = Vec::new();
    q.drain_deliveries(&mut out);
    q.close_consumer(c);
    q.return_undelivered(out[0], at(1));
    let view = q.job(id).unwrap();
    assert_eq!((view.state, view.attempt), (JobState::Ready, 0));
    assert_eq!(q.leased_count(), 0);
}

#[test]
fn purge_deletes_one_state_and_never_leased_jobs() {
    let mut q = Queue::new(config(), 1);
    let a = enqueue(&mut q, job("t"), at(0));
    let b = enqueue(&mut q, job("t"), at(0));
    let scheduled = enqueue(&mut q, job_at(9), at(0));
    q.open_consumer(consumer(1), at(0)).unwrap();
    let (leased, _) = delivered(&mut q)[0];
    assert_eq!(leased, a);
    assert_eq!(
        q.purge_step("default", JobState::Leased, None, q.horizon()),
        Err(QueueError::PurgeLeased)
    );
    assert!(matches!(
        q.purge_step("nope", JobState::Ready, None, q.horizon()),
        Err(QueueError::UnknownQueue { .. })
    ));
    assert_eq!(
        q.purge_step("default", JobState::Ready, None, q.horizon()),
        Ok((1, None))
    );
    assert!(q.job(b).is_err());
    let until = q.horizon();
    let late = enqueue(&mut q, job_at(20), at(1));
    assert_eq!(
        q.purge_step("default", JobState::Scheduled, None, until),
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
    };
    assert_eq!(q.list(&cancelled, None, 10).jobs[0].id, ids[1]);
    let unknown = JobFilter {
        queue: Some("nope".into()),
        state: None,
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
    q.open_consumer(consumer(1), at(0)).unwrap();
    let stats = q.stats();
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
fn long_errors_keep_their_end() {
    let long = format!("{}é{}", "x".repeat(5000), "the cause");
    let kept = truncate_error(long);
    assert!(kept.len() <= MAX_ERROR_BYTES);
    assert!(kept.ends_with("the cause"));
}

#[test]
fn reconnecting_consumer_adopts_its_held_leases() {
    let mut q = Queue::new(config(), 1);
    let old = q.open_consumer(consumer(2), at(0)).unwrap();
    let a = enqueue(&mut q, job("t"), at(0));
    let (_, lease_a) = delivered(&mut q)[0];
    q.close_consumer(old);
    for _ in 0..3 {
        enqueue(&mut q, job("t"), at(1));
    }
    let stale = (Uuid::from_u128(1), Uuid::from_u128(2));
    let new = q
        .open_consumer(
            ConsumerSpec {
                held_leases: vec![(a, lease_a), stale],
                ..consumer(2)
            },
            at(2),
        )
        .unwrap();
    assert_eq!(
        delivered(&mut q).len(),
        1,
        "the held job takes one of the two slots"
    );
    assert_eq!(q.job(a).unwrap().lease.unwrap().consumer, new);
    q.ack(a, lease_a, at(3)).unwrap();
    assert_eq!(
        delivered(&mut q).len(),
        1,
        "acking the held job frees a slot on the new stream"
    );
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
    let c = q.open_consumer(consumer(1), at(0)).unwrap();
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
    q.purge_step("default", JobState::Dead, None, q.horizon())
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
    q.open_consumer(spec, at(0)).unwrap();
    let id = enqueue(&mut q, job("t"), at(0));
    let (_, lease) = delivered(&mut q)[0];
    assert_eq!(
        q.extend(id, lease, None, at(10)).unwrap().expires_at,
        at(310)
    );
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
fn held_leases_beyond_the_limit_or_of_other_workers_are_not_adopted() {
    let mut q = Queue::new(config(), 1);
    let old = q.open_consumer(consumer(2), at(0)).unwrap();
    let a = enqueue(&mut q, job("t"), at(0));
    let b = enqueue(&mut q, job("t"), at(0));
    let leases = delivered(&mut q);
    q.close_consumer(old);
    let held: Vec<(Uuid, Uuid)> = leases.clone();
    let other = ConsumerSpec {
        worker_id: "w2".into(),
        held_leases: held.clone(),
        ..consumer(5)
    };
    let c2 = q.open_consumer(other, at(1)).unwrap();
    assert_ne!(
        q.job(a).unwrap().lease.unwrap().consumer,
        c2,
        "another worker cannot adopt"
    );
    let narrow = ConsumerSpec {
        held_leases: held,
        ..consumer(1)
    };
    let c3 = q.open_consumer(narrow, at(1)).unwrap();
    let adopted = [a, b]
        .iter()
        .filter(|&&id| q.job(id).unwrap().lease.unwrap().consumer == c3)
        .count();
    assert_eq!(adopted, 1, "no more than max_in_flight");
}

#[test]
fn job_ids_lead_to_their_job_and_no_other() {
    let mut q = Queue::new(config(), 1);
    let id = enqueue(&mut q, job("t"), at(0));
    assert_eq!(id.get_version_num(), 8);
    assert_eq!(q.job(id).unwrap().id, id);
    // Same instance, a seq that was never used.
    let mut forged = *id.as_bytes();
    forged[15] ^= 0x40;
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
