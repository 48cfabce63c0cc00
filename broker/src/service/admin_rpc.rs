//! `sluice.v1.Admin`: the operator's view and controls, translated to the
//! backend's admin operations. Every call needs an admin credential when
//! `--auth-tokens` is set (a viewer's for the reads), checked first.
//!
//! A credential scoped to some queues sees and acts on those only:
//! PurgeQueue, PauseQueue, ResumeQueue and a ListJobs that names a queue
//! are refused (PERMISSION_DENIED) for another queue; a ListJobs without
//! one lists only the queues in scope; GetJob, RetryJob and CancelJob on a
//! job outside them answer as for an unknown job (`visibility.rs`);
//! SetQueueLimits, GetQueueLimits and ListKeys check their queue
//! (`flow_rpc.rs`); Stats
//! and ListWorkers leave out the queues outside (a worker row keeps only
//! its queues in scope, and is left out if none is).

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use sluice_limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use std::sync::Arc;

use super::error::RequestError;
use super::rates::Rates;
use super::respond;
use super::schedule_rpc::ScheduleDesk;
use super::source_rpc::SourceDesk;
use super::visibility;
use super::{convert, flow_rpc, outbound};
use crate::auth::{Authorizer, Call, Grant};
use crate::backend::SharedBackend;
use sluice_queue::{JobFilter, JobState};

type Result<T> = std::result::Result<T, RequestError>;

/// The `sluice.v1.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    shared: SharedBackend,
    auth: Authorizer,
    rates: Arc<Rates>,
    /// The schedule calls.
    schedules: ScheduleDesk,
    sources: SourceDesk,
}

impl AdminService {
    /// Serves `shared`, checking calls with `auth`; Stats reads its rates
    /// from `rates`; the schedule calls go to `schedules`.
    pub fn new(
        shared: SharedBackend,
        auth: Authorizer,
        rates: Arc<Rates>,
        schedules: ScheduleDesk,
        sources: SourceDesk,
    ) -> Self {
        Self {
            shared,
            auth,
            rates,
            schedules,
            sources,
        }
    }

    /// Refuses the call unless the caller may make it (an admin, or a
    /// viewer for the reads); the grant says which queues it covers.
    fn authorize<T>(&self, request: &Request<T>, method: &'static str) -> Result<Grant> {
        Ok(self.auth.check(request, Call::Admin(method))?)
    }

