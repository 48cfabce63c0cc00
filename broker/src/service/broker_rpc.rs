//! `sluice.v1.Broker`: the data path. Each method first asks the
//! [`Authorizer`] whether the caller may make the call on the queues the
//! message names, then validates its request (`convert`), runs one queue
//! operation, and its result goes through [`respond`], the one mapping of
//! errors to statuses.
//!
//! Ack, AckBatch, Nack, Extend, Release and Progress name a job, not a queue: for a
//! credential scoped to some queues, a job outside them is answered as an
//! unknown one (NOT_FOUND; see `visibility.rs`), per item in an AckBatch.
//! A job id that does not parse is INVALID_ARGUMENT first, as always.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_server::Broker;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::convert::{self, Limits};
use super::enqueue_stream::{EnqueueResults, EnqueueStreamTask};
use super::error::{RequestError, item_status};
use super::lease_permits::LeasePermits;
use super::lease_stream::{LeaseBatchStream, LeaseStream};
use super::outbound;
use super::respond;
use super::source_rpc::SourceDesk;
use super::trace_spans;
use super::visibility;
use super::work_session::{ReportsTask, WorkStream};
use crate::auth::{Authorizer, Call, Grant, StreamGuard};
use crate::backend::{Ack, LeaseRef, SharedBackend};
use crate::clock::{Clock, TokioClock};
use sluice_queue::Failure;

type Result<T> = std::result::Result<T, RequestError>;

/// The `sluice.v1.Broker` service.
#[derive(Clone)]
pub struct BrokerService {
    shared: SharedBackend,
    /// The time new jobs are checked against (run_at at most a year ahead).
    clock: TokioClock,
    limits: Limits,
    auth: Authorizer,
    /// The open-stream caps, over all and per credential.
    lease_permits: Arc<LeasePermits>,
    /// The source calls.
    sources: SourceDesk,
    /// The tasks of EnqueueStream and Work, which end when `streams_end`
    /// is cancelled (the drain is over).
    stream_tasks: TaskTracker,
    streams_end: CancellationToken,
}

impl BrokerService {
    /// Serves `shared` with the given limits, checking calls with `auth`,
    /// with at most `max_lease_streams` Lease streams open at once, and
    /// `max_per_credential` of one credential. The tasks of its streams
    /// run on `stream_tasks` and end once `streams_end` is cancelled.
    pub fn new(
        shared: SharedBackend,
        limits: Limits,
        auth: Authorizer,
        (max_lease_streams, max_per_credential): (usize, usize),
        stream_tasks: TaskTracker,
        streams_end: CancellationToken,
    ) -> Self {
        Self {
            shared: shared.clone(),
            clock: TokioClock::new(),
            limits,
            auth,
            lease_permits: Arc::new(LeasePermits::new(max_lease_streams, max_per_credential)),
            sources: SourceDesk::new(shared, limits),
            stream_tasks,
            streams_end,
        }
    }

    /// Checks `call` and the queues of a Lease request; returns the grant
    /// and the queues (none named is the default queue).
    fn authorize_lease(
        &self,
        request: &Request<pb::LeaseRequest>,
        call: Call,
    ) -> Result<(Grant, Vec<String>)> {
        let grant = self.auth.check(request, call)?;
        let queues = lease_queues(&grant, request.get_ref())?;
        Ok((grant, queues))
    }

    async fn handle_lease(
        &self,
        request: Request<pb::LeaseRequest>,
        call: Call,
    ) -> Result<LeaseStream> {
        let (grant, queues) = self.authorize_lease(&request, call)?;
        let revocation = self.auth.guard_stream(&grant, call, queues);
        self.open_lease(&grant, request.into_inner(), revocation)
            .await
    }

    /// Opens the consumer of a Lease stream or Work session; a Lease
    /// stream ends itself through `revocation`.
    async fn open_lease(
        &self,
        grant: &Grant,
        request: pb::LeaseRequest,
        revocation: Option<StreamGuard>,
    ) -> Result<LeaseStream> {
        let spec = convert::consumer_spec(request)?;
        let permit = self.lease_permits.take(grant)?;
        let feed = self.shared.open_feed(spec).await?;
        Ok(LeaseStream::new(feed, permit, revocation))
    }

    fn handle_enqueue_stream(
        &self,
        request: Request<Streaming<pb::EnqueueStreamRequest>>,
    ) -> Result<EnqueueResults> {
        let grant = self.auth.check(&request, Call::EnqueueStream)?;
        let guard = self
            .auth
            .guard_stream(&grant, Call::EnqueueStream, Vec::new());
        let task = EnqueueStreamTask {
            service: self.clone(),
            grant,
            guard,
            requests: request.into_inner(),
            end: self.streams_end.clone(),
        };
        let (tx, rx) = mpsc::channel(2);
        self.stream_tasks.spawn(task.run(tx));
        Ok(EnqueueResults::new(rx))
    }

