//! What the maintenance loop of every shared store shares: a pass while
//! the store can be reached, again when the pass says its next deadline
//! comes, when woken (a job was scheduled) or at the latest after the poll
//! interval; a pass that fails asks the health check to look now
//! ([`between_passes`]). [`Every`] paces the chores a pass does at their
//! own interval (the broker record, the queue sweep).

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::Health;
use crate::backend::BackendError;

/// Between two passes of a maintenance loop: takes the pass's `outcome`
/// (how long until its next deadline; `None` if the store could not be
/// reached, so no pass ran), then waits that long (at most `poll`) or
/// until `wake`. `false` once `stop` is cancelled: the loop ends.
pub async fn between_passes(
    health: &Health,
    wake: &Notify,
    poll: Duration,
    stop: &CancellationToken,
    outcome: Option<Result<Duration, BackendError>>,
) -> bool {
    let next = match outcome {
        Some(Ok(due)) => due.min(poll),
        Some(Err(e)) => {
            debug!(error = %e, "maintenance pass failed");
            health.check_now().notify_one();
            poll
        }
        None => poll,
    };
    tokio::select! {
        biased;
        () = stop.cancelled() => false,
        () = wake.notified() => true,
        () = tokio::time::sleep(next) => true,
    }
}

/// A chore done at most once an interval.
pub struct Every {
    every: Duration,
    last: Instant,
}

impl Every {
    /// Due one interval from now, and each interval after it last ran.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
        }
    }

    /// Does `chore` if the interval has passed since it last succeeded.
    ///
    /// # Errors
    /// The chore's; it is tried again at the next call.
    pub async fn run(
        &mut self,
        chore: impl AsyncFnOnce() -> Result<(), BackendError>,
    ) -> Result<(), BackendError> {
        if self.last.elapsed() >= self.every {
            chore().await?;
            self.last = Instant::now();
        }
        Ok(())
    }
}
