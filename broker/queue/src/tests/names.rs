//! The name table: a Lease naming unused queues or types takes no place
//! and still gets their jobs later, and a full table takes new names once
//! old ones are unused, forgetting what was kept under them.

use sluice_limits::MAX_NAMES;

use super::*;

#[test]
fn a_lease_naming_unused_queues_and_types_takes_no_name_and_gets_their_jobs_later() {
    let mut q = Queue::new(config(), 1);
    let spec = ConsumerSpec {
        queues: vec!["later".into()],
        job_types: vec!["someday".into(), "never".into()],
        ..consumer(2)
    };
    q.open_consumer(spec, at(0));
    // The waiting names are shown, but hold no place in the table.
    let workers = q.workers();
    assert_eq!(workers[0].queues, ["later"]);
    assert_eq!(workers[0].job_types, ["someday", "never"]);
    let fill = |q: &mut Queue, n: usize| {
        for i in 0..n {
            enqueue(q, job(&format!("type-{i}")), at(1));
        }
    };
    // "default" and MAX_NAMES - 1 types: the table is full, so the
    // consumer's three names took nothing from it.
    fill(&mut q, MAX_NAMES - 1);
    assert!(matches!(
        q.enqueue(job("one-more"), at(1)),
        Err(QueueError::TooManyNames { .. })
    ));
    // Once names are free again, its waiting names come in, and it gets
    // their job.
    while q.stats(at(0)).iter().any(|s| s.count(JobState::Ready) > 0) {
        q.purge_step("default", JobState::Ready, None, q.horizon(), at(0))
            .unwrap();
    }
    let id = enqueue(
        &mut q,
        NewJob {
            queue: "later".into(),
            ..job("someday")
        },
        at(2),
    );
    assert_eq!(
        delivered(&mut q),
        [(id, q.job(id).unwrap().lease.unwrap().id)]
    );
}

#[test]
fn a_full_table_forgets_an_unused_queue_for_a_new_name() {
    let mut q = Queue::new(config(), 1);
    q.pause("old").unwrap();
    // "old", "default" and MAX_NAMES - 2 types fill the table.
    for i in 0..MAX_NAMES - 2 {
        enqueue(&mut q, job(&format!("type-{i}")), at(1));
    }
    assert!(matches!(
        q.enqueue(job("fresh"), at(1)),
        Err(QueueError::TooManyNames { .. })
    ));
    assert!(q.stats(at(0)).iter().any(|s| s.queue == "old"));
    // Resumed, "old" holds nothing: the next new name takes its place.
    q.resume("old", at(2));
    enqueue(&mut q, job("fresh"), at(2));
    assert!(!q.stats(at(0)).iter().any(|s| s.queue == "old"));
    assert!(matches!(
        q.enqueue(job("fresher"), at(2)),
        Err(QueueError::TooManyNames { .. })
    ));
}

#[test]
fn a_refused_enqueue_gives_its_names_back() {
    let mut q = Queue::new(
        QueueConfig {
            max_queue_size: Some(1),
            ..config()
        },
        1,
    );
    enqueue(&mut q, job("t"), at(0));
    // Refused: its new type "u" is not kept, so filling the table needs
    // exactly MAX_NAMES - 2 more names ("default" and "t" are in use).
    assert!(q.enqueue(job("u"), at(0)).is_err());
    q.pause("p").unwrap();
    for i in 0..MAX_NAMES - 3 {
        q.pause(&format!("p{i}")).unwrap();
    }
    assert!(matches!(
        q.pause("one-more"),
        Err(QueueError::TooManyNames { .. })
    ));
}