    async fn handle_work(
        &self,
        request: Request<Streaming<pb::WorkRequest>>,
    ) -> Result<WorkStream> {
        let grant = self.auth.check(&request, Call::Work)?;
        let mut requests = request.into_inner();
        let open = match tokio_stream::StreamExt::next(&mut requests).await {
            Some(Ok(pb::WorkRequest {
                kind: Some(pb::work_request::Kind::Open(open)),
                ..
            })) => open,
            Some(Ok(_)) => {
                return Err(RequestError::invalid(
                    "open",
                    "the first message of a Work session must open it",
                ));
            }
            Some(Err(status)) => return Err(RequestError::Receiving(status)),
            None => {
                return Err(RequestError::invalid(
                    "open",
                    "the stream ended before its first message",
                ));
            }
        };
        let queues = lease_queues(&grant, &open)?;
        let max_window = open.max_in_flight;
        // The session's revocation is watched by its reports task, which
        // ends the session with the reason (its jobs' stream has none).
        let guard = self.auth.guard_stream(&grant, Call::Work, queues);
        let jobs = self.open_lease(&grant, open, None).await?;
        let task = ReportsTask {
            service: self.clone(),
            feed: jobs.closer(),
            grant,
            guard,
            requests,
            max_window,
            end: self.streams_end.clone(),
        };
        let (tx, rx) = mpsc::channel(2);
        self.stream_tasks.spawn(task.run(tx));
        Ok(WorkStream::new(jobs, rx))
    }

    async fn handle_enqueue(&self, req: pb::EnqueueRequest) -> Result<pb::EnqueueResponse> {
        let span = trace_spans::enqueue(&req);
        let job = convert::new_job(req, self.limits, self.clock.now())?;
        let enqueued = self
            .shared
            .enqueue(vec![job], "Enqueue is refused")
            .instrument(span.clone())
            .await?
            .pop()
            .unwrap_or_else(|| unreachable!("one answer per job"))?;
        span.record("job_id", tracing::field::display(enqueued.job_id));
        // As EnqueueStream does (see there): the push this job may have
        // woken runs before the answer's wake-up can move it elsewhere.
        tokio::task::yield_now().await;
        Ok(pb::EnqueueResponse {
            job_id: enqueued.job_id.to_string(),
            duplicate: enqueued.duplicate,
        })
    }

    pub(super) async fn handle_enqueue_batch(
        &self,
        req: pb::EnqueueBatchRequest,
    ) -> Result<pb::EnqueueBatchResponse> {
        check_batch(req.jobs.len(), "jobs")?;
        let now = self.clock.now();
        // Each job is checked on its own; the valid ones go in one write,
        // and their answers are put back in the request's order.
        let mut checked = Vec::with_capacity(req.jobs.len());
        let mut valid = Vec::with_capacity(req.jobs.len());
        for job in req.jobs {
            let span = trace_spans::enqueue(&job);
            match convert::new_job(job, self.limits, now) {
                Ok(job) => {
                    valid.push(job);
                    checked.push(Ok(span));
                }
                Err(err) => checked.push(Err(err)),
            }
        }
        let mut enqueued = self
            .shared
            .enqueue(valid, "EnqueueBatch is refused")
            .await?
            .into_iter();
        let results = checked
            .into_iter()
            .map(|checked| {
                let result = checked.and_then(|span| {
                    let e = enqueued
                        .next()
                        .unwrap_or_else(|| unreachable!("one answer per valid job"))?;
                    span.record("job_id", tracing::field::display(e.job_id));
                    Ok(e)
                });
                match result {
                    Ok(e) => pb::EnqueueResult {
                        job_id: e.job_id.to_string(),
                        duplicate: e.duplicate,
                        ..Default::default()
                    },
                    Err(err) => {
                        let (code, message) = item_status(Err(err));
                        pb::EnqueueResult {
                            code,
                            message,
                            ..Default::default()
                        }
                    }
                }
            })
            .collect();
        Ok(pb::EnqueueBatchResponse { results })
    }

