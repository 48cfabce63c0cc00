//! The broker's one failure policy, for state that acknowledged changes
//! depend on and that can no longer be trusted: a failed write or fsync of
//! the data directory, a panic in the store's writer thread, or a panic
//! while the queue was locked (which may have left it half-updated).
//!
//! The first such failure is kept as the reason; from then on every change
//! is refused with UNAVAILABLE naming it, the drain is skipped (nothing can
//! be resolved any more) and the broker exits with status 1. Nothing is
//! retried and nothing half-done is served. With `--data-dir` no
//! acknowledged job is lost: each was on disk before its answer.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio_util::sync::CancellationToken;
use tracing::error;

/// A cheap handle to the broker's failure: set once, read by every call.
#[derive(Debug, Clone)]
pub struct Fatal {
    /// Why the broker failed; the first reason wins.
    reason: Arc<OnceLock<Arc<str>>>,
    /// Cancelled on failure: the broker's shutdown token, so that the
    /// server stops serving and `run` returns the error.
    stop: CancellationToken,
}

impl Fatal {
    /// No failure yet; a failure will cancel `stop`.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            reason: Arc::new(OnceLock::new()),
            stop,
        }
    }

    /// Records the broker's failure (the first reason is kept), logs it
    /// and stops the broker. Returns the reason kept.
    pub fn fail(&self, why: impl Into<Arc<str>>) -> Arc<str> {
        let why = why.into();
        if self.reason.set(why.clone()).is_ok() {
            error!(error = %why, "the broker failed: no change is acknowledged from now on; stopping");
        }
        self.stop.cancel();
        self.reason.get().cloned().unwrap_or(why)
    }

    /// Why the broker failed, if it did.
    pub fn reason(&self) -> Option<Arc<str>> {
        self.reason.get().cloned()
    }

    /// Locks `mutex`, or, if a panic poisoned it, fails the broker: what
    /// `what` names may be half-updated and must not be served.
    ///
    /// # Errors
    /// The failure's reason, when the lock was poisoned (now or before).
    pub fn lock<'a, T>(
        &self,
        mutex: &'a Mutex<T>,
        what: &str,
    ) -> Result<MutexGuard<'a, T>, Arc<str>> {
        mutex
            .lock()
            .map_err(|_| self.fail(format!("a panic left {what} half-updated")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_fails_the_broker_and_stays_refused() {
        let stop = CancellationToken::new();
        let fatal = Fatal::new(stop.clone());
        let state = Arc::new(Mutex::new(0));
        assert!(fatal.lock(&state, "the queue").is_ok());
        let poisoner = state.clone();
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("a broken invariant");
        })
        .join();
        let why = fatal.lock(&state, "the queue").unwrap_err();
        assert!(why.contains("the queue"), "{why}");
        assert!(stop.is_cancelled(), "the broker is told to stop");
        assert_eq!(fatal.reason(), Some(why));
        // The first reason is kept.
        fatal.fail("later");
        assert!(fatal.reason().is_some_and(|r| r.contains("the queue")));
    }
}
