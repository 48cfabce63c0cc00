//! The gauges of /metrics on a shared store: read from the store (every
//! queue's figures, every broker's streams) once /metrics is served, at
//! most every `GAUGES_EVERY`, and kept for the scrapes between.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::timing::GAUGES_EVERY;
use crate::backend::{BackendError, GaugeReading};

/// The last reading and when it was taken, and whether to read at all.
#[derive(Default)]
pub struct Gauges {
    on: AtomicBool,
    latest: Mutex<Option<(GaugeReading, Instant)>>,
}

impl Gauges {
    /// /metrics is served: read the gauges from now on.
    pub fn turn_on(&self) {
        self.on.store(true, Ordering::Release);
    }

    /// The last reading (empty before the first).
    pub fn latest(&self) -> GaugeReading {
        self.lock()
            .as_ref()
            .map(|(reading, _)| reading.clone())
            .unwrap_or_default()
    }

    /// Reads them again with `read`, if they are on and due.
    ///
    /// # Errors
    /// The read's; it is tried again at the next call.
    pub async fn refresh(
        &self,
        read: impl AsyncFnOnce() -> Result<GaugeReading, BackendError>,
    ) -> Result<(), BackendError> {
        let due = self.on.load(Ordering::Acquire)
            && self
                .lock()
                .as_ref()
                .is_none_or(|(_, at)| at.elapsed() >= GAUGES_EVERY);
        if due {
            let reading = read().await?;
            *self.lock() = Some((reading, Instant::now()));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<(GaugeReading, Instant)>> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