    pub(super) async fn handle_ack_batch(
        &self,
        grant: &Grant,
        req: pb::AckBatchRequest,
    ) -> Result<pb::AckBatchResponse> {
        check_batch(req.acks.len(), "acks")?;
        let mut parsed: Vec<Result<Ack>> = req.acks.into_iter().map(ack_of).collect();
        let ids: Vec<uuid::Uuid> = parsed.iter().flatten().map(|a| a.lease.job_id).collect();
        let mut visible = visibility::visible(&self.shared, grant, &ids)
            .await?
            .into_iter();
        for item in &mut parsed {
            if let Ok(ack) = item
                && visible.next() == Some(false)
            {
                *item = Err(visibility::unknown(ack.lease.job_id));
            }
        }
        // The valid acks go to the backend; each item keeps its place.
        let mut valid = Vec::with_capacity(parsed.len());
        let parsed: Vec<Result<()>> = parsed
            .into_iter()
            .map(|item| item.map(|ack| valid.push(ack)))
            .collect();
        let mut acked = self.shared.ack(valid).await?.into_iter();
        let results = parsed
            .into_iter()
            .map(|checked| {
                let (code, message) = item_status(checked.and_then(|()| {
                    Ok(acked
                        .next()
                        .unwrap_or_else(|| unreachable!("one answer per valid ack"))?)
                }));
                pb::ResolveResult { code, message }
            })
            .collect();
        Ok(pb::AckBatchResponse { results })
    }

    pub(super) async fn handle_ack(
        &self,
        grant: &Grant,
        req: pb::AckRequest,
    ) -> Result<pb::AckResponse> {
        let ack = ack_of(req)?;
        visibility::check_visible(&self.shared, grant, ack.lease.job_id).await?;
        self.shared
            .ack(vec![ack])
            .await?
            .pop()
            .unwrap_or_else(|| unreachable!("one answer per ack"))?;
        Ok(pb::AckResponse {})
    }

    pub(super) async fn handle_nack(
        &self,
        grant: &Grant,
        req: pb::NackRequest,
    ) -> Result<pb::NackResponse> {
        let lease = lease_ref(&req.job_id, &req.lease_id)?;
        visibility::check_visible(&self.shared, grant, lease.job_id).await?;
        let failure = Failure {
            error: req.error,
            retry_after: convert::duration_in(req.retry_after, "retry_after", Duration::ZERO)?,
            dead: req.dead,
            key_delay: convert::duration_in(req.key_delay, "key_delay", Duration::ZERO)?
                .unwrap_or_default(),
        };
        let outcome = self.shared.nack(lease, failure).await?;
        Ok(pb::NackResponse {
            state: outbound::state_to_pb(outcome.state).into(),
            next_attempt_at: outcome.next_attempt_at.map(outbound::timestamp_to_pb),
        })
    }

    pub(super) async fn handle_extend(
        &self,
        grant: &Grant,
        req: pb::ExtendRequest,
    ) -> Result<pb::ExtendResponse> {
        let lease = lease_ref(&req.job_id, &req.lease_id)?;
        visibility::check_visible(&self.shared, grant, lease.job_id).await?;
        let by = convert::duration_in(req.extend_by, "extend_by", Duration::ZERO)?;
        let extended = self.shared.extend(lease, by).await?;
        Ok(pb::ExtendResponse {
            lease_expires_at: Some(outbound::timestamp_to_pb(extended.expires_at)),
            cancel_requested: extended.cancel_requested,
        })
    }

    pub(super) async fn handle_progress(
        &self,
        grant: &Grant,
        req: pb::ProgressRequest,
    ) -> Result<pb::ProgressResponse> {
        let lease = lease_ref(&req.job_id, &req.lease_id)?;
        let report = convert::progress_report(req.percent, req.message)?;
        visibility::check_visible(&self.shared, grant, lease.job_id).await?;
        let cancel_requested = self.shared.progress(lease, report).await?;
        Ok(pb::ProgressResponse { cancel_requested })
    }

    pub(super) async fn handle_release(
        &self,
        grant: &Grant,
        req: pb::ReleaseRequest,
    ) -> Result<pb::ReleaseResponse> {
        let lease = lease_ref(&req.job_id, &req.lease_id)?;
        visibility::check_visible(&self.shared, grant, lease.job_id).await?;
        let delay = convert::duration_in(req.delay, "delay", Duration::ZERO)?.unwrap_or_default();
        let key_delay =
            convert::duration_in(req.key_delay, "key_delay", Duration::ZERO)?.unwrap_or_default();
        let state = self.shared.release(lease, delay, key_delay).await?;
        Ok(pb::ReleaseResponse {
            state: outbound::state_to_pb(state).into(),
        })
    }
}

/// The queues a Lease request names (none is the default queue), once
/// `grant` covers each.
fn lease_queues(grant: &Grant, request: &pb::LeaseRequest) -> Result<Vec<String>> {
    let queues: Vec<String> = match &request.queues {
        named if named.is_empty() => vec![sluice_limits::DEFAULT_QUEUE.to_owned()],
        named => named
            .iter()
            .map(|q| match q.as_str() {
                "" => sluice_limits::DEFAULT_QUEUE.to_owned(),
                q => q.to_owned(),
            })
            .collect(),
    };
    check_queues(grant, queues.iter().map(String::as_str))?;
    Ok(queues)
}

