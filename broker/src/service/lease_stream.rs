//! The response stream of one Lease call. It reads the jobs its backend
//! leased to it from its [`LeaseFeed`]; when tonic drops it (client gone,
//! call cancelled, broker draining) it closes its consumer and gives back
//! every job that was leased to it but never sent, so no job waits out a
//! lease on a stream that no longer exists. Every backend's leased jobs
//! pass here, so this is where each becomes a message and where its
//! `lease` span is emitted.
//!
//! With `--auth-tokens` it also watches the token file's reloads: once a
//! SIGHUP removes its credential, or takes the Lease right or one of its
//! queues from it, it ends with UNAUTHENTICATED or PERMISSION_DENIED
//! (and is dropped like any ended stream), before sending another job.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sluice_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::Status;

use sluice_queue::JobSnapshot;
use tracing::{debug, error};

use super::error::RequestError;
use super::lease_permits::LeasePermit;
use super::{outbound, trace_spans};
use crate::auth::StreamGuard;
use crate::backend::{FeedCloser, LeaseFeed, LeaseRef};

/// Jobs leased to one consumer, in the order leased.
pub struct LeaseStream {
    receiver: tokio::sync::mpsc::Receiver<JobSnapshot>,
    /// Taken off the channel but not sent yet (batching only).
    pending: Vec<JobSnapshot>,
    /// Called on drop.
    closer: Arc<dyn FeedCloser>,
    /// Counts this stream against the stream caps until dropped.
    _permit: LeasePermit,
    /// Ends the stream when its credential is revoked; `None` when the
    /// broker has no tokens, or once it has ended the stream.
    revocation: Option<StreamGuard>,
    /// The stream was ended for its credential: nothing more is sent.
    ended: bool,
}

impl LeaseStream {
    pub(super) fn new(
        feed: LeaseFeed,
        permit: LeasePermit,
        revocation: Option<StreamGuard>,
    ) -> Self {
        Self {
            receiver: feed.jobs,
            pending: Vec::new(),
            closer: feed.closer,
            _permit: permit,
            revocation,
            ended: false,
        }
    }

    /// Steers the stream's consumer (a Work session sets its window).
    pub(super) fn closer(&self) -> Arc<dyn FeedCloser> {
        self.closer.clone()
    }

    /// The jobs ready to send now, packed for one message: `Ready(None)`
    /// once the feed has ended (the broker drains, or the consumer was
    /// closed).
    pub(super) fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Option<Vec<pb::LeasedJob>>> {
        if self.pending.is_empty() {
            match self
                .receiver
                .poll_recv_many(cx, &mut self.pending, MAX_BATCH)
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => return Poll::Ready(None),
                Poll::Ready(_) => {}
            }
        }
        // Sizes are estimated from the jobs before they become messages,
        // so that what does not fit stays a job the drop can give back.
        let mut size = 0;
        let take = self
            .pending
            .iter()
            .take_while(|job| {
                size += estimated_len(job);
                size <= MAX_BATCH_BYTES
            })
            .count()
            .max(1);
        Poll::Ready(Some(
            self.pending.drain(..take).filter_map(to_message).collect(),
        ))
    }

    /// The status that ends the stream, once its credential no longer
    /// covers it.
    fn poll_revoked(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let Some(guard) = &mut self.revocation else {
            return Poll::Pending;
        };
        let revoked = std::task::ready!(guard.poll_revoked(cx));
        debug!(error = %revoked, "lease stream ended: its credential no longer covers it");
        self.revocation = None;
        self.ended = true;
        Poll::Ready(Status::from(RequestError::from(revoked)))
    }
}

impl Stream for LeaseStream {
    type Item = Result<pb::LeasedJob, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(status) = self.poll_revoked(cx) {
            return Poll::Ready(Some(Err(status)));
        }
        loop {
            let Some(job) = std::task::ready!(self.receiver.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            if let Some(message) = to_message(job) {
                return Poll::Ready(Some(Ok(message)));
            }
        }
    }
}

/// The message that sends `job` to its worker, with its `lease` span;
/// `None` (and an error logged) for a job without a lease, which no
/// backend should send.
fn to_message(job: JobSnapshot) -> Option<pb::LeasedJob> {
    if job.lease.is_none() {
        error!(job_id = %job.id, queue = job.queue, job_type = job.job_type,
            attempt = job.attempt, "a backend sent a job without a lease: not sent");
        return None;
    }
    trace_spans::leased(&job);
    Some(outbound::leased_job_to_pb(job))
}

impl Drop for LeaseStream {
    fn drop(&mut self) {
        // Closed first: a job leased from now on fails to send, and its
        // backend gives it back itself.
        self.receiver.close();
        let mut unsent: Vec<LeaseRef> = self.pending.iter().filter_map(LeaseRef::of).collect();
        while let Ok(job) = self.receiver.try_recv() {
            unsent.extend(LeaseRef::of(&job));
        }
        self.closer.close(unsent);
    }
}

/// About the encoded size of `job` as a message: its variable parts,
/// plus a bound on the fixed ones (ids, times, numbers, tags).
fn estimated_len(job: &JobSnapshot) -> usize {
    const FIXED: usize = 256;
    let headers: usize = job.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    let lease = job.lease.as_ref().map_or(0, |l| l.worker_id.len());
    FIXED
        + job.payload.len()
        + job.queue.len()
        + job.job_type.len()
        + job.last_error.as_ref().map_or(0, String::len)
        + headers
        + lease
}

/// Most jobs packed into one [`pb::LeasedJobBatch`].
const MAX_BATCH: usize = 1024;
/// A batch stops growing at this encoded size (unless it holds one job):
/// clients refuse messages over 4 MiB unless told otherwise.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// The same jobs as [`LeaseStream`], with those ready at the same moment
/// packed into one message: one gRPC message (and often one HTTP/2 frame)
/// for many jobs.
pub struct LeaseBatchStream {
    inner: LeaseStream,
}

impl LeaseBatchStream {
    pub(super) fn new(inner: LeaseStream) -> Self {
        Self { inner }
    }
}

impl Stream for LeaseBatchStream {
    type Item = Result<pb::LeasedJobBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let inner = &mut self.inner;
        if inner.ended {
            return Poll::Ready(None);
        }
        if let Poll::Ready(status) = inner.poll_revoked(cx) {
            return Poll::Ready(Some(Err(status)));
        }
        let jobs = std::task::ready!(inner.poll_batch(cx));
        Poll::Ready(jobs.map(|jobs| Ok(pb::LeasedJobBatch { jobs })))
    }
}
