//! What each broker of a shared store publishes about itself, in the same
//! JSON on every store: its open Lease streams (for ListWorkers on any
//! broker) and its lifetime counters per queue (for Stats, which adds
//! every broker's up; a departed broker's are folded into the store's own
//! totals).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Value, json};
use sluice_queue::{Counters, QueueStats, Timestamp, WorkerInfo};

/// This broker's lifetime counters, per queue.
#[derive(Default)]
pub struct Counts(Mutex<HashMap<String, Counters>>);

impl Counts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counters>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds to the counters of `queue`.
    pub fn add(&self, queue: &str, add: impl FnOnce(&mut Counters)) {
        let mut counts = self.lock();
        if let Some(c) = counts.get_mut(queue) {
            add(c);
        } else {
            let mut c = Counters::default();
            add(&mut c);
            counts.insert(queue.to_owned(), c);
        }
    }

    /// Each queue's counters now.
    pub fn snapshot(&self) -> Vec<(String, Counters)> {
        self.lock().iter().map(|(q, c)| (q.clone(), *c)).collect()
    }

    /// Forgets the queues `keep` says are gone.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|queue, _| keep(queue));
    }

    /// As JSON: `{queue: [enqueued, acked, nacked, expired, dead]}`.
    pub fn to_json(&self) -> String {
        counters_json(&self.snapshot())
    }

    /// Counters written by [`Counts::to_json`]; what does not parse is
    /// left out.
    pub fn parse(json: &str) -> Vec<(String, Counters)> {
        let Ok(Value::Object(map)) = serde_json::from_str(json) else {
            return Vec::new();
        };
        map.into_iter()
            .map(|(queue, v)| {
                let n = |i: usize| v.get(i).and_then(Value::as_u64).unwrap_or(0);
                let counters = Counters {
                    enqueued: n(0),
                    acked: n(1),
                    nacked: n(2),
                    expired: n(3),
                    dead: n(4),
                };
                (queue, counters)
            })
            .collect()
    }
}

/// Adds each `(queue, counters)` of `counts` (this broker's, other
/// brokers', those of brokers gone) to that queue's figures in `queues`;
/// counts of a queue not there (removed since) are left out.
pub fn add_counters(
    queues: &mut BTreeMap<String, QueueStats>,
    counts: impl IntoIterator<Item = (String, Counters)>,
) {
    for (queue, c) in counts {
        if let Some(q) = queues.get_mut(&queue) {
            q.counters += c;
        }
    }
}

/// `counters` as [`Counts::to_json`] writes them.
pub fn counters_json(counters: &[(String, Counters)]) -> String {
    let map: serde_json::Map<String, Value> = counters
        .iter()
        .map(|(q, c)| {
            (
                q.clone(),
                json!([c.enqueued, c.acked, c.nacked, c.expired, c.dead]),
            )
        })
        .collect();
    Value::Object(map).to_string()
}

/// Open streams as JSON, for [`parse_streams`].
pub fn streams_json(workers: &[WorkerInfo]) -> String {
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "worker_id": &*w.worker_id,
                "queues": w.queues,
                "job_types": w.job_types,
                "in_flight": w.in_flight,
                "max_in_flight": w.max_in_flight,
                "connected_since_us": w.connected_since.as_micros(),
            })
        })
        .collect();
    Value::Array(workers).to_string()
}

/// Streams written by [`streams_json`]; what does not parse is left out.
pub fn parse_streams(json: &str) -> Vec<WorkerInfo> {
    let Ok(Value::Array(streams)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    streams
        .iter()
        .map(|s| {
            let strings = |key: &str| -> Vec<String> {
                s.get(key)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let number = |key: &str| s.get(key).and_then(Value::as_u64).unwrap_or(0);
            WorkerInfo {
                worker_id: s
                    .get("worker_id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .into(),
                queues: strings("queues"),
                job_types: strings("job_types"),
                in_flight: u32::try_from(number("in_flight")).unwrap_or(0),
                max_in_flight: u32::try_from(number("max_in_flight")).unwrap_or(0),
                connected_since: Timestamp::from_micros(number("connected_since_us")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let counts = Counts::default();
        counts.add("mail", |c| c.acked += 2);
        counts.add("mail", |c| c.dead += 1);
        let parsed = Counts::parse(&counts.to_json());
        assert_eq!(parsed.len(), 1);
        assert_eq!((parsed[0].1.acked, parsed[0].1.dead), (2, 1));
        let worker = WorkerInfo {
            worker_id: "w1".into(),
            queues: vec!["mail".into()],
            job_types: vec![],
            in_flight: 3,
            max_in_flight: 8,
            connected_since: Timestamp::from_micros(42),
        };
        assert_eq!(
            parse_streams(&streams_json(std::slice::from_ref(&worker))),
            vec![worker]
        );
        assert!(parse_streams("not json").is_empty());
    }
}
