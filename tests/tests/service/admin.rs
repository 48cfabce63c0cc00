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

every_backend! {
    async fn scheduled_job_is_delivered_once_due() {
        let b = TestBroker::start().await;
        let mut stream = b.lease("w1", 1).await;
        // Two seconds ahead: still SCHEDULED when read back, even on a machine
        // stalled for a second.
        let req = pb::EnqueueRequest {
            job_type: "t".into(),
            run_at: in_future(Duration::from_secs(2)),
            ..Default::default()
        };
        let id = b.enqueue_req(req).await;
        let scheduled = b.job(&id).await;
        assert_eq!(scheduled.state(), pb::JobState::Scheduled);
        let leased = next_job(&mut stream).await;
        assert_eq!(job_id(&leased), id);
        // Not leased before its own run_at, both read from the broker's clock:
        // the lease was granted a lease duration before it expires.
        let run_at = scheduled.run_at.unwrap();
        let expires = leased.lease_expires_at.unwrap();
        let lease = test_config().queue.lease_duration.as_secs() as i64;
        let granted_micros = (expires.seconds - lease) * 1_000_000 + i64::from(expires.nanos / 1000);
        let due_micros = run_at.seconds * 1_000_000 + i64::from(run_at.nanos / 1000);
        assert!(
            granted_micros >= due_micros,
            "leased {} µs before its run_at",
            due_micros - granted_micros
        );
    }
}

every_backend! {
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
}

every_backend! {
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
}

every_backend! {
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
}

every_backend! {
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
}

every_backend! {
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
}

every_backend! {
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
}

every_backend! {
    async fn a_cancelled_job_whose_lease_expires_ends_cancelled() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut stream = b
            .lease_req(pb::LeaseRequest {
                worker_id: "w1".into(),
                max_in_flight: 1,
                lease_duration: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await;
        let leased = next_job(&mut stream).await;
        let r = b
            .admin
            .clone()
            .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state(), pb::JobState::Leased);
        assert!(b.job(&id).await.cancel_requested);
        // No Extend, no Ack: the lease runs out.
        eventually("the lease of the cancelled job to expire", || async {
            b.state(&id).await != pb::JobState::Leased
        })
        .await;
        let job = b.job(&id).await;
        assert_eq!(
            (job.state(), job.attempt, job.last_error.as_str()),
            (pb::JobState::Cancelled, 1, "lease expired")
        );
        assert_eq!(code(b.ack(&leased).await), Code::FailedPrecondition);
        assert_eq!(b.queue_stats("default").await.cancelled, 1);
    }
}

