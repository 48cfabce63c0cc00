//! Bad input is refused with INVALID_ARGUMENT naming the field, or with the
//! documented status, and the broker keeps serving.

#![allow(clippy::unwrap_used)]

use prost_types::Duration as PbDuration;
use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use tonic::Code;

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let status = result.expect_err("expected INVALID_ARGUMENT");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message {:?} should name {field}",
        status.message()
    );
}

#[tokio::test]
async fn bad_enqueues_are_refused_and_nothing_is_stored() {
    let mut config = test_config();
    config.max_payload = 8;
    let b = TestBroker::with_config(config).await;
    let mut broker = b.broker.clone();
    let req = |f: fn(&mut pb::EnqueueRequest)| {
        let mut r = pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    assert_invalid(
        broker.enqueue(req(|r| r.job_type.clear())).await,
        "job_type",
    );
    assert_invalid(
        broker.enqueue(req(|r| r.job_type = "x".repeat(200))).await,
        "job_type",
    );
    assert_invalid(
        broker.enqueue(req(|r| r.queue = "bad queue!".into())).await,
        "queue",
    );
    assert_invalid(
        broker.enqueue(req(|r| r.payload = vec![1; 9].into())).await,
        "payload",
    );
    assert_invalid(
        broker
            .enqueue(req(|r| {
                r.timeout = Some(PbDuration {
                    seconds: 0,
                    nanos: 0,
                })
            }))
            .await,
        "timeout",
    );
    assert_invalid(
        broker
            .enqueue(req(|r| {
                r.timeout = Some(PbDuration {
                    seconds: 100_000,
                    nanos: 0,
                })
            }))
            .await,
        "timeout",
    );
    assert!(
        b.admin
            .clone()
            .stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner()
            .queues
            .iter()
            .all(|q| q.enqueued_total == 0)
    );
    // Still serving.
    b.enqueue("t").await;
}

#[tokio::test]
async fn bad_lease_requests_are_refused() {
    let b = TestBroker::start().await;
    let mut broker = b.broker.clone();
    let req = |f: fn(&mut pb::LeaseRequest)| {
        let mut r = pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    assert_invalid(
        broker.lease(req(|r| r.max_in_flight = 0)).await,
        "max_in_flight",
    );
    assert_invalid(
        broker.lease(req(|r| r.worker_id.clear())).await,
        "worker_id",
    );
    assert_invalid(
        broker.lease(req(|r| r.queues = vec!["a/b".into()])).await,
        "queues",
    );
    assert_invalid(
        broker
            .lease(req(|r| {
                r.lease_duration = Some(PbDuration {
                    seconds: 0,
                    nanos: 500,
                })
            }))
            .await,
        "lease_duration",
    );
}

#[tokio::test]
async fn bad_durations_on_resolution_are_refused() {
    let b = TestBroker::start().await;
    let id = b.enqueue("t").await;
    let mut stream = b.lease("w", 1).await;
    let leased = next_job(&mut stream).await;
    let mut broker = b.broker.clone();
    let too_long = Some(PbDuration {
        seconds: 86_401,
        nanos: 0,
    });
    let negative = Some(PbDuration {
        seconds: -1,
        nanos: 0,
    });
    let nack = pb::NackRequest {
        job_id: id.clone(),
        lease_id: leased.lease_id.clone(),
        retry_after: too_long,
        ..Default::default()
    };
    assert_invalid(broker.nack(nack).await, "retry_after");
    let extend = pb::ExtendRequest {
        job_id: id.clone(),
        lease_id: leased.lease_id.clone(),
        extend_by: negative,
    };
    assert_invalid(broker.extend(extend).await, "extend_by");
    let release = pb::ReleaseRequest {
        job_id: id.clone(),
        lease_id: leased.lease_id.clone(),
        delay: too_long,
    };
    assert_invalid(broker.release(release).await, "delay");
    assert_eq!(b.state(&id).await, pb::JobState::Leased);
    b.ack(&leased).await.unwrap();
}

#[tokio::test]
async fn full_queue_refuses_with_resource_exhausted() {
    let mut config = test_config();
    config.queue.max_queue_size = Some(2);
    let b = TestBroker::with_config(config).await;
    b.enqueue("t").await;
    b.enqueue("t").await;
    let req = pb::EnqueueRequest {
        job_type: "t".into(),
        ..Default::default()
    };
    assert_eq!(
        code(b.broker.clone().enqueue(req).await),
        Code::ResourceExhausted
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let b = TestBroker::start().await;
    let missing = pb::GetJobRequest {
        job_id: "00000000-0000-0000-0000-000000000001".into(),
    };
    assert_eq!(code(b.admin.clone().get_job(missing).await), Code::NotFound);
    assert_invalid(
        b.admin
            .clone()
            .get_job(pb::GetJobRequest { job_id: "x".into() })
            .await,
        "job_id",
    );
    assert_invalid(
        b.admin
            .clone()
            .list_jobs(pb::ListJobsRequest {
                state: 99,
                ..Default::default()
            })
            .await,
        "state",
    );
}
