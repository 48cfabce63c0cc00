//! The stream calls: EnqueueStream (a result per request, tagged with its
//! seq, in order; a bad request failing alone; the window; a broken
//! stream; the drain) and Work sessions (jobs and report results on one
//! stream, credit, fencing, the drain, reconnection), on every backend.
//! Scopes and revocation by SIGHUP are in `auth.rs` with the other
//! credential tests.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use sluice_e2e::in_process::*;
use sluice_e2e::streams::{ProducerStream, WorkSession, end_code};
use sluice_e2e::{job, job_in};
use sluice_proto::v1 as pb;
use sluice_proto::v1::work_request::Kind;
use sluice_proto::v1::work_result::Answer;
use tonic::Code;

/// A job with an idempotency key.
fn keyed(key: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        idempotency_key: key.into(),
        ..job("t", b"")
    }
}

every_backend! {
    async fn enqueue_stream_answers_each_request_with_its_seq_in_order() {
        let b = TestBroker::start().await;
        let mut producer = ProducerStream::open(&b.channel, None).await.unwrap();
        producer.send(7, Some(job("a", b"1"))).await;
        producer.send(3, Some(job("", b"bad"))).await;
        producer.send(9, None).await;
        producer.send(11, Some(job_in("other", "b", b"2"))).await;
        let results = producer.results(4).await;
        let seqs: Vec<u64> = results.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [7, 3, 9, 11], "in the order sent, each with its seq");
        assert_eq!(results[0].code, 0);
        assert_eq!(results[1].code, Code::InvalidArgument as i32);
        assert!(results[1].message.starts_with("job_type"), "{}", results[1].message);
        assert!(results[1].job_id.is_empty());
        assert_eq!(results[2].code, Code::InvalidArgument as i32);
        assert!(results[2].message.starts_with("job"), "{}", results[2].message);
        assert_eq!(results[3].code, 0);
        assert_eq!(b.state(&results[0].job_id).await, pb::JobState::Ready);
        assert_eq!(b.job(&results[3].job_id).await.queue, "other");

        // The stream goes on after a bad request; a key seen before is a
        // duplicate of its job.
        producer.send(12, Some(keyed("k"))).await;
        producer.send(13, Some(keyed("k"))).await;
        let results = producer.results(2).await;
        assert_eq!(results[0].code, 0);
        assert!(!results[0].duplicate);
        assert!(results[1].duplicate);
        assert_eq!(results[0].job_id, results[1].job_id);

        producer.close();
        assert_eq!(end_code(&mut producer.responses).await.0, Code::Ok);
    }
}

every_backend! {
    async fn enqueue_stream_reads_at_most_its_window_ahead() {
        let b = TestBroker::start().await;
        let mut producer = ProducerStream::open(&b.channel, None).await.unwrap();
        let n = 3 * sluice_limits::STREAM_WINDOW as u64;
        // Everything is sent before a result is read: the broker groups
        // what it reads, never more than the window at once.
        for seq in 0..n {
            producer.send(seq, Some(job("t", b""))).await;
        }
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < n {
            let response = producer.next().await.unwrap().unwrap();
            assert!(
                response.results.len() <= sluice_limits::STREAM_WINDOW,
                "{} results in one group",
                response.results.len()
            );
            seqs.extend(response.results.iter().map(|r| r.seq));
            assert!(response.results.iter().all(|r| r.code == 0));
        }
        assert_eq!(seqs, (0..n).collect::<Vec<_>>());
        assert_eq!(b.queue_stats("default").await.enqueued_total, n);
    }
}

every_backend! {
    async fn a_broken_enqueue_stream_keeps_what_it_answered_and_a_retry_is_a_duplicate() {
        let b = TestBroker::start().await;
        let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
        let mut first = ProducerStream::open(&b.channel, None).await.unwrap();
        for (seq, key) in keys.iter().enumerate() {
            first.send(seq as u64, Some(keyed(key))).await;
        }
        // Only the first message of results is read, then the stream is
        // cut with the rest unanswered (to this producer).
        let answered = first.next().await.unwrap().unwrap().results;
        assert!(!answered.is_empty());
        drop(first);

        let mut again = ProducerStream::open(&b.channel, None).await.unwrap();
        for (seq, key) in keys.iter().enumerate() {
            again.send(seq as u64, Some(keyed(key))).await;
        }
        let retried = again.results(keys.len()).await;
        for reported in &answered {
            let retry = &retried[reported.seq as usize];
            assert!(retry.duplicate, "a reported job is a duplicate on retry");
            assert_eq!(retry.job_id, reported.job_id);
        }
        let ids: HashSet<&str> = retried.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids.len(), keys.len(), "one job per key");
        eventually("every job enqueued exactly once", || async {
            b.queue_stats("default").await.enqueued_total == keys.len() as u64
        })
        .await;
    }
}

