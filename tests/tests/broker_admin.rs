//! Admin RPCs and the enqueue options they reveal: scheduling, idempotency,
//! pause/resume, cancel, purge, listing and stats.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use prost_types::Timestamp as PbTimestamp;
use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use tonic::Code;

fn in_future(d: Duration) -> Option<PbTimestamp> {
    Some(PbTimestamp::from(SystemTime::now() + d))
}

#[tokio::test]
async fn scheduled_job_is_delivered_once_due() {
    let b = TestBroker::start().await;
    let mut stream = b.lease("w1", 1).await;
    let req = pb::EnqueueRequest {
        job_type: "t".into(),
        run_at: in_future(Duration::from_millis(300)),
        ..Default::default()
    };
    let id = b.enqueue_req(req).await;
    assert_eq!(b.state(&id).await, pb::JobState::Scheduled);
    assert_quiet(&mut stream, Duration::from_millis(150)).await;
    assert_eq!(job_id(&next_job(&mut stream).await), id);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_job() {
    let b = TestBroker::start().await;
    let req = pb::EnqueueRequest {
        job_type: "t".into(),
        idempotency_key: "order-42".into(),
        ..Default::default()
    };
    let first = b
        .broker
        .clone()
        .enqueue(req.clone())
        .await
        .unwrap()
        .into_inner();
    let second = b.broker.clone().enqueue(req).await.unwrap().into_inner();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.job_id, second.job_id);
    assert_eq!(b.queue_stats("default").await.enqueued_total, 1);
}

#[tokio::test]
async fn paused_queue_accepts_jobs_but_hands_out_none_until_resumed() {
    let b = TestBroker::start().await;
    let mut admin = b.admin.clone();
    admin
        .pause_queue(pb::PauseQueueRequest {
            queue: "default".into(),
        })
        .await
        .unwrap();
    let mut stream = b.lease("w1", 1).await;
    let id = b.enqueue("t").await;
    assert_quiet(&mut stream, Duration::from_millis(200)).await;
    assert!(b.queue_stats("default").await.paused);
    admin
        .resume_queue(pb::ResumeQueueRequest {
            queue: "default".into(),
        })
        .await
        .unwrap();
    assert_eq!(job_id(&next_job(&mut stream).await), id);
}

#[tokio::test]
async fn cancel_of_a_leased_job_reaches_the_worker_on_extend() {
    let b = TestBroker::start().await;
    let ready = b.enqueue("t").await;
    let mut admin = b.admin.clone();
    let r = admin
        .cancel_job(pb::CancelJobRequest {
            job_id: ready.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state(), pb::JobState::Cancelled);
    assert_eq!(
        code(
            admin
                .cancel_job(pb::CancelJobRequest { job_id: ready })
                .await
        ),
        Code::FailedPrecondition
    );

    let id = b.enqueue("t").await;
    let mut stream = b.lease("w1", 1).await;
    let leased = next_job(&mut stream).await;
    let r = admin
        .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.state(), pb::JobState::Leased);
    let extend = pb::ExtendRequest {
        job_id: id.clone(),
        lease_id: leased.lease_id.clone(),
        extend_by: None,
    };
    assert!(
        b.broker
            .clone()
            .extend(extend)
            .await
            .unwrap()
            .into_inner()
            .cancel_requested
    );
    let r = b.nack(&leased, "cancelled").await.unwrap();
    assert_eq!(r.state(), pb::JobState::Cancelled);
    assert_eq!(b.state(&id).await, pb::JobState::Cancelled);
}

#[tokio::test]
async fn purge_deletes_a_state_and_spares_leased_jobs() {
    let b = TestBroker::start().await;
    let leased = b.enqueue("t").await;
    let mut stream = b.lease("w1", 1).await;
    next_job(&mut stream).await;
    let ready: Vec<String> = futures_ids(&b, 3).await;
    let mut admin = b.admin.clone();
    let purge = |state: pb::JobState| pb::PurgeQueueRequest {
        queue: "default".into(),
        state: state.into(),
    };
    assert_eq!(
        code(admin.purge_queue(purge(pb::JobState::Leased)).await),
        Code::InvalidArgument
    );
    let r = admin
        .purge_queue(purge(pb::JobState::Ready))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.purged, 3);
    for id in ready {
        let status = admin
            .get_job(pb::GetJobRequest { job_id: id })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
    assert_eq!(b.state(&leased).await, pb::JobState::Leased);
    let unknown = pb::PurgeQueueRequest {
        queue: "nope".into(),
        state: pb::JobState::Ready.into(),
    };
    assert_eq!(code(admin.purge_queue(unknown).await), Code::NotFound);
    let no_state = pb::PurgeQueueRequest {
        queue: "default".into(),
        state: 0,
    };
    assert_eq!(
        code(admin.purge_queue(no_state).await),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn list_jobs_pages_through_a_queue() {
    let b = TestBroker::start().await;
    let ids = futures_ids(&b, 5).await;
    let mut admin = b.admin.clone();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = pb::ListJobsRequest {
            queue: "default".into(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let page = admin.list_jobs(req).await.unwrap().into_inner();
        seen.extend(page.jobs.into_iter().map(|j| j.id));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, ids);
    let bad = pb::ListJobsRequest {
        page_token: "garbage".into(),
        ..Default::default()
    };
    assert_eq!(code(admin.list_jobs(bad).await), Code::InvalidArgument);
}

#[tokio::test]
async fn stats_and_workers_describe_the_broker() {
    let b = TestBroker::start().await;
    futures_ids(&b, 2).await;
    let _stream = b.lease("stats-worker", 1).await;
    eventually("one job leased", || async {
        b.queue_stats("default").await.leased == 1
    })
    .await;
    let stats = b.queue_stats("default").await;
    assert_eq!(
        (
            stats.ready,
            stats.leased,
            stats.enqueued_total,
            stats.paused
        ),
        (1, 1, 2, false)
    );
    let workers = b.workers().await;
    assert_eq!(workers.len(), 1);
    assert_eq!(
        (workers[0].worker_id.as_str(), workers[0].queues.as_slice()),
        ("stats-worker", &["default".to_string()][..])
    );
    assert!(workers[0].connected_since.is_some());
}

async fn futures_ids(b: &TestBroker, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(b.enqueue("t").await);
    }
    ids
}
