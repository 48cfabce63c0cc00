//! Every job the queue knows, by seq: a map that costs about 10 bytes per
//! job where an ordered map costs about 35.
//!
//! Seqs are handed out in increasing order and most jobs finish in roughly
//! that order, so jobs live in pages of [`PAGE`] consecutive seqs, kept in
//! an ordered map by page number; a page is freed when its last job leaves.
//! The cost of a job that outlives its neighbours is bounded by one page
//! (about 150 bytes) plus the page's map entry.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use super::job::{Extras, Job, Seq};

/// Seqs per page.
const PAGE: usize = 16;

#[derive(Debug, Default)]
struct Page {
    slots: [Option<Box<Job>>; PAGE],
    /// Occupied slots.
    len: u8,
}

/// Jobs by seq, iterated in seq order. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct JobTable {
    pages: BTreeMap<u64, Box<Page>>,
    /// With tracking on: every seq inserted (`true`), changed or removed
    /// since the last `take_changes`, repeats included.
    changes: Option<Vec<(Seq, bool)>>,
    /// The sum of [`Job::held_bytes`] over its jobs, kept exact by
    /// `insert`, `remove` and `change_extras` (a held job's size changes
    /// only through the latter).
    held: u64,
}

/// The page of `seq` and its slot in it.
fn split(seq: Seq) -> (u64, usize) {
    (seq / PAGE as u64, (seq % PAGE as u64) as usize)
}

impl JobTable {
    pub fn get(&self, seq: Seq) -> Option<&Job> {
        let (page, slot) = split(seq);
        self.pages.get(&page)?.slots[slot].as_deref()
    }

    /// The job, noted as changed.
    pub fn get_mut(&mut self, seq: Seq) -> Option<&mut Job> {
        self.note(seq, false);
        self.get_mut_untracked(seq)
    }

    /// The job, for a change the durable view does not show (its lease).
    pub fn get_mut_untracked(&mut self, seq: Seq) -> Option<&mut Job> {
        let (page, slot) = split(seq);
        self.pages.get_mut(&page)?.slots[slot].as_deref_mut()
    }

    pub fn track_changes(&mut self) {
        self.changes.get_or_insert_default();
    }

    pub fn is_tracking(&self) -> bool {
        self.changes.is_some()
    }

    /// The seqs noted since the last call, each once, in seq order, with
    /// whether it was inserted meanwhile.
    pub fn take_changes(&mut self) -> Vec<(Seq, bool)> {
        let Some(changes) = self.changes.as_mut() else {
            return Vec::new();
        };
        let mut taken = std::mem::take(changes);
        taken.sort_unstable();
        // One entry per seq, new if any of its notes was the insert.
        taken.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                earlier.1 |= later.1;
            }
            same
        });
        taken
    }

    /// Notes a change made through [`JobTable::get_mut_untracked`] after all.
    pub fn note_changed(&mut self, seq: Seq) {
        self.note(seq, false);
    }

    fn note(&mut self, seq: Seq, inserted: bool) {
        if let Some(changes) = self.changes.as_mut() {
            changes.push((seq, inserted));
        }
    }

    /// The sum of [`Job::held_bytes`] over its jobs.
    pub fn held_bytes(&self) -> u64 {
        self.held
    }

    /// Changes the rarely present parts of job `seq` (its last error,
    /// progress or result), keeping the count of held bytes exact; noted as
    /// changed if `noted` (a progress report is not: see `Queue::progress`).
    pub fn change_extras(&mut self, seq: Seq, noted: bool, change: impl FnOnce(&mut Extras)) {
        if noted {
            self.note(seq, false);
        }
        if let Some(job) = self.get_mut_untracked(seq) {
            let before = job.held_bytes();
            change(job.extras_mut());
            let after = job.held_bytes();
            self.held = self.held - before + after;
        }
    }

    pub fn contains(&self, seq: Seq) -> bool {
        self.get(seq).is_some()
    }

    /// Adds `job` under `seq`, which no job holds.
    pub fn insert(&mut self, seq: Seq, job: Job) {
        let (page, slot) = split(seq);
        self.held += job.held_bytes();
        let page = self.pages.entry(page).or_default();
        let previous = page.slots[slot].replace(Box::new(job));
        assert!(previous.is_none(), "seq {seq} is taken");
        page.len += 1;
        self.note(seq, true);
    }

    pub fn remove(&mut self, seq: Seq) -> Option<Box<Job>> {
        let (number, slot) = split(seq);
        let page = self.pages.get_mut(&number)?;
        let job = page.slots[slot].take()?;
        self.held -= job.held_bytes();
        page.len -= 1;
        if page.len == 0 {
            self.pages.remove(&number);
        }
        self.note(seq, false);
        Some(job)
    }

    /// The jobs whose seq is in `range`, in seq order.
    pub fn range(&self, range: impl RangeBounds<Seq>) -> impl Iterator<Item = (Seq, &Job)> {
        let first = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&s) => s.checked_add(1),
            Bound::Excluded(&s) => Some(s),
            Bound::Unbounded => None,
        };
        let pages = match first {
            Some(first) => self.pages.range(split(first).0..),
            // Past the last possible seq: nothing.
            None => self.pages.range(1..1),
        };
        let first = first.unwrap_or(Seq::MAX);
        pages
            .flat_map(|(&number, page)| {
                page.slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, job)| {
                        Some((number * PAGE as u64 + slot as u64, job.as_deref()?))
                    })
            })
            .skip_while(move |&(seq, _)| seq < first)
            .take_while(move |&(seq, _)| end.is_none_or(|end| seq < end))
    }
}

