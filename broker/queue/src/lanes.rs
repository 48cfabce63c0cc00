//! The READY jobs of one queue and job type, one lane per key, dealt in
//! turn across keys (fair dispatch).
//!
//! Each key's jobs (and the jobs without a key, as one more lane) are a
//! [`ReadySet`] in the contract's order: priority, then run_at, then
//! enqueue order. A ring holds the keys that may be dealt now (they have
//! a ready job here and no limit holds them, as `flow.rs` decides): the
//! next job dealt is the first job of the key at the front of the ring,
//! and once it has had its weight of jobs (1 unless an override says
//! more) its turn passes to the next key. So a key with most of the
//! backlog gets one job per turn, like every other key with jobs waiting.
//!
//! A key that a limit holds is taken out of the ring (its lane stays) and
//! put back at its end when the limit frees it: dealing never looks at a
//! held key. The ring is a deque of (key, generation) with the live
//! generation of each key in a map: a key leaves the ring by losing its
//! live generation, and the dead entry is dropped when it reaches the
//! front (or when dead entries outnumber live ones).
//!
//! Cost: dealing is O(1) plus one hash of the key; closing and opening a
//! key are O(1) but for the occasional compaction.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::job::ReadyKey;
use super::ready_set::ReadySet;
use crate::Timestamp;

/// A job's key as the lanes see it: `None` for the jobs without one.
pub(crate) type KeyTag = Option<Arc<str>>;

#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: HashMap<KeyTag, ReadySet>,
    /// Keys that may be dealt, in turn order, with a generation each.
    ring: VecDeque<(KeyTag, u64)>,
    /// The generation of each key's live ring entry.
    live: HashMap<KeyTag, u64>,
    next_generation: u64,
    /// Jobs dealt in the current turn, and the ring entry it belongs to.
    turn: (u64, u32),
}

impl Lanes {
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The next job to deal: the first job of the key whose turn it is.
    pub fn next(&self) -> Option<ReadyKey> {
        let (key, _) = self
            .ring
            .iter()
            .find(|(key, generation)| self.live.get(key) == Some(generation))?;
        self.lanes.get(key)?.first().copied()
    }

    /// Adds a job of `key`; `open` says whether the key may be dealt now.
    pub fn insert(&mut self, key: &KeyTag, job: ReadyKey, open: bool) {
        self.lanes.entry(key.clone()).or_default().insert(job);
        if open {
            self.open(key);
        }
    }

    /// Takes a job of `key` out (it was leased, cancelled or purged).
    pub fn remove(&mut self, key: &KeyTag, job: &ReadyKey) {
        let Some(lane) = self.lanes.get_mut(key) else {
            return;
        };
        lane.remove(job);
        if lane.is_empty() {
            self.lanes.remove(key);
            self.close(key);
        }
    }

    /// `key` may be dealt again: it joins the end of the ring, if it has
    /// jobs here and is not in it already.
    pub fn open(&mut self, key: &KeyTag) {
        if !self.lanes.contains_key(key) || self.live.contains_key(key) {
            return;
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.live.insert(key.clone(), generation);
        self.ring.push_back((key.clone(), generation));
    }

    /// `key` may not be dealt: it leaves the ring, its jobs stay.
    pub fn close(&mut self, key: &KeyTag) {
        if self.live.remove(key).is_some() {
            self.trim();
        }
    }

    /// A job of `key` was dealt: after `weight` jobs in its turn, the turn
    /// passes to the next key. A job dealt out of turn (leased the moment
    /// it became ready, nothing else waiting) moves nothing.
    pub fn dealt(&mut self, key: &KeyTag, weight: u32) {
        self.trim();
        let Some((front, generation)) = self.ring.front() else {
            return;
        };
        if front != key {
            return;
        }
        let generation = *generation;
        if self.turn.0 != generation {
            self.turn = (generation, 0);
        }
        self.turn.1 += 1;
        if self.turn.1 >= weight && self.ring.len() > 1 {
            let entry = self.ring.pop_front().expect("the front was just read");
            self.ring.push_back(entry);
            // Its next turn counts from nothing.
            self.turn = (generation, 0);
            self.trim();
        }
    }

    /// Drops dead entries from the front, and compacts the ring when dead
    /// entries outnumber live ones.
    fn trim(&mut self) {
        while let Some((key, generation)) = self.ring.front() {
            if self.live.get(key) == Some(generation) {
                break;
            }
            self.ring.pop_front();
        }
        if self.ring.len() > 2 * self.live.len() + 32 {
            let live = &self.live;
            self.ring
                .retain(|(key, generation)| live.get(key) == Some(generation));
        }
    }

    /// The earliest due time among the jobs (see [`ReadySet::oldest_due`]).
    pub fn oldest_due(&self) -> Option<Timestamp> {
        self.lanes.values().filter_map(ReadySet::oldest_due).min()
    }

    /// Every job, in no particular order (for the property tests).
    #[cfg(test)]
    pub fn live_keys(&self) -> impl Iterator<Item = ReadyKey> + '_ {
        self.lanes.values().flat_map(ReadySet::live_keys)
    }

