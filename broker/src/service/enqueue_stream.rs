//! `Broker.EnqueueStream`: one producer's stream of enqueues. A task per
//! stream reads what has arrived (a group, see `stream_groups.rs`),
//! checks each request's queue against the stream's credential as the
//! last SIGHUP left it, enqueues the valid ones in one backend call (one
//! commit), and sends their results in one message, tagged with each
//! request's seq, once that commit is durable. What arrives meanwhile goes
//! into the next group, so a producer with many requests in flight gets
//! group commits without batching.
//!
//! A bad request gets its own status and the stream goes on. The stream
//! ends with a status when its credential is revoked (UNAUTHENTICATED or
//! PERMISSION_DENIED), and with UNAVAILABLE once the broker drains (after
//! answering what it read, each UNAVAILABLE too); results already sent
//! stand, and a request without a result may be sent again on a new
//! stream (with its idempotency key it is then a duplicate).

use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::broker_rpc::{BrokerService, check_queues};
use super::error::{RequestError, item_status, status_item};
use super::stream_groups::{Next, next_group, revoked_status};
use crate::auth::{Grant, StreamGuard};

/// The response stream tonic sends.
pub type EnqueueResults = ReceiverStream<Result<pb::EnqueueStreamResponse, Status>>;

/// One EnqueueStream's task: see the module doc.
pub(super) struct EnqueueStreamTask {
    pub service: BrokerService,
    /// The credential the stream opened with (an open broker's grant).
    pub grant: Grant,
    /// Follows the token file's reloads; `None` on an open broker.
    pub guard: Option<StreamGuard>,
    pub requests: Streaming<pb::EnqueueStreamRequest>,
    /// Cancelled when the broker's drain is over.
    pub end: CancellationToken,
}

impl EnqueueStreamTask {
    /// Runs the stream until the producer closes it, goes away, or the
    /// broker ends it; sends results and the final status to `out`.
    pub async fn run(mut self, out: mpsc::Sender<Result<pb::EnqueueStreamResponse, Status>>) {
        loop {
            let next = next_group(&mut self.requests, &mut self.guard, &self.end, out.closed());
            let (group, last) = match next.await {
                Next::Group { requests, last } => (requests, last),
                Next::Revoked(revoked) => {
                    let _ = out.send(Err(revoked_status(revoked))).await;
                    return;
                }
                Next::Drained => {
                    let _ = out.send(Err(draining())).await;
                    return;
                }
                Next::Gone => return,
            };
            let (results, refused) = self.decide(group).await;
            // The jobs just enqueued may have woken a Lease stream or a
            // Work session: let that push run first, on this thread, rather
            // than have the results' wake-up move it to another.
            tokio::task::yield_now().await;
            let answered = out.send(Ok(pb::EnqueueStreamResponse { results })).await;
            if answered.is_err() {
                return;
            }
            if let Some(status) = refused {
                let _ = out.send(Err(status)).await;
                return;
            }
            if last {
                return;
            }
        }
    }

    /// The results of `group`, in its order, and the status that ends the
    /// stream when the backend refused the group as a whole (the drain, a
    /// store out of reach, a failed broker).
    async fn decide(
        &mut self,
        group: Vec<pb::EnqueueStreamRequest>,
    ) -> (Vec<pb::EnqueueStreamResult>, Option<Status>) {
        let grant = self.guard.as_ref().map_or(&self.grant, StreamGuard::grant);
        let mut seqs = Vec::with_capacity(group.len());
        let mut results: Vec<Option<pb::EnqueueStreamResult>> = Vec::with_capacity(group.len());
        let mut jobs = Vec::with_capacity(group.len());
        for request in group {
            seqs.push(request.seq);
            let checked = match request.job {
                None => Err(RequestError::invalid("job", "is required")),
                Some(job) => check_queues(grant, [job.queue.as_str()]).map(|()| job),
            };
            match checked {
                Ok(job) => {
                    jobs.push(job);
                    results.push(None);
                }
                Err(err) => results.push(Some(failed(request.seq, err))),
            }
        }
        // Refused as a whole (the drain, a store out of reach): each
        // request not refused already gets that status, and so does the
        // stream.
        let (mut enqueued, refused) = if jobs.is_empty() {
            (Vec::new().into_iter(), None)
        } else {
            let batch = pb::EnqueueBatchRequest { jobs };
            match self.service.handle_enqueue_batch(batch).await {
                Ok(response) => (response.results.into_iter(), None),
                Err(err) => (Vec::new().into_iter(), Some(Status::from(err))),
            }
        };
        let results = results
            .into_iter()
            .zip(seqs)
            .map(|(result, seq)| {
                result.unwrap_or_else(|| match (&refused, enqueued.next()) {
                    (None, Some(r)) => pb::EnqueueStreamResult {
                        seq,
                        job_id: r.job_id,
                        duplicate: r.duplicate,
                        code: r.code,
                        message: r.message,
                    },
                    (Some(status), _) => {
                        let (code, message) = status_item(status);
                        pb::EnqueueStreamResult {
                            seq,
                            code,
                            message,
                            ..Default::default()
                        }
                    }
                    (None, None) => pb::EnqueueStreamResult {
                        seq,
                        code: tonic::Code::Internal as i32,
                        message: "the broker answered fewer jobs than it took".to_owned(),
                        ..Default::default()
                    },
                })
            })
            .collect();
        (results, refused)
    }
}

/// The result of a request refused before it reached the backend.
fn failed(seq: u64, err: RequestError) -> pb::EnqueueStreamResult {
    let (code, message) = item_status(Err(err));
    pb::EnqueueStreamResult {
        seq,
        code,
        message,
        ..Default::default()
    }
}

/// How a stream ends once the broker drains.
fn draining() -> Status {
    Status::unavailable("the broker is draining: reconnect to another broker or retry later")
}
