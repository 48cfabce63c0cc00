//! Why the server could not start, or stopped: its own error, beside it.

/// Why the server could not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The reflection service could not read the descriptors.
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The serving task panicked or was cancelled.
    #[error("serving task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The HTTP listener's address could not be read.
    #[error("the HTTP listener: {0}")]
    HttpListener(#[from] std::io::Error),
    /// The server stopped without being asked to.
    #[error("the server stopped before shutdown was requested")]
    StoppedEarly,
    /// The data directory could not be opened.
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    /// The data directory holds what the queue cannot take back.
    #[error("restoring the data directory: {0}")]
    Restore(sluice_queue::QueueError),
    /// The PostgreSQL store could not be opened.
    #[error("--store: {0}")]
    Database(String),
    /// The operating system's random generator failed.
    #[error("reading the operating system's random generator: {0}")]
    Random(String),
    /// The broker failed while serving (see `crate::fatal`).
    #[error("{0}")]
    Failed(std::sync::Arc<str>),
}
