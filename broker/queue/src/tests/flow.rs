//! Flow control on the state machine: each limit, fair dispatch among
//! keys, key back-off, and limits changed while jobs run.

use super::*;

fn keyed(key: &str) -> NewJob {
    NewJob {
        key: Some(key.into()),
        ..job("t")
    }
}

fn limits(f: impl FnOnce(&mut QueueLimits)) -> QueueLimits {
    let mut limits = QueueLimits::default();
    f(&mut limits);
    limits
}

/// The keys of the jobs delivered since the last call, in order.
fn delivered_keys(q: &mut Queue) -> Vec<(String, Uuid, Uuid)> {
    delivered(q)
        .into_iter()
        .map(|(job, lease)| {
            let key = q.job(job).unwrap().key.unwrap_or("").to_owned();
            (key, job, lease)
        })
        .collect()
}

fn keys_of(deliveries: &[(String, Uuid, Uuid)]) -> Vec<&str> {
    deliveries.iter().map(|(k, _, _)| k.as_str()).collect()
}

#[test]
fn a_key_limit_holds_its_jobs_ready_without_spending_an_attempt() {
    let mut q = Queue::new(config(), 1);
    q.set_limits("default", limits(|l| l.key_max_in_flight = Some(1)), at(0))
        .unwrap();
    let a1 = enqueue(&mut q, keyed("a"), at(0));
    let a2 = enqueue(&mut q, keyed("a"), at(0));
    let b1 = enqueue(&mut q, keyed("b"), at(0));
    q.open_consumer(consumer(10), at(0));
    let first = delivered_keys(&mut q);
    assert_eq!(keys_of(&first), ["a", "b"]);
    assert_eq!(first[0].1, a1);
    assert_eq!(first[1].1, b1);
    assert_eq!(state(&q, a2), JobState::Ready);
    assert_eq!(q.job(a2).unwrap().attempt, 0, "waiting costs no attempt");
    let stats = q.stats(at(0));
    assert_eq!(stats[0].flow.waiting(HoldReason::KeyLimit), 1);
    // The first job of "a" done, the second starts.
    q.ack(a1, first[0].2, at(1)).unwrap();
    let next = delivered_keys(&mut q);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1, a2);
}

#[test]
fn with_one_at_a_time_a_key_runs_its_jobs_in_queue_order() {
    let mut q = Queue::new(config(), 1);
    q.set_limits("default", limits(|l| l.key_max_in_flight = Some(1)), at(0))
        .unwrap();
    let jobs: Vec<Uuid> = (0..5)
        .map(|i| {
            let new = NewJob {
                priority: if i == 3 { 5 } else { 0 },
                ..keyed("tenant")
            };
            enqueue(&mut q, new, at(0))
        })
        .collect();
    q.open_consumer(consumer(10), at(0));
    let mut order = Vec::new();
    for step in 1..=5 {
        let d = delivered_keys(&mut q);
        assert_eq!(d.len(), 1, "one at a time");
        order.push(d[0].1);
        q.ack(d[0].1, d[0].2, at(step)).unwrap();
    }
    // Priority first, then enqueue order.
    assert_eq!(order, [jobs[3], jobs[0], jobs[1], jobs[2], jobs[4]]);
}

#[test]
fn keys_are_dealt_in_turn_so_a_big_backlog_does_not_starve_the_rest() {
    let mut q = Queue::new(config(), 1);
    for _ in 0..100 {
        enqueue(&mut q, keyed("hot"), at(0));
    }
    for key in ["c1", "c2", "c3"] {
        enqueue(&mut q, keyed(key), at(0));
    }
    q.open_consumer(consumer(4), at(0));
    let first = delivered_keys(&mut q);
    assert_eq!(keys_of(&first), ["hot", "c1", "c2", "c3"]);
}

#[test]
fn an_override_weight_deals_that_many_per_turn() {
    let mut q = Queue::new(config(), 1);
    let weighted = limits(|l| {
        l.overrides.insert(
            "big".into(),
            KeyOverride {
                weight: Some(3),
                ..KeyOverride::default()
            },
        );
    });
    q.set_limits("default", weighted, at(0)).unwrap();
    for _ in 0..10 {
        enqueue(&mut q, keyed("big"), at(0));
        enqueue(&mut q, keyed("small"), at(0));
    }
    q.open_consumer(consumer(8), at(0));
    let first = delivered_keys(&mut q);
    assert_eq!(
        keys_of(&first),
        ["big", "big", "big", "small", "big", "big", "big", "small"]
    );
}

#[test]
fn a_queue_limit_counts_every_consumer() {
    let mut q = Queue::new(config(), 1);
    q.set_limits("default", limits(|l| l.max_in_flight = Some(3)), at(0))
        .unwrap();
    for _ in 0..10 {
        enqueue(&mut q, job("t"), at(0));
    }
    q.open_consumer(consumer(2), at(0));
    q.open_consumer(consumer(2), at(0));
    let first = delivered(&mut q);
    assert_eq!(first.len(), 3);
    assert_eq!(q.stats(at(0))[0].flow.waiting(HoldReason::QueueLimit), 7);
    q.nack(first[0].0, first[0].1, Failure::default(), at(1))
        .unwrap();
    assert_eq!(delivered(&mut q).len(), 1, "one slot freed, one job dealt");
}

