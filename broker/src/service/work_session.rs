//! `Broker.Work`: a worker's session, Lease and the reports on one
//! stream. The first message opens it with what Lease takes; from then
//! on the session is two halves:
//!
//! - [`WorkStream`], the response stream: the jobs its feed leases (as
//!   [`LeaseStream`] sends them, packed) and the results of reports, both
//!   in one message when both are ready. When the feed ends because the
//!   broker drains, its next message says `draining`.
//! - [`ReportsTask`], a task that reads the worker's messages: the ones
//!   that have arrived (a group, see `stream_groups.rs`) are decided in order,
//!   runs of Acks in one backend call as AckBatch does, the others one by
//!   one as their unary calls do, and their results go to the response
//!   stream together.
//!
//! The session ends when the worker closes its side (once every report is
//! answered), when the worker goes away, when its credential is revoked
//! (the status says why), or when the broker's drain is over. Dropping the
//! response stream gives back the jobs leased to it and never sent, as a
//! Lease stream's drop does.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sluice_proto::v1 as pb;
use sluice_proto::v1::work_request::Kind;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};

use super::broker_rpc::BrokerService;
use super::error::{RequestError, item_status};
use super::lease_stream::LeaseStream;
use super::stream_groups::{Next, next_group, revoked_status};
use crate::auth::{Grant, StreamGuard};
use crate::backend::FeedCloser;

/// What the reports task sends the response stream: results, or the
/// status that ends the session.
type Decided = Result<Vec<pb::WorkResult>, Status>;

/// The response stream of one Work session.
pub struct WorkStream {
    jobs: LeaseStream,
    results: mpsc::Receiver<Decided>,
    /// The feed ended: the broker drains, and says so once.
    feed_ended: bool,
    draining_said: bool,
    /// The status that ends the session, sent after the results before it.
    ending: Option<Status>,
    ended: bool,
}

impl WorkStream {
    pub(super) fn new(jobs: LeaseStream, results: mpsc::Receiver<Decided>) -> Self {
        Self {
            jobs,
            results,
            feed_ended: false,
            draining_said: false,
            ending: None,
            ended: false,
        }
    }
}

