//! Resolving leases: ack, nack with backoff and dead letters, extend,
//! release, expiry and stale leases.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost_types::Duration as PbDuration;
use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use tonic::Code;

fn secs(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

every_backend! {
    async fn stale_and_unknown_leases_are_refused() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;
        let mut broker = b.broker.clone();

        let wrong_lease = pb::AckRequest {
            job_id: id.clone(),
            lease_id: uuid_zero(),
            ..Default::default()
        };
        assert_eq!(
            code(broker.ack(wrong_lease).await),
            Code::FailedPrecondition
        );
        let unknown_job = pb::AckRequest {
            job_id: uuid_zero(),
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        };
        assert_eq!(code(broker.ack(unknown_job).await), Code::NotFound);
        let malformed = pb::AckRequest {
            job_id: "nope".into(),
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        };
        let status = broker.ack(malformed).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("job_id"), "{}", status.message());
        assert_eq!(
            b.state(&id).await,
            pb::JobState::Leased,
            "refusals change nothing"
        );

        b.ack(&leased).await.unwrap();
        assert_eq!(
            code(b.ack(&leased).await),
            Code::FailedPrecondition,
            "already resolved"
        );
        assert_eq!(
            code(b.nack(&leased, "late").await),
            Code::FailedPrecondition
        );
        let extend = pb::ExtendRequest {
            job_id: id,
            lease_id: leased.lease_id.clone(),
            extend_by: secs(5),
        };
        assert_eq!(code(broker.extend(extend).await), Code::FailedPrecondition);
    }
}

every_backend! {
    async fn nack_retries_after_backoff_until_dead_then_retry_job_revives() {
        let b = TestBroker::start().await;
        let req = pb::EnqueueRequest {
            job_type: "t".into(),
            max_attempts: 2,
            ..Default::default()
        };
        let id = b.enqueue_req(req).await;
        let mut stream = b.lease("w1", 1).await;

        let first = next_job(&mut stream).await;
        let r = b.nack(&first, "boom 1").await.unwrap();
        assert_eq!(r.state(), pb::JobState::Scheduled);
        assert!(r.next_attempt_at.is_some());
        let job = b.job(&id).await;
        assert_eq!(
            (job.state(), job.last_error.as_str()),
            (pb::JobState::Scheduled, "boom 1")
        );

        let second = next_job(&mut stream).await;
        assert_eq!(second.job.as_ref().unwrap().attempt, 2);
        let r = b.nack(&second, "boom 2").await.unwrap();
        assert_eq!(r.state(), pb::JobState::Dead);
        let job = b.job(&id).await;
        assert_eq!(
            (job.state(), job.last_error.as_str(), job.attempt),
            (pb::JobState::Dead, "boom 2", 2)
        );

        let dead = pb::ListJobsRequest {
            state: pb::JobState::Dead.into(),
            ..Default::default()
        };
        let listed = b.admin.clone().list_jobs(dead).await.unwrap().into_inner();
        assert_eq!(
            listed
                .jobs
                .iter()
                .map(|j| j.id.as_str())
                .collect::<Vec<_>>(),
            [id.as_str()]
        );

        b.admin
            .clone()
            .retry_job(pb::RetryJobRequest { job_id: id.clone() })
            .await
            .unwrap();
        let third = next_job(&mut stream).await;
        assert_eq!(third.job.as_ref().unwrap().attempt, 1, "attempts reset");
        b.ack(&third).await.unwrap();
        assert_eq!(b.state(&id).await, pb::JobState::Succeeded);
        let stats = b.queue_stats("default").await;
        assert_eq!(
            (stats.nacked_total, stats.dead_total, stats.acked_total),
            (2, 1, 1)
        );
    }
}

every_backend! {
    async fn nack_dead_and_retry_after_are_honoured() {
        let b = TestBroker::start().await;
        let a = b.enqueue("t").await;
        let c = b.enqueue("t").await;
        let mut stream = b.lease("w1", 2).await;
        let la = next_job(&mut stream).await;
        let lc = next_job(&mut stream).await;
        let dead = pb::NackRequest {
            job_id: a.clone(),
            lease_id: la.lease_id,
            dead: true,
            ..Default::default()
        };
        assert_eq!(
            b.broker
                .clone()
                .nack(dead)
                .await
                .unwrap()
                .into_inner()
                .state(),
            pb::JobState::Dead
        );
        let later = pb::NackRequest {
            job_id: c.clone(),
            lease_id: lc.lease_id,
            retry_after: secs(3600),
            ..Default::default()
        };
        let r = b.broker.clone().nack(later).await.unwrap().into_inner();
        let next = r.next_attempt_at.unwrap();
        let run_at = b.job(&c).await.run_at.unwrap();
        assert_eq!(next, run_at);
        assert_eq!(b.state(&c).await, pb::JobState::Scheduled);
    }
}

