//! The durable view: replaying every change a queue reports rebuilds it.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// A store in a map: what `storage` keeps, minus the disk.
#[derive(Default)]
struct MapStore {
    jobs: BTreeMap<Seq, JobRecord>,
    paused: BTreeSet<String>,
    limits: BTreeMap<String, QueueLimits>,
    payloads_written: u64,
}

impl MapStore {
    fn apply(&mut self, q: &mut Queue) {
        let mut changes = Vec::new();
        q.take_changes(&mut changes);
        for change in changes {
            match change {
                Change::Put { record, new } => {
                    if new {
                        self.payloads_written += 1;
                    } else {
                        assert!(
                            self.jobs.contains_key(&record.seq),
                            "a record of an unknown job"
                        );
                    }
                    self.jobs.insert(record.seq, record);
                }
                Change::Delete { seq } => {
                    self.jobs.remove(&seq);
                }
                Change::Paused { queue, paused } => {
                    if paused {
                        self.paused.insert(queue);
                    } else {
                        self.paused.remove(&queue);
                    }
                }
                Change::Limits { queue, limits } => {
                    if limits.is_empty() {
                        self.limits.remove(&queue);
                    } else {
                        self.limits.insert(queue, limits);
                    }
                }
                Change::Schedule { .. } | Change::Source { .. } => {
                    unreachable!("the queue writes no schedule or source row")
                }
            }
        }
    }

    /// The queue a restart at `now` rebuilds from this store, as the
    /// broker does: each record through a [`Restorer`].
    fn restore(&self, ids: IdSecret, now: Timestamp) -> Queue {
        let mut restorer = Restorer::new(config(), 9, now);
        for record in self.jobs.values() {
            restorer.add(record.clone()).unwrap();
        }
        let meta = StoreMeta {
            ids: Some(ids),
            next_seq: 0,
            paused: self.paused.iter().cloned().collect(),
            limits: self.limits.clone().into_iter().collect(),
            schedules: Vec::new(),
            sources: Vec::new(),
        };
        restorer.finish(meta).unwrap()
    }
}

type Essentials = (Uuid, JobState, u32, Timestamp, Option<String>, bool);

/// Every job as (id, state, attempt, run_at, last_error, cancel_requested), in id order.
fn jobs_of(q: &Queue) -> Vec<Essentials> {
    q.list(&JobFilter::default(), None, usize::MAX)
        .jobs
        .iter()
        .map(|j| {
            let error = j.last_error.map(str::to_owned);
            (
                j.id,
                j.state,
                j.attempt,
                j.run_at,
                error,
                j.cancel_requested,
            )
        })
        .collect()
}

fn tracked() -> Queue {
    let mut q = Queue::new(config(), 7);
    q.track_changes();
    q
}

#[test]
fn replaying_the_changes_rebuilds_every_state() {
    let mut q = tracked();
    let mut store = MapStore::default();
    let later = q.enqueue(job_at(100), at(0)).unwrap().job_id;
    let keyed = q
        .enqueue(
            NewJob {
                idempotency_key: Some("k".into()),
                ..job("t")
            },
            at(0),
        )
        .unwrap()
        .job_id;
    for _ in 0..6 {
        q.enqueue(job("t"), at(0)).unwrap();
    }
    q.pause("paused-queue").unwrap();
    store.apply(&mut q);

    q.open_consumer(consumer(5), at(1));
    let leased = delivered(&mut q);
    // An ack, a nack with a retry, a dead letter, a cancel while leased;
    // the fifth stays leased.
    q.ack(leased[0].0, leased[0].1, at(2)).unwrap();
    let failure = |dead| Failure {
        error: "boom".into(),
        dead,
        ..Failure::default()
    };
    q.nack(leased[1].0, leased[1].1, failure(false), at(2))
        .unwrap();
    q.nack(leased[2].0, leased[2].1, failure(true), at(2))
        .unwrap();
    q.cancel(leased[3].0, at(2)).unwrap();
    store.apply(&mut q);
    assert_eq!(store.payloads_written, 8, "each payload is written once");

    // Restored before the failed job's retry is due.
    let restored = store.restore(q.id_secret(), at(2));
    let expected: Vec<_> = jobs_of(&q)
        .into_iter()
        .map(|job| match job {
            // Cancelled while leased: CANCELLED on restore.
            (id, JobState::Leased, attempt, run_at, err, true) => {
                (id, JobState::Cancelled, attempt - 1, run_at, err, false)
            }
            // Leased: back to READY with the attempt not counted.
            (id, JobState::Leased, attempt, run_at, err, false) => {
                (id, JobState::Ready, attempt - 1, run_at, err, false)
            }
            other => other,
        })
        .collect();
    assert!(
        expected
            .iter()
            .any(|j| j.1 == JobState::Scheduled && j.4.is_some()),
        "a failed attempt waits for its retry: {expected:?}"
    );
    assert_eq!(jobs_of(&restored), expected);
    assert_eq!(restored.job(later).unwrap().state, JobState::Scheduled);
    assert_eq!(
        restored
            .stats(at(0))
            .iter()
            .find(|s| s.queue == "paused-queue")
            .map(|s| s.paused),
        Some(true)
    );
    // Ids keep pointing at their jobs, and the key at its job.
    let mut restored = restored;
    let again = restored
        .enqueue(
            NewJob {
                idempotency_key: Some("k".into()),
                ..job("t")
            },
            at(3),
        )
        .unwrap();
    assert!(again.duplicate && again.job_id == keyed);
    let new = restored.enqueue(job("t"), at(3)).unwrap().job_id;
    assert!(
        jobs_of(&q).iter().all(|j| j.0 != new),
        "a new job reuses an id"
    );
}

#[test]
fn removals_reach_the_store() {
    let mut q = Queue::new(
        QueueConfig {
            max_retained: 1,
            ..config()
        },
        7,
    );
    q.track_changes();
    let mut store = MapStore::default();
    q.open_consumer(consumer(1), at(0));
    for _ in 0..3 {
        q.enqueue(job("t"), at(0)).unwrap();
        let (id, lease) = delivered(&mut q)[0];
        q.ack(id, lease, at(0)).unwrap();
    }
    store.apply(&mut q);
    assert_eq!(store.jobs.len(), 1, "only the retained job is kept");
    q.enqueue(job("t"), at(1)).unwrap();
    q.enqueue(job("t"), at(1)).unwrap();
    store.apply(&mut q);
    q.expire(at(2 * 3600));
    store.apply(&mut q);
    // Retention ended for the acked job; of the two new ones, the leased one
    // lost its lease and waits for a retry.
    let states: Vec<_> = store.jobs.values().map(|r| r.state).collect();
    assert_eq!(states, [JobState::Scheduled, JobState::Ready]);
}

#[test]
fn an_untracked_queue_reports_nothing() {
    let mut q = Queue::new(config(), 7);
    q.enqueue(job("t"), at(0)).unwrap();
    let mut changes = Vec::new();
    q.take_changes(&mut changes);
    assert!(changes.is_empty());
}

#[test]
fn stats_of_a_restored_queue_show_its_jobs_though_its_counters_start_from_zero() {
    let mut q = tracked();
    let mut store = MapStore::default();
    for _ in 0..3 {
        q.enqueue(job("t"), at(0)).unwrap();
    }
    store.apply(&mut q);
    let restored = store.restore(q.id_secret(), at(1));
    let stats = restored.stats(at(0));
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].queue, "default");
    assert_eq!(stats[0].count(JobState::Ready), 3);
    assert_eq!(stats[0].counters.enqueued, 0, "counters restart from zero");
}
