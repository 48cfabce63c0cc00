//! What user code implements: a [`Handler`] per job type, given the [`Job`]
//! and a [`JobContext`], returning `Ok(())` or a [`JobError`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use crate::client::{BrokerError, Link};

/// A job as a handler sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The broker's id for the job.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its type, which chose the handler.
    pub job_type: String,
    /// Opaque payload from the producer.
    pub payload: Bytes,
    /// Headers from the producer.
    pub headers: HashMap<String, String>,
    /// This attempt's number, from 1.
    pub attempt: u32,
    /// Attempts allowed in all.
    pub max_attempts: u32,
    /// How long this attempt may run before it is cancelled.
    pub timeout: Duration,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    /// Kept by the broker as the job's `last_error`.
    pub message: String,
    /// No further attempt can help: the job goes DEAD at once.
    pub permanent: bool,
    /// Run again after this delay instead of the broker's backoff.
    pub retry_after: Option<Duration>,
    /// Hold every job of this job's flow-control key this long, on every
    /// broker (a limit hit downstream, such as an HTTP 429).
    pub key_delay: Option<Duration>,
}

impl JobError {
    /// A failure worth retrying (the default for errors converted with `?`).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            retry_after: None,
            key_delay: None,
        }
    }

    /// A failure that no retry can fix: the job goes DEAD.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
            retry_after: None,
            key_delay: None,
        }
    }

    /// Retries after `delay` instead of the broker's backoff.
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Holds every job of this job's key for `delay` on every broker
    /// (the broker's flow control, `key_delay`): the downstream
    /// said to slow down for this customer.
    #[must_use]
    pub fn with_key_delay(mut self, delay: Duration) -> Self {
        self.key_delay = Some(delay);
        self
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable [`JobError`], so handlers can use `?`.
impl<E: std::error::Error> From<E> for JobError {
    fn from(err: E) -> Self {
        Self::retry(err.to_string())
    }
}

/// The result of one attempt.
pub type JobResult = Result<(), JobError>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = JobResult> + Send + 'static>>;

/// Runs jobs of one type. Implemented for every
/// `Fn(Job, JobContext) -> impl Future<Output = JobResult>`, so an async
/// closure is a handler.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. It should return soon after `ctx` is cancelled; if it
    /// does not, its future is dropped at the deadline anyway.
    fn call(&self, job: Job, ctx: JobContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Job, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    fn call(&self, job: Job, ctx: JobContext) -> HandlerFuture {
        Box::pin(self(job, ctx))
    }
}

/// Handlers by job type.
pub type Registry = HashMap<String, Arc<dyn Handler>>;

/// What a running handler can do besides its work: notice cancellation
/// (timeout, operator cancel, forced shutdown), extend its lease, report
/// its progress and set the result its Ack carries.
#[derive(Clone)]
pub struct JobContext {
    cancel: CancellationToken,
    link: Arc<dyn Link>,
    job_id: String,
    lease_id: String,
    result: ResultSlot,
}

/// Where a handler leaves its result for the Ack (see [`JobContext::set_result`]).
pub(crate) type ResultSlot = Arc<Mutex<Option<Bytes>>>;

impl JobContext {
    pub(crate) fn new(
        cancel: CancellationToken,
        link: Arc<dyn Link>,
        job_id: String,
        lease_id: String,
        result: ResultSlot,
    ) -> Self {
        Self {
            cancel,
            link,
            job_id,
            lease_id,
            result,
        }
    }

    /// Sets the result the attempt's Ack carries if the handler then
    /// returns `Ok` (a later call replaces it). The broker keeps it with
    /// the SUCCEEDED job, shown by `sluice jobs get` and GetJob.
    ///
    /// # Errors
    /// A permanent [`JobError`] when `result` is over
    /// [`sluice_limits::MAX_RESULT_BYTES`], which the broker would refuse.
    pub fn set_result(&self, result: impl Into<Bytes>) -> Result<(), JobError> {
        let result = result.into();
        if result.len() > sluice_limits::MAX_RESULT_BYTES {
            return Err(JobError::permanent(format!(
                "the result is {} bytes, over the limit of {} bytes",
                result.len(),
                sluice_limits::MAX_RESULT_BYTES
            )));
        }
        *self.result.lock().unwrap_or_else(PoisonError::into_inner) = Some(result);
        Ok(())
    }

    /// Reports how far the job has come: `percent` (0 to 100) and a short
    /// text or small JSON document (at most
    /// [`sluice_limits::MAX_PROGRESS_MESSAGE_BYTES`]), shown by GetJob,
    /// `sluice jobs get`, `sluice top` and the dashboard. It does not
    /// extend the lease (the worker's heartbeats do).
    ///
    /// # Errors
    /// [`BrokerError`]: refused (a percent over 100, a message too long),
    /// of kind [`crate::client::BrokerErrorKind::LeaseLost`] when the lease
    /// was lost, or unavailable.
    pub async fn progress(
        &self,
        percent: u32,
        message: impl Into<String>,
    ) -> Result<(), BrokerError> {
        let message = message.into();
        self.link
            .progress(&self.job_id, &self.lease_id, percent, &message)
            .await
    }

    /// Resolves when the attempt must stop.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// Whether the attempt must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The token that is cancelled when the attempt must stop.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Extends the lease to `by` from now, beyond the worker's own
    /// heartbeats (which already keep a running job leased).
    ///
    /// # Errors
    /// [`BrokerError`]: of kind [`crate::client::BrokerErrorKind::LeaseLost`]
    /// when the lease was lost.
    pub async fn extend_lease(&self, by: Duration) -> Result<(), BrokerError> {
        self.link
            .extend(&self.job_id, &self.lease_id, by)
            .await
            .map(|_| ())
    }
}
