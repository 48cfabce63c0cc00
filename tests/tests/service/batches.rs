//! The batched paths: EnqueueBatch, AckBatch and LeaseBatches.

#![allow(clippy::unwrap_used)]

use sluice_e2e::in_process::*;
use sluice_proto::v1 as pb;
use tonic::Code;

/// EnqueueBatch of `jobs`: the call's own status, or each job's result.
fn job(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        ..Default::default()
    }
}

every_backend! {
    async fn enqueue_batch_answers_each_job_in_order() {
        let b = TestBroker::start().await;
        let jobs = vec![job("a"), job(""), job("c")];
        let results = b.enqueue_batch(jobs).await.unwrap();
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].code, 0);
        assert_eq!(results[1].code, Code::InvalidArgument as i32);
        assert!(
            results[1].message.starts_with("job_type"),
            "{}",
            results[1].message
        );
        assert!(results[1].job_id.is_empty());
        assert_eq!(b.state(&results[2].job_id).await, pb::JobState::Ready);
        assert_eq!(b.queue_stats("default").await.enqueued_total, 2);
    }
}

every_backend! {
    async fn batches_over_the_limit_are_refused_whole() {
        let b = TestBroker::start().await;
        let jobs = vec![job("a"); 10_001];
        let status = b.enqueue_batch(jobs).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("jobs"), "{}", status.message());
        assert!(
            b.find_queue_stats("default").await.is_none(),
            "no job of a refused batch reached the queue"
        );
    }
}

every_backend! {
    async fn lease_batches_pack_ready_jobs_and_ack_batch_resolves_them() {
        let b = TestBroker::start().await;
        let jobs = vec![job("t"); 5];
        let ids: Vec<String> = b
            .enqueue_batch(jobs)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        let mut stream = b.lease_batches("w", 10).await;
        let batch = within("the next batch", stream.message())
            .await
            .unwrap()
            .unwrap();
        let leased: Vec<&str> = batch.jobs.iter().map(job_id).collect();
        assert_eq!(
            leased,
            ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "all five in one message, in order"
        );

        let mut acks: Vec<pb::AckRequest> = batch
            .jobs
            .iter()
            .map(|j| pb::AckRequest {
                job_id: job_id(j).into(),
                lease_id: j.lease_id.clone(),
                ..Default::default()
            })
            .collect();
        acks.push(acks[0].clone());
        acks.push(pb::AckRequest {
            job_id: "nope".into(),
            lease_id: "nope".into(),
            ..Default::default()
        });
        let results = b
            .broker
            .clone()
            .ack_batch(pb::AckBatchRequest { acks })
            .await
            .unwrap()
            .into_inner()
            .results;
        let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
        let (ok, stale, bad) = (
            0,
            Code::FailedPrecondition as i32,
            Code::InvalidArgument as i32,
        );
        assert_eq!(codes, [ok, ok, ok, ok, ok, stale, bad]);
        for id in &ids {
            assert_eq!(b.state(id).await, pb::JobState::Succeeded);
        }
    }
}

every_backend! {
    async fn enqueue_batch_is_refused_while_draining() {
        let b = TestBroker::start().await;
        let mut stream = b.lease("w", 1).await;
        b.enqueue("t").await;
        next_job(&mut stream).await;
        b.begin_shutdown();
        assert_stream_ends(&mut stream).await;
        let status = b.enqueue_batch(vec![job("t")]).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
    }
}

every_backend! {
    async fn lease_batches_stay_small_enough_for_default_clients() {
        let b = TestBroker::start().await;
        let big = pb::EnqueueRequest {
            job_type: "t".into(),
            payload: vec![7u8; 600 * 1024].into(),
            ..Default::default()
        };
        for _ in 0..5 {
            b.enqueue_req(big.clone()).await;
        }
        let mut stream = b.lease_batches("w", 10).await;
        let mut received = 0;
        while received < 5 {
            let batch = within("the next batch", stream.message())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                batch.jobs.len(),
                1,
                "two 600 KiB jobs would pass the 1 MiB batch size"
            );
            received += batch.jobs.len();
        }
    }
}

every_backend! {
    async fn the_largest_batches_go_through_whole() {
        // A store may split a batch's writes (Redis sends its set writes
        // in steps of 1,000 arguments): nothing of the largest batch is
        // lost or answered twice.
        let b = TestBroker::start().await;
        let jobs = vec![job("t"); sluice_limits::MAX_BATCH];
        let results = b.enqueue_batch(jobs).await.unwrap();
        assert!(results.iter().all(|r| r.code == 0));
        assert_eq!(b.queue_stats("default").await.ready, 10_000);
        let mut stream = b.lease_batches("w", 10_000).await;
        let mut acks = Vec::new();
        while acks.len() < 10_000 {
            let batch = within("the next batch", stream.message())
                .await
                .unwrap()
                .unwrap();
            acks.extend(batch.jobs.iter().map(|j| pb::AckRequest {
                job_id: job_id(j).into(),
                lease_id: j.lease_id.clone(),
                ..Default::default()
            }));
        }
        assert_eq!(acks.len(), 10_000, "no job leased twice");
        let results = b
            .broker
            .clone()
            .ack_batch(pb::AckBatchRequest { acks })
            .await
            .unwrap()
            .into_inner()
            .results;
        assert!(results.iter().all(|r| r.code == 0));
        let stats = b.queue_stats("default").await;
        assert_eq!((stats.ready, stats.leased, stats.succeeded), (0, 0, 10_000));
    }
}
