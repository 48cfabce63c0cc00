//! The response stream of one Lease call. It reads the jobs its backend
//! leased to it from its [`LeaseFeed`]; when tonic drops it (client gone,
//! call cancelled, broker draining) it closes its consumer and gives back
//! every job that was leased to it but never sent, so no job waits out a
//! lease on a stream that no longer exists.
//!
//! With `--auth-tokens` it also watches the token file's reloads: once a
//! SIGHUP removes its credential, or takes the Lease right or one of its
//! queues from it, it ends with UNAUTHENTICATED or PERMISSION_DENIED
//! (and is dropped like any ended stream), before sending another job.

use std::pin::Pin;
use std::task::{Context, Poll};

use sluice_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::Status;

use prost::Message as _;

use tracing::debug;

use super::error::RequestError;
use super::lease_permits::LeasePermit;
use crate::auth::StreamGuard;
use crate::backend::{FeedCloser, LeaseFeed};

/// Jobs leased to one consumer, in the order leased.
pub struct LeaseStream {
    receiver: tokio::sync::mpsc::Receiver<pb::LeasedJob>,
    /// Taken off the channel but not sent yet (batching only).
    pending: Vec<pb::LeasedJob>,
    /// Taken on drop.
    closer: Option<Box<dyn FeedCloser>>,
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
            closer: Some(feed.closer),
            _permit: permit,
            revocation,
            ended: false,
        }
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
        self.receiver.poll_recv(cx).map(|item| item.map(Ok))
    }
}

impl Drop for LeaseStream {
    fn drop(&mut self) {
        // Closed first: a job leased from now on fails to send, and its
        // backend gives it back itself.
        self.receiver.close();
        let mut unsent = std::mem::take(&mut self.pending);
        while let Ok(message) = self.receiver.try_recv() {
            unsent.push(message);
        }
        if let Some(closer) = self.closer.take() {
            closer.close(unsent);
        }
    }
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
        if inner.pending.is_empty() {
            match inner
                .receiver
                .poll_recv_many(cx, &mut inner.pending, MAX_BATCH)
            {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(0) => return Poll::Ready(None),
                Poll::Ready(_) => {}
            }
        }
        let mut size = 0;
        let take = inner
            .pending
            .iter()
            .take_while(|message| {
                size += message.encoded_len();
                size <= MAX_BATCH_BYTES
            })
            .count()
            .max(1);
        let jobs = inner.pending.drain(..take).collect();
        Poll::Ready(Some(Ok(pb::LeasedJobBatch { jobs })))
    }
}
