//! The dashboard's JSON API (`/api/v1/` on `--http-addr`) against a real
//! broker: every endpoint answers the document of the Admin call it makes,
//! acts on the same state, and refuses with the gRPC call's own code and
//! message; tokens decide who reads and who acts (admin, viewer); requests
//! a browser sends for another site change nothing. Runs on every backend.

#![allow(clippy::unwrap_used)]

use http::{Method, StatusCode};
use serde_json::{Value, json};
use sluice_broker::auth::Authorizer;
use sluice_e2e::http::{Api, Reply};
use sluice_e2e::in_process::{eventually, job_id, next_job, test_config};
use sluice_e2e::{TestBroker, job_in, scratch_dir};
use sluice_proto::json::{code_name, job_json, schedule_json};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::{Code, Request};

const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const PRODUCER: &str = "producer-token-0123456789";

async fn broker_with_api() -> (TestBroker, Api) {
    let broker = TestBroker::with_http(test_config()).await;
    let api = Api::new(broker.http_addr.unwrap());
    (broker, api)
}

/// Asserts that `reply` is the refusal `status` is: the HTTP status of its
/// code, the code's name and the very message.
fn assert_same_refusal(reply: &Reply, status: &tonic::Status, http: StatusCode) {
    assert_eq!(reply.status, http, "{}", reply.json());
    assert_eq!(
        reply.json(),
        json!({"code": code_name(status.code()), "message": status.message()})
    );
}

/// `message` with the bearer token `token`.
fn with_token<T>(token: &str, message: T) -> Request<T> {
    sluice_e2e::with_token(message, Some(token))
}

/// `message` with the viewer's token.
fn with_viewer<T>(message: T) -> Request<T> {
    with_token(VIEWER, message)
}

/// The one job a queue's lease stream hands out, leased by `worker_id`.
async fn lease_one(broker: &TestBroker, queue: &str) -> pb::LeasedJob {
    let mut stream = broker
        .lease_req(pb::LeaseRequest {
            worker_id: "w-api".into(),
            queues: vec![queue.into()],
            max_in_flight: 1,
            ..Default::default()
        })
        .await;
    next_job(&mut stream).await
}

