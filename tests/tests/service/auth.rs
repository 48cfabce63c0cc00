//! `--auth-tokens`: who may call what. The auth matrix (every RPC of both
//! services against every kind of caller), a malformed token file, health
//! and reflection, and reloading the token file on SIGHUP.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use sluice_broker::auth::{Authorizer, ReflectionAccess};
use sluice_e2e::in_process::test_config;
use sluice_e2e::streams::{ProducerStream, WorkSession, end_code};
use sluice_e2e::{BrokerProcess, TestBroker, binary, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::transport::Channel;
use tonic::{Code, Request};

const PRODUCER: &str = "producer-token-0123456789";
const WORKER: &str = "worker-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
const PRODUCER_OTHER: &str = "producer-other-token-0123456789";
const WORKER_OTHER: &str = "worker-other-token-0123456789";
const ADMIN_OTHER: &str = "admin-other-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const VIEWER_OTHER: &str = "viewer-other-token-0123456789";
const UNKNOWN: &str = "unknown-token-0123456789";

fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!(
            "# the matrix's credentials\n\
             producer {PRODUCER}\n\
             worker   {WORKER}\n\
             admin    {ADMIN}\n\
             \n\
             producer {PRODUCER_OTHER} other,elsewhere.*\n\
             worker   {WORKER_OTHER} other\n\
             admin    {ADMIN_OTHER} other,elsewhere.*\n\
             viewer   {VIEWER}\n\
             viewer   {VIEWER_OTHER} other\n"
        ),
    )
    .unwrap();
    path
}

/// `message` with `authorization: Bearer token` if there is a token.
fn req<T>(message: T, token: Option<&str>) -> Request<T> {
    sluice_e2e::with_token(message, token)
}

