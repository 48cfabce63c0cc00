//! The local backend's schedules: a table in memory (by name, and by next
//! tick for the firing loop), each write handed to the data directory's
//! group commit (with `--data-dir`) and answered once on disk. A record is
//! `revision` (8 bytes, big-endian), `next_fire` (1 byte 0/1, then 8
//! bytes), then the body.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use bytes::Bytes;
use sluice_queue::Change;

use super::shared_queue::SharedQueue;
use crate::backend::schedule_store::expected;
use crate::backend::{BackendError, Expect, Fired, Millis, StoredSchedule, TickFire};
use crate::fatal::Fatal;

/// Every schedule of this broker.
#[derive(Default)]
pub(super) struct ScheduleTable {
    by_name: BTreeMap<String, StoredSchedule>,
    /// (next tick, name) of every schedule that has one.
    by_fire: BTreeSet<(Millis, String)>,
}

impl ScheduleTable {
    /// The table of the records a data directory gave back.
    ///
    /// # Errors
    /// The name of a record that does not decode.
    pub(super) fn restore(records: Vec<(String, Vec<u8>)>) -> Result<Self, String> {
        let mut table = Self::default();
        for (name, record) in records {
            let schedule = decode(name, &record)?;
            table.insert(schedule);
        }
        Ok(table)
    }

    fn insert(&mut self, schedule: StoredSchedule) {
        if let Some(old) = self.by_name.remove(&schedule.name)
            && let Some(at) = old.next_fire
        {
            self.by_fire.remove(&(at, old.name));
        }
        if let Some(at) = schedule.next_fire {
            self.by_fire.insert((at, schedule.name.clone()));
        }
        self.by_name.insert(schedule.name.clone(), schedule);
    }

    fn remove(&mut self, name: &str) -> bool {
        let Some(old) = self.by_name.remove(name) else {
            return false;
        };
        if let Some(at) = old.next_fire {
            self.by_fire.remove(&(at, old.name));
        }
        true
    }
}

/// The store's change that writes `schedule`.
fn schedule_change(schedule: &StoredSchedule) -> Change {
    Change::Schedule {
        name: schedule.name.clone(),
        record: Some(encode(schedule)),
    }
}

/// The schedules, with the queue whose store keeps them.
pub(super) struct LocalSchedules {
    table: Mutex<ScheduleTable>,
    fatal: Fatal,
}

impl LocalSchedules {
    pub(super) fn new(table: ScheduleTable, fatal: Fatal) -> Self {
        Self {
            table: Mutex::new(table),
            fatal,
        }
    }

    fn read<T>(&self, op: impl FnOnce(&ScheduleTable) -> T) -> Result<T, BackendError> {
        let table = self
            .fatal
            .lock(&self.table, "the schedules")
            .map_err(BackendError::Failed)?;
        Ok(op(&table))
    }

    pub(super) fn all(&self) -> Result<Vec<StoredSchedule>, BackendError> {
        self.read(|t| t.by_name.values().cloned().collect())
    }

    pub(super) fn get(&self, name: &str) -> Result<Option<StoredSchedule>, BackendError> {
        self.read(|t| t.by_name.get(name).cloned())
    }

    pub(super) fn due(
        &self,
        until: Millis,
        limit: usize,
    ) -> Result<Vec<StoredSchedule>, BackendError> {
        self.read(|t| {
            t.by_fire
                .iter()
                .take_while(|(at, _)| *at <= until)
                .take(limit)
                .filter_map(|(_, name)| t.by_name.get(name).cloned())
                .collect()
        })
    }

    pub(super) fn next_fire(&self) -> Result<Option<Millis>, BackendError> {
        self.read(|t| t.by_fire.first().map(|(at, _)| *at))
    }

    /// Writes or deletes under the table's lock (so the store sees writes
    /// of one name in their order), then waits for the commit.
    async fn change(
        &self,
        queue: &SharedQueue,
        name: &str,
        op: impl FnOnce(&mut ScheduleTable) -> Option<Option<StoredSchedule>>,
    ) -> Result<bool, BackendError> {
        let commit = {
            let mut table = self
                .fatal
                .lock(&self.table, "the schedules")
                .map_err(BackendError::Failed)?;
            let Some(written) = op(&mut table) else {
                return Ok(false);
            };
            let record = written.as_ref().map(encode);
            queue.submit(vec![Change::Schedule {
                name: name.to_owned(),
                record,
            }])?
        };
        queue.committed(commit).await?;
        Ok(true)
    }

    pub(super) async fn put(
        &self,
        queue: &SharedQueue,
        schedule: StoredSchedule,
        expect: Expect,
    ) -> Result<bool, BackendError> {
        let name = schedule.name.clone();
        self.change(queue, &name, |table| {
            let current = table.by_name.get(&schedule.name).map(|s| s.revision);
            if !expected(current, expect) {
                return None;
            }
            table.insert(schedule.clone());
            Some(Some(schedule))
        })
        .await
    }