#[test]
fn a_rate_deals_its_burst_then_one_job_per_interval() {
    let mut q = Queue::new(config(), 1);
    let rate = RateLimit {
        per_second: 2.0,
        burst: 2,
    };
    q.set_limits("default", limits(|l| l.rate = Some(rate)), at(0))
        .unwrap();
    for _ in 0..10 {
        enqueue(&mut q, job("t"), at(0));
    }
    q.open_consumer(consumer(100), at(0));
    assert_eq!(delivered(&mut q).len(), 2, "the burst");
    let half = Timestamp::from_micros(at(0).as_micros() + SEC / 2);
    assert_eq!(
        q.next_deadline(),
        Some(half),
        "a wake-up for the next token"
    );
    q.expire(half);
    assert_eq!(delivered(&mut q).len(), 1);
    q.expire(at(3));
    // 2.5 s later: the bucket holds its burst again, not 5 tokens.
    assert_eq!(delivered(&mut q).len(), 2);
}

#[test]
fn a_key_rate_limits_that_key_alone() {
    let mut q = Queue::new(config(), 1);
    let rate = RateLimit {
        per_second: 1.0,
        burst: 1,
    };
    q.set_limits("default", limits(|l| l.key_rate = Some(rate)), at(0))
        .unwrap();
    for _ in 0..3 {
        enqueue(&mut q, keyed("a"), at(0));
        enqueue(&mut q, keyed("b"), at(0));
    }
    q.open_consumer(consumer(100), at(0));
    assert_eq!(keys_of(&delivered_keys(&mut q)), ["a", "b"]);
    q.expire(at(1));
    assert_eq!(keys_of(&delivered_keys(&mut q)), ["a", "b"]);
}

#[test]
fn a_key_back_off_holds_every_job_of_the_key_until_it_ends() {
    let mut q = Queue::new(config(), 1);
    for _ in 0..3 {
        enqueue(&mut q, keyed("api"), at(0));
    }
    let other = enqueue(&mut q, keyed("other"), at(0));
    q.open_consumer(consumer(1), at(0));
    let (_, job, lease) = delivered_keys(&mut q).remove(0);
    q.hold_key(job, lease, Duration::from_secs(10), at(1))
        .unwrap();
    q.release(job, lease, Duration::ZERO, at(1)).unwrap();
    assert_eq!(q.job(job).unwrap().attempt, 0, "a release spends nothing");
    let next = delivered_keys(&mut q);
    assert_eq!(next[0].1, other, "only the other key runs meanwhile");
    let keys = q.keys("default", 10, at(1));
    let api = keys.iter().find(|k| k.key == "api").unwrap();
    assert_eq!(api.held_by, Some(HoldReason::KeyDelay));
    assert_eq!(api.held_until, Some(at(11)));
    q.ack(other, next[0].2, at(2)).unwrap();
    assert!(delivered(&mut q).is_empty(), "api is held back");
    q.expire(at(11));
    assert_eq!(keys_of(&delivered_keys(&mut q)), ["api"]);
}

#[test]
fn raising_a_limit_deals_at_once_and_lowering_it_stops_new_starts() {
    let mut q = Queue::new(config(), 1);
    q.set_limits("default", limits(|l| l.key_max_in_flight = Some(1)), at(0))
        .unwrap();
    for _ in 0..6 {
        enqueue(&mut q, keyed("a"), at(0));
    }
    q.open_consumer(consumer(10), at(0));
    assert_eq!(delivered(&mut q).len(), 1);
    q.set_limits("default", limits(|l| l.key_max_in_flight = Some(3)), at(1))
        .unwrap();
    let more = delivered(&mut q);
    assert_eq!(more.len(), 2, "raised to 3: two more start");
    q.set_limits("default", limits(|l| l.key_max_in_flight = Some(1)), at(2))
        .unwrap();
    q.ack(more[0].0, more[0].1, at(3)).unwrap();
    assert!(
        delivered(&mut q).is_empty(),
        "2 still run, over the new limit"
    );
    q.set_limits("default", QueueLimits::default(), at(4))
        .unwrap();
    assert_eq!(delivered(&mut q).len(), 3, "cleared: the rest start");
}

#[test]
fn an_override_of_zero_holds_one_key() {
    let mut q = Queue::new(config(), 1);
    let held = limits(|l| {
        l.overrides.insert(
            "blocked".into(),
            KeyOverride {
                max_in_flight: Some(0),
                ..KeyOverride::default()
            },
        );
    });
    q.set_limits("default", held, at(0)).unwrap();
    enqueue(&mut q, keyed("blocked"), at(0));
    enqueue(&mut q, keyed("free"), at(0));
    q.open_consumer(consumer(10), at(0));
    assert_eq!(keys_of(&delivered_keys(&mut q)), ["free"]);
}