/// The status of one call: OK, or the error's code and message.
async fn call(rpc: &str, channel: &Channel, token: Option<&str>, job_id: &str) -> (Code, String) {
    let mut broker = BrokerClient::new(channel.clone());
    let mut admin = AdminClient::new(channel.clone());
    let other_id = "00000000-0000-4000-8000-000000000000".to_owned();
    let lease_id = "11111111-1111-4111-8111-111111111111".to_owned();
    let lease = || pb::LeaseRequest {
        worker_id: "matrix".into(),
        queues: vec!["default".into()],
        job_types: vec!["nothing-of-this-type".into()],
        max_in_flight: 1,
        ..Default::default()
    };
    let job = || pb::EnqueueRequest {
        job_type: "matrix".into(),
        ..Default::default()
    };
    macro_rules! status {
        ($call:expr) => {
            match $call.await {
                Ok(_) => (Code::Ok, String::new()),
                Err(s) => (s.code(), s.message().to_owned()),
            }
        };
    }
    let id = job_id.to_owned();
    match rpc {
        "Enqueue" => status!(broker.enqueue(req(job(), token))),
        "EnqueueBatch" => {
            status!(broker.enqueue_batch(req(pb::EnqueueBatchRequest { jobs: vec![job()] }, token)))
        }
        // A stream's open is its call's status; its one request's result
        // answers for a request the credential may not make.
        "EnqueueStream" => match ProducerStream::open(channel, token).await {
            Ok(mut stream) => {
                stream.send(1, Some(job())).await;
                match stream.next().await {
                    Ok(Some(reply)) => {
                        let item = &reply.results[0];
                        (Code::from(item.code), item.message.clone())
                    }
                    Ok(None) => (Code::Ok, String::new()),
                    Err(s) => (s.code(), s.message().to_owned()),
                }
            }
            Err(s) => (s.code(), s.message().to_owned()),
        },
        "Work" => match WorkSession::open(channel, token, lease()).await {
            Ok(_) => (Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().to_owned()),
        },
        "Lease" => status!(broker.lease(req(lease(), token))),
        "LeaseBatches" => status!(broker.lease_batches(req(lease(), token))),
        "Ack" => status!(broker.ack(req(
            pb::AckRequest {
                job_id: id,
                lease_id,
                ..Default::default()
            },
            token
        ))),
        // A batch's one item answers for it.
        "AckBatch" => match broker
            .ack_batch(req(
                pb::AckBatchRequest {
                    acks: vec![pb::AckRequest {
                        job_id: id,
                        lease_id,
                        ..Default::default()
                    }],
                },
                token,
            ))
            .await
        {
            Ok(reply) => {
                let item = &reply.into_inner().results[0];
                (Code::from(item.code), item.message.clone())
            }
            Err(s) => (s.code(), s.message().to_owned()),
        },
        "Nack" => status!(broker.nack(req(
            pb::NackRequest {
                job_id: id,
                lease_id,
                ..Default::default()
            },
            token
        ))),
        "Extend" => status!(broker.extend(req(
            pb::ExtendRequest {
                job_id: id,
                lease_id,
                ..Default::default()
            },
            token
        ))),
        "Release" => status!(broker.release(req(
            pb::ReleaseRequest {
                job_id: id,
                lease_id,
                ..Default::default()
            },
            token
        ))),
        "GetJob" => status!(admin.get_job(req(pb::GetJobRequest { job_id: id }, token))),
        "ListJobs" => status!(admin.list_jobs(req(pb::ListJobsRequest::default(), token))),
        "Stats" => status!(admin.stats(req(pb::StatsRequest {}, token))),
        "ListWorkers" => status!(admin.list_workers(req(pb::ListWorkersRequest {}, token))),
        "RetryJob" => status!(admin.retry_job(req(pb::RetryJobRequest { job_id: id }, token))),
        // Another id: cancelling the matrix's job would change later cells.
        "CancelJob" => {
            status!(admin.cancel_job(req(pb::CancelJobRequest { job_id: other_id }, token)))
        }
        "PurgeQueue" => status!(admin.purge_queue(req(
            pb::PurgeQueueRequest {
                queue: "default".into(),
                state: pb::JobState::Succeeded.into(),
            },
            token
        ))),
        "PauseQueue" => status!(admin.pause_queue(req(
            pb::PauseQueueRequest {
                queue: "pausable".into()
            },
            token
        ))),
        "ResumeQueue" => status!(admin.resume_queue(req(
            pb::ResumeQueueRequest {
                queue: "pausable".into()
            },
            token
        ))),
        // The default queue's limits, set again as they are (none).
        "SetQueueLimits" => status!(admin.set_queue_limits(req(
            pb::SetQueueLimitsRequest {
                queue: "default".into(),
                limits: None,
            },
            token
        ))),
        "GetQueueLimits" => status!(admin.get_queue_limits(req(
            pb::GetQueueLimitsRequest {
                queue: "default".into()
            },
            token
        ))),
        "ListKeys" => status!(admin.list_keys(req(
            pb::ListKeysRequest {
                queue: "default".into(),
                limit: 0,
            },
            token
        ))),
        // The matrix's schedule, written again as it is (nothing changes).
        "CreateSchedule" => status!(admin.create_schedule(req(
            pb::CreateScheduleRequest {
                schedule: Some(matrix_schedule()),
                upsert: true,
            },
            token
        ))),
        "GetSchedule" => status!(admin.get_schedule(req(
            pb::GetScheduleRequest {
                name: "matrix".into()
            },
            token
        ))),
        "ListSchedules" => {
            status!(admin.list_schedules(req(pb::ListSchedulesRequest::default(), token)))
        }
        // Another name: deleting the matrix's schedule would change later cells.
        "DeleteSchedule" => status!(admin.delete_schedule(req(
            pb::DeleteScheduleRequest {
                name: "unknown".into()
            },
            token
        ))),
        "PauseSchedule" => status!(admin.pause_schedule(req(
            pb::PauseScheduleRequest {
                name: "matrix".into()
            },
            token
        ))),
        "ResumeSchedule" => status!(admin.resume_schedule(req(
            pb::ResumeScheduleRequest {
                name: "matrix".into()
            },
            token
        ))),
        "TriggerSchedule" => status!(admin.trigger_schedule(req(
            pb::TriggerScheduleRequest {
                name: "matrix".into()
            },
            token
        ))),
        other => unreachable!("no RPC {other}"),
    }
}