    /// Under the table's lock: each revision checked and each schedule
    /// written, handed to one commit; then that commit awaited.
    pub(super) async fn put_many(
        &self,
        queue: &SharedQueue,
        writes: Vec<(StoredSchedule, u64)>,
    ) -> Result<Vec<bool>, BackendError> {
        let (written, commit) = {
            let mut table = self
                .fatal
                .lock(&self.table, "the schedules")
                .map_err(BackendError::Failed)?;
            let mut written = Vec::with_capacity(writes.len());
            let mut changes = Vec::new();
            for (schedule, expect) in writes {
                let current = table.by_name.get(&schedule.name).map(|s| s.revision);
                let write = current == Some(expect);
                if write {
                    changes.push(schedule_change(&schedule));
                    table.insert(schedule);
                }
                written.push(write);
            }
            let commit = if changes.is_empty() {
                None
            } else {
                queue.submit(changes)?
            };
            (written, commit)
        };
        queue.committed(commit).await?;
        Ok(written)
    }

    /// Under the table's lock: each tick's revision checked, the jobs of
    /// those still at it enqueued in one step of the queue, and their
    /// schedules written (one commit for the schedules); both commits
    /// awaited after.
    pub(super) async fn fire_many(
        &self,
        queue: &SharedQueue,
        ticks: Vec<TickFire>,
    ) -> Result<Vec<Option<Fired>>, BackendError> {
        let (answers, commits) = {
            let mut table = self
                .fatal
                .lock(&self.table, "the schedules")
                .map_err(BackendError::Failed)?;
            let mut answers: Vec<Option<Fired>> = ticks.iter().map(|_| None).collect();
            let mut live = Vec::new();
            let mut jobs = Vec::new();
            for (i, tick) in ticks.into_iter().enumerate() {
                let current = table.by_name.get(&tick.schedule.name).map(|s| s.revision);
                if current == Some(tick.expect) {
                    live.push((i, tick.schedule));
                    jobs.push(tick.job);
                }
            }
            if jobs.is_empty() {
                return Ok(answers);
            }
            let (enqueued, job_commit) = queue.write_now(Some("no tick is fired"), |q, now| {
                jobs.into_iter()
                    .map(|job| q.enqueue(job, now))
                    .collect::<Vec<_>>()
            })?;
            let mut changes = Vec::new();
            for ((i, schedule), answer) in live.into_iter().zip(enqueued) {
                if answer.is_ok() {
                    changes.push(schedule_change(&schedule));
                    table.insert(schedule);
                }
                answers[i] = Some(answer);
            }
            let schedule_commit = if changes.is_empty() {
                None
            } else {
                queue.submit(changes)?
            };
            (answers, [job_commit, schedule_commit])
        };
        for commit in commits {
            queue.committed(commit).await?;
        }
        Ok(answers)
    }

    pub(super) async fn delete(
        &self,
        queue: &SharedQueue,
        name: &str,
    ) -> Result<bool, BackendError> {
        self.change(queue, name, |table| table.remove(name).then_some(None))
            .await
    }
}

fn encode(schedule: &StoredSchedule) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + schedule.body.len());
    out.extend_from_slice(&schedule.revision.to_be_bytes());
    match schedule.next_fire {
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_be_bytes());
        }
        None => out.extend_from_slice(&[0; 9]),
    }
    out.extend_from_slice(&schedule.body);
    out
}

fn decode(name: String, record: &[u8]) -> Result<StoredSchedule, String> {
    let bad = || format!("schedule {name:?}: a record of {} bytes", record.len());
    let (revision, rest) = record.split_first_chunk::<8>().ok_or_else(bad)?;
    let (flag, rest) = rest.split_first().ok_or_else(bad)?;
    let (at, body) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
    Ok(StoredSchedule {
        revision: u64::from_be_bytes(*revision),
        next_fire: (*flag == 1).then(|| i64::from_be_bytes(*at)),
        body: Bytes::copy_from_slice(body),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        for next_fire in [None, Some(1_765_000_000_000)] {
            let schedule = StoredSchedule {
                name: "nightly".into(),
                revision: 7,
                next_fire,
                body: Bytes::from_static(b"body"),
            };
            assert_eq!(decode("nightly".into(), &encode(&schedule)), Ok(schedule));
        }
        assert!(decode("x".into(), &[1, 2, 3]).is_err());
    }

    #[test]
    fn due_schedules_come_in_order_of_next_tick() {
        let mut table = ScheduleTable::default();
        for (name, at) in [
            ("a", Some(30)),
            ("b", Some(10)),
            ("c", None),
            ("d", Some(20)),
        ] {
            table.insert(StoredSchedule {
                name: name.into(),
                revision: 1,
                next_fire: at,
                body: Bytes::new(),
            });
        }
        let due: Vec<_> = table.by_fire.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(due, ["b", "d", "a"]);
        assert!(table.remove("b") && !table.remove("b"));
        assert_eq!(table.by_fire.first().map(|(at, _)| *at), Some(20));
    }
}