every_backend! {
    async fn the_page_and_its_files_are_served_under_a_strict_policy() {
        let (_broker, api) = broker_with_api().await;
        let page = api.get("/").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        let csp = page.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
        let html = String::from_utf8_lossy(&page.body);
        assert!(html.contains("/assets/app.js") && html.contains("/assets/style.css"));
        // Nothing is fetched from another host.
        assert!(!html.contains("://"), "{html}");
        let script = api.get("/assets/app.js").await;
        assert_eq!(script.status, StatusCode::OK);
        assert_eq!(
            script.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        assert!(String::from_utf8_lossy(&script.body).contains("/api/v1/stats"));
        let style = api.get("/assets/style.css").await;
        assert_eq!(
            style.header("content-type"),
            Some("text/css; charset=utf-8")
        );
        assert_eq!(
            api.get("/assets/missing.js").await.status,
            StatusCode::NOT_FOUND
        );
    }
}

every_backend! {
    async fn reads_answer_the_documents_of_the_admin_calls() {
        let (broker, api) = broker_with_api().await;
        let mut admin = broker.admin.clone();
        let mut with_headers = job_in("mail", "email", br#"{"to": "ada@example.com"}"#);
        with_headers.headers.insert("trace-id".into(), "t-1".into());
        let first = broker.enqueue_req(with_headers).await;
        for _ in 0..2 {
            broker.enqueue_req(job_in("mail", "email", b"{}")).await;
        }
        broker
            .enqueue_req(job_in("reports", "pdf", &[0xff, 0x00]))
            .await;

        // One job: GetJob's message as the CLI's JSON, payload decoded.
        let job = api.get_ok(&format!("/api/v1/jobs/{first}")).await;
        let grpc = admin
            .get_job(pb::GetJobRequest {
                job_id: first.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(job, job_json(&grpc, true));
        assert_eq!(
            job["payload"],
            json!({"encoding": "json", "value": {"to": "ada@example.com"}})
        );
        assert_eq!(job["headers"], json!({"trace-id": "t-1"}));

        // Jobs by queue, paged as ListJobs pages.
        let page = api.get_ok("/api/v1/jobs?queue=mail&page_size=2").await;
        let grpc_page = admin
            .list_jobs(pb::ListJobsRequest {
                queue: "mail".into(),
                page_size: 2,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let expected: Vec<Value> = grpc_page.jobs.iter().map(|j| job_json(j, false)).collect();
        assert_eq!(page["jobs"], json!(expected));
        let token = page["next_page_token"].as_str().unwrap();
        assert_eq!(token, grpc_page.next_page_token);
        let rest = api
            .get_ok(&format!(
                "/api/v1/jobs?queue=mail&page_size=2&page_token={token}"
            ))
            .await;
        assert_eq!(rest["jobs"].as_array().unwrap().len(), 1);
        assert_eq!(rest["next_page_token"], Value::Null);
        // By state, over every queue.
        let ready = api.get_ok("/api/v1/jobs?state=ready").await;
        assert_eq!(ready["jobs"].as_array().unwrap().len(), 4);
        assert_eq!(
            api.get_ok("/api/v1/jobs?state=DEAD").await["jobs"],
            json!([])
        );
        let binary = api.get_ok("/api/v1/jobs?queue=reports").await["jobs"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            api.get_ok(&format!("/api/v1/jobs/{binary}")).await["payload"],
            json!({"encoding": "base64", "value": "/wA="})
        );

        // Stats, the queues, one queue.
        let stats = api.get_ok("/api/v1/stats").await;
        let names: Vec<&str> = stats["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["queue"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["mail", "reports"]);
        assert_eq!(stats["recent_failures"], json!([]));
        assert_eq!(
            api.get_ok("/api/v1/queues").await["queues"][0]["ready"],
            json!(3)
        );
        let mail = api.get_ok("/api/v1/queues/mail").await;
        assert_eq!(
            (
                &mail["queue"],
                &mail["ready"],
                &mail["paused"],
                &mail["enqueued_total"]
            ),
            (&json!("mail"), &json!(3), &json!(false), &json!(3))
        );
        assert!(mail["oldest_ready_age"].as_f64().unwrap() >= 0.0);

        // Workers: the open Lease streams.
        assert_eq!(api.get_ok("/api/v1/workers").await, json!({"workers": []}));
        let mut stream = broker
            .lease_req(pb::LeaseRequest {
                worker_id: "w-api".into(),
                queues: vec!["mail".into()],
                max_in_flight: 2,
                ..Default::default()
            })
            .await;
        next_job(&mut stream).await;
        next_job(&mut stream).await;
        let workers = api.get_ok("/api/v1/workers").await;
        let worker = &workers["workers"][0];
        assert_eq!(worker["worker_id"], "w-api");
        assert_eq!(worker["queues"], json!(["mail"]));
        assert_eq!(
            (&worker["in_flight"], &worker["max_in_flight"]),
            (&json!(2), &json!(2))
        );
        assert!(worker["connected_since"].is_string());
    }
}

every_backend! {
    async fn actions_change_the_state_every_call_sees() {
        let (broker, api) = broker_with_api().await;

        // Cancel a READY job, then retry it.
        let id = broker.enqueue_req(job_in("mail", "email", b"{}")).await;
        let cancelled = api.post_ok(&format!("/api/v1/jobs/{id}/cancel")).await;
        assert_eq!(cancelled, json!({"state": "CANCELLED"}));
        assert_eq!(broker.state(&id).await, pb::JobState::Cancelled);
        assert_eq!(
            api.post_ok(&format!("/api/v1/jobs/{id}/retry")).await,
            json!({})
        );
        assert_eq!(broker.state(&id).await, pb::JobState::Ready);

        // Pause and resume.
        assert_eq!(api.post_ok("/api/v1/queues/mail/pause").await, json!({}));
        assert!(broker.queue_stats("mail").await.paused);
        assert_eq!(api.get_ok("/api/v1/queues/mail").await["paused"], true);
        assert_eq!(api.post_ok("/api/v1/queues/mail/resume").await, json!({}));
        assert!(!broker.queue_stats("mail").await.paused);

        // A job gone DEAD, retried with every other dead job of its queue.
        let leased = lease_one(&broker, "mail").await;
        broker
            .broker
            .clone()
            .nack(pb::NackRequest {
                job_id: job_id(&leased).into(),
                lease_id: leased.lease_id.clone(),
                error: "card declined".into(),
                dead: true,
                ..Default::default()
            })
            .await
            .unwrap();
        let dead = api.get_ok("/api/v1/jobs?state=dead").await;
        assert_eq!(dead["jobs"][0]["id"], json!(job_id(&leased)));
        assert_eq!(dead["jobs"][0]["last_error"], "card declined");
        assert_eq!(
            api.post_ok("/api/v1/queues/mail/retry-dead").await,
            json!({"retried": 1, "more": false})
        );
        assert_eq!(broker.state(job_id(&leased)).await, pb::JobState::Ready);
        assert_eq!(
            api.post_ok("/api/v1/queues/mail/retry-dead").await,
            json!({"retried": 0, "more": false})
        );

        // Purge by state, which says how many went.
        broker.enqueue_req(job_in("bulk", "x", b"")).await;
        broker.enqueue_req(job_in("bulk", "x", b"")).await;
        assert_eq!(
            api.post_ok("/api/v1/queues/bulk/purge?state=ready").await,
            json!({"purged": 2})
        );
        assert_eq!(broker.queue_stats("bulk").await.ready, 0);
    }
}

every_backend! {
    async fn refusals_carry_the_grpc_calls_code_and_message() {
        let (broker, api) = broker_with_api().await;
        let mut admin = broker.admin.clone();

        // Retry of a SUCCEEDED job: FAILED_PRECONDITION, as RetryJob says it.
        let id = broker.enqueue_req(job_in("mail", "email", b"{}")).await;
        let leased = lease_one(&broker, "mail").await;
        broker.ack(&leased).await.unwrap();
        let grpc = admin
            .retry_job(pb::RetryJobRequest { job_id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(grpc.code(), Code::FailedPrecondition);
        let reply = api.post(&format!("/api/v1/jobs/{id}/retry")).await;
        assert_same_refusal(&reply, &grpc, StatusCode::BAD_REQUEST);
        // Cancel of a finished job.
        let grpc = admin
            .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
            .await
            .unwrap_err();
        let reply = api.post(&format!("/api/v1/jobs/{id}/cancel")).await;
        assert_same_refusal(&reply, &grpc, StatusCode::BAD_REQUEST);

        // An unknown job, a malformed id.
        let unknown = "00000000-0000-4000-8000-000000000000";
        let grpc = admin
            .get_job(pb::GetJobRequest {
                job_id: unknown.into(),
            })
            .await
            .unwrap_err();
        assert_same_refusal(
            &api.get(&format!("/api/v1/jobs/{unknown}")).await,
            &grpc,
            StatusCode::NOT_FOUND,
        );
        let grpc = admin
            .retry_job(pb::RetryJobRequest {
                job_id: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_same_refusal(
            &api.post("/api/v1/jobs/nope/retry").await,
            &grpc,
            StatusCode::BAD_REQUEST,
        );

        // Paging out of range, a bad state, a bad number.
        let grpc = admin
            .list_jobs(pb::ListJobsRequest {
                page_size: 5000,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_same_refusal(
            &api.get("/api/v1/jobs?page_size=5000").await,
            &grpc,
            StatusCode::BAD_REQUEST,
        );
        for query in ["page_size=ten", "state=done", "page_token=x", "queue=%ff"] {
            let reply = api.get(&format!("/api/v1/jobs?{query}")).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(reply.code(), "INVALID_ARGUMENT", "{query}");
        }

        // Purge without a state, or of LEASED jobs.
        for (query, state) in [
            ("", pb::JobState::Unspecified),
            ("?state=leased", pb::JobState::Leased),
        ] {
            let grpc = admin
                .purge_queue(pb::PurgeQueueRequest {
                    queue: "mail".into(),
                    state: state as i32,
                })
                .await
                .unwrap_err();
            assert_eq!(grpc.code(), Code::InvalidArgument);
            assert_same_refusal(
                &api.post(&format!("/api/v1/queues/mail/purge{query}")).await,
                &grpc,
                StatusCode::BAD_REQUEST,
            );
        }

        // A queue name the contract refuses, a queue nobody used.
        let grpc = admin
            .pause_queue(pb::PauseQueueRequest {
                queue: "no spaces".into(),
            })
            .await
            .unwrap_err();
        assert_same_refusal(
            &api.post("/api/v1/queues/no%20spaces/pause").await,
            &grpc,
            StatusCode::BAD_REQUEST,
        );
        let reply = api.get("/api/v1/queues/never-used").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.code(), "NOT_FOUND");

        // Unknown endpoints and methods answer JSON too.
        let reply = api.get("/api/v1/nothing").await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::NOT_FOUND, "NOT_FOUND".into())
        );
        let reply = api.send(Method::DELETE, "/api/v1/stats", &[]).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        let reply = api
            .get("/api/v1/jobs/00000000-0000-4000-8000-000000000000/retry")
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);

        // The broker serves on after all of it.
        assert_eq!(api.get_ok("/api/v1/queues/mail").await["succeeded"], 1);
    }
}

every_backend! {
    async fn tokens_decide_who_reads_and_who_acts() {
        let dir = scratch_dir("dashboard-api-tokens");
        let tokens = dir.join("tokens");
        std::fs::write(
            &tokens,
            format!("admin {ADMIN}\nviewer {VIEWER}\nproducer {PRODUCER}\n"),
        )
        .unwrap();
        let mut config = test_config();
        config.auth = Authorizer::load(&tokens).unwrap();
        let broker = TestBroker::with_http(config).await;
        let api = Api::new(broker.http_addr.unwrap());
        let (admin, viewer, producer) = (
            api.with_token(ADMIN),
            api.with_token(VIEWER),
            api.with_token(PRODUCER),
        );

        // The page holds no data: it loads, then asks for a token.
        assert_eq!(api.get("/").await.status, StatusCode::OK);
        // Even on a loopback listener the API needs one (unlike /metrics).
        let reply = api.get("/api/v1/stats").await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED".into())
        );
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
        assert_eq!(
            api.get("/api/v1/session").await.status,
            StatusCode::UNAUTHORIZED
        );
        let reply = api
            .with_token("unknown-token-0123456789")
            .get("/api/v1/stats")
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        let reply = producer.get("/api/v1/stats").await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::FORBIDDEN, "PERMISSION_DENIED".into())
        );
        assert_eq!(
            producer.get("/api/v1/session").await.status,
            StatusCode::FORBIDDEN
        );

        // The session says what the dashboard may show.
        assert_eq!(
            admin.get_ok("/api/v1/session").await,
            json!({"auth": true, "role": "admin", "actions": true})
        );
        assert_eq!(
            viewer.get_ok("/api/v1/session").await,
            json!({"auth": true, "role": "viewer", "actions": false})
        );

        // A viewer reads everything and changes nothing.
        let mut producer_client = BrokerClient::new(broker.channel.clone());
        let mut enqueue = Request::new(job_in("mail", "email", b"{}"));
        enqueue.metadata_mut().insert(
            "authorization",
            format!("Bearer {PRODUCER}").parse().unwrap(),
        );
        let id = producer_client
            .enqueue(enqueue)
            .await
            .unwrap()
            .into_inner()
            .job_id;
        assert_eq!(viewer.get_ok("/api/v1/queues/mail").await["ready"], 1);
        assert_eq!(
            viewer.get_ok(&format!("/api/v1/jobs/{id}")).await["state"],
            "READY"
        );
        viewer.get_ok("/api/v1/jobs?state=ready").await;
        viewer.get_ok("/api/v1/workers").await;
        for action in [
            "/api/v1/queues/mail/pause".to_owned(),
            "/api/v1/queues/mail/purge?state=ready".to_owned(),
            "/api/v1/queues/mail/retry-dead".to_owned(),
            format!("/api/v1/jobs/{id}/cancel"),
        ] {
            let reply = viewer.post(&action).await;
            assert_eq!(
                reply.status,
                StatusCode::FORBIDDEN,
                "{action}: {}",
                reply.json()
            );
            assert_eq!(reply.code(), "PERMISSION_DENIED");
        }
        let stats = admin.get_ok("/api/v1/queues/mail").await;
        assert_eq!(
            (&stats["paused"], &stats["ready"]),
            (&json!(false), &json!(1))
        );
        // The admin acts.
        admin.post_ok("/api/v1/queues/mail/pause").await;
        assert_eq!(viewer.get_ok("/api/v1/queues/mail").await["paused"], true);

        // The viewer role over gRPC: the Admin service's reads only.
        let mut grpc = AdminClient::new(broker.channel.clone());
        grpc.stats(with_viewer(pb::StatsRequest {})).await.unwrap();
        let refused = grpc
            .resume_queue(with_viewer(pb::ResumeQueueRequest {
                queue: "mail".into(),
            }))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let refused = producer_client
            .enqueue(with_viewer(job_in("mail", "email", b"{}")))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

every_backend! {
    async fn requests_a_browser_sends_for_another_site_change_nothing() {
        let (broker, api) = broker_with_api().await;
        broker.enqueue_req(job_in("mail", "email", b"{}")).await;
        let own = format!("http://{}", api.addr);
        for headers in [
            [("origin", "http://evil.example")],
            [("sec-fetch-site", "cross-site")],
            [("sec-fetch-site", "same-site")],
        ] {
            let reply = api
                .send(Method::POST, "/api/v1/queues/mail/pause", &headers)
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{headers:?}");
            assert_eq!(reply.code(), "PERMISSION_DENIED");
        }
        assert!(!broker.queue_stats("mail").await.paused);
        // A page on another site whose name points here (DNS rebinding)
        // cannot even read, without tokens.
        let reply = api
            .send(
                Method::GET,
                "/api/v1/stats",
                &[("host", "rebound.example:80")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        // The dashboard itself, and clients that are not browsers, act.
        let reply = api
            .send(
                Method::POST,
                "/api/v1/queues/mail/pause",
                &[("origin", own.as_str()), ("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
        eventually("the queue to be paused", || async {
            broker.queue_stats("mail").await.paused
        })
        .await;
        api.post_ok("/api/v1/queues/mail/resume").await;
    }
}

every_backend! {
    async fn scoped_tokens_read_and_act_on_their_queues_only() {
        const ADMIN_ORDERS: &str = "admin-orders-token-0123456789";
        const VIEWER_ORDERS: &str = "viewer-orders-token-0123456789";
        const METRICS_ORDERS: &str = "metrics-orders-token-0123456789";
        let dir = scratch_dir("dashboard-api-scopes");
        let tokens = dir.join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "admin {ADMIN}\nadmin {ADMIN_ORDERS} orders\nviewer {VIEWER_ORDERS} orders\n\
                 metrics {METRICS_ORDERS} orders\n"
            ),
        )
        .unwrap();
        let mut config = test_config();
        config.auth = Authorizer::load(&tokens).unwrap();
        // Off loopback, so that /metrics needs a token too.
        let broker = TestBroker::with_http_off_loopback(config).await;
        let api = Api::new(broker.http_addr.unwrap());
        let (admin, scoped_admin, scoped_viewer) = (
            api.with_token(ADMIN),
            api.with_token(ADMIN_ORDERS),
            api.with_token(VIEWER_ORDERS),
        );
        let mut client = BrokerClient::new(broker.channel.clone());
        let mut ids = Vec::new();
        for queue in ["orders", "billing"] {
            let mut enqueue = Request::new(job_in(queue, "t", b"{}"));
            enqueue
                .metadata_mut()
                .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
            ids.push(client.enqueue(enqueue).await.unwrap().into_inner().job_id);
        }
        let (orders_id, billing_id) = (&ids[0], &ids[1]);

        // Reads in scope show only the queue in scope.
        for caller in [&scoped_admin, &scoped_viewer] {
            for path in ["/api/v1/stats", "/api/v1/queues"] {
                let document = caller.get_ok(path).await;
                let queues: Vec<&str> = document["queues"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|q| q["queue"].as_str().unwrap())
                    .collect();
                assert_eq!(queues, ["orders"], "{path}");
            }
            let jobs = caller.get_ok("/api/v1/jobs").await;
            let listed: Vec<&str> = jobs["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["id"].as_str().unwrap())
                .collect();
            assert_eq!(listed, [orders_id.as_str()]);
            // A job of another queue is unknown, with the unknown job's message.
            let reply = caller.get(&format!("/api/v1/jobs/{billing_id}")).await;
            assert_eq!(
                (reply.status, reply.json()["message"].as_str().unwrap()),
                (
                    StatusCode::NOT_FOUND,
                    format!("job {billing_id} not found").as_str()
                )
            );
        }

        // Every endpoint, in scope and out of it: the scoped admin's and the
        // scoped viewer's answers. (A viewer's action is refused for its role
        // before any job is looked up, so it tells nothing either.)
        use StatusCode as S;
        let cells: Vec<(Method, String, StatusCode, StatusCode)> = vec![
            (Method::GET, "/api/v1/session".into(), S::OK, S::OK),
            (Method::GET, "/api/v1/stats".into(), S::OK, S::OK),
            (Method::GET, "/api/v1/queues".into(), S::OK, S::OK),
            (Method::GET, "/api/v1/queues/orders".into(), S::OK, S::OK),
            (
                Method::GET,
                "/api/v1/queues/billing".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
            (
                Method::GET,
                "/api/v1/jobs?queue=orders".into(),
                S::OK,
                S::OK,
            ),
            (
                Method::GET,
                "/api/v1/jobs?queue=billing".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
            (
                Method::GET,
                format!("/api/v1/jobs/{orders_id}"),
                S::OK,
                S::OK,
            ),
            (
                Method::GET,
                format!("/api/v1/jobs/{billing_id}"),
                S::NOT_FOUND,
                S::NOT_FOUND,
            ),
            (Method::GET, "/api/v1/workers".into(), S::OK, S::OK),
            // READY: not retryable, a refusal of the job's state, not of scope.
            (
                Method::POST,
                format!("/api/v1/jobs/{orders_id}/retry"),
                S::BAD_REQUEST,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                format!("/api/v1/jobs/{billing_id}/retry"),
                S::NOT_FOUND,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                format!("/api/v1/jobs/{billing_id}/cancel"),
                S::NOT_FOUND,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/orders/pause".into(),
                S::OK,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/orders/resume".into(),
                S::OK,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/orders/purge?state=dead".into(),
                S::OK,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/orders/retry-dead".into(),
                S::OK,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/billing/pause".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/billing/resume".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/billing/purge?state=ready".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
            (
                Method::POST,
                "/api/v1/queues/billing/retry-dead".into(),
                S::FORBIDDEN,
                S::FORBIDDEN,
            ),
        ];
        let mut wrong = Vec::new();
        for (method, path, for_admin, for_viewer) in &cells {
            for (caller, who, expected) in [
                (&scoped_admin, "admin@orders", for_admin),
                (&scoped_viewer, "viewer@orders", for_viewer),
            ] {
                let reply = caller.send(method.clone(), path, &[]).await;
                if reply.status != *expected {
                    wrong.push(format!(
                        "{method} {path} as {who}: {} {}",
                        reply.status,
                        reply.json()
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "wrong cells:\n{}", wrong.join("\n"));
        // The other queue's job and flag are as they were.
        let billing = admin.get_ok(&format!("/api/v1/jobs/{billing_id}")).await;
        assert_eq!(billing["state"], "READY");
        assert_eq!(
            admin.get_ok("/api/v1/queues/billing").await["paused"],
            false
        );

        // /metrics: a scoped credential reads its queues' samples only.
        let scrape = |token: &'static str| {
            let api = api.with_token(token);
            async move {
                let reply = api.get("/metrics").await;
                assert_eq!(reply.status, StatusCode::OK);
                String::from_utf8(reply.body.to_vec()).unwrap()
            }
        };
        // The gauges of a shared store are read in the background: wait for
        // both queues to show.
        eventually("both queues in the metrics", || async {
            let everything = scrape(ADMIN).await;
            everything.contains("sluice_jobs{queue=\"billing\"")
                && everything.contains("sluice_jobs{queue=\"orders\"")
        })
        .await;
        for token in [METRICS_ORDERS, ADMIN_ORDERS] {
            let scoped = scrape(token).await;
            assert!(scoped.contains("queue=\"orders\""), "{scoped}");
            assert!(!scoped.contains("billing"), "{scoped}");
            assert!(scoped.contains("sluice_lease_streams"), "{scoped}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

every_backend! {
    async fn every_route_answers_only_the_listeners_own_names() {
        use sluice_broker::http::hosts::AllowedHost;
        let mut config = test_config();
        config.http_allowed_hosts = vec![AllowedHost::parse("sluice.internal").unwrap()];
        let broker = TestBroker::with_http(config).await;
        let api = Api::new(broker.http_addr.unwrap());
        broker.enqueue_req(job_in("mail", "email", b"{}")).await;
        // A rebinding page's name is refused on every route: before, /metrics
        // was outside the check and named every queue.
        for path in ["/metrics", "/", "/assets/app.js", "/api/v1/stats"] {
            let reply = api
                .send(Method::GET, path, &[("host", "rebound.example:80")])
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{path}");
            assert!(!String::from_utf8_lossy(&reply.body).contains("mail"));
            for host in ["sluice.internal:9090", "localhost", "127.0.0.1"] {
                let reply = api.send(Method::GET, path, &[("host", host)]).await;
                assert_eq!(reply.status, StatusCode::OK, "{path} as {host}");
            }
        }
        // An Origin is held to the same list, not to the request's own Host.
        let pause = |headers: &'static [(&'static str, &'static str)]| {
            let api = api.clone();
            async move {
                api.send(Method::POST, "/api/v1/queues/mail/pause", headers)
                    .await
                    .status
            }
        };
        assert_eq!(
            pause(&[
                ("host", "sluice.internal"),
                ("origin", "http://evil.example")
            ])
            .await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            pause(&[
                ("host", "sluice.internal"),
                ("origin", "https://sluice.internal")
            ])
            .await,
            StatusCode::OK
        );
    }
}

every_backend! {
    async fn schedules_are_read_paused_resumed_and_triggered() {
        let dir = scratch_dir("dashboard-api-schedules");
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, format!("admin {ADMIN}\nviewer {VIEWER}\n")).unwrap();
        let mut config = test_config();
        config.auth = Authorizer::load(&tokens).unwrap();
        let broker = TestBroker::with_http(config).await;
        let api = Api::new(broker.http_addr.unwrap());
        let (admin, viewer) = (api.with_token(ADMIN), api.with_token(VIEWER));
        let mut grpc = AdminClient::new(broker.channel.clone());
        // Hourly from a year on: no tick fires while the test runs,
        // whatever the time (one at the top of the hour would change the
        // documents compared below).
        let a_year_from_now = std::time::SystemTime::now() + std::time::Duration::from_secs(365 * 24 * 3600);
        let created = grpc
            .create_schedule(with_token(ADMIN, pb::CreateScheduleRequest {
                schedule: Some(pb::Schedule {
                    name: "nightly-report".into(),
                    cron: "0 * * * *".into(),
                    time_zone: "Europe/Berlin".into(),
                    start_at: Some(a_year_from_now.into()),
                    job: Some(pb::JobTemplate {
                        queue: "reports".into(),
                        job_type: "pdf".into(),
                        payload: br#"{"kind": "daily"}"#.to_vec().into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                upsert: false,
            }))
            .await
            .unwrap()
            .into_inner();

        // Reads are the Admin calls' documents, for viewers too.
        let list = viewer.get_ok("/api/v1/schedules").await;
        assert_eq!(list, json!({"schedules": [schedule_json(&created)]}));
        let one = viewer.get_ok("/api/v1/schedules/nightly-report").await;
        assert_eq!(one, schedule_json(&created));
        assert_eq!(one["description"], "every hour (Europe/Berlin)");
        assert_eq!(one["upcoming"].as_array().unwrap().len(), 5);
        let status = grpc
            .get_schedule(with_token(ADMIN, pb::GetScheduleRequest {
                name: "missing".into(),
            }))
            .await
            .unwrap_err();
        assert_same_refusal(
            &viewer.get("/api/v1/schedules/missing").await,
            &status,
            StatusCode::NOT_FOUND,
        );

        // A viewer acts on nothing.
        for action in ["pause", "resume", "trigger"] {
            let reply = viewer
                .post(&format!("/api/v1/schedules/nightly-report/{action}"))
                .await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{action}");
            assert_eq!(reply.code(), "PERMISSION_DENIED");
        }
        // (No job was enqueued: the queue is not even known.)
        assert_eq!(
            viewer.get("/api/v1/queues/reports").await.status,
            StatusCode::NOT_FOUND
        );

        // The admin triggers one run now: a job with the schedule's headers.
        let triggered = admin
            .post_ok("/api/v1/schedules/nightly-report/trigger")
            .await;
        let job_id = triggered["job_id"].as_str().unwrap().to_owned();
        let job = admin.get_ok(&format!("/api/v1/jobs/{job_id}")).await;
        assert_eq!((&job["queue"], &job["state"]), (&json!("reports"), &json!("READY")));
        assert_eq!(job["headers"]["sluice-schedule"], "nightly-report");
        let runs = admin.get_ok("/api/v1/schedules/nightly-report").await["recent_runs"].clone();
        assert_eq!(runs[0]["job_id"], json!(job_id));
        assert_eq!((&runs[0]["triggered"], &runs[0]["state"]), (&json!(true), &json!("READY")));

        // Pause and resume answer the schedule as it is now.
        let paused = admin.post_ok("/api/v1/schedules/nightly-report/pause").await;
        assert_eq!((&paused["paused"], &paused["next_fire_at"]), (&json!(true), &Value::Null));
        assert_eq!(
            viewer.get_ok("/api/v1/schedules").await["schedules"][0]["paused"],
            true
        );
        let resumed = admin.post_ok("/api/v1/schedules/nightly-report/resume").await;
        assert_eq!(resumed["paused"], false);
        assert!(resumed["next_fire_at"].is_string(), "{resumed}");
        let reply = admin.post("/api/v1/schedules/missing/trigger").await;
        assert_eq!((reply.status, reply.code()), (StatusCode::NOT_FOUND, "NOT_FOUND".into()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

every_backend! {
    async fn a_source_group_reads_as_its_partitions_and_members() {
        let (broker, api) = broker_with_api().await;
        let held = broker
            .broker
            .clone()
            .claim_partitions(pb::ClaimPartitionsRequest {
                group: "orders-bridge".into(),
                member_id: "m1".into(),
                partitions: vec![pb::SourcePartition { stream: "orders".into(), partition: 0 }],
                lease_duration: None,
            })
            .await
            .unwrap()
            .into_inner()
            .held;
        broker
            .broker
            .clone()
            .commit_partition(pb::CommitPartitionRequest {
                group: "orders-bridge".into(),
                member_id: "m1".into(),
                stream: "orders".into(),
                partition: 0,
                epoch: held[0].epoch,
                from_position: None,
                records: vec![],
                to_position: 42,
            })
            .await
            .unwrap();
        let group = api.get_ok("/api/v1/sources/orders-bridge").await;
        assert_eq!(group["group"], "orders-bridge");
        assert_eq!(group["members"], json!(["m1"]));
        let partition = &group["partitions"][0];
        assert_eq!(
            (&partition["stream"], &partition["partition"], &partition["holder"], &partition["epoch"], &partition["position"]),
            (&json!("orders"), &json!(0), &json!("m1"), &json!(1), &json!(42))
        );
        assert!(partition["held_until"].is_string());
        let unknown = api.get_ok("/api/v1/sources/nobody").await;
        assert_eq!(unknown["partitions"], json!([]));
        assert_eq!(api.get("/api/v1/sources/no%20spaces").await.status, 400);
    }
}
