//! The response stream of one Lease call. It reads jobs the queue pushed to
//! its channel; when tonic drops it (client gone, call cancelled, broker
//! draining) it closes its consumer and returns to the queue every job that
//! was leased to it but never sent, so no job waits out a lease on a stream
//! that no longer exists.

use std::pin::Pin;
use std::task::{Context, Poll};

use sluice_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::Status;

use super::shared_queue::{Outlet, SharedQueue};
use crate::queue::ConsumerId;

/// Jobs leased to one consumer, in the order leased.
pub struct LeaseStream {
    consumer: ConsumerId,
    outlet: Outlet,
    shared: SharedQueue,
}

impl LeaseStream {
    pub(super) fn new(consumer: ConsumerId, outlet: Outlet, shared: SharedQueue) -> Self {
        Self {
            consumer,
            outlet,
            shared,
        }
    }
}

impl Stream for LeaseStream {
    type Item = Result<pb::LeasedJob, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.outlet
            .poll_recv(cx)
            .map(|item| item.map(|outgoing| Ok(outgoing.message)))
    }
}

impl Drop for LeaseStream {
    fn drop(&mut self) {
        self.shared.close_consumer(self.consumer, &mut self.outlet);
    }
}

/// Most jobs packed into one [`pb::LeasedJobBatch`].
const MAX_BATCH: usize = 1024;

/// The same jobs as [`LeaseStream`], with those ready at the same moment
/// packed into one message: one gRPC message (and often one HTTP/2 frame)
/// for many jobs.
pub struct LeaseBatchStream {
    inner: LeaseStream,
    buffer: Vec<super::shared_queue::Outgoing>,
}

impl LeaseBatchStream {
    pub(super) fn new(inner: LeaseStream) -> Self {
        Self {
            inner,
            buffer: Vec::new(),
        }
    }
}

impl Stream for LeaseBatchStream {
    type Item = Result<pb::LeasedJobBatch, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this
            .inner
            .outlet
            .poll_recv_many(cx, &mut this.buffer, MAX_BATCH)
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(0) => Poll::Ready(None),
            Poll::Ready(_) => {
                let jobs = this
                    .buffer
                    .drain(..)
                    .map(|outgoing| outgoing.message)
                    .collect();
                Poll::Ready(Some(Ok(pb::LeasedJobBatch { jobs })))
            }
        }
    }
}
