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
    /// The backend could not be opened.
    #[error(transparent)]
    Open(#[from] crate::backend::OpenError),
    /// The broker failed while serving (see `crate::fatal`).
    #[error("{0}")]
    Failed(std::sync::Arc<str>),
}
