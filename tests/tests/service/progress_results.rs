//! Progress and results: a worker's Progress report kept on the running
//! job (fenced by its lease, capped, answered with the cancel flag), an
//! Ack's result kept with the SUCCEEDED job, both shown by GetJob and
//! ListJobs, through the unary calls, AckBatch and a Work session, and
//! kept across a restart, on every backend.

#![allow(clippy::unwrap_used)]

use sluice_broker::config::StoreConfig;
use sluice_e2e::in_process::*;
use sluice_e2e::streams::WorkSession;
use sluice_e2e::{job, scratch_dir};
use sluice_limits::{MAX_PROGRESS_MESSAGE_BYTES, MAX_RESULT_BYTES};
use sluice_proto::v1 as pb;
use sluice_proto::v1::work_request::Kind;
use sluice_proto::v1::work_result::Answer;
use tonic::Code;

fn progress_of(leased: &pb::LeasedJob, percent: u32, message: &str) -> pb::ProgressRequest {
    pb::ProgressRequest {
        job_id: job_id(leased).to_owned(),
        lease_id: leased.lease_id.clone(),
        percent,
        message: message.into(),
    }
}

fn ack_with(leased: &pb::LeasedJob, result: &[u8]) -> pb::AckRequest {
    pb::AckRequest {
        result: result.to_vec().into(),
        ..ack_of(leased)
    }
}

/// The job's progress as (percent, message, attempt), and that it has a time.
fn progress(job: &pb::Job) -> Option<(u32, String, u32)> {
    let p = job.progress.as_ref()?;
    assert!(p.updated_at.is_some(), "a progress has its time");
    Some((p.percent, p.message.clone(), p.attempt))
}

