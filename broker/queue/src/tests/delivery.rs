//! Delivery: ordering, push to waiting streams, max_in_flight, scheduling,
//! type filters, round-robin, closed and reconnecting streams.

use super::*;

#[test]
fn waiting_consumer_receives_job_enqueued_later() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
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
    q.open_consumer(consumer(3), at(3));
    let order: Vec<Uuid> = delivered(&mut q).into_iter().map(|d| d.0).collect();
    assert_eq!(order, vec![high, low1, low2]);
}

#[test]
fn max_in_flight_holds_and_ack_frees_one_slot() {
    let mut q = Queue::new(config(), 1);
    for _ in 0..5 {
        enqueue(&mut q, job("t"), at(0));
    }
    q.open_consumer(consumer(2), at(0));
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
fn a_window_below_max_in_flight_holds_and_raising_it_leases_at_once() {
    let mut q = Queue::new(config(), 1);
    for _ in 0..6 {
        enqueue(&mut q, job("t"), at(0));
    }
    let c = q.open_consumer(consumer(4), at(0));
    let first = delivered(&mut q);
    assert_eq!(first.len(), 4);
    // A lower window takes nothing back, and no job comes until the
    // consumer holds fewer than it.
    q.set_window(c, 1, at(1));
    let windows: Vec<(u32, u32)> = q
        .workers()
        .iter()
        .map(|w| (w.in_flight, w.max_in_flight))
        .collect();
    assert_eq!(windows, [(4, 1)]);
    for (id, lease) in &first[..3] {
        q.ack(*id, *lease, at(2)).unwrap();
    }
    assert!(delivered(&mut q).is_empty(), "one held, the window");
    q.ack(first[3].0, first[3].1, at(2)).unwrap();
    assert_eq!(delivered(&mut q).len(), 1, "one at a time");
    // Raised: the last ready job goes at once; window 0 takes none.
    q.set_window(c, 0, at(3));
    assert!(delivered(&mut q).is_empty());
    q.set_window(c, 4, at(4));
    assert_eq!(delivered(&mut q).len(), 1);
}

#[test]
fn scheduled_job_waits_for_run_at() {
    let mut q = Queue::new(config(), 1);
    q.open_consumer(consumer(1), at(0));
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
    );
    let got = delivered(&mut q);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, email);
    let sms = enqueue(&mut q, job("sms"), at(1));
    assert_eq!(delivered(&mut q)[0].0, sms);
}

#[test]
fn consumers_share_jobs_round_robin() {
    let mut q = Queue::new(config(), 1);
    let a = q.open_consumer(consumer(10), at(0));
    let b = q.open_consumer(consumer(10), at(0));
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
fn closed_consumer_keeps_its_leases_and_gets_nothing_new() {
    let mut q = Queue::new(config(), 1);
    let c = q.open_consumer(consumer(1), at(0));
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
    let c = q.open_consumer(consumer(1), at(0));
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
fn reconnecting_consumer_adopts_its_held_leases() {
    let mut q = Queue::new(config(), 1);
    let old = q.open_consumer(consumer(2), at(0));
    let a = enqueue(&mut q, job("t"), at(0));
    let (_, lease_a) = delivered(&mut q)[0];
    q.close_consumer(old);
    for _ in 0..3 {
        enqueue(&mut q, job("t"), at(1));
    }
    let stale = (Uuid::from_u128(1), Uuid::from_u128(2));
    let new = q.open_consumer(
        ConsumerSpec {
            held_leases: vec![(a, lease_a), stale],
            ..consumer(2)
        },
        at(2),
    );
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
fn held_leases_beyond_the_limit_or_of_other_workers_are_not_adopted() {
    let mut q = Queue::new(config(), 1);
    let old = q.open_consumer(consumer(2), at(0));
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
    let c2 = q.open_consumer(other, at(1));
    assert_ne!(
        q.job(a).unwrap().lease.unwrap().consumer,
        c2,
        "another worker cannot adopt"
    );
    let narrow = ConsumerSpec {
        held_leases: held,
        ..consumer(1)
    };
    let c3 = q.open_consumer(narrow, at(1));
    let adopted = [a, b]
        .iter()
        .filter(|&&id| q.job(id).unwrap().lease.unwrap().consumer == c3)
        .count();
    assert_eq!(adopted, 1, "no more than max_in_flight");
}

#[test]
fn retried_and_released_jobs_take_their_place_among_fresh_ones() {
    let mut q = Queue::new(config(), 1);
    let x = q.open_consumer(consumer(2), at(0));
    let prio = |priority| NewJob {
        priority,
        ..job("t")
    };
    let retried = enqueue(&mut q, prio(5), at(0));
    let released = enqueue(&mut q, prio(5), at(0));
    let leases: std::collections::HashMap<Uuid, Uuid> = delivered(&mut q).into_iter().collect();
    // X keeps its two leases but takes nothing new.
    q.close_consumer(x);
    let low = enqueue(&mut q, prio(1), at(1));
    let fresh = enqueue(&mut q, prio(5), at(1));
    let high = enqueue(&mut q, prio(9), at(1));
    let failure = Failure {
        error: "again".into(),
        retry_after: Some(Duration::ZERO),
        dead: false,
        ..Failure::default()
    };
    q.nack(retried, leases[&retried], failure, at(2)).unwrap();
    q.release(released, leases[&released], Duration::ZERO, at(2))
        .unwrap();
    q.expire(at(2));

    q.open_consumer(consumer(5), at(2));
    let order: Vec<Uuid> = delivered(&mut q).into_iter().map(|(id, _)| id).collect();
    // Priority first; within a priority, due time: the released job keeps
    // its first place, the retried one is due from its retry on.
    assert_eq!(order, [high, released, fresh, retried, low]);
}
