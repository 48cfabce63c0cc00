//! Interned queue and job-type names: a job stores a 4-byte id instead of a
//! string, and a consumer's filters compare ids.

use std::collections::HashMap;
use std::sync::Arc;

use crate::QueueError;

use sluice_limits::MAX_NAMES;

/// The id of an interned name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(u32);

impl NameId {
    /// The id as a number, stable for the broker's life.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// Names interned for the life of the broker. Names are validated (length,
/// characters) by the service before they get here; each distinct name costs
/// memory once.
#[derive(Debug, Default)]
pub struct Names {
    by_id: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, NameId>,
}

impl Names {
    /// The id of `name`, interning it if new.
    ///
    /// # Errors
    /// [`QueueError::TooManyNames`] when [`MAX_NAMES`] are interned already.
    pub fn intern(&mut self, name: &str) -> Result<NameId, QueueError> {
        if let Some(&id) = self.ids.get(name) {
            return Ok(id);
        }
        if self.by_id.len() >= MAX_NAMES {
            return Err(QueueError::TooManyNames { limit: MAX_NAMES });
        }
        let id = NameId(self.by_id.len() as u32);
        let name: Arc<str> = Arc::from(name);
        self.by_id.push(name.clone());
        self.ids.insert(name, id);
        Ok(id)
    }

    /// The id of `name` if it was ever interned.
    pub fn get(&self, name: &str) -> Option<NameId> {
        self.ids.get(name).copied()
    }

    /// The name behind `id`.
    pub fn name(&self, id: NameId) -> &str {
        &self.by_id[id.0 as usize]
    }
}