every_backend! {
    async fn enqueue_stream_ends_unavailable_when_the_broker_drains() {
        let b = TestBroker::start().await;
        let mut producer = ProducerStream::open(&b.channel, None).await.unwrap();
        producer.send(1, Some(job("t", b""))).await;
        assert_eq!(producer.results(1).await[0].code, 0);
        b.begin_shutdown();
        let (code, message) = end_code(&mut producer.responses).await;
        assert_eq!(code, Code::Unavailable, "{message}");
    }
}

every_backend! {
    async fn a_work_session_leases_jobs_and_answers_each_report_in_order() {
        let b = TestBroker::start().await;
        let ids: Vec<String> = enqueue_n(&b, 4).await;
        let mut session = WorkSession::start(&b.channel, "w", 8).await;
        let mut leased = Vec::new();
        for _ in 0..4 {
            leased.push(session.next_job().await);
        }
        let got: Vec<&str> = leased.iter().map(job_id).collect();
        assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());

        // Every report in one go; the results come back with their seqs.
        let acked = session.send(Some(Kind::Ack(ack_of(&leased[0])))).await;
        let nacked = session
            .send(Some(Kind::Nack(pb::NackRequest {
                job_id: job_id(&leased[1]).into(),
                lease_id: leased[1].lease_id.clone(),
                error: "boom".into(),
                dead: true,
                ..Default::default()
            })))
            .await;
        let extended = session
            .send(Some(Kind::Extend(pb::ExtendRequest {
                job_id: job_id(&leased[2]).into(),
                lease_id: leased[2].lease_id.clone(),
                extend_by: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            })))
            .await;
        let bad = session
            .send(Some(Kind::Ack(pb::AckRequest {
                job_id: "not-a-uuid".into(),
                lease_id: leased[3].lease_id.clone(),
                ..Default::default()
            })))
            .await;
        let released = session
            .send(Some(Kind::Release(pb::ReleaseRequest {
                key_delay: None,
                job_id: job_id(&leased[3]).into(),
                lease_id: leased[3].lease_id.clone(),
                delay: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
            })))
            .await;
        let empty = session.send(None).await;
        let reopen = session
            .send(Some(Kind::Open(pb::LeaseRequest::default())))
            .await;

        let r = session.result().await;
        assert_eq!((r.seq, r.code), (acked, 0));
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (nacked, 0));
        match r.answer {
            Some(Answer::Nack(n)) => assert_eq!(n.state(), pb::JobState::Dead),
            other => panic!("a Nack's answer, got {other:?}"),
        }
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (extended, 0));
        assert!(matches!(r.answer, Some(Answer::Extend(ref e)) if e.lease_expires_at.is_some() && !e.cancel_requested));
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (bad, Code::InvalidArgument as i32), "{}", r.message);
        assert!(r.message.starts_with("job_id"), "{}", r.message);
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (released, 0));
        assert!(matches!(r.answer, Some(Answer::Release(ref rel)) if rel.state() == pb::JobState::Scheduled));
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (empty, Code::InvalidArgument as i32));
        let r = session.result().await;
        assert_eq!((r.seq, r.code), (reopen, Code::InvalidArgument as i32));

        assert_eq!(b.state(&ids[0]).await, pb::JobState::Succeeded);
        assert_eq!(b.state(&ids[1]).await, pb::JobState::Dead);
        assert_eq!(b.state(&ids[2]).await, pb::JobState::Leased);
        assert_eq!(b.state(&ids[3]).await, pb::JobState::Scheduled);
        assert_eq!(b.job(&ids[1]).await.last_error, "boom");

        session.close();
        assert_eq!(session.ended().await.0, Code::Ok);
    }
}

/// Enqueues `n` jobs of type `t`; their ids in order.
async fn enqueue_n(b: &TestBroker, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(b.enqueue("t").await);
    }
    ids
}

every_backend! {
    async fn a_work_session_must_open_first() {
        let b = TestBroker::start().await;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::WorkRequest {
            seq: 1,
            kind: Some(Kind::Credit(pb::WorkCredit { window: 1 })),
        })
        .await
        .unwrap();
        let status = b
            .broker
            .clone()
            .work(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("open"), "{}", status.message());

        let refused = WorkSession::open(&b.channel, None, pb::LeaseRequest {
            worker_id: String::new(),
            max_in_flight: 1,
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains("worker_id"), "{}", refused.message());
    }
}

