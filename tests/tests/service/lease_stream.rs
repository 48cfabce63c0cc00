//! Lease streams: push delivery, ordering, max_in_flight, type filters,
//! closing streams.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;

every_backend! {
    async fn waiting_stream_receives_job_enqueued_after_it_started() {
        let b = TestBroker::start().await;
        let mut stream = b.lease("w1", 1).await;
        assert_quiet(&mut stream, Duration::from_millis(100)).await;
        let id = b.enqueue("email").await;
        let leased = next_job(&mut stream).await;
        assert_eq!(job_id(&leased), id);
        let job = leased.job.as_ref().unwrap();
        assert_eq!(
            (job.state(), job.attempt, job.worker_id.as_str()),
            (pb::JobState::Leased, 1, "w1")
        );
        assert!(leased.lease_expires_at.is_some());
    }
}

every_backend! {
    async fn max_in_flight_holds_exactly() {
        let b = TestBroker::start().await;
        for _ in 0..5 {
            b.enqueue("t").await;
        }
        let mut stream = b.lease("w1", 2).await;
        let first = next_job(&mut stream).await;
        let _second = next_job(&mut stream).await;
        assert_quiet(&mut stream, Duration::from_millis(200)).await;
        let workers = b.workers().await;
        assert_eq!((workers[0].in_flight, workers[0].max_in_flight), (2, 2));
        b.ack(&first).await.unwrap();
        let _third = next_job(&mut stream).await;
        assert_quiet(&mut stream, Duration::from_millis(200)).await;
        assert_eq!(b.queue_stats("default").await.leased, 2);
    }
}

every_backend! {
    async fn priority_then_fifo_order() {
        let b = TestBroker::start().await;
        let low1 = b.enqueue("t").await;
        let high = b
            .enqueue_req(pb::EnqueueRequest {
                job_type: "t".into(),
                priority: 9,
                ..Default::default()
            })
            .await;
        let low2 = b.enqueue("t").await;
        let mut stream = b.lease("w1", 3).await;
        let mut order = Vec::new();
        for _ in 0..3 {
            order.push(job_id(&next_job(&mut stream).await).to_owned());
        }
        assert_eq!(order, [high, low1, low2]);
    }
}

every_backend! {
    async fn job_types_filter_hands_out_only_those_types() {
        let b = TestBroker::start().await;
        let resize = b.enqueue("resize").await;
        let email = b.enqueue("email").await;
        let mut stream = b
            .lease_req(pb::LeaseRequest {
                worker_id: "mailer".into(),
                job_types: vec!["email".into()],
                max_in_flight: 5,
                ..Default::default()
            })
            .await;
        assert_eq!(job_id(&next_job(&mut stream).await), email);
        assert_quiet(&mut stream, Duration::from_millis(200)).await;
        assert_eq!(b.state(&resize).await, pb::JobState::Ready);
    }
}

every_backend! {
    async fn streams_take_only_their_queues() {
        let b = TestBroker::start().await;
        let other = b
            .enqueue_req(pb::EnqueueRequest {
                queue: "other".into(),
                job_type: "t".into(),
                ..Default::default()
            })
            .await;
        let mut default_stream = b.lease("w1", 5).await;
        let mut other_stream = b
            .lease_req(pb::LeaseRequest {
                worker_id: "w2".into(),
                queues: vec!["other".into()],
                max_in_flight: 5,
                ..Default::default()
            })
            .await;
        assert_eq!(job_id(&next_job(&mut other_stream).await), other);
        assert_quiet(&mut default_stream, Duration::from_millis(100)).await;
    }
}

every_backend! {
    async fn closed_stream_keeps_its_leases_so_a_draining_worker_can_ack() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let leased = b.lease_then_close_stream("w1").await;
        assert_eq!(b.state(&id).await, pb::JobState::Leased);
        b.ack(&leased).await.unwrap();
        assert_eq!(b.state(&id).await, pb::JobState::Succeeded);
    }
}

every_backend! {
    async fn jobs_are_shared_between_streams_and_each_runs_once() {
        let b = TestBroker::start().await;
        // Room for all 8 on either stream: the even split is the broker's doing.
        let mut s1 = b.lease("w1", 8).await;
        let mut s2 = b.lease("w2", 8).await;
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(b.enqueue("t").await);
        }
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(job_id(&next_job(&mut s1).await).to_owned());
            got.push(job_id(&next_job(&mut s2).await).to_owned());
        }
        assert_quiet(&mut s1, Duration::from_millis(100)).await;
        assert_quiet(&mut s2, Duration::from_millis(100)).await;
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
    }
}

every_backend! {
    async fn a_stream_whose_client_stops_reading_for_a_lease_duration_is_closed_and_its_jobs_come_back() {
        const JOBS: usize = 8;
        let b = TestBroker::start().await;
        // The channel behind a stream holds max_in_flight messages, and the
        // broker only fills it past what HTTP/2 lets through: the client's
        // window (2 MiB a stream) and a message or two that h2 and tonic hold.
        // Jobs of the largest payload fill those in two messages, so the
        // channel then fills with messages whose leases expired unread.
        let payload = vec![7; test_config().max_payload];
        let mut ids = Vec::new();
        for _ in 0..JOBS {
            ids.push(b.enqueue_req(sluice_e2e::job("t", &payload)).await);
        }
        // On a connection of its own, so that its unread data holds up no other call.
        let mut unread = BrokerClient::new(connect(b.addr).await)
            .lease(pb::LeaseRequest {
                worker_id: "unread".into(),
                max_in_flight: 2,
                lease_duration: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(b.workers().await.len(), 1);

        eventually("the broker to close the unread stream", || async {
            b.workers().await.is_empty()
        })
        .await;
        // Closed by the broker: once read, it ends.
        within("the closed stream to end", async {
            while unread.message().await.unwrap().is_some() {}
        })
        .await;
        eventually("every job to be READY again", || async {
            let stats = b.queue_stats("default").await;
            (stats.ready, stats.leased) == (JOBS as u64, 0)
        })
        .await;
        assert!(b.queue_stats("default").await.expired_total > 0);

        let mut reader = b.lease("reader", JOBS as u32).await;
        let mut got = Vec::new();
        for _ in 0..JOBS {
            got.push(job_id(&next_job(&mut reader).await).to_owned());
        }
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
    }
}
