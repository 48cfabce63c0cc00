//! The backend layer's own errors: [`BackendError`], what an operation of
//! the seam can answer (the service maps it to a status, in its one
//! place), and [`OpenError`], why a backend could not be opened (the
//! server wraps it). Nothing here knows gRPC.

use std::sync::Arc;

use sluice_queue::QueueError;

/// Why a backend operation did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The broker is draining and takes no new work: says what is refused.
    #[error("the broker is shutting down: {0}")]
    ShuttingDown(&'static str),
    /// The queue's rules refused it (unknown job, stale lease, full queue...).
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store cannot be reached now; the broker recovers by itself.
    /// The message is the broker's own, never the store's.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// The store has no room for more (Redis at its `maxmemory`): a
    /// refusal the client may retry later. The message is the broker's.
    #[error("{0}")]
    StoreFull(&'static str),
    /// The broker failed (its data directory, or a panic in the queue; see
    /// `crate::fatal`) and is stopping: the change was not acknowledged.
    #[error("the broker could not make this change durable ({0}); it is stopping")]
    Failed(Arc<str>),
    /// Something that should not happen (a store's unexpected error: a
    /// query the database refused, a constraint violated). Logged in full
    /// where it was met; the caller hears only that it happened.
    #[error("internal error (the broker's log has the details)")]
    Internal,
}

/// Why a backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    /// The data directory holds what the queue cannot take back.
    #[error("restoring the data directory: {0}")]
    Restore(QueueError),
    /// A schedule's or source row's record in the data directory does not
    /// decode.
    #[error("restoring the data directory: {0}")]
    Records(String),
    /// Reading the data directory stopped (its task panicked).
    #[error("restoring the data directory: {0}")]
    Interrupted(#[from] tokio::task::JoinError),
    /// The operating system's random generator failed.
    #[error("reading the operating system's random generator: {0}")]
    Random(String),
    /// A shared store (its URL, its connection, its schema) refused.
    #[error("--store: {0}")]
    Shared(String),
}
