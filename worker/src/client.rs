//! The worker's connection to the broker: the Lease stream and the calls
//! that resolve or extend leases, with retries across connection loss.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};
use tracing::debug;

use crate::backoff;
use crate::error::WorkerError;

/// Longest a single unary call may take, enforced here (the grpc-timeout
/// header alone is enforced only by the server).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a finished attempt is reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// It succeeded.
    Ack,
    /// It failed.
    Nack {
        /// The job's new `last_error`.
        error: String,
        /// Overrides the backoff.
        retry_after: Option<Duration>,
        /// No more attempts.
        dead: bool,
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

/// Largest message accepted from the broker.
const MAX_MESSAGE: usize = 256 << 20;

/// AckBatch calls in flight at once: while some wait for the broker, the
/// next acks go out instead of waiting a round trip.
const ACK_CALLS_IN_FLIGHT: usize = 4;

/// Most acks in one AckBatch call.
const MAX_ACK_BATCH: usize = 1024;

/// An ack waiting for the batcher, with where to send its result.
struct PendingAck {
    ack: pb::AckRequest,
    reply: oneshot::Sender<Result<(), Status>>,
}

/// A cheap, cloneable handle on the broker's `sluice.v1.Broker` service.
/// The connection is made lazily and re-made after it breaks.
#[derive(Clone)]
pub struct BrokerLink {
    client: BrokerClient<Channel>,
    /// Acks go to one batcher task, started on first use: while its
    /// AckBatch calls are in flight the next acks gather, so a busy worker
    /// sends many per call and an idle one waits for none.
    acks: Arc<OnceLock<mpsc::Sender<PendingAck>>>,
}

impl BrokerLink {
    /// A link to `url` (e.g. `http://127.0.0.1:50051`); connects on first use.
    ///
    /// # Errors
    /// [`WorkerError::BrokerUrl`] when `url` is not a valid URI.
    pub fn new(url: &str) -> Result<Self, WorkerError> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| WorkerError::BrokerUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(CALL_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        Ok(Self {
            // A leased job is as large as the broker's --max-payload allows.
            client: BrokerClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_MESSAGE),
            acks: Arc::new(OnceLock::new()),
        })
    }

    /// Opens a Lease stream whose messages carry every job ready at once.
    ///
    /// # Errors
    /// The broker's status, or UNAVAILABLE when it cannot be reached.
    pub async fn lease_batches(
        &self,
        req: pb::LeaseRequest,
    ) -> Result<Streaming<pb::LeasedJobBatch>, Status> {
        Ok(bounded(self.client.clone().lease_batches(req))
            .await?
            .into_inner())
    }

    /// Acks through the batcher.
    async fn ack(&self, ack: pb::AckRequest) -> Result<(), Status> {
        let sender = self.acks.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * MAX_ACK_BATCH);
            tokio::spawn(batch_acks(self.client.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        // Queued behind other batches: bounded like a call of its own, so a
        // broker that stopped answering does not hold the job's retries up.
        let queued = async {
            sender
                .send(PendingAck { ack, reply })
                .await
                .map_err(|_| Status::unavailable("the ack batcher stopped"))?;
            answer
                .await
                .map_err(|_| Status::unavailable("the ack batcher stopped"))?
        };
        tokio::time::timeout(2 * CALL_TIMEOUT, queued)
            .await
            .unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(
                    "the ack was not answered in time",
                ))
            })
    }

    /// Opens a Lease stream.
    ///
    /// # Errors
    /// The broker's status, or UNAVAILABLE when it cannot be reached.
    pub async fn lease(&self, req: pb::LeaseRequest) -> Result<Streaming<pb::LeasedJob>, Status> {
        Ok(bounded(self.client.clone().lease(req)).await?.into_inner())
    }

    /// Extends a lease to `by` from now.
    ///
    /// # Errors
    /// The broker's status: FAILED_PRECONDITION or NOT_FOUND when the lease was lost.
    pub async fn extend(
        &self,
        job_id: &str,
        lease_id: &str,
        by: Duration,
    ) -> Result<pb::ExtendResponse, Status> {
        let req = pb::ExtendRequest {
            job_id: job_id.to_owned(),
            lease_id: lease_id.to_owned(),
            extend_by: Some(sluice_proto::duration_to_pb(by)),
        };
        Ok(bounded(self.client.clone().extend(timed(req)))
            .await?
            .into_inner())
    }

    /// Reports an attempt's end, retrying through connection loss until
    /// `give_up_at` (when the lease would have expired anyway).
    ///
    /// # Errors
    /// The broker's refusal (e.g. FAILED_PRECONDITION for a lost lease), or
    /// the last transient error once `give_up_at` passed.
    pub async fn resolve(
        &self,
        job_id: &str,
        lease_id: &str,
        resolution: &Resolution,
        give_up_at: Instant,
    ) -> Result<Resolved, Status> {
        let mut attempt = 0;
        loop {
            match self.resolve_once(job_id, lease_id, resolution).await {
                Err(status) if is_transient(&status) && Instant::now() < give_up_at => {
                    let delay = backoff::delay(attempt);
                    debug!(job_id, attempt, error = %status, "resolution not delivered, retrying");
                    tokio::time::sleep(
                        delay.min(give_up_at.saturating_duration_since(Instant::now())),
                    )
                    .await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn resolve_once(
        &self,
        job_id: &str,
        lease_id: &str,
        resolution: &Resolution,
    ) -> Result<Resolved, Status> {
        let mut client = self.client.clone();
        let (job_id, lease_id) = (job_id.to_owned(), lease_id.to_owned());
        match resolution {
            Resolution::Ack => {
                self.ack(pb::AckRequest { job_id, lease_id }).await?;
                Ok(Resolved::Succeeded)
            }
            Resolution::Nack {
                error,
                retry_after,
                dead,
            } => {
                let req = pb::NackRequest {
                    job_id,
                    lease_id,
                    error: error.clone(),
                    retry_after: retry_after.map(sluice_proto::duration_to_pb),
                    dead: *dead,
                };
                let state = bounded(client.nack(timed(req))).await?.into_inner().state();
                Ok(match state {
                    pb::JobState::Scheduled | pb::JobState::Ready => Resolved::Retried,
                    _ => Resolved::Failed,
                })
            }
            Resolution::Release => {
                let req = pb::ReleaseRequest {
                    job_id,
                    lease_id,
                    delay: None,
                };
                bounded(client.release(timed(req))).await?;
                Ok(Resolved::Released)
            }
        }
    }
}

/// Sends the acks that arrive as AckBatch calls, each with every ack that
/// gathered since the last call went out, at most [`ACK_CALLS_IN_FLIGHT`]
/// calls at a time, and answers each ack with its own result.
async fn batch_acks(client: BrokerClient<Channel>, mut pending: mpsc::Receiver<PendingAck>) {
    let calls = Arc::new(Semaphore::new(ACK_CALLS_IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_ACK_BATCH);
    loop {
        // A free call first, so that acks keep gathering while all are busy.
        let Ok(call) = calls.clone().acquire_owned().await else {
            return;
        };
        if pending.recv_many(&mut batch, MAX_ACK_BATCH).await == 0 {
            return;
        }
        let (acks, replies): (Vec<_>, Vec<_>) = batch.drain(..).map(|p| (p.ack, p.reply)).unzip();
        let mut client = client.clone();
        tokio::spawn(async move {
            let _call = call;
            let answer = bounded(client.ack_batch(timed(pb::AckBatchRequest { acks }))).await;
            answer_acks(replies, answer);
        });
    }
}

/// Answers each ack of a batch with its item of the AckBatch response.
fn answer_acks(
    replies: Vec<oneshot::Sender<Result<(), Status>>>,
    answer: Result<tonic::Response<pb::AckBatchResponse>, Status>,
) {
    match answer {
        Ok(response) => {
            let results = response.into_inner().results;
            for (i, reply) in replies.into_iter().enumerate() {
                let result = match results.get(i) {
                    Some(r) if r.code == 0 => Ok(()),
                    Some(r) => Err(Status::new(Code::from(r.code), r.message.clone())),
                    None => Err(Status::internal(
                        "AckBatch answered fewer results than acks",
                    )),
                };
                let _ = reply.send(result);
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

/// Errors that a retry over a new connection may cure.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
    )
}

/// `call`, failing with DEADLINE_EXCEEDED after [`CALL_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(Status::deadline_exceeded(
                "no answer from the broker in time",
            ))
        })
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}