async fn listed(b: &TestBroker, id: &str) -> pb::Job {
    let mut admin = b.admin.clone();
    let page = admin
        .list_jobs(pb::ListJobsRequest {
            queue: "default".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    page.jobs.into_iter().find(|j| j.id == id).unwrap()
}

every_backend! {
    async fn progress_is_kept_on_the_running_job_and_a_result_with_the_finished_one() {
        let b = TestBroker::start().await;
        let id = b.enqueue("import").await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;
        let mut broker = b.broker.clone();
        assert_eq!(progress(&b.job(&id).await), None, "none before a report");

        let answer = broker
            .progress(progress_of(&leased, 40, r#"{"rows": 400}"#))
            .await
            .unwrap()
            .into_inner();
        assert!(!answer.cancel_requested);
        assert_eq!(
            progress(&b.job(&id).await),
            Some((40, r#"{"rows": 400}"#.into(), 1))
        );
        broker.progress(progress_of(&leased, 90, "almost")).await.unwrap();
        assert_eq!(progress(&b.job(&id).await), Some((90, "almost".into(), 1)), "replaced");
        assert_eq!(progress(&listed(&b, &id).await), Some((90, "almost".into(), 1)));
        assert_eq!(b.state(&id).await, pb::JobState::Leased, "a report resolves nothing");

        let result = b"\x00rows imported: 1000";
        broker.ack(ack_with(&leased, result)).await.unwrap();
        let done = b.job(&id).await;
        assert_eq!(done.state(), pb::JobState::Succeeded);
        assert_eq!(&done.result[..], result, "kept byte for byte");
        assert_eq!(progress(&done), Some((90, "almost".into(), 1)), "the last report stays");
        assert_eq!(listed(&b, &id).await.result, done.result);

        // After the Ack the lease is stale.
        assert_eq!(
            code(broker.progress(progress_of(&leased, 100, "")).await),
            Code::FailedPrecondition
        );
        let unknown = pb::ProgressRequest {
            job_id: uuid::Uuid::nil().to_string(),
            ..progress_of(&leased, 1, "")
        };
        assert_eq!(code(broker.progress(unknown).await), Code::NotFound);

        // An Ack without a result keeps none.
        let plain = b.enqueue("import").await;
        let leased = next_job(&mut stream).await;
        b.ack(&leased).await.unwrap();
        let done = b.job(&plain).await;
        assert!(done.result.is_empty() && done.progress.is_none());
    }
}

every_backend! {
    async fn oversized_progress_and_results_are_refused_naming_the_field() {
        let b = TestBroker::start().await;
        let id = b.enqueue("t").await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;
        let mut broker = b.broker.clone();

        let status = broker.progress(progress_of(&leased, 101, "")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("percent"), "{}", status.message());
        let long = "x".repeat(MAX_PROGRESS_MESSAGE_BYTES + 1);
        let status = broker.progress(progress_of(&leased, 5, &long)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("message"), "{}", status.message());
        assert!(status.message().contains("1024"), "{}", status.message());
        // Text on every store: PostgreSQL's refuses NUL, so every backend does.
        let status = broker.progress(progress_of(&leased, 5, "a\0b")).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("message"), "{}", status.message());

        let big = vec![7u8; MAX_RESULT_BYTES + 1];
        let status = broker.ack(ack_with(&leased, &big)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("result"), "{}", status.message());
        assert!(status.message().contains("65536"), "{}", status.message());
        let job = b.job(&id).await;
        assert_eq!(job.state(), pb::JobState::Leased, "refusals change nothing");
        assert_eq!(job.progress, None);

        // At the limits both are taken.
        broker
            .progress(progress_of(&leased, 100, &"x".repeat(MAX_PROGRESS_MESSAGE_BYTES)))
            .await
            .unwrap();
        let full = vec![7u8; MAX_RESULT_BYTES];
        broker.ack(ack_with(&leased, &full)).await.unwrap();
        assert_eq!(b.job(&id).await.result.len(), MAX_RESULT_BYTES);
    }
}

every_backend! {
    async fn progress_answers_a_cancel_and_names_its_attempt() {
        let b = TestBroker::start().await;
        let id = b.enqueue_req(pb::EnqueueRequest {
            max_attempts: 3,
            ..job("t", b"")
        })
        .await;
        let mut stream = b.lease("w1", 1).await;
        let first = next_job(&mut stream).await;
        let mut broker = b.broker.clone();
        broker.progress(progress_of(&first, 30, "first try")).await.unwrap();
        broker
            .nack(pb::NackRequest {
                key_delay: None,
                job_id: id.clone(),
                lease_id: first.lease_id.clone(),
                error: "boom".into(),
                retry_after: Some(prost_types::Duration::default()),
                dead: false,
            })
            .await
            .unwrap();
        // The failed attempt's report stays, naming its attempt, until the
        // next attempt reports.
        assert_eq!(progress(&b.job(&id).await), Some((30, "first try".into(), 1)));

        let mut admin = b.admin.clone();
        let second = next_job(&mut stream).await;
        assert_eq!(second.job.as_ref().unwrap().attempt, 2);
        admin
            .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
            .await
            .unwrap();
        let answer = broker
            .progress(progress_of(&second, 60, "second try"))
            .await
            .unwrap()
            .into_inner();
        assert!(answer.cancel_requested, "the report carries the cancel");
        assert_eq!(progress(&b.job(&id).await), Some((60, "second try".into(), 2)));
        broker
            .release(pb::ReleaseRequest {
                key_delay: None,
                job_id: id.clone(),
                lease_id: second.lease_id.clone(),
                delay: None,
            })
            .await
            .unwrap();
        assert_eq!(b.state(&id).await, pb::JobState::Cancelled);

        // RetryJob starts a new life: the old progress goes.
        admin.retry_job(pb::RetryJobRequest { job_id: id.clone() }).await.unwrap();
        assert_eq!(progress(&b.job(&id).await), None);
    }
}

every_backend! {
    async fn work_sessions_and_ack_batches_carry_progress_and_results() {
        let b = TestBroker::start().await;
        let mut session = WorkSession::start(&b.channel, "w1", 2).await;
        let first = b.enqueue("t").await;
        let second = b.enqueue("t").await;
        let a = session.next_job().await;
        let c = session.next_job().await;
        let result = session.report(Kind::Progress(progress_of(&a, 50, "half"))).await;
        assert_eq!(result.code, 0, "{}", result.message);
        assert!(matches!(result.answer, Some(Answer::Progress(p)) if !p.cancel_requested));
        let result = session.report(Kind::Progress(progress_of(&c, 500, ""))).await;
        assert_eq!(result.code, Code::InvalidArgument as i32);
        assert!(result.message.starts_with("percent"), "{}", result.message);

        let result = session.report(Kind::Ack(ack_with(&a, b"first"))).await;
        assert_eq!(result.code, 0, "{}", result.message);
        let result = session
            .report(Kind::Ack(ack_with(&c, &vec![0; MAX_RESULT_BYTES + 1])))
            .await;
        assert_eq!(result.code, Code::InvalidArgument as i32, "the session goes on");
        let result = session.report(Kind::Ack(ack_with(&c, b"second"))).await;
        assert_eq!(result.code, 0, "{}", result.message);
        let (a_job, c_job) = (b.job(job_id(&a)).await, b.job(job_id(&c)).await);
        assert_eq!(progress(&a_job), Some((50, "half".into(), 1)));
        assert_eq!(&a_job.result[..], b"first");
        assert_eq!(&c_job.result[..], b"second");
        assert!([first, second].contains(&a_job.id));
        session.close();

        // AckBatch: each ack keeps its own result; an oversized one fails alone.
        b.enqueue("u").await;
        b.enqueue("u").await;
        let mut stream = b.lease("w2", 2).await;
        let (x, y) = (next_job(&mut stream).await, next_job(&mut stream).await);
        let answer = b
            .broker
            .clone()
            .ack_batch(pb::AckBatchRequest {
                acks: vec![
                    ack_with(&x, &vec![1; MAX_RESULT_BYTES + 1]),
                    ack_with(&y, b"y"),
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.results[0].code, Code::InvalidArgument as i32);
        assert_eq!(answer.results[1].code, 0);
        assert_eq!(b.state(job_id(&x)).await, pb::JobState::Leased);
        assert_eq!(&b.job(job_id(&y)).await.result[..], b"y");
    }
}

every_backend! {
    async fn a_restart_keeps_results_and_the_progress_of_finished_jobs() {
        let mut config = test_config();
        if matches!(config.store, StoreConfig::Local { .. }) {
            config.store = StoreConfig::data_dir(scratch_dir("results-restart"));
        }
        let b = TestBroker::with_config(config.clone()).await;
        let id = b.enqueue("t").await;
        let mut stream = b.lease("w1", 1).await;
        let leased = next_job(&mut stream).await;
        let mut broker = b.broker.clone();
        broker.progress(progress_of(&leased, 100, "done")).await.unwrap();
        broker.ack(ack_with(&leased, b"{\"sent\": 3}")).await.unwrap();
        drop(stream);
        b.begin_shutdown();
        b.stopped().await;

        let b = TestBroker::with_config(config).await;
        let job = b.job(&id).await;
        assert_eq!(job.state(), pb::JobState::Succeeded);
        assert_eq!(&job.result[..], b"{\"sent\": 3}");
        assert_eq!(progress(&job), Some((100, "done".into(), 1)));
    }
}