const BROKER_RPCS: [&str; 11] = [
    "Enqueue",
    "EnqueueBatch",
    "EnqueueStream",
    "Lease",
    "LeaseBatches",
    "Work",
    "Ack",
    "AckBatch",
    "Nack",
    "Extend",
    "Release",
];
const ADMIN_RPCS: [&str; 19] = [
    "GetJob",
    "ListJobs",
    "Stats",
    "ListWorkers",
    "RetryJob",
    "CancelJob",
    "PurgeQueue",
    "PauseQueue",
    "ResumeQueue",
    "SetQueueLimits",
    "GetQueueLimits",
    "ListKeys",
    "CreateSchedule",
    "GetSchedule",
    "ListSchedules",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
];

/// The matrix's schedule: hourly, its jobs in the default queue.
fn matrix_schedule() -> pb::Schedule {
    pb::Schedule {
        name: "matrix".into(),
        cron: "@hourly".into(),
        job: Some(pb::JobTemplate {
            job_type: "matrix".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The calls that name a schedule (the matrix's, or for DeleteSchedule an
/// unknown one).
const SCHEDULE_CALLS: [&str; 5] = [
    "GetSchedule",
    "DeleteSchedule",
    "PauseSchedule",
    "ResumeSchedule",
    "TriggerSchedule",
];

/// What a cell must get: refused with this code, let through (any other
/// code: the call may still fail on its own merits), or answered as for a
/// job that does not exist (the matrix's job is in a queue the caller's
/// scope does not cover).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Refused(Code),
    Hidden,
}

/// The calls that name a job by id (the matrix's, or for CancelJob an
/// unknown one).
const JOB_CALLS: [&str; 8] = [
    "Ack",
    "AckBatch",
    "Nack",
    "Extend",
    "Release",
    "GetJob",
    "RetryJob",
    "CancelJob",
];

fn expected(rpc: &str, caller: &str) -> Expect {
    use Expect::{Allowed, Hidden, Refused};
    let producer_call = matches!(rpc, "Enqueue" | "EnqueueBatch" | "EnqueueStream");
    let worker_call = BROKER_RPCS.contains(&rpc) && !producer_call;
    let read = matches!(
        rpc,
        "GetJob"
            | "ListJobs"
            | "Stats"
            | "ListWorkers"
            | "GetSchedule"
            | "ListSchedules"
            | "GetQueueLimits"
            | "ListKeys"
    );
    let (role, scoped) = match caller.split_once('@') {
        Some((role, _)) => (role, true),
        None => (caller, false),
    };
    let may = match role {
        "none" | "unknown" => return Refused(Code::Unauthenticated),
        "admin" => true,
        "producer" => producer_call,
        "worker" => worker_call,
        "viewer" => read,
        other => unreachable!("no caller {other}"),
    };
    if !may {
        return Refused(Code::PermissionDenied);
    }
    if !scoped {
        return Allowed;
    }
    // Scoped to other queues: a job of the default queue is unknown to
    // it; a call naming the default queue is refused; the reads without a
    // queue are let through, showing only the queues in scope.
    match rpc {
        _ if JOB_CALLS.contains(&rpc) || SCHEDULE_CALLS.contains(&rpc) => Hidden,
        "ListJobs" | "Stats" | "ListWorkers" | "ListSchedules" => Allowed,
        _ => Refused(Code::PermissionDenied),
    }
}

every_backend! {
    async fn every_rpc_is_allowed_or_refused_by_role_and_queue() {
        let dir = scratch_dir("auth-matrix");
        let mut config = test_config();
        config.auth = Authorizer::load(&token_file(&dir)).unwrap();
        let b = TestBroker::with_config(config).await;
        // A job in the default queue, for the calls that name a job.
        let job_id = BrokerClient::new(b.channel.clone())
            .enqueue(req(sluice_e2e::job("matrix", b""), Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
            .job_id;
        // And a schedule of it, for the calls that name a schedule.
        AdminClient::new(b.channel.clone())
            .create_schedule(req(
                pb::CreateScheduleRequest {
                    schedule: Some(matrix_schedule()),
                    upsert: false,
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();

        let callers: [(&str, Option<&str>); 10] = [
            ("none", None),
            ("unknown", Some(UNKNOWN)),
            ("producer", Some(PRODUCER)),
            ("worker", Some(WORKER)),
            ("admin", Some(ADMIN)),
            ("viewer", Some(VIEWER)),
            ("producer@other", Some(PRODUCER_OTHER)),
            ("worker@other", Some(WORKER_OTHER)),
            ("admin@other", Some(ADMIN_OTHER)),
            ("viewer@other", Some(VIEWER_OTHER)),
        ];
        let mut table = format!("{:<13}", "rpc");
        for (caller, _) in &callers {
            table += &format!(" {caller:<19}");
        }
        let mut wrong = Vec::new();
        for rpc in BROKER_RPCS.iter().chain(&ADMIN_RPCS) {
            table += &format!("\n{rpc:<13}");
            for (caller, token) in &callers {
                let (code, message) = call(rpc, &b.channel, *token, &job_id).await;
                table += &format!(" {:<19}", format!("{code:?}"));
                let ok = match expected(rpc, caller) {
                    Expect::Allowed => !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    Expect::Refused(want) => {
                        code == want && (want != Code::PermissionDenied || message.contains("may not"))
                    }
                    Expect::Hidden => code == Code::NotFound && !message.contains("default"),
                };
                if !ok || token.is_some_and(|t| message.contains(t)) {
                    wrong.push(format!(
                        "{rpc} as {caller}: got {code:?} {message:?}, expected {:?}",
                        expected(rpc, caller)
                    ));
                }
            }
        }
        println!("{table}");
        assert!(wrong.is_empty(), "wrong cells:\n{}", wrong.join("\n"));
    }
}

every_backend! {
    async fn a_refusal_names_the_missing_right() {
        let dir = scratch_dir("auth-messages");
        let mut config = test_config();
        config.auth = Authorizer::load(&token_file(&dir)).unwrap();
        let b = TestBroker::with_config(config).await;
        let (code, message) = call("Lease", &b.channel, Some(PRODUCER), "").await;
        assert_eq!(code, Code::PermissionDenied);
        assert_eq!(message, "the producer credential may not Lease");
        let (_, message) = call("Enqueue", &b.channel, Some(PRODUCER_OTHER), "").await;
        assert_eq!(
            message,
            "the producer credential may not use queue \"default\""
        );
        let (_, message) = call("Stats", &b.channel, Some(WORKER), "").await;
        assert_eq!(message, "the worker credential may not call Admin/Stats");
        // A prefix scope covers the queues under it, and only those.
        let mut broker = BrokerClient::new(b.channel.clone());
        let mut job = sluice_e2e::job("t", b"");
        job.queue = "elsewhere.eu".into();
        broker
            .enqueue(req(job.clone(), Some(PRODUCER_OTHER)))
            .await
            .unwrap();
        // A batch with one job outside the scope is refused whole.
        let mut outside = job.clone();
        outside.queue = "default".into();
        let refused = broker
            .enqueue_batch(req(
                pb::EnqueueBatchRequest {
                    jobs: vec![job, outside],
                },
                Some(PRODUCER_OTHER),
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
}

every_backend! {
    async fn health_is_open_without_a_token() {
        let dir = scratch_dir("auth-health");
        let mut config = test_config();
        config.auth = Authorizer::load(&token_file(&dir)).unwrap();
        let b = TestBroker::with_config(config).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(b.channel.clone());
        let reply = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            reply.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}

/// The status of a reflection ListServices call with `token`.
async fn list_services(channel: &Channel, token: Option<&str>) -> Result<(), Code> {
    use tonic_reflection::pb::v1;
    let message = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let mut stream = client
        .server_reflection_info(req(tokio_stream::iter([message]), token))
        .await
        .map_err(|s| s.code())?
        .into_inner();
    stream.message().await.map_err(|s| s.code())?;
    Ok(())
}

every_backend! {
    async fn reflection_is_open_by_default_and_admin_only_when_asked() {
        let dir = scratch_dir("auth-reflection");
        let mut config = test_config();
        config.auth = Authorizer::load(&token_file(&dir)).unwrap();
        let open = TestBroker::with_config(config.clone()).await;
        assert_eq!(list_services(&open.channel, None).await, Ok(()));

        config.reflection = ReflectionAccess::Admin;
        let closed = TestBroker::with_config(config).await;
        assert_eq!(
            list_services(&closed.channel, None).await,
            Err(Code::Unauthenticated)
        );
        assert_eq!(
            list_services(&closed.channel, Some(WORKER)).await,
            Err(Code::PermissionDenied)
        );
        assert_eq!(list_services(&closed.channel, Some(ADMIN)).await, Ok(()));
    }
}

#[test]
fn a_malformed_token_file_refuses_to_start_naming_the_line() {
    let dir = scratch_dir("auth-malformed");
    let path = dir.join("tokens");
    let secret = "a-secret-token-that-must-not-show";
    std::fs::write(
        &path,
        format!("# ok so far\nadmin {ADMIN}\nsupervisor {secret}\n"),
    )
    .unwrap();
    let output = Command::new(binary("sluice-broker"))
        .args(["--addr", "127.0.0.1:0", "--auth-tokens"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 3: unknown role") && stderr.contains("supervisor"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret), "the token was echoed: {stderr}");
    assert!(!stderr.contains("listening"), "{stderr}");
}

#[tokio::test]
async fn sighup_reloads_the_token_file_and_keeps_it_when_broken() {
    let dir = scratch_dir("auth-reload");
    let path = dir.join("tokens");
    let old = "old-admin-token-0123456789";
    let new = "new-admin-token-0123456789";
    std::fs::write(&path, format!("admin {old}\n")).unwrap();
    let broker = BrokerProcess::start(&["--auth-tokens", path.to_str().unwrap()]);
    let channel = broker.channel().await;
    assert_eq!(call("Stats", &channel, Some(old), "").await.0, Code::Ok);

    std::fs::write(&path, format!("admin {new}\n")).unwrap();
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("token file reloaded");
    assert_eq!(call("Stats", &channel, Some(new), "").await.0, Code::Ok);
    assert_eq!(
        call("Stats", &channel, Some(old), "").await.0,
        Code::Unauthenticated
    );

    std::fs::write(&path, format!("admin {new}\nworker tooshort\n")).unwrap();
    broker.signal(Signal::SIGHUP);
    let log = broker.wait_for_log("token file not reloaded");
    assert!(log.contains("line 2: the token is shorter"), "{log}");
    assert_eq!(call("Stats", &channel, Some(new), "").await.0, Code::Ok);
    assert!(!broker.log().contains(new), "a token was logged");
}

/// A broker with the matrix's token file, and a job in the default queue.
async fn broker_with_tokens(name: &str) -> (TestBroker, String) {
    let dir = scratch_dir(name);
    let mut config = test_config();
    config.auth = Authorizer::load(&token_file(&dir)).unwrap();
    let b = TestBroker::with_config(config).await;
    let job_id = BrokerClient::new(b.channel.clone())
        .enqueue(req(sluice_e2e::job("matrix", b""), Some(ADMIN)))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    (b, job_id)
}

every_backend! {
    async fn a_job_outside_the_scope_is_answered_exactly_as_an_unknown_one() {
        let (b, job_id) = broker_with_tokens("auth-foreign").await;
        // Every call that names the job, by each scoped credential that may
        // make it. (The matrix's CancelJob names another id.)
        let worker_calls = ["Ack", "AckBatch", "Nack", "Extend", "Release"];
        let cells = worker_calls
            .iter()
            .map(|rpc| (WORKER_OTHER, *rpc))
            .chain(
                worker_calls
                    .iter()
                    .chain(&["GetJob", "RetryJob"])
                    .map(|rpc| (ADMIN_OTHER, *rpc)),
            )
            .chain([(VIEWER_OTHER, "GetJob")]);
        let mut foreign = Vec::new();
        for (token, rpc) in cells {
            foreign.push((
                token,
                rpc,
                call(rpc, &b.channel, Some(token), &job_id).await,
            ));
        }
        // The job goes away: its id is now unknown to everyone.
        let mut admin = AdminClient::new(b.channel.clone());
        admin
            .cancel_job(req(
                pb::CancelJobRequest {
                    job_id: job_id.clone(),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        admin
            .purge_queue(req(
                pb::PurgeQueueRequest {
                    queue: "default".into(),
                    state: pb::JobState::Cancelled.into(),
                },
                Some(ADMIN),
            ))
            .await
            .unwrap();
        for (token, rpc, answer) in foreign {
            assert_eq!(answer.0, Code::NotFound, "{rpc}: {answer:?}");
            let unknown = call(rpc, &b.channel, Some(token), &job_id).await;
            assert_eq!(answer, unknown, "{rpc}: foreign and unknown differ");
            // And as an unscoped credential of the same role hears it.
            let unscoped = if token == WORKER_OTHER { WORKER } else { ADMIN };
            let plain = call(rpc, &b.channel, Some(unscoped), &job_id).await;
            assert_eq!(answer, plain, "{rpc}: scoped and unscoped differ");
        }
    }
}

every_backend! {
    async fn scoped_admins_and_viewers_see_only_their_queues() {
        let (b, default_id) = broker_with_tokens("auth-scoped-reads").await;
        let mut broker = BrokerClient::new(b.channel.clone());
        let mut other = sluice_e2e::job("t", b"");
        other.queue = "other".into();
        let other_id = broker
            .enqueue(req(other, Some(ADMIN)))
            .await
            .unwrap()
            .into_inner()
            .job_id;
        // A failed attempt in each queue, and a worker on both and one on default.
        for queue in ["default", "other"] {
            let mut stream = lease_stream(&b.channel, ADMIN, &format!("w-{queue}"), &[queue])
                .await
                .unwrap();
            let leased = stream.message().await.unwrap().unwrap();
            broker
                .nack(req(
                    pb::NackRequest {
                        job_id: leased.job.unwrap().id,
                        lease_id: leased.lease_id,
                        error: format!("failed in {queue}"),
                        dead: true,
                        ..Default::default()
                    },
                    Some(ADMIN),
                ))
                .await
                .unwrap();
        }
        let _both = lease_stream(&b.channel, ADMIN, "both", &["default", "other"]).await;
        let _default_only = lease_stream(&b.channel, ADMIN, "default-only", &["default"]).await;

        let mut admin = AdminClient::new(b.channel.clone());
        for token in [ADMIN_OTHER, VIEWER_OTHER] {
            let stats = admin
                .stats(req(pb::StatsRequest {}, Some(token)))
                .await
                .unwrap()
                .into_inner();
            let queues: Vec<&str> = stats.queues.iter().map(|q| q.queue.as_str()).collect();
            assert_eq!(queues, ["other"], "{token}");
            let failures: Vec<&str> = stats
                .recent_failures
                .iter()
                .map(|f| f.queue.as_str())
                .collect();
            assert_eq!(failures, ["other"]);
            let jobs = admin
                .list_jobs(req(pb::ListJobsRequest::default(), Some(token)))
                .await
                .unwrap()
                .into_inner()
                .jobs;
            let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
            assert_eq!(ids, [other_id.as_str()]);
            let refused = admin
                .list_jobs(req(
                    pb::ListJobsRequest {
                        queue: "default".into(),
                        ..Default::default()
                    },
                    Some(token),
                ))
                .await
                .unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);
            assert_eq!(
                refused.message(),
                format!(
                    "the {} credential may not use queue \"default\"",
                    if token == ADMIN_OTHER {
                        "admin"
                    } else {
                        "viewer"
                    }
                )
            );
            let workers = admin
                .list_workers(req(pb::ListWorkersRequest {}, Some(token)))
                .await
                .unwrap()
                .into_inner()
                .workers;
            let rows: Vec<(&str, &[String])> = workers
                .iter()
                .map(|w| (w.worker_id.as_str(), w.queues.as_slice()))
                .collect();
            assert_eq!(rows, [("both", &["other".to_owned()][..])]);
        }
        // The unscoped viewer sees both queues, and the default queue's job.
        let stats = admin
            .stats(req(pb::StatsRequest {}, Some(VIEWER)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(stats.queues.len(), 2);
        admin
            .get_job(req(pb::GetJobRequest { job_id: default_id }, Some(VIEWER)))
            .await
            .unwrap();
        // A scoped admin acts in its queues only.
        for (queue, allowed) in [("other", true), ("default", false)] {
            let paused = admin
                .pause_queue(req(
                    pb::PauseQueueRequest {
                        queue: queue.into(),
                    },
                    Some(ADMIN_OTHER),
                ))
                .await;
            assert_eq!(paused.is_ok(), allowed, "{queue}: {paused:?}");
            let purged = admin
                .purge_queue(req(
                    pb::PurgeQueueRequest {
                        queue: queue.into(),
                        state: pb::JobState::Dead.into(),
                    },
                    Some(ADMIN_OTHER),
                ))
                .await;
            assert_eq!(purged.is_ok(), allowed, "{queue}: {purged:?}");
        }
    }
}

/// A Lease stream of `worker_id` on `queue` with `token`.
async fn lease_stream(
    channel: &Channel,
    token: &str,
    worker_id: &str,
    queues: &[&str],
) -> Result<tonic::Streaming<pb::LeasedJob>, tonic::Status> {
    BrokerClient::new(channel.clone())
        .lease(req(
            pb::LeaseRequest {
                worker_id: worker_id.into(),
                queues: queues.iter().map(|q| (*q).to_owned()).collect(),
                max_in_flight: 4,
                ..Default::default()
            },
            Some(token),
        ))
        .await
        .map(tonic::Response::into_inner)
}

/// How `stream` ended: the code of its last status.
async fn stream_end(stream: &mut tonic::Streaming<pb::LeasedJob>) -> Code {
    loop {
        match stream.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Code::Ok,
            Err(status) => return status.code(),
        }
    }
}

#[tokio::test]
async fn sighup_ends_the_streams_of_revoked_and_narrowed_credentials() {
    let dir = scratch_dir("auth-revoke");
    let path = dir.join("tokens");
    let (kept, narrowed) = (
        "kept-worker-token-0123456789",
        "narrow-worker-token-0123456789",
    );
    std::fs::write(
        &path,
        format!(
            "admin {ADMIN}\nworker {WORKER}\nworker {kept}\nworker {narrowed} orders,billing\n"
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&["--auth-tokens", path.to_str().unwrap()]);
    let channel = broker.channel().await;
    let mut revoked_stream = lease_stream(&channel, WORKER, "revoked", &["orders"])
        .await
        .unwrap();
    let mut narrowed_stream = lease_stream(&channel, narrowed, "narrowed", &["orders"])
        .await
        .unwrap();
    let mut billing_stream = lease_stream(&channel, narrowed, "billing", &["billing"])
        .await
        .unwrap();
    let mut kept_stream = lease_stream(&channel, kept, "kept", &["orders"])
        .await
        .unwrap();

    std::fs::write(
        &path,
        format!("admin {ADMIN}\nworker {kept}\nworker {narrowed} billing\n"),
    )
    .unwrap();
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("token file reloaded");
    let ended = |stream| async move {
        tokio::time::timeout(std::time::Duration::from_secs(1), stream_end(stream))
            .await
            .expect("the stream went on past a second after the reload")
    };
    assert_eq!(ended(&mut revoked_stream).await, Code::Unauthenticated);
    assert_eq!(ended(&mut narrowed_stream).await, Code::PermissionDenied);
    // The streams the file still covers go on: each takes its queue's job.
    let mut admin = BrokerClient::new(channel.clone());
    for queue in ["orders", "billing"] {
        let mut job = sluice_e2e::job("t", b"");
        job.queue = queue.into();
        admin.enqueue(req(job, Some(ADMIN))).await.unwrap();
    }
    for stream in [&mut kept_stream, &mut billing_stream] {
        let leased = tokio::time::timeout(sluice_e2e::WAIT, stream.message())
            .await
            .unwrap()
            .unwrap();
        assert!(leased.is_some());
    }
    // The revoked token opens nothing new.
    let refused = lease_stream(&channel, WORKER, "again", &["orders"])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

every_backend! {
    async fn one_credential_cannot_take_every_lease_stream() {
        let dir = scratch_dir("auth-stream-quota");
        let mut config = test_config();
        config.auth = Authorizer::load(&token_file(&dir)).unwrap();
        config.max_lease_streams_per_credential = 2;
        let b = TestBroker::with_config(config).await;
        let first = lease_stream(&b.channel, WORKER, "w1", &["default"])
            .await
            .unwrap();
        let _second = lease_stream(&b.channel, WORKER, "w2", &["default"])
            .await
            .unwrap();
        let refused = lease_stream(&b.channel, WORKER, "w3", &["default"])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "2 Lease streams are open for this credential, the most allowed (--max-lease-streams-per-credential)"
        );
        // Another credential still gets its streams.
        lease_stream(&b.channel, ADMIN, "a1", &["default"])
            .await
            .unwrap();
        // A closed stream gives its place back.
        drop(first);
        sluice_e2e::in_process::eventually("a place freed", || async {
            lease_stream(&b.channel, WORKER, "w4", &["default"])
                .await
                .is_ok()
        })
        .await;
    }
}

every_backend! {
    async fn an_enqueue_stream_checks_each_request_against_its_scope() {
        let (b, _) = broker_with_tokens("auth-stream-scope").await;
        let mut stream = ProducerStream::open(&b.channel, Some(PRODUCER_OTHER)).await.unwrap();
        stream.send(1, Some(sluice_e2e::job_in("other", "t", b""))).await;
        stream.send(2, Some(sluice_e2e::job_in("default", "t", b""))).await;
        stream.send(3, Some(sluice_e2e::job_in("elsewhere.x", "t", b""))).await;
        let results = stream.results(3).await;
        assert_eq!(results[0].code, 0);
        assert_eq!(results[1].code, Code::PermissionDenied as i32);
        assert!(results[1].message.contains("may not use queue \"default\""), "{}", results[1].message);
        assert_eq!(results[2].code, 0);
        // A worker's credential opens no EnqueueStream, a producer's no session.
        let refused = ProducerStream::open(&b.channel, Some(WORKER)).await.err().unwrap();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let open = pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            ..Default::default()
        };
        let refused = WorkSession::open(&b.channel, Some(PRODUCER), open.clone()).await.err().unwrap();
        assert_eq!(refused.code(), Code::PermissionDenied);
        // A scoped worker opens no session on a queue outside its scope,
        // and sees a job outside it as unknown.
        let refused = WorkSession::open(&b.channel, Some(WORKER_OTHER), open).await.err().unwrap();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn sighup_ends_the_enqueue_streams_and_work_sessions_of_revoked_credentials() {
    let dir = scratch_dir("auth-revoke-streams");
    let path = dir.join("tokens");
    std::fs::write(
        &path,
        format!("admin {ADMIN}\nworker {WORKER}\nproducer {PRODUCER}\nproducer {PRODUCER_OTHER} orders,billing\n"),
    )
    .unwrap();
    let broker = BrokerProcess::start(&["--auth-tokens", path.to_str().unwrap()]);
    let channel = broker.channel().await;
    let mut session = WorkSession::open(
        &channel,
        Some(WORKER),
        pb::LeaseRequest {
            worker_id: "revoked".into(),
            queues: vec!["orders".into()],
            max_in_flight: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut revoked = ProducerStream::open(&channel, Some(PRODUCER))
        .await
        .unwrap();
    let mut narrowed = ProducerStream::open(&channel, Some(PRODUCER_OTHER))
        .await
        .unwrap();
    narrowed
        .send(1, Some(sluice_e2e::job_in("orders", "t", b"")))
        .await;
    assert_eq!(narrowed.results(1).await[0].code, 0);

    std::fs::write(
        &path,
        format!("admin {ADMIN}\nproducer {PRODUCER_OTHER} billing\n"),
    )
    .unwrap();
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("token file reloaded");
    assert_eq!(session.ended().await.0, Code::Unauthenticated);
    assert_eq!(
        end_code(&mut revoked.responses).await.0,
        Code::Unauthenticated
    );
    // The narrowed credential's stream goes on, with its new scope for
    // each request from now on.
    narrowed
        .send(2, Some(sluice_e2e::job_in("orders", "t", b"")))
        .await;
    narrowed
        .send(3, Some(sluice_e2e::job_in("billing", "t", b"")))
        .await;
    let results = narrowed.results(2).await;
    assert_eq!(
        results[0].code,
        Code::PermissionDenied as i32,
        "{}",
        results[0].message
    );
    assert_eq!(results[1].code, 0, "{}", results[1].message);
}
