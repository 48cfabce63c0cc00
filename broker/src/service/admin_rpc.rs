//! `sluice.v1.Admin`: the operator's view and controls, translated to the
//! backend's admin operations. Every call needs an admin credential when
//! `--auth-tokens` is set (checked first, before validation).

use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_server::Admin;
use tonic::{Request, Response, Status};

use sluice_limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use std::sync::Arc;

use super::convert;
use super::error::RequestError;
use super::rates::Rates;
use super::respond;
use crate::auth::{Authorizer, Call};
use crate::backend::SharedBackend;
use sluice_queue::{JobFilter, JobState};

type Result<T> = std::result::Result<T, RequestError>;

/// The `sluice.v1.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    shared: SharedBackend,
    auth: Authorizer,
    rates: Arc<Rates>,
}

impl AdminService {
    /// Serves `shared`, checking calls with `auth`; Stats reads its rates
    /// from `rates`.
    pub fn new(shared: SharedBackend, auth: Authorizer, rates: Arc<Rates>) -> Self {
        Self {
            shared,
            auth,
            rates,
        }
    }

    /// Refuses the call unless the caller may make it (an admin).
    fn authorize<T>(&self, request: &Request<T>, method: &'static str) -> Result<()> {
        self.auth.check(request, Call::Admin(method))?;
        Ok(())
    }

    async fn handle_get_job(&self, req: pb::GetJobRequest) -> Result<pb::Job> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        self.shared.job(job_id).await
    }

    async fn handle_list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse> {
        let filter = JobFilter {
            queue: (!req.queue.is_empty())
                .then(|| convert::queue_name(req.queue, "queue"))
                .transpose()?,
            state: convert::state_filter(req.state, "state")?,
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
            jobs: page.jobs,
            next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
        })
    }

    async fn handle_stats(&self) -> Result<pb::StatsResponse> {
        let reading = self.shared.stats().await?;
        let now = reading.now;
        Ok(pb::StatsResponse {
            recent_failures: reading.recent_failures,
            queues: reading
                .queues
                .into_iter()
                .map(|s| {
                    let rates = self.rates.of(&s, now);
                    pb::QueueStats {
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

    async fn handle_list_workers(&self) -> Result<pb::ListWorkersResponse> {
        let workers = self.shared.workers().await?;
        Ok(pb::ListWorkersResponse {
            workers: workers
                .into_iter()
                .map(|w| pb::WorkerInfo {
                    worker_id: w.worker_id.to_string(),
                    queues: w.queues,
                    job_types: w.job_types,
                    in_flight: w.in_flight,
                    max_in_flight: w.max_in_flight,
                    connected_since: Some(convert::timestamp_to_pb(w.connected_since)),
                })
                .collect(),
        })
    }

    async fn handle_retry_job(&self, req: pb::RetryJobRequest) -> Result<pb::RetryJobResponse> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        self.shared.retry(job_id).await?;
        Ok(pb::RetryJobResponse {})
    }

    async fn handle_cancel_job(&self, req: pb::CancelJobRequest) -> Result<pb::CancelJobResponse> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        let state = self.shared.cancel(job_id).await?;
        Ok(pb::CancelJobResponse {
            state: convert::state_to_pb(state).into(),
        })
    }

    async fn handle_purge_queue(
        &self,
        req: pb::PurgeQueueRequest,
    ) -> Result<pb::PurgeQueueResponse> {
        let queue_name = convert::queue_name(req.queue, "queue")?;
        let state = convert::state_filter(req.state, "state")?.ok_or_else(|| {
            RequestError::invalid("state", "is required: the state of the jobs to delete")
        })?;
        let purged = self.shared.purge(queue_name, state).await?;
        Ok(pb::PurgeQueueResponse { purged })
    }

    async fn handle_pause_queue(
        &self,
        req: pb::PauseQueueRequest,
    ) -> Result<pb::PauseQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
        self.shared.pause(name).await?;
        Ok(pb::PauseQueueResponse {})
    }

    async fn handle_resume_queue(
        &self,
        req: pb::ResumeQueueRequest,
    ) -> Result<pb::ResumeQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
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
            self.authorize(&request, "GetJob")?;
            self.handle_get_job(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        let result = async {
            self.authorize(&request, "ListJobs")?;
            self.handle_list_jobs(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> std::result::Result<Response<pb::StatsResponse>, Status> {
        let result = async {
            self.authorize(&request, "Stats")?;
            self.handle_stats().await
        };
        respond(result.await)
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> std::result::Result<Response<pb::ListWorkersResponse>, Status> {
        let result = async {
            self.authorize(&request, "ListWorkers")?;
            self.handle_list_workers().await
        };
        respond(result.await)
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> std::result::Result<Response<pb::RetryJobResponse>, Status> {
        let result = async {
            self.authorize(&request, "RetryJob")?;
            self.handle_retry_job(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> std::result::Result<Response<pb::CancelJobResponse>, Status> {
        let result = async {
            self.authorize(&request, "CancelJob")?;
            self.handle_cancel_job(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> std::result::Result<Response<pb::PurgeQueueResponse>, Status> {
        let result = async {
            self.authorize(&request, "PurgeQueue")?;
            self.handle_purge_queue(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn pause_queue(
        &self,
        request: Request<pb::PauseQueueRequest>,
    ) -> std::result::Result<Response<pb::PauseQueueResponse>, Status> {
        let result = async {
            self.authorize(&request, "PauseQueue")?;
            self.handle_pause_queue(request.into_inner()).await
        };
        respond(result.await)
    }

    async fn resume_queue(
        &self,
        request: Request<pb::ResumeQueueRequest>,
    ) -> std::result::Result<Response<pb::ResumeQueueResponse>, Status> {
        let result = async {
            self.authorize(&request, "ResumeQueue")?;
            self.handle_resume_queue(request.into_inner()).await
        };
        respond(result.await)
    }
}