every_backend! {
    async fn credit_sets_how_many_jobs_a_session_holds() {
        let b = TestBroker::start().await;
        let mut session = WorkSession::start(&b.channel, "w", 4).await;
        let r = session.report(Kind::Credit(pb::WorkCredit { window: 1 })).await;
        assert_eq!(r.code, 0, "{}", r.message);
        enqueue_n(&b, 4).await;
        let first = session.next_job().await;
        // The window holds: one job leased, three ready.
        eventually("one job leased and three ready", || async {
            let stats = b.queue_stats("default").await;
            stats.leased == 1 && stats.ready == 3
        })
        .await;
        let workers = b.workers().await;
        assert_eq!(workers[0].in_flight, 1);
        assert_eq!(workers[0].max_in_flight, 1);

        // An Ack frees the slot: the next job comes, still one at a time.
        assert_eq!(session.ack(&first).await.code, 0);
        let second = session.next_job().await;
        assert_ne!(job_id(&second), job_id(&first));
        assert_eq!(b.queue_stats("default").await.leased, 1);

        // A wider window lets the rest come at once; credit 0 stops them.
        let r = session.report(Kind::Credit(pb::WorkCredit { window: 3 })).await;
        assert_eq!(r.code, 0);
        let third = session.next_job().await;
        let fourth = session.next_job().await;
        let r = session.report(Kind::Credit(pb::WorkCredit { window: 0 })).await;
        assert_eq!(r.code, 0);
        b.enqueue("t").await;
        for job in [&second, &third, &fourth] {
            assert_eq!(session.ack(job).await.code, 0);
        }
        assert_eq!(session.unread_jobs(), 0);
        assert_eq!(b.queue_stats("default").await.ready, 1, "credit 0 takes none");

        // Over the opening max_in_flight: refused alone.
        let r = session.report(Kind::Credit(pb::WorkCredit { window: 5 })).await;
        assert_eq!(r.code, Code::InvalidArgument as i32);
        assert!(r.message.contains("max_in_flight of 4"), "{}", r.message);
        let r = session.report(Kind::Credit(pb::WorkCredit { window: 1 })).await;
        assert_eq!(r.code, 0);
        session.next_job().await;
    }
}

every_backend! {
    async fn a_stale_lease_is_fenced_over_work() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut session = WorkSession::start(&b.channel, "w", 1).await;
        let first = session.next_job().await;
        // A retry leases the job again with a new lease: the old one is stale.
        let r = session
            .report(Kind::Nack(pb::NackRequest {
                job_id: id.clone(),
                lease_id: first.lease_id.clone(),
                retry_after: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
                ..Default::default()
            }))
            .await;
        assert_eq!(r.code, 0, "{}", r.message);
        let second = session.next_job().await;
        assert_eq!(job_id(&second), id);
        assert_ne!(second.lease_id, first.lease_id);
        for stale in [
            Kind::Ack(ack_of(&first)),
            Kind::Extend(pb::ExtendRequest {
                job_id: id.clone(),
                lease_id: first.lease_id.clone(),
                extend_by: None,
            }),
        ] {
            let r = session.report(stale).await;
            assert_eq!(r.code, Code::FailedPrecondition as i32, "{}", r.message);
        }
        assert_eq!(session.ack(&second).await.code, 0);
        assert_eq!(b.state(&id).await, pb::JobState::Succeeded);
    }
}

every_backend! {
    async fn a_reconnected_session_keeps_its_held_leases() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut first = WorkSession::start(&b.channel, "w", 1).await;
        let leased = first.next_job().await;
        // The worker's connection drops; it comes back with what it holds.
        drop(first);
        let mut again = WorkSession::open(&b.channel, None, pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            held_leases: vec![pb::HeldLease {
                job_id: id.clone(),
                lease_id: leased.lease_id.clone(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        eventually("the session is the worker's", || async {
            b.workers().await.iter().any(|w| w.worker_id == "w" && w.in_flight == 1)
        })
        .await;
        assert_eq!(again.ack(&leased).await.code, 0);
        assert_eq!(b.state(&id).await, pb::JobState::Succeeded);
    }
}

every_backend! {
    async fn a_draining_broker_tells_the_session_and_takes_its_reports() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut session = WorkSession::start(&b.channel, "w", 2).await;
        let leased = session.next_job().await;
        assert_eq!(job_id(&leased), id);
        b.begin_shutdown();
        session.wait_draining().await;
        // The running job is reported on the session (which lets the
        // drain end: the broker stops once nothing is leased).
        assert_eq!(session.ack(&leased).await.code, 0);
        assert_eq!(session.unread_jobs(), 0);
        session.close();
        assert_eq!(session.ended().await.0, Code::Ok);
        let report = b.stopped().await;
        assert_eq!(report.still_leased, 0);
    }
}

every_backend! {
    async fn a_draining_broker_ends_an_idle_session_once_its_drain_is_over() {
        let b = TestBroker::start().await;
        let mut session = WorkSession::start(&b.channel, "w", 2).await;
        b.begin_shutdown();
        session.wait_draining().await;
        assert_eq!(session.ended().await.0, Code::Ok);
    }
}