/// Refuses the request unless `grant` covers every queue named (an empty
/// name, or none at all, is the default queue).
pub(super) fn check_queues<'a>(
    grant: &Grant,
    queues: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    if grant.every_queue() {
        return Ok(());
    }
    let mut any = false;
    for queue in queues {
        any = true;
        grant.check_queue(if queue.is_empty() {
            sluice_limits::DEFAULT_QUEUE
        } else {
            queue
        })?;
    }
    if !any {
        grant.check_queue(sluice_limits::DEFAULT_QUEUE)?;
    }
    Ok(())
}

fn check_batch(len: usize, field: &'static str) -> Result<()> {
    use sluice_limits::MAX_BATCH;
    if len > MAX_BATCH {
        return Err(RequestError::invalid(
            field,
            format!("{len} items is over the limit of {MAX_BATCH}"),
        ));
    }
    Ok(())
}

/// A validated Ack.
fn ack_of(req: pb::AckRequest) -> Result<Ack> {
    Ok(Ack {
        lease: lease_ref(&req.job_id, &req.lease_id)?,
        result: convert::ack_result(req.result)?,
    })
}

fn lease_ref(job_id: &str, lease_id: &str) -> Result<LeaseRef> {
    Ok(LeaseRef {
        job_id: convert::uuid(job_id, "job_id")?,
        lease_id: convert::uuid(lease_id, "lease_id")?,
    })
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn enqueue(
        &self,
        request: Request<pb::EnqueueRequest>,
    ) -> std::result::Result<Response<pb::EnqueueResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Enqueue)?;
            check_queues(&grant, [request.get_ref().queue.as_str()])?;
            self.handle_enqueue(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn enqueue_batch(
        &self,
        request: Request<pb::EnqueueBatchRequest>,
    ) -> std::result::Result<Response<pb::EnqueueBatchResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::EnqueueBatch)?;
            let jobs = &request.get_ref().jobs;
            if !jobs.is_empty() {
                check_queues(&grant, jobs.iter().map(|j| j.queue.as_str()))?;
            }
            self.handle_enqueue_batch(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn claim_partitions(
        &self,
        request: Request<pb::ClaimPartitionsRequest>,
    ) -> std::result::Result<Response<pb::ClaimPartitionsResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::ClaimPartitions)?;
            self.sources.claim(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn commit_partition(
        &self,
        request: Request<pb::CommitPartitionRequest>,
    ) -> std::result::Result<Response<pb::CommitPartitionResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::CommitPartition)?;
            self.sources.commit(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn leave_source_group(
        &self,
        request: Request<pb::LeaveSourceGroupRequest>,
    ) -> std::result::Result<Response<pb::LeaveSourceGroupResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::LeaveSourceGroup)?;
            self.sources.leave(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn ack_batch(
        &self,
        request: Request<pb::AckBatchRequest>,
    ) -> std::result::Result<Response<pb::AckBatchResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::AckBatch)?;
            self.handle_ack_batch(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    type LeaseBatchesStream = LeaseBatchStream;

    async fn lease_batches(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> std::result::Result<Response<LeaseBatchStream>, Status> {
        let result = self.handle_lease(request, Call::LeaseBatches);
        respond(result.await.map(LeaseBatchStream::new))
    }

    type EnqueueStreamStream = EnqueueResults;

    async fn enqueue_stream(
        &self,
        request: Request<Streaming<pb::EnqueueStreamRequest>>,
    ) -> std::result::Result<Response<EnqueueResults>, Status> {
        respond(self.handle_enqueue_stream(request))
    }

    type WorkStream = WorkStream;

    async fn work(
        &self,
        request: Request<Streaming<pb::WorkRequest>>,
    ) -> std::result::Result<Response<WorkStream>, Status> {
        respond(self.handle_work(request).await)
    }

    type LeaseStream = LeaseStream;

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> std::result::Result<Response<LeaseStream>, Status> {
        let result = self.handle_lease(request, Call::Lease);
        respond(result.await)
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> std::result::Result<Response<pb::AckResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Ack)?;
            self.handle_ack(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> std::result::Result<Response<pb::NackResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Nack)?;
            self.handle_nack(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn extend(
        &self,
        request: Request<pb::ExtendRequest>,
    ) -> std::result::Result<Response<pb::ExtendResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Extend)?;
            self.handle_extend(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> std::result::Result<Response<pb::ReleaseResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Release)?;
            self.handle_release(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn progress(
        &self,
        request: Request<pb::ProgressRequest>,
    ) -> std::result::Result<Response<pb::ProgressResponse>, Status> {
        let result = async {
            let grant = self.auth.check(&request, Call::Progress)?;
            self.handle_progress(&grant, request.into_inner()).await
        };
        respond(result.await)
    }
}