    async fn handle_get_job(&self, grant: &Grant, req: pb::GetJobRequest) -> Result<pb::Job> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        visibility::check_visible(&self.shared, grant, job_id).await?;
        Ok(outbound::job_to_pb(self.shared.job(job_id).await?))
    }

    async fn handle_list_jobs(
        &self,
        grant: &Grant,
        req: pb::ListJobsRequest,
    ) -> Result<pb::ListJobsResponse> {
        let queue = (!req.queue.is_empty())
            .then(|| convert::queue_name(req.queue, "queue"))
            .transpose()?;
        if let Some(queue) = &queue {
            grant.check_queue(queue)?;
        }
        let filter = JobFilter {
            queue,
            state: convert::state_filter(req.state, "state")?,
            scope: grant.scope().clone(),
        };
        let page_size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            n => {
                return Err(RequestError::invalid(
                    "page_size",
                    format!("{n} is over {MAX_PAGE_SIZE}"),
                ));
            }
        };
        let after = page_token(&req.page_token)?;
        let page = self.shared.list(filter, after, page_size as usize).await?;
        Ok(pb::ListJobsResponse {
            jobs: page.jobs.into_iter().map(outbound::job_to_pb).collect(),
            next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
        })
    }

    async fn handle_stats(&self, grant: &Grant) -> Result<pb::StatsResponse> {
        let reading = self.shared.stats().await?;
        let now = reading.now;
        Ok(pb::StatsResponse {
            recent_failures: reading
                .recent_failures
                .into_iter()
                .filter(|f| grant.allows(&f.queue))
                .map(outbound::failure_to_pb)
                .collect(),
            queues: reading
                .queues
                .into_iter()
                .filter(|s| grant.allows(&s.queue))
                .map(|mut s| {
                    let rates = self.rates.of(&s, now);
                    let (limits, held, top_keys) =
                        flow_rpc::stats_to_pb(&s.queue, std::mem::take(&mut s.flow));
                    pb::QueueStats {
                        limits,
                        held,
                        top_keys,
                        oldest_ready_age: s
                            .oldest_ready_due
                            .map(|due| sluice_proto::duration_to_pb(now.saturating_since(due))),
                        enqueued_per_second: rates.enqueued,
                        acked_per_second: rates.acked,
                        failed_per_second: rates.failed,
                        paused: s.paused,
                        scheduled: s.count(JobState::Scheduled),
                        ready: s.count(JobState::Ready),
                        leased: s.count(JobState::Leased),
                        succeeded: s.count(JobState::Succeeded),
                        dead: s.count(JobState::Dead),
                        cancelled: s.count(JobState::Cancelled),
                        enqueued_total: s.counters.enqueued,
                        acked_total: s.counters.acked,
                        nacked_total: s.counters.nacked,
                        expired_total: s.counters.expired,
                        dead_total: s.counters.dead,
                        queue: s.queue,
                    }
                })
                .collect(),
        })
    }

    async fn handle_list_workers(&self, grant: &Grant) -> Result<pb::ListWorkersResponse> {
        let workers = self.shared.workers().await?;
        Ok(pb::ListWorkersResponse {
            workers: workers
                .into_iter()
                .filter_map(|mut w| {
                    w.queues.retain(|q| grant.allows(q));
                    (!w.queues.is_empty()).then_some(w)
                })
                .map(|w| pb::WorkerInfo {
                    worker_id: w.worker_id.to_string(),
                    queues: w.queues,
                    job_types: w.job_types,
                    in_flight: w.in_flight,
                    max_in_flight: w.max_in_flight,
                    connected_since: Some(outbound::timestamp_to_pb(w.connected_since)),
                })
                .collect(),
        })
    }

    async fn handle_retry_job(
        &self,
        grant: &Grant,
        req: pb::RetryJobRequest,
    ) -> Result<pb::RetryJobResponse> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        visibility::check_visible(&self.shared, grant, job_id).await?;
        self.shared.retry(job_id).await?;
        Ok(pb::RetryJobResponse {})
    }

    async fn handle_cancel_job(
        &self,
        grant: &Grant,
        req: pb::CancelJobRequest,
    ) -> Result<pb::CancelJobResponse> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        visibility::check_visible(&self.shared, grant, job_id).await?;
        let state = self.shared.cancel(job_id).await?;
        Ok(pb::CancelJobResponse {
            state: outbound::state_to_pb(state).into(),
        })
    }

    async fn handle_purge_queue(
        &self,
        grant: &Grant,
        req: pb::PurgeQueueRequest,
    ) -> Result<pb::PurgeQueueResponse> {
        let queue_name = convert::queue_name(req.queue, "queue")?;
        grant.check_queue(&queue_name)?;
        let state = convert::state_filter(req.state, "state")?.ok_or_else(|| {
            RequestError::invalid("state", "is required: the state of the jobs to delete")
        })?;
        let purged = self.shared.purge(queue_name, state).await?;
        Ok(pb::PurgeQueueResponse { purged })
    }

    async fn handle_pause_queue(
        &self,
        grant: &Grant,
        req: pb::PauseQueueRequest,
    ) -> Result<pb::PauseQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
        grant.check_queue(&name)?;
        self.shared.pause(name).await?;
        Ok(pb::PauseQueueResponse {})
    }

    async fn handle_resume_queue(
        &self,
        grant: &Grant,
        req: pb::ResumeQueueRequest,
    ) -> Result<pb::ResumeQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
        grant.check_queue(&name)?;
        self.shared.resume(name).await?;
        Ok(pb::ResumeQueueResponse {})
    }
}