every_backend! {
    async fn list_jobs_pages_hold_100_by_default_and_at_most_1000() {
        use sluice_limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
        let b = TestBroker::start().await;
        let jobs = vec![sluice_e2e::job("t", b""); DEFAULT_PAGE_SIZE as usize + 1];
        let results = b.enqueue_batch(jobs).await.unwrap();
        assert!(results.iter().all(|r| r.code == 0), "{results:?}");
        let mut admin = b.admin.clone();
        let list = |page_size, page_token: &str| pb::ListJobsRequest {
            page_size,
            page_token: page_token.into(),
            ..Default::default()
        };
        let first = admin.list_jobs(list(0, "")).await.unwrap().into_inner();
        assert_eq!(first.jobs.len(), DEFAULT_PAGE_SIZE as usize);
        assert!(!first.next_page_token.is_empty());
        let rest = admin
            .list_jobs(list(0, &first.next_page_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((rest.jobs.len(), rest.next_page_token.as_str()), (1, ""));
        let all = admin
            .list_jobs(list(MAX_PAGE_SIZE, ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.jobs.len(), DEFAULT_PAGE_SIZE as usize + 1);
        let status = admin
            .list_jobs(list(MAX_PAGE_SIZE + 1, ""))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with("page_size: "), "{status:?}");
    }
}

every_backend! {
    async fn retry_job_takes_dead_or_cancelled_jobs_into_a_queue_with_room() {
        let mut config = test_config();
        config.queue.max_queue_size = Some(2);
        let b = TestBroker::with_config(config).await;
        let dead = b
            .enqueue_req(pb::EnqueueRequest {
                job_type: "doomed".into(),
                max_attempts: 1,
                ..Default::default()
            })
            .await;
        // Takes only the doomed job, so the others stay READY.
        let mut stream = b
            .lease_req(pb::LeaseRequest {
                worker_id: "w1".into(),
                job_types: vec!["doomed".into()],
                max_in_flight: 1,
                ..Default::default()
            })
            .await;
        let leased = next_job(&mut stream).await;
        assert_eq!(
            b.nack(&leased, "boom").await.unwrap().state(),
            pb::JobState::Dead
        );
        let ready = b.enqueue("t").await;
        let other = b.enqueue("t").await;
        let mut admin = b.admin.clone();
        let retry = |id: &str| pb::RetryJobRequest { job_id: id.into() };

        // The queue holds --max-queue-size unfinished jobs.
        let status = admin.retry_job(retry(&dead)).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("--max-queue-size"), "{status:?}");
        assert_eq!(b.state(&dead).await, pb::JobState::Dead);
        // Only DEAD and CANCELLED jobs are retried.
        assert_eq!(
            code(admin.retry_job(retry(&ready)).await),
            Code::FailedPrecondition
        );

        let cancel = pb::CancelJobRequest {
            job_id: other.clone(),
        };
        admin.cancel_job(cancel).await.unwrap();
        admin.retry_job(retry(&dead)).await.unwrap();
        // Attempts reset: the stream gets its first attempt again.
        let again = next_job(&mut stream).await.job.unwrap();
        assert_eq!((again.id.as_str(), again.attempt), (dead.as_str(), 1));
        assert_eq!(
            code(admin.retry_job(retry(&dead)).await),
            Code::FailedPrecondition
        );
        // Full again: a CANCELLED job needs room too.
        assert_eq!(
            code(admin.retry_job(retry(&other)).await),
            Code::ResourceExhausted
        );
    }
}

async fn futures_ids(b: &TestBroker, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(b.enqueue("t").await);
    }
    ids
}

/// How many of 128 bits differ between two ids.
fn bits_apart(a: &str, b: &str) -> u32 {
    let (a, b) = (
        uuid::Uuid::parse_str(a).unwrap(),
        uuid::Uuid::parse_str(b).unwrap(),
    );
    (a.as_u128() ^ b.as_u128()).count_ones()
}

every_backend! {
    async fn consecutive_job_and_lease_ids_share_no_predictable_relation() {
        let b = TestBroker::start().await;
        let jobs: Vec<pb::EnqueueRequest> = (0..1000).map(|_| sluice_e2e::job("t", b"")).collect();
        let ids: Vec<String> = b
            .enqueue_batch(jobs)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        // A counter (or a counter with a fixed prefix) moves one or two bits
        // from one id to the next; 64 or more bits drawn or permuted under a
        // key move about half of them.
        let apart: Vec<u32> = ids.windows(2).map(|w| bits_apart(&w[0], &w[1])).collect();
        let mean = f64::from(apart.iter().sum::<u32>()) / apart.len() as f64;
        assert!(apart.iter().all(|&n| n >= 8), "{apart:?}");
        assert!(
            mean >= 24.0,
            "consecutive job ids differ in {mean} bits on average"
        );
        let mut stream = b.lease("w", 100).await;
        let mut leases = Vec::new();
        for _ in 0..100 {
            leases.push(next_job(&mut stream).await.lease_id);
        }
        let apart: Vec<u32> = leases
            .windows(2)
            .map(|w| bits_apart(&w[0], &w[1]))
            .collect();
        let mean = f64::from(apart.iter().sum::<u32>()) / apart.len() as f64;
        assert!(apart.iter().all(|&n| n >= 8), "{apart:?}");
        assert!(
            mean >= 48.0,
            "consecutive lease ids differ in {mean} bits on average"
        );
    }
}
