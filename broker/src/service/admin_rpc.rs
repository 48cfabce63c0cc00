//! `sluice.v1.Admin`: the operator's view and controls, translated to the
//! queue's admin operations. Every call needs an admin credential when
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
use super::shared_queue::SharedQueue;
use crate::auth::{Authorizer, Call};
use sluice_queue::{JobFilter, JobState};

type Result<T> = std::result::Result<T, RequestError>;

/// The `sluice.v1.Admin` service.
#[derive(Clone)]
pub struct AdminService {
    shared: SharedQueue,
    auth: Authorizer,
    rates: Arc<Rates>,
}

impl AdminService {
    /// Serves `shared`, checking calls with `auth`; Stats reads its rates
    /// from `rates`.
    pub fn new(shared: SharedQueue, auth: Authorizer, rates: Arc<Rates>) -> Self {
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

    fn handle_get_job(&self, req: pb::GetJobRequest) -> Result<pb::Job> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        Ok(self
            .shared
            .with_queue(|queue, _| queue.job(job_id).map(convert::job_to_pb))??)
    }

    fn handle_list_jobs(&self, req: pb::ListJobsRequest) -> Result<pb::ListJobsResponse> {
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
        self.shared.with_queue(|queue, _| {
            let page = queue.list(&filter, after, page_size as usize);
            pb::ListJobsResponse {
                jobs: page.jobs.into_iter().map(convert::job_to_pb).collect(),
                next_page_token: page.next.map(|n| n.to_string()).unwrap_or_default(),
            }
        })
    }

    fn handle_stats(&self) -> Result<pb::StatsResponse> {
        let (stats, failures, now) = self.shared.with_queue(|queue, now| {
            let failures: Vec<pb::FailedAttempt> = queue
                .recent_failures()
                .map(convert::failure_to_pb)
                .collect();
            (queue.stats(), failures, now)
        })?;
        Ok(pb::StatsResponse {
            recent_failures: failures,
            queues: stats
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

    fn handle_list_workers(&self) -> Result<pb::ListWorkersResponse> {
        let workers = self.shared.with_queue(|queue, _| queue.workers())?;
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
        self.shared
            .write(|queue, now| queue.retry(job_id, now))
            .await??;
        Ok(pb::RetryJobResponse {})
    }

    async fn handle_cancel_job(&self, req: pb::CancelJobRequest) -> Result<pb::CancelJobResponse> {
        let job_id = convert::uuid(&req.job_id, "job_id")?;
        let state = self
            .shared
            .write(|queue, now| queue.cancel(job_id, now))
            .await??;
        Ok(pb::CancelJobResponse {
            state: convert::state_to_pb(state).into(),
        })
    }

    /// Purges in bounded steps, releasing the queue between them so that a
    /// large purge does not stall the data path.
    async fn handle_purge_queue(
        &self,
        req: pb::PurgeQueueRequest,
    ) -> Result<pb::PurgeQueueResponse> {
        let queue_name = convert::queue_name(req.queue, "queue")?;
        let state = convert::state_filter(req.state, "state")?.ok_or_else(|| {
            RequestError::invalid("state", "is required: the state of the jobs to delete")
        })?;
        let until = self.shared.with_queue(|queue, _| queue.horizon())?;
        let mut purged = 0;
        let mut after = None;
        loop {
            let (n, next) = self
                .shared
                .write(|queue, _| queue.purge_step(&queue_name, state, after, until))
                .await??;
            purged += n;
            match next {
                Some(next) => after = Some(next),
                None => return Ok(pb::PurgeQueueResponse { purged }),
            }
            tokio::task::yield_now().await;
        }
    }

    async fn handle_pause_queue(
        &self,
        req: pb::PauseQueueRequest,
    ) -> Result<pb::PauseQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
        self.shared.write(|queue, _| queue.pause(&name)).await??;
        Ok(pb::PauseQueueResponse {})
    }

    async fn handle_resume_queue(
        &self,
        req: pb::ResumeQueueRequest,
    ) -> Result<pb::ResumeQueueResponse> {
        let name = convert::queue_name(req.queue, "queue")?;
        self.shared
            .write(|queue, now| queue.resume(&name, now))
            .await?;
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
        respond(
            self.authorize(&request, "GetJob")
                .and_then(|()| self.handle_get_job(request.into_inner())),
        )
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> std::result::Result<Response<pb::ListJobsResponse>, Status> {
        respond(
            self.authorize(&request, "ListJobs")
                .and_then(|()| self.handle_list_jobs(request.into_inner())),
        )
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> std::result::Result<Response<pb::StatsResponse>, Status> {
        respond(
            self.authorize(&request, "Stats")
                .and_then(|()| self.handle_stats()),
        )
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> std::result::Result<Response<pb::ListWorkersResponse>, Status> {
        respond(
            self.authorize(&request, "ListWorkers")
                .and_then(|()| self.handle_list_workers()),
        )
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