fn page_token(token: &str) -> Result<Option<u64>> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .parse()
        .map(Some)
        .map_err(|_| RequestError::invalid("page_token", "is not a token from a previous ListJobs"))
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> std::result::Result<Response<pb::Job>, Status> {
        let result = async {
            let grant = self.authorize(&request, "GetJob")?;
            self.handle_get_job(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ListJobs")?;
            self.handle_list_jobs(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> std::result::Result<Response<pb::StatsResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "Stats")?;
            self.handle_stats(&grant).await
        };
        respond(result.await)
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> std::result::Result<Response<pb::ListWorkersResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ListWorkers")?;
            self.handle_list_workers(&grant).await
        };
        respond(result.await)
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> std::result::Result<Response<pb::RetryJobResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "RetryJob")?;
            self.handle_retry_job(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> std::result::Result<Response<pb::CancelJobResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "CancelJob")?;
            self.handle_cancel_job(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> std::result::Result<Response<pb::PurgeQueueResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "PurgeQueue")?;
            self.handle_purge_queue(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn pause_queue(
        &self,
        request: Request<pb::PauseQueueRequest>,
    ) -> std::result::Result<Response<pb::PauseQueueResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "PauseQueue")?;
            self.handle_pause_queue(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn resume_queue(
        &self,
        request: Request<pb::ResumeQueueRequest>,
    ) -> std::result::Result<Response<pb::ResumeQueueResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ResumeQueue")?;
            self.handle_resume_queue(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn set_queue_limits(
        &self,
        request: Request<pb::SetQueueLimitsRequest>,
    ) -> std::result::Result<Response<pb::QueueLimits>, Status> {
        let result = async {
            let grant = self.authorize(&request, "SetQueueLimits")?;
            flow_rpc::set(&self.shared, &grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn get_queue_limits(
        &self,
        request: Request<pb::GetQueueLimitsRequest>,
    ) -> std::result::Result<Response<pb::QueueLimits>, Status> {
        let result = async {
            let grant = self.authorize(&request, "GetQueueLimits")?;
            flow_rpc::get(&self.shared, &grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> std::result::Result<Response<pb::ListKeysResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ListKeys")?;
            flow_rpc::list_keys(&self.shared, &grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn list_source_partitions(
        &self,
        request: Request<pb::ListSourcePartitionsRequest>,
    ) -> std::result::Result<Response<pb::ListSourcePartitionsResponse>, Status> {
        let result = async {
            self.authorize(&request, "ListSourcePartitions")?;
            self.sources.list(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn set_source_positions(
        &self,
        request: Request<pb::SetSourcePositionsRequest>,
    ) -> std::result::Result<Response<pb::SetSourcePositionsResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "SetSourcePositions")?;
            self.sources
                .set_positions(&grant, request.into_inner())
                .await
        };
        respond(result.await)
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> std::result::Result<Response<pb::Schedule>, Status> {
        let result = async {
            let grant = self.authorize(&request, "CreateSchedule")?;
            self.schedules.create(&grant, request.into_inner()).await
        };
        respond(result.await)
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> std::result::Result<Response<pb::Schedule>, Status> {
        let result = async {
            let grant = self.authorize(&request, "GetSchedule")?;
            self.schedules.get(&grant, &request.get_ref().name).await
        };
        respond(result.await)
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> std::result::Result<Response<pb::ListSchedulesResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ListSchedules")?;
            self.schedules.list(&grant, request.get_ref().soonest).await
        };
        respond(result.await)
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> std::result::Result<Response<pb::DeleteScheduleResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "DeleteSchedule")?;
            self.schedules
                .delete(&grant, &request.get_ref().name)
                .await
                .map(|()| pb::DeleteScheduleResponse {})
        };
        respond(result.await)
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> std::result::Result<Response<pb::Schedule>, Status> {
        let result = async {
            let grant = self.authorize(&request, "PauseSchedule")?;
            self.schedules
                .set_paused(&grant, &request.get_ref().name, true)
                .await
        };
        respond(result.await)
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> std::result::Result<Response<pb::Schedule>, Status> {
        let result = async {
            let grant = self.authorize(&request, "ResumeSchedule")?;
            self.schedules
                .set_paused(&grant, &request.get_ref().name, false)
                .await
        };
        respond(result.await)
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::TriggerScheduleRequest>,
    ) -> std::result::Result<Response<pb::TriggerScheduleResponse>, Status> {
        let result = async {
            let grant = self.authorize(&request, "TriggerSchedule")?;
            self.schedules
                .trigger(&grant, &request.get_ref().name)
                .await
        };
        respond(result.await)
    }
}
