//! The health of a shared store's connection. While the store cannot be
//! reached, the broker is NOT_SERVING: new work is refused with
//! UNAVAILABLE and this broker's Lease streams end (their workers
//! reconnect, through another broker behind a balancer); the check keeps
//! trying with backoff and serves again by itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::timing::MAX_BACKOFF;

use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Streams;
use crate::backend::BackendError;

/// How often a serving broker checks its store when nothing failed.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How long a check may take before the store counts as unreachable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// One round trip to the store; `Err` says why it failed.
pub type Ping =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Whether the broker can serve from its store, and whether it drains.
pub struct Health {
    serving: watch::Sender<bool>,
    /// Asks the check to look now (an operation failed).
    check_now: Arc<Notify>,
    draining: AtomicBool,
    /// The store's name in log lines and refusals ("the database").
    store: &'static str,
    /// Why new work is refused while the store is unreachable.
    unreachable: &'static str,
}

impl Health {
    /// Serving, for a store called `store` in log lines; `unreachable` is
    /// the refusal while it cannot be reached.
    pub fn new(store: &'static str, unreachable: &'static str) -> Self {
        Self {
            serving: watch::Sender::new(true),
            check_now: Arc::new(Notify::new()),
            draining: AtomicBool::new(false),
            store,
            unreachable,
        }
    }

    /// Whether the store can be reached, as last checked.
    pub fn serving(&self) -> bool {
        *self.serving.borrow()
    }

    /// Follows [`Health::serving`].
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }

    /// What wakes the check when an operation fails.
    pub fn check_now(&self) -> Arc<Notify> {
        self.check_now.clone()
    }

    /// Refuses new work from now on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Refuses new work while draining (saying `what` is refused) or
    /// while the store is unreachable.
    ///
    /// # Errors
    /// [`BackendError::ShuttingDown`] or [`BackendError::Unavailable`].
    pub fn refuse_new_work(&self, what: &'static str) -> Result<(), BackendError> {
        if self.draining.load(Ordering::Acquire) {
            return Err(BackendError::ShuttingDown(what));
        }
        if !self.serving() {
            return Err(BackendError::Unavailable(self.unreachable));
        }
        Ok(())
    }

    /// Checks the store with `ping` every few seconds, and at once when
    /// asked; ends `streams` when it becomes unreachable, and wakes them
    /// when it is back. Runs until `stop`.
    pub async fn watch(&self, ping: Ping, streams: &Streams, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let checked = tokio::time::timeout(CHECK_TIMEOUT, ping())
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {CHECK_TIMEOUT:?}")));
            let was = self.serving();
            match checked {
                Ok(()) if !was => {
                    info!(store = self.store, "the store is reachable again: serving");
                    self.serving.send_replace(true);
                    streams.wake();
                }
                Ok(()) => {}
                Err(e) if was => {
                    warn!(store = self.store, error = %e,
                        "the store is unreachable: not serving, ending lease streams, reconnecting");
                    self.serving.send_replace(false);
                    streams.end_all();
                }
                Err(_) => {}
            }
            let wait = if self.serving() {
                backoff = Duration::from_millis(100);
                CHECK_EVERY
            } else {
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = self.check_now.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}
/// The drain's wait on a shared store: until `leased` (this broker's
/// leases still held, counted in the store) is 0, or `deadline`, asking
/// every 100 ms; what is left at the deadline. A store that cannot be
/// reached counts none: the leases stay valid in it, for any broker.
pub async fn wait_for_leases<F, Fut>(deadline: tokio::time::Instant, mut leased: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, BackendError>>,
{
    loop {
        match tokio::time::timeout_at(deadline, leased()).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return 0,
            Ok(Ok(n)) if tokio::time::Instant::now() >= deadline => return n,
            Ok(Ok(_)) => {}
        }
        tokio::time::sleep(Duration::from_millis(100).min(deadline - tokio::time::Instant::now()))
            .await;
    }
}
