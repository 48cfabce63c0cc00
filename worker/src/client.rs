//! The worker's boundary with the broker: the [`Link`] that the runner and
//! the job tasks call, the worker's own types that cross it, and the one
//! error every call returns, [`BrokerError`].
//!
//! No protobuf or tonic type crosses this boundary. [`BrokerLink`] (in
//! `grpc`) is the only implementation that talks to a broker: it opens
//! each Lease stream as a Work session (`session`), over which every
//! report goes while it is open (the unary calls carry them between
//! sessions), converts to and from the wire, retries resolutions across
//! connection loss, and
//! classifies every gRPC status into a [`BrokerErrorKind`] in one place, so
//! the code above it decides on kinds (lease lost, refused, unavailable),
//! never on status codes. Unit tests of the runner and the job task put a
//! scripted link (`fake`) in its place.

mod error;
#[cfg(test)]
pub(crate) mod fake;
mod grpc;
pub mod security;
mod session;

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

pub use error::{BrokerError, BrokerErrorKind};
pub use grpc::{BrokerLink, bearer, endpoint};

use crate::handler::Job;

/// A boxed future, so that [`Link`] can be used as `dyn Link`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a worker asks for when it opens a Lease stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSpec {
    /// Names the worker in the broker.
    pub worker_id: String,
    /// Queues to take jobs from; empty means the default queue.
    pub queues: Vec<String>,
    /// Job types to take; empty means any.
    pub job_types: Vec<String>,
    /// Most jobs the stream holds unresolved at once, held leases included.
    pub max_in_flight: usize,
    /// Lease asked for each job.
    pub lease_duration: Duration,
    /// `(job_id, lease_id)` of jobs still running under leases from an
    /// earlier stream.
    pub held_leases: Vec<(String, String)>,
}

/// A job handed to this worker, with the lease that names it.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    /// The job.
    pub job: Job,
    /// Names this lease when it is extended or resolved.
    pub lease_id: String,
}

/// The broker's answer to an extension of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extended {
    /// When the lease now expires, by the broker's clock.
    pub lease_expires_at: Option<SystemTime>,
    /// An operator cancelled the job: stop it and resolve it.
    pub cancel_requested: bool,
}

/// What the worker reports for a finished attempt: ack, nack or release.
/// (Named apart from the broker's own `Resolution`, a different thing.)
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// It succeeded, with the result the handler set, if any.
    Ack(Option<Bytes>),
    /// It failed.
    Nack {
        /// The job's new `last_error`.
        error: String,
        /// Overrides the backoff.
        retry_after: Option<Duration>,
        /// No more attempts.
        dead: bool,
        /// Holds every job of its key this long.
        key_delay: Option<Duration>,
    },
    /// Give it back without using an attempt.
    Release,
}

/// What became of a resolved job, from the broker's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Acked.
    Succeeded,
    /// Nacked and scheduled to run again.
    Retried,
    /// Nacked with no attempt left, dead, or cancelled.
    Failed,
    /// Given back.
    Released,
}

/// The calls a worker makes to its broker.
pub trait Link: Send + Sync + 'static {
    /// Opens a Lease stream.
    ///
    /// # Errors
    /// [`BrokerErrorKind::Unavailable`] when the broker cannot be reached;
    /// any other kind when it refuses the stream.
    fn lease(&self, spec: LeaseSpec) -> BoxFuture<'_, Result<Box<dyn LeaseStream>, BrokerError>>;

    /// Extends a lease to `by` from now.
    ///
    /// # Errors
    /// [`BrokerErrorKind::LeaseLost`] when the lease is no longer current.
    fn extend<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        by: Duration,
    ) -> BoxFuture<'a, Result<Extended, BrokerError>>;

    /// Reports a running attempt's progress.
    ///
    /// # Errors
    /// The broker's refusal, [`BrokerErrorKind::LeaseLost`] when the lease
    /// is no longer current, or [`BrokerErrorKind::Unavailable`].
    fn progress<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        percent: u32,
        message: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Reports an attempt's end, retrying through connection loss until
    /// `give_up_at` (when the lease would have expired anyway).
    ///
    /// # Errors
    /// The broker's refusal (e.g. [`BrokerErrorKind::LeaseLost`]), or the
    /// last [`BrokerErrorKind::Unavailable`] once `give_up_at` passed.
    fn resolve<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        report: &'a Report,
        give_up_at: Instant,
    ) -> BoxFuture<'a, Result<Resolved, BrokerError>>;
}

/// An open Lease stream; dropping it closes it.
pub trait LeaseStream: Send {
    /// The next batch of jobs, `None` once the broker ended the stream.
    /// Cancel-safe: a batch is never lost by dropping the future.
    ///
    /// # Errors
    /// The stream broke.
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<LeasedJob>>, BrokerError>>;
}