    /// Whether `key` is in the ring (for the property tests).
    #[cfg(test)]
    pub fn is_open(&self, key: &KeyTag) -> bool {
        self.live.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(seq: u64) -> ReadyKey {
        ReadyKey::new(0, Timestamp::default(), seq)
    }

    fn tag(key: &str) -> KeyTag {
        Some(Arc::from(key))
    }

    /// Deals every open job, each key with weight `weight(key)`.
    fn deal(
        lanes: &mut Lanes,
        of: &HashMap<u64, KeyTag>,
        weight: impl Fn(&KeyTag) -> u32,
    ) -> Vec<u64> {
        let mut order = Vec::new();
        while let Some(next) = lanes.next() {
            let key = of[&next.seq()].clone();
            order.push(next.seq());
            lanes.dealt(&key, weight(&key));
            lanes.remove(&key, &next);
        }
        order
    }

    #[test]
    fn keys_take_turns_and_each_keeps_its_order() {
        let mut lanes = Lanes::default();
        let mut of = HashMap::new();
        // "hot" has 6 jobs first, then "a" 2 and "b" 1, and a keyless job.
        let jobs = [
            (1, tag("hot")),
            (2, tag("hot")),
            (3, tag("hot")),
            (4, tag("hot")),
            (5, tag("hot")),
            (6, tag("hot")),
            (7, tag("a")),
            (8, tag("a")),
            (9, tag("b")),
            (10, None),
        ];
        for (seq, key) in jobs {
            lanes.insert(&key, job(seq), true);
            of.insert(seq, key);
        }
        assert_eq!(
            deal(&mut lanes, &of, |_| 1),
            [1, 7, 9, 10, 2, 8, 3, 4, 5, 6]
        );
        assert!(lanes.is_empty());
    }

    #[test]
    fn a_weight_deals_that_many_in_a_turn() {
        let mut lanes = Lanes::default();
        let mut of = HashMap::new();
        for seq in 1..=4 {
            lanes.insert(&tag("big"), job(seq), true);
            of.insert(seq, tag("big"));
        }
        for seq in 5..=6 {
            lanes.insert(&tag("small"), job(seq), true);
            of.insert(seq, tag("small"));
        }
        let weight = |key: &KeyTag| if *key == tag("big") { 3 } else { 1 };
        assert_eq!(deal(&mut lanes, &of, weight), [1, 2, 3, 5, 4, 6]);
    }

    #[test]
    fn a_closed_key_is_skipped_until_opened_again() {
        let mut lanes = Lanes::default();
        let mut of = HashMap::new();
        for (seq, key) in [(1, "a"), (2, "a"), (3, "b")] {
            lanes.insert(&tag(key), job(seq), true);
            of.insert(seq, tag(key));
        }
        lanes.close(&tag("a"));
        assert_eq!(deal(&mut lanes, &of, |_| 1), [3]);
        assert!(!lanes.is_empty(), "a's jobs wait in their lane");
        lanes.open(&tag("a"));
        assert_eq!(deal(&mut lanes, &of, |_| 1), [1, 2]);
    }

    #[test]
    fn churn_leaves_no_more_dead_entries_than_the_bound() {
        let mut lanes = Lanes::default();
        for i in 0..100 {
            lanes.insert(&tag(&i.to_string()), job(i), true);
        }
        for _ in 0..1000 {
            for i in (0..100).step_by(3) {
                lanes.close(&tag(&i.to_string()));
                lanes.open(&tag(&i.to_string()));
            }
        }
        assert!(lanes.ring.len() <= 2 * lanes.live.len() + 32);
        assert_eq!(lanes.live.len(), 100);
    }
}
