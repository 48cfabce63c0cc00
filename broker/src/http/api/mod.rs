//! The JSON API under `/api/v1/`, which the dashboard uses and scripts may
//! use. Each endpoint makes the Admin call it names through the
//! [`AdminService`] itself, with the request's `Authorization` header as
//! the call's metadata: validation, the credential check and the errors are
//! the gRPC call's own, mapped to HTTP in one place (`error.rs`). The
//! documents are the contract's JSON ([`sluice_proto::json`]), the same as
//! `sluice ... --output json` prints.
//!
//! | endpoint | Admin call |
//! |---|---|
//! | `GET /api/v1/session` | who the token is: role and whether it may act |
//! | `GET /api/v1/stats` | Stats |
//! | `GET /api/v1/queues`, `GET /api/v1/queues/{queue}` | Stats, one queue's row (with its limits and top waiting keys) |
//! | `GET /api/v1/queues/{queue}/keys?limit=` | ListKeys (the busiest keys) |
//! | `GET /api/v1/jobs?queue=&state=&page_size=&page_token=` | ListJobs |
//! | `GET /api/v1/jobs/{id}` | GetJob (with the payload) |
//! | `GET /api/v1/workers` | ListWorkers |
//! | `POST /api/v1/jobs/{id}/retry`, `.../cancel` | RetryJob, CancelJob |
//! | `POST /api/v1/queues/{queue}/pause`, `.../resume` | PauseQueue, ResumeQueue |
//! | `POST /api/v1/queues/{queue}/purge?state=` | PurgeQueue |
//! | `POST /api/v1/queues/{queue}/retry-dead` | ListJobs of DEAD, then RetryJob each |
//! | `GET /api/v1/schedules`, `GET /api/v1/schedules/{name}` | ListSchedules, GetSchedule |
//! | `POST /api/v1/schedules/{name}/pause`, `.../resume`, `.../trigger` | PauseSchedule, ResumeSchedule, TriggerSchedule |
//!
//! Every `POST` must come from one of the listener's allowed hosts
//! (`origin.rs`).

mod error;
mod origin;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sluice_proto::json as view;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_server::Admin;
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::auth::{Authorizer, Call, Grant};
use crate::http::hosts::{AllowedHosts, ListenerAddr};
use crate::service::{AdminService, RequestError};
pub use error::ApiError;

/// What an endpoint answers: a JSON document or a refusal.
type Reply = Result<Json<Value>, ApiError>;

/// How many DEAD jobs one `retry-dead` call retries at most; the answer
/// says whether more are left, and the caller calls again.
pub const RETRY_DEAD_LIMIT: usize = 10_000;

/// The API's state: the Admin service it calls.
struct Api {
    admin: AdminService,
    auth: Authorizer,
}

/// The routes under `/api/v1/`, calling `admin`; every `POST` must come
/// from one of `hosts` (`origin.rs`).
pub fn routes(admin: AdminService, auth: Authorizer, hosts: Arc<AllowedHosts>) -> Router {
    let api = Arc::new(Api { admin, auth });
    let reads = Router::new()
        .route("/api/v1/session", get(session))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/queues", get(queues))
        .route("/api/v1/queues/{queue}", get(queue))
        .route("/api/v1/queues/{queue}/keys", get(queue_keys))
        .route("/api/v1/jobs", get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .route("/api/v1/workers", get(workers))
        .route("/api/v1/schedules", get(list_schedules))
        .route("/api/v1/schedules/{name}", get(get_schedule))
        .route("/api/v1/sources/{group}", get(get_source_group));
    let actions = Router::new()
        .route("/api/v1/jobs/{id}/retry", post(retry_job))
        .route("/api/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/api/v1/queues/{queue}/pause", post(pause_queue))
        .route("/api/v1/queues/{queue}/resume", post(resume_queue))
        .route("/api/v1/queues/{queue}/purge", post(purge_queue))
        .route("/api/v1/queues/{queue}/retry-dead", post(retry_dead))
        .route("/api/v1/schedules/{name}/pause", post(pause_schedule))
        .route("/api/v1/schedules/{name}/resume", post(resume_schedule))
        .route("/api/v1/schedules/{name}/trigger", post(trigger_schedule));
    reads
        .merge(actions)
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(wrong_method)
        .with_state(api)
        .layer(middleware::from_fn_with_state(hosts, check_origin))
}

/// A request to the Admin service carrying the caller's credential (only
/// its `Authorization` header: nothing else of the HTTP request matters).
fn admin_request<T>(headers: &HeaderMap, message: T) -> tonic::Request<T> {
    let mut metadata = HeaderMap::new();
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        metadata.insert(header::AUTHORIZATION, value.clone());
    }
    tonic::Request::from_parts(
        MetadataMap::from_headers(metadata),
        tonic::Extensions::default(),
        message,
    )
}

