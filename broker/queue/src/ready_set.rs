//! The READY jobs of one queue and job type, in [`ReadyKey`] order: an
//! ordered set that costs about 17 bytes per job where a `BTreeSet` costs
//! about 35.
//!
//! Most keys arrive in increasing order (jobs enqueued now, in seq order),
//! so they are appended to a sorted deque; the rest (a retry due earlier
//! than jobs already waiting, a higher priority) go to a `BTreeSet`. The
//! first key is the smaller of the two fronts. Leasing takes the first key,
//! which is O(1) from the deque. A key removed from the middle of the deque
//! (a cancelled or purged job) is only marked, and dropped once it reaches
//! the front, so the front is always live.

use std::collections::{BTreeSet, HashSet, VecDeque};

use super::job::ReadyKey;
use crate::Timestamp;

#[derive(Debug, Default)]
pub(crate) struct ReadySet {
    /// Sorted; its front is never in `removed`.
    appended: VecDeque<ReadyKey>,
    /// Keys that arrived out of order.
    others: BTreeSet<ReadyKey>,
    /// Keys still in `appended` that are no longer in the set.
    removed: HashSet<ReadyKey>,
}

impl ReadySet {
    pub fn is_empty(&self) -> bool {
        self.appended.is_empty() && self.others.is_empty()
    }

    /// The smallest key.
    pub fn first(&self) -> Option<&ReadyKey> {
        match (self.appended.front(), self.others.first()) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        }
    }

    /// Every key in the set, in no particular order (read-only, for the
    /// property tests' invariant checks).
    #[cfg(test)]
    pub fn live_keys(&self) -> impl Iterator<Item = ReadyKey> + '_ {
        self.appended
            .iter()
            .filter(|k| !self.removed.contains(k))
            .chain(self.others.iter())
            .copied()
    }

    /// The earliest due time among the keys: the first key of each
    /// priority is its earliest due, so this costs O(log n) per priority
    /// present, not a scan.
    pub fn oldest_due(&self) -> Option<Timestamp> {
        let mut oldest: Option<Timestamp> = None;
        let mut from = self.first().copied();
        while let Some(key) = from {
            oldest = Some(oldest.map_or(key.due(), |t| t.min(key.due())));
            from = key.next_priority().and_then(|next| self.first_from(next));
        }
        oldest
    }

    /// The smallest live key not below `from`.
    fn first_from(&self, from: ReadyKey) -> Option<ReadyKey> {
        let start = self.appended.partition_point(|k| *k < from);
        let appended = self
            .appended
            .range(start..)
            .find(|k| !self.removed.contains(k));
        let other = self.others.range(from..).next();
        match (appended, other) {
            (Some(a), Some(o)) => Some(*a.min(o)),
            (a, o) => a.or(o).copied(),
        }
    }

    pub fn insert(&mut self, key: ReadyKey) {
        if self.removed.remove(&key) {
            // Still in `appended`, where it now counts again.
            return;
        }
        match self.appended.back() {
            Some(last) if key <= *last => {
                self.others.insert(key);
            }
            _ => self.appended.push_back(key),
        }
    }

    pub fn remove(&mut self, key: &ReadyKey) {
        if self.others.remove(key) {
            return;
        }
        if self.appended.front() == Some(key) {
            self.appended.pop_front();
            while let Some(front) = self.appended.front() {
                if !self.removed.remove(front) {
                    break;
                }
                self.appended.pop_front();
            }
            // Give memory back once a large backlog has drained.
            if self.appended.capacity() > 64 && self.appended.len() < self.appended.capacity() / 4 {
                self.appended.shrink_to(self.appended.len() * 2);
            }
        } else if self.appended.binary_search(key).is_ok() {
            self.removed.insert(*key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Timestamp;

    fn key(priority: i32, seq: u64) -> ReadyKey {
        ReadyKey::new(priority, Timestamp::default(), seq)
    }

    /// Empties the set through `first` and `remove`, as leasing does.
    fn drain(set: &mut ReadySet) -> Vec<u64> {
        let mut order = Vec::new();
        while let Some(&first) = set.first() {
            order.push(first.seq());
            set.remove(&first);
        }
        order
    }

    #[test]
    fn yields_keys_in_order_whatever_order_they_arrived_in() {
        let mut set = ReadySet::default();
        for seq in [1, 2, 5, 3, 8, 4] {
            set.insert(key(0, seq));
        }
        set.insert(key(1, 9)); // a higher priority goes first
        assert_eq!(drain(&mut set), [9, 1, 2, 3, 4, 5, 8]);
        assert!(set.is_empty());
    }

    #[test]
    fn removing_from_the_middle_hides_the_key_at_once() {
        let mut set = ReadySet::default();
        for seq in 0..6 {
            set.insert(key(0, seq));
        }
        set.remove(&key(0, 2));
        set.remove(&key(0, 3));
        set.remove(&key(0, 9)); // not in the set: nothing happens
        assert_eq!(drain(&mut set), [0, 1, 4, 5]);
        assert!(set.removed.is_empty() && set.appended.is_empty());
    }

    #[test]
    fn oldest_due_is_the_earliest_due_time_over_every_priority() {
        let t = |ms: u64| Timestamp::from_micros(ms * 1000);
        let mut set = ReadySet::default();
        assert_eq!(set.oldest_due(), None);
        set.insert(ReadyKey::new(5, t(900), 1));
        set.insert(ReadyKey::new(0, t(300), 2));
        set.insert(ReadyKey::new(0, t(100), 3)); // out of order: in `others`
        set.insert(ReadyKey::new(-7, t(200), 4));
        set.insert(ReadyKey::new(i32::MIN, t(50), 5));
        assert_eq!(set.oldest_due(), Some(t(50)));
        set.remove(&ReadyKey::new(i32::MIN, t(50), 5));
        assert_eq!(set.oldest_due(), Some(t(100)));
        set.remove(&ReadyKey::new(0, t(100), 3));
        assert_eq!(set.oldest_due(), Some(t(200)));
        set.remove(&ReadyKey::new(-7, t(200), 4));
        assert_eq!(set.oldest_due(), Some(t(300)));
    }

    #[test]
    fn a_removed_key_added_again_counts_again() {
        let mut set = ReadySet::default();
        for seq in 0..3 {
            set.insert(key(0, seq));
        }
        set.remove(&key(0, 1));
        set.insert(key(0, 1));
        assert_eq!(drain(&mut set), [0, 1, 2]);
    }
}
