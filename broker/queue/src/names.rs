//! Interned queue and job-type names: a job stores a 4-byte id instead of a
//! string, and a consumer's filters compare ids.
//!
//! Names come from clients, so the table is capped ([`MAX_NAMES`]) and
//! counts who refers to each name: every job (its queue and its type), a
//! paused flag, and an open consumer's filters (only the names it found
//! interned: a Lease naming queues or types that no job uses takes no
//! place; see `consumers.rs`). A name nothing refers to stays, with its id
//! and its queue's counters, until the table is full; then a new name
//! takes the place (and the id) of one that nothing refers to, and the
//! caller forgets what it kept under that id. So the table fills for good
//! only with names in use.
//!
//! Cost: a lookup is one hash; a name's count moving between zero and one
//! is O(log n) in the names at zero.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::QueueError;

use sluice_limits::MAX_NAMES;

/// The id of an interned name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(u32);

impl NameId {
    /// The id as a number. A reclaimed id names another name afterwards:
    /// whoever keys by it is told ([`Interned::reclaimed`]).
    pub fn get(self) -> u32 {
        self.0
    }
}

/// One interned name and how many refer to it.
#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    refs: u32,
}

/// The interned names; see the module doc.
#[derive(Debug, Default)]
pub struct Names {
    by_id: Vec<Entry>,
    ids: HashMap<Arc<str>, NameId>,
    /// Names nothing refers to: the places a new name may take.
    unreferenced: BTreeSet<NameId>,
}

/// What [`Names::intern`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interned {
    /// The name's id.
    pub id: NameId,
    /// The name was not interned before.
    pub new: bool,
    /// The id was another name's, which is forgotten.
    pub reclaimed: bool,
}

impl Names {
    /// The id of `name`, interning it if new (taking an unreferenced
    /// name's place when the table is full). A new name starts with no
    /// reference: the caller takes one ([`Names::retain`]) before
    /// interning anything else, or the name may lose its place again.
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] when [`MAX_NAMES`] are interned and
    /// every one is referred to.
    pub fn intern(&mut self, name: &str) -> Result<Interned, QueueError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(Interned {
                id,
                new: false,
                reclaimed: false,
            });
        }
        let name: Arc<str> = Arc::from(name);
        if self.by_id.len() < MAX_NAMES {
            let id = NameId(u32::try_from(self.by_id.len()).expect("MAX_NAMES fits in u32"));
            self.by_id.push(Entry {
                name: name.clone(),
                refs: 0,
            });
            self.ids.insert(name, id);
            self.unreferenced.insert(id);
            return Ok(Interned {
                id,
                new: true,
                reclaimed: false,
            });
        }
        let id = self
            .unreferenced
            .first()
            .copied()
            .ok_or(QueueError::TooManyNames { limit: MAX_NAMES })?;
        let entry = &mut self.by_id[id.0 as usize];
        self.ids.remove(&entry.name);
        entry.name = name.clone();
        self.ids.insert(name, id);
        Ok(Interned {
            id,
            new: true,
            reclaimed: true,
        })
    }

    /// The id of `name` if it is interned.
    pub fn get(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    /// The name behind `id`.
    pub fn name(&self, id: NameId) -> &str {
        &self.by_id[id.0 as usize].name
    }

    /// The name behind `id`, shared.
    pub fn shared(&self, id: NameId) -> Arc<str> {
        self.by_id[id.0 as usize].name.clone()
    }

    /// How many refer to `id` (for the invariant checks of the tests).
    #[cfg(test)]
    pub fn refs(&self, id: NameId) -> u32 {
        self.by_id[id.0 as usize].refs
    }

    /// Every interned id.
    #[cfg(test)]
    pub fn ids(&self) -> impl Iterator<Item = NameId> + '_ {
        self.ids.values().copied()
    }

    /// One more reference to `id`: its place is kept.
    pub fn retain(&mut self, id: NameId) {
        let entry = &mut self.by_id[id.0 as usize];
        if entry.refs == 0 {
            self.unreferenced.remove(&id);
        }
        entry.refs += 1;
    }

    /// One reference to `id` fewer: with none left, a new name may take
    /// its place.
    pub fn release(&mut self, id: NameId) {
        let entry = &mut self.by_id[id.0 as usize];
        debug_assert!(entry.refs > 0, "a name released more than retained");
        entry.refs = entry.refs.saturating_sub(1);
        if entry.refs == 0 {
            self.unreferenced.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_gives_an_unreferenced_place_to_a_new_name() {
        let mut names = Names::default();
        for i in 0..MAX_NAMES {
            let interned = names.intern(&format!("n{i}")).unwrap();
            names.retain(interned.id);
        }
        assert_eq!(
            names.intern("one-too-many"),
            Err(QueueError::TooManyNames { limit: MAX_NAMES })
        );
        let freed = names.get("n7").unwrap();
        names.release(freed);
        let taken = names.intern("newcomer").unwrap();
        assert_eq!((taken.id, taken.new, taken.reclaimed), (freed, true, true));
        assert_eq!(names.name(freed), "newcomer");
        assert_eq!(names.get("n7"), None);
        names.retain(taken.id);
        assert!(names.intern("another").is_err());
    }
}