impl std::ops::Index<Seq> for JobTable {
    type Output = Job;

    fn index(&self, seq: Seq) -> &Job {
        self.get(seq).expect("job is known")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;
    use crate::names::Names;

    fn job(priority: i32) -> Job {
        let mut names = Names::default();
        let name = names.intern("q").expect("one name fits").id;
        Job {
            queue: name,
            job_type: name,
            state: JobState::Ready,
            cancel_requested: false,
            priority,
            attempt: 0,
            max_attempts: 1,
            timeout_ms: 1,
            payload: Default::default(),
            created_at: Default::default(),
            run_at: Default::default(),
            finished_at: Default::default(),
            lease: None,
            extras: None,
        }
    }

    fn seqs(table: &JobTable, range: impl RangeBounds<Seq>) -> Vec<Seq> {
        table.range(range).map(|(seq, _)| seq).collect()
    }

    #[test]
    fn finds_and_removes_jobs_across_pages() {
        let mut table = JobTable::default();
        for seq in 0..40 {
            table.insert(seq, job(seq as i32));
        }
        assert_eq!(table.get(33).map(|j| j.priority), Some(33));
        table.get_mut(33).expect("present").priority = -1;
        assert_eq!(table[33].priority, -1);
        assert_eq!(table.remove(5).map(|j| j.priority), Some(5));
        assert!(table.remove(5).is_none());
        assert!(!table.contains(5) && table.contains(6) && !table.contains(40));
        assert_eq!(
            seqs(&table, ..),
            (0..40).filter(|&s| s != 5).collect::<Vec<_>>()
        );
    }

    #[test]
    fn ranges_respect_both_bounds() {
        let mut table = JobTable::default();
        for seq in [1, 15, 16, 17, 31, 32, 100] {
            table.insert(seq, job(0));
        }
        assert_eq!(seqs(&table, 15..32), [15, 16, 17, 31]);
        assert_eq!(seqs(&table, 16..=32), [16, 17, 31, 32]);
        assert_eq!(
            seqs(&table, (Bound::Excluded(17), Bound::Unbounded)),
            [31, 32, 100]
        );
        assert_eq!(
            seqs(&table, (Bound::Excluded(Seq::MAX), Bound::Unbounded)),
            []
        );
        assert_eq!(seqs(&table, 33..100), []);
    }

    #[test]
    fn a_page_is_freed_with_its_last_job() {
        let mut table = JobTable::default();
        for seq in 0..PAGE as Seq + 1 {
            table.insert(seq, job(0));
        }
        assert_eq!(table.pages.len(), 2);
        for seq in 0..PAGE as Seq {
            table.remove(seq);
        }
        assert_eq!(table.pages.len(), 1);
        assert_eq!(seqs(&table, ..), [PAGE as Seq]);
    }
}