/// A path segment, or INVALID_ARGUMENT naming `field` when it is not UTF-8.
fn segment(
    path: Result<Path<String>, PathRejection>,
    field: &'static str,
) -> Result<String, ApiError> {
    path.map(|Path(value)| value)
        .map_err(|e| ApiError::invalid(field, e.body_text()))
}

/// The query string's parameters, or INVALID_ARGUMENT when it does not parse.
fn parameters(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    query
        .map(|Query(parameters)| parameters)
        .map_err(|e| ApiError::invalid("query", e.body_text()))
}

async fn check_origin(
    State(hosts): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let local = request.extensions().get::<ListenerAddr>().map(|a| a.0);
    let Some(local) = local else {
        return ApiError::from(Status::internal("no listener address for this request"))
            .into_response();
    };
    match origin::check(&hosts, local, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

async fn unknown_endpoint(method: Method, uri: Uri) -> ApiError {
    ApiError::from(Status::not_found(format!(
        "no API endpoint {method} {}",
        uri.path()
    )))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(&method, uri.path())
}

/// Who the caller is: `{"auth": bool, "role": "admin" | "viewer" | ...,
/// "actions": bool}`; `actions` says whether the dashboard shows buttons.
async fn session(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    if !api.auth.is_enabled() {
        return Ok(Json(json!({"auth": false, "role": null, "actions": true})));
    }
    let role = api.authorize(&headers, Call::Admin("Stats"))?.role();
    Ok(Json(json!({
        "auth": true,
        "role": role.map(|r| r.to_string()),
        "actions": role.is_none_or(|r| r.may(Call::Admin("RetryJob"))),
    })))
}

async fn stats(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    let stats = api.stats(&headers).await?;
    Ok(Json(view::stats_json(&stats)))
}

async fn queues(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    let stats = api.stats(&headers).await?;
    let queues: Vec<Value> = stats.queues.iter().map(view::queue_stats_json).collect();
    Ok(Json(json!({ "queues": queues })))
}

async fn queue(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Reply {
    let name = segment(queue, "queue")?;
    let name = crate::service::convert::queue_name(name, "queue").map_err(Status::from)?;
    // A queue outside the caller's scope is refused by name, as every
    // Admin call that names one is.
    api.authorize(&headers, Call::Admin("Stats"))?
        .check_queue(&name)
        .map_err(|e| Status::from(RequestError::from(e)))?;
    let stats = api.stats(&headers).await?;
    let row = stats
        .queues
        .iter()
        .find(|q| q.queue == name)
        .ok_or_else(|| {
            Status::not_found(format!(
                "queue {name:?} is not known: it has no jobs and is not paused"
            ))
        })?;
    Ok(Json(view::queue_stats_json(row)))
}

async fn queue_keys(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Reply {
    let queue = segment(queue, "queue")?;
    let params = params.map_err(|e| Status::invalid_argument(e.body_text()))?;
    let limit = match params.get("limit") {
        None => 0,
        Some(n) => n
            .parse()
            .map_err(|_| Status::invalid_argument(format!("limit: {n:?} is not a number")))?,
    };
    let keys = api
        .admin
        .list_keys(admin_request(
            &headers,
            pb::ListKeysRequest {
                queue: queue.clone(),
                limit,
            },
        ))
        .await?
        .into_inner();
    Ok(Json(json!({
        "queue": queue,
        "keys": keys.keys.iter().map(view::key_json).collect::<Vec<_>>(),
    })))
}

async fn list_jobs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Reply {
    let query = parameters(query)?;
    let request = pb::ListJobsRequest {
        queue: query.get("queue").cloned().unwrap_or_default(),
        state: optional_state(query.get("state"))? as i32,
        page_size: match query.get("page_size") {
            None => 0,
            Some(n) => n
                .parse()
                .map_err(|_| ApiError::invalid("page_size", format!("{n:?} is not a number")))?,
        },
        page_token: query.get("page_token").cloned().unwrap_or_default(),
    };
    let page = api
        .admin
        .list_jobs(admin_request(&headers, request))
        .await?
        .into_inner();
    Ok(Json(json!({
        "jobs": page.jobs.iter().map(|j| view::job_json(j, false)).collect::<Vec<_>>(),
        "next_page_token": (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })))
}

async fn get_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let job_id = segment(id, "job_id")?;
    let job = api
        .admin
        .get_job(admin_request(&headers, pb::GetJobRequest { job_id }))
        .await?
        .into_inner();
    Ok(Json(view::job_json(&job, true)))
}

async fn workers(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    let workers = api
        .admin
        .list_workers(admin_request(&headers, pb::ListWorkersRequest {}))
        .await?
        .into_inner();
    Ok(Json(view::workers_json(&workers.workers)))
}

async fn retry_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let job_id = segment(id, "job_id")?;
    api.admin
        .retry_job(admin_request(&headers, pb::RetryJobRequest { job_id }))
        .await?;
    Ok(Json(json!({})))
}

async fn cancel_job(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Reply {
    let job_id = segment(id, "job_id")?;
    let response = api
        .admin
        .cancel_job(admin_request(&headers, pb::CancelJobRequest { job_id }))
        .await?
        .into_inner();
    Ok(Json(json!({ "state": view::state_name(response.state()) })))
}

async fn pause_queue(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Reply {
    let queue = segment(queue, "queue")?;
    api.admin
        .pause_queue(admin_request(&headers, pb::PauseQueueRequest { queue }))
        .await?;
    Ok(Json(json!({})))
}

async fn resume_queue(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Reply {
    let queue = segment(queue, "queue")?;
    api.admin
        .resume_queue(admin_request(&headers, pb::ResumeQueueRequest { queue }))
        .await?;
    Ok(Json(json!({})))
}

async fn purge_queue(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Reply {
    let query = parameters(query)?;
    let queue = segment(queue, "queue")?;
    // Missing: UNSPECIFIED, which PurgeQueue itself refuses by name.
    let state = optional_state(query.get("state"))? as i32;
    let purged = api
        .admin
        .purge_queue(admin_request(
            &headers,
            pb::PurgeQueueRequest { queue, state },
        ))
        .await?
        .into_inner()
        .purged;
    Ok(Json(json!({ "purged": purged })))
}

/// Retries up to [`RETRY_DEAD_LIMIT`] DEAD jobs of a queue:
/// `{"retried": n, "more": bool}`. A job that left DEAD meanwhile (retried
/// or purged by someone else) is skipped; any other refusal stops the
/// call with that refusal.
async fn retry_dead(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    queue: Result<Path<String>, PathRejection>,
) -> Reply {
    let queue = segment(queue, "queue")?;
    // Refused up front, not only at the first dead job: a viewer learns
    // that it may not, even of a queue with none.
    api.authorize(&headers, Call::Admin("RetryJob"))?;
    let mut retried = 0usize;
    let mut page_token = String::new();
    loop {
        let request = pb::ListJobsRequest {
            queue: queue.clone(),
            state: pb::JobState::Dead as i32,
            page_size: sluice_limits::MAX_PAGE_SIZE,
            page_token,
        };
        let page = api
            .admin
            .list_jobs(admin_request(&headers, request))
            .await?
            .into_inner();
        for job in page.jobs {
            if retried == RETRY_DEAD_LIMIT {
                return Ok(Json(json!({ "retried": retried, "more": true })));
            }
            let request = pb::RetryJobRequest { job_id: job.id };
            match api.admin.retry_job(admin_request(&headers, request)).await {
                Ok(_) => retried += 1,
                Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {}
                Err(s) => return Err(s.into()),
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(Json(json!({ "retried": retried, "more": false })));
        }
        page_token = page.next_page_token;
    }
}

async fn list_schedules(State(api): State<Arc<Api>>, headers: HeaderMap) -> Reply {
    let list = api
        .admin
        .list_schedules(admin_request(&headers, pb::ListSchedulesRequest::default()))
        .await?
        .into_inner();
    let schedules: Vec<Value> = list.schedules.iter().map(view::schedule_json).collect();
    Ok(Json(json!({ "schedules": schedules })))
}

async fn get_schedule(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Reply {
    let name = segment(name, "name")?;
    let schedule = api
        .admin
        .get_schedule(admin_request(&headers, pb::GetScheduleRequest { name }))
        .await?
        .into_inner();
    Ok(Json(view::schedule_json(&schedule)))
}

async fn get_source_group(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    group: Result<Path<String>, PathRejection>,
) -> Reply {
    let group = segment(group, "group")?;
    let listed = api
        .admin
        .list_source_partitions(admin_request(
            &headers,
            pb::ListSourcePartitionsRequest {
                group: group.clone(),
            },
        ))
        .await?
        .into_inner();
    Ok(Json(view::source_group_json(&group, &listed)))
}

async fn pause_schedule(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Reply {
    api.set_schedule_paused(&headers, segment(name, "name")?, true)
        .await
}

async fn resume_schedule(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Reply {
    api.set_schedule_paused(&headers, segment(name, "name")?, false)
        .await
}

/// One run now: `{"job_id": "..."}`.
async fn trigger_schedule(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
) -> Reply {
    let name = segment(name, "name")?;
    let answer = api
        .admin
        .trigger_schedule(admin_request(&headers, pb::TriggerScheduleRequest { name }))
        .await?
        .into_inner();
    Ok(Json(json!({ "job_id": answer.job_id })))
}

/// The `state` query parameter: absent is UNSPECIFIED; an unknown name is
/// INVALID_ARGUMENT.
fn optional_state(name: Option<&String>) -> Result<pb::JobState, ApiError> {
    match name {
        None => Ok(pb::JobState::Unspecified),
        Some(name) => view::state_from_name(name).ok_or_else(|| {
            ApiError::invalid(
                "state",
                format!(
                    "{name:?} is not a state: expected scheduled, ready, leased, succeeded, dead or cancelled"
                ),
            )
        }),
    }
}

impl Api {
    /// Checks the caller's credential for `call`, as the Admin service does.
    fn authorize(&self, headers: &HeaderMap, call: Call) -> Result<Grant, ApiError> {
        self.auth
            .check(&admin_request(headers, ()), call)
            .map_err(|e| Status::from(RequestError::from(e)).into())
    }

    /// PauseSchedule or ResumeSchedule: the schedule as it is now.
    async fn set_schedule_paused(&self, headers: &HeaderMap, name: String, paused: bool) -> Reply {
        let schedule = if paused {
            let request = pb::PauseScheduleRequest { name };
            self.admin
                .pause_schedule(admin_request(headers, request))
                .await?
        } else {
            let request = pb::ResumeScheduleRequest { name };
            self.admin
                .resume_schedule(admin_request(headers, request))
                .await?
        };
        Ok(Json(view::schedule_json(&schedule.into_inner())))
    }

    async fn stats(&self, headers: &HeaderMap) -> Result<pb::StatsResponse, ApiError> {
        Ok(self
            .admin
            .stats(admin_request(headers, pb::StatsRequest {}))
            .await?
            .into_inner())
    }
}