impl Stream for WorkStream {
    type Item = Result<pb::WorkResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(status) = this.ending.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        let mut response = pb::WorkResponse::default();
        // The reports task is done (the worker closed its side, or the
        // session must end): no more jobs go out.
        let mut reports_done = false;
        loop {
            match this.results.poll_recv(cx) {
                Poll::Ready(Some(Ok(results))) => response.results.extend(results),
                Poll::Ready(Some(Err(status))) => {
                    this.ending = Some(status);
                    reports_done = true;
                    break;
                }
                Poll::Ready(None) => {
                    reports_done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !reports_done && !this.feed_ended {
            match this.jobs.poll_batch(cx) {
                Poll::Ready(Some(jobs)) => response.jobs = jobs,
                Poll::Ready(None) => this.feed_ended = true,
                Poll::Pending => {}
            }
        }
        if this.feed_ended && !this.draining_said {
            this.draining_said = true;
            response.draining = true;
        }
        if !response.results.is_empty() || !response.jobs.is_empty() || response.draining {
            return Poll::Ready(Some(Ok(response)));
        }
        if let Some(status) = this.ending.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        if reports_done {
            this.ended = true;
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// The task that decides one session's reports: see the module doc.
pub(super) struct ReportsTask {
    pub service: BrokerService,
    /// The credential the session opened with (an open broker's grant).
    pub grant: Grant,
    /// Follows the token file's reloads; `None` on an open broker.
    pub guard: Option<StreamGuard>,
    pub requests: Streaming<pb::WorkRequest>,
    /// Sets the session's window.
    pub feed: Arc<dyn FeedCloser>,
    /// The opening max_in_flight: the highest window.
    pub max_window: u32,
    /// Cancelled when the broker's drain is over.
    pub end: CancellationToken,
}

/// The ack of a run of Acks, waiting for the run to end.
struct PendingAck {
    seq: u64,
    ack: pb::AckRequest,
}

impl ReportsTask {
    /// Reads and decides reports until the session ends.
    pub async fn run(mut self, out: mpsc::Sender<Decided>) {
        loop {
            let next = next_group(&mut self.requests, &mut self.guard, &self.end, out.closed());
            let (group, last) = match next.await {
                Next::Group { requests, last } => (requests, last),
                Next::Revoked(revoked) => {
                    let _ = out.send(Err(revoked_status(revoked))).await;
                    return;
                }
                Next::Drained | Next::Gone => return,
            };
            let results = self.decide(group).await;
            if out.send(Ok(results)).await.is_err() || last {
                return;
            }
        }
    }

    /// The results of `group`, in its order.
    async fn decide(&mut self, group: Vec<pb::WorkRequest>) -> Vec<pb::WorkResult> {
        let mut results = Vec::with_capacity(group.len());
        let mut acks = Vec::new();
        for request in group {
            let seq = request.seq;
            let Some(Kind::Ack(ack)) = request.kind else {
                self.ack_run(&mut acks, &mut results).await;
                results.push(self.decide_one(seq, request.kind).await);
                continue;
            };
            acks.push(PendingAck { seq, ack });
        }
        self.ack_run(&mut acks, &mut results).await;
        results
    }

    fn grant(&self) -> &Grant {
        self.guard.as_ref().map_or(&self.grant, StreamGuard::grant)
    }

    /// Decides the run of Acks `acks` in one backend call, as AckBatch.
    async fn ack_run(&self, acks: &mut Vec<PendingAck>, results: &mut Vec<pb::WorkResult>) {
        if acks.is_empty() {
            return;
        }
        let (seqs, acks): (Vec<u64>, Vec<pb::AckRequest>) =
            acks.drain(..).map(|a| (a.seq, a.ack)).unzip();
        let batch = pb::AckBatchRequest { acks };
        match self.service.handle_ack_batch(self.grant(), batch).await {
            Ok(response) => {
                results.extend(response.results.into_iter().zip(seqs).map(|(r, seq)| {
                    pb::WorkResult {
                        seq,
                        code: r.code,
                        message: r.message,
                        answer: None,
                    }
                }));
            }
            Err(err) => {
                let (code, message) = item_status(Err(err));
                results.extend(seqs.into_iter().map(|seq| pb::WorkResult {
                    seq,
                    code,
                    message: message.clone(),
                    answer: None,
                }));
            }
        }
    }

    /// The result of one report.
    async fn decide_one(&self, seq: u64, kind: Option<Kind>) -> pb::WorkResult {
        use pb::work_result::Answer;
        let grant = self.grant();
        let answer = match kind {
            Some(Kind::Credit(credit)) => self.set_window(credit.window).map(|()| None),
            Some(Kind::Nack(nack)) => self
                .service
                .handle_nack(grant, nack)
                .await
                .map(|r| Some(Answer::Nack(r))),
            Some(Kind::Extend(extend)) => self
                .service
                .handle_extend(grant, extend)
                .await
                .map(|r| Some(Answer::Extend(r))),
            Some(Kind::Release(release)) => self
                .service
                .handle_release(grant, release)
                .await
                .map(|r| Some(Answer::Release(r))),
            Some(Kind::Progress(progress)) => self
                .service
                .handle_progress(grant, progress)
                .await
                .map(|r| Some(Answer::Progress(r))),
            Some(Kind::Open(_)) => Err(RequestError::invalid(
                "open",
                "the session is open already: only its first message opens it",
            )),
            // Runs of Acks are decided together (`ack_run`); one alone too.
            Some(Kind::Ack(ack)) => self.service.handle_ack(grant, ack).await.map(|_| None),
            None => Err(RequestError::invalid(
                "kind",
                "is required: credit, ack, nack, extend, release or progress",
            )),
        };
        match answer {
            Ok(answer) => pb::WorkResult {
                seq,
                answer,
                ..Default::default()
            },
            Err(err) => {
                let (code, message) = item_status(Err(err));
                pb::WorkResult {
                    seq,
                    code,
                    message,
                    answer: None,
                }
            }
        }
    }

    fn set_window(&self, window: u32) -> Result<(), RequestError> {
        if window > self.max_window {
            return Err(RequestError::invalid(
                "credit.window",
                format!(
                    "{window} is over the session's max_in_flight of {}",
                    self.max_window
                ),
            ));
        }
        self.feed.set_window(window);
        Ok(())
    }
}