every_backend! {
    async fn expired_lease_is_redelivered_with_attempt_counted() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let req = pb::LeaseRequest {
            worker_id: "slow".into(),
            max_in_flight: 1,
            lease_duration: secs(1),
            ..Default::default()
        };
        let mut stream = b.lease_req(req).await;
        let first = next_job(&mut stream).await;
        // No ack: the lease runs out, the attempt fails, and after the backoff
        // the job comes back on the same stream (its slot freed by the expiry).
        let second = next_job(&mut stream).await;
        assert_eq!(job_id(&second), id);
        assert_ne!(second.lease_id, first.lease_id);
        let job = second.job.as_ref().unwrap();
        assert_eq!((job.attempt, job.last_error.as_str()), (2, "lease expired"));
        assert_eq!(code(b.ack(&first).await), Code::FailedPrecondition);
        assert_eq!(b.queue_stats("default").await.expired_total, 1);
    }
}

every_backend! {
    async fn extend_keeps_a_long_job_leased() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        // A 4 s lease, extended by 4 s every 1.5 s: the job runs 4.5 s, past
        // its first lease, and a machine stalled for 2 s still extends in time.
        let req = pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            lease_duration: secs(4),
            ..Default::default()
        };
        let mut stream = b.lease_req(req).await;
        let leased = next_job(&mut stream).await;
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1500)).await; // the job "runs"
            let extend = pb::ExtendRequest {
                job_id: id.clone(),
                lease_id: leased.lease_id.clone(),
                extend_by: secs(4),
            };
            let r = b.broker.clone().extend(extend).await.unwrap().into_inner();
            assert!(!r.cancel_requested);
        }
        b.ack(&leased).await.unwrap();
        assert_eq!(b.job(&id).await.attempt, 1);
    }
}

every_backend! {
    async fn release_gives_the_job_back_without_using_an_attempt() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        // Once the stream is closed, nothing takes the released job again.
        let leased = b.lease_then_close_stream("w1").await;
        let release = pb::ReleaseRequest {
            key_delay: None,
            job_id: id.clone(),
            lease_id: leased.lease_id.clone(),
            delay: None,
        };
        let r = b
            .broker
            .clone()
            .release(release)
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.state(), pb::JobState::Ready);
        let job = b.job(&id).await;
        assert_eq!((job.state(), job.attempt), (pb::JobState::Ready, 0));
        let mut again = b.lease("w2", 1).await;
        assert_eq!(next_job(&mut again).await.job.unwrap().attempt, 1);
    }
}

fn uuid_zero() -> String {
    "00000000-0000-0000-0000-000000000000".into()
}

shared_backends! {
    /// Behind a balancer that spreads calls, a worker's Lease stream is on
    /// one broker and its Acks, Nacks and Releases reach another: the
    /// stream's broker frees the slot when told, not at its next poll
    /// (set here past the test's length, so only the notification can).
    async fn a_lease_resolved_through_another_broker_frees_its_slot_at_once() {
        let mut config = test_config();
        sluice_e2e::backends::set_poll_interval(&mut config, Duration::from_secs(3600));
        let streams_on = TestBroker::with_config(config.clone()).await;
        let resolves_on = TestBroker::with_config(config).await;
        let mut stream = streams_on.lease("w1", 1).await;
        let mut broker = resolves_on.broker.clone();
        for round in 0..3 {
            // One job for each way of resolving; each comes only once the
            // slot of the one before is free again.
            for _ in 0..3 {
                streams_on.enqueue("t").await;
            }
            for way in ["ack", "nack", "release"] {
                let leased = next_job(&mut stream).await;
                let (job_id, lease_id) = (job_id(&leased).to_owned(), leased.lease_id.clone());
                match way {
                    "ack" => resolves_on.ack(&leased).await.map(drop),
                    "nack" => broker
                        .nack(pb::NackRequest { job_id, lease_id, error: "no".into(), dead: true, ..Default::default() })
                        .await
                        .map(drop),
                    _ => broker
                        .release(pb::ReleaseRequest {
                            job_id,
                            lease_id,
                            delay: secs(3600),
                            key_delay: None,
                        })
                        .await
                        .map(drop),
                }
                .unwrap_or_else(|e| panic!("round {round}, {way}: {e}"));
            }
        }
    }
}
