//! The one background task that acts on deadlines: promotes scheduled jobs
//! when due, fails expired leases and forgets jobs whose retention ended.
//! It sleeps until the queue's next deadline or until an operation sets an
//! earlier one.

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::shared_queue::SharedQueue;

/// Runs until `stop` is cancelled.
pub async fn run(shared: SharedQueue, stop: CancellationToken) {
    loop {
        let next = shared.tick();
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            () = shared.deadline_moved() => {}
            () = sleep_until(next) => {}
        }
    }
    debug!("scheduler stopped");
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
