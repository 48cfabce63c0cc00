//! What a worker did, counted as jobs finish and logged at exit.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::Resolved;

/// Jobs by how they ended, since the worker started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Acked.
    pub processed: u64,
    /// Nacked for good: dead, out of attempts, or cancelled.
    pub failed: u64,
    /// Nacked and scheduled to run again.
    pub retried: u64,
    /// Given back without using an attempt (shutdown).
    pub released: u64,
}

/// Live counters behind a [`Summary`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    processed: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    released: AtomicU64,
}

impl Counters {
    pub fn record(&self, resolved: Resolved) {
        let counter = match resolved {
            Resolved::Succeeded => &self.processed,
            Resolved::Failed => &self.failed,
            Resolved::Retried => &self.retried,
            Resolved::Released => &self.released,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> Summary {
        Summary {
            processed: self.processed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            released: self.released.load(Ordering::Relaxed),
        }
    }
}
