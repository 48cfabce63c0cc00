//! `sluice-broker --data-dir` brings every job back exactly as it was:
//! every field of the contract, in every state, and the effect of every
//! state-changing call that was answered OK, after SIGKILL; and a drain
//! that times out leaves its leased job to the next start.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use sluice_e2e::{BrokerProcess, WAIT, scratch_dir};
use sluice_proto::v1 as pb;
use tonic::Code;

const QUEUE: &str = "recovery";

fn start(dir: &Path, extra: &[&str]) -> BrokerProcess {
    let mut args = vec!["--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let broker = BrokerProcess::start(&args);
    broker.wait_for_log("broker serving");
    broker
}

/// Kills the broker with SIGKILL and starts it again on the same directory.
fn crash_and_restart(mut broker: BrokerProcess, dir: &Path) -> BrokerProcess {
    broker.signal(Signal::SIGKILL);
    broker.wait_exit(WAIT).expect("SIGKILL ends the broker");
    start(dir, &[])
}

/// A job with every field of the contract set to something not default.
fn rich_job(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: QUEUE.into(),
        job_type: job_type.into(),
        payload: format!("{{\"for\": \"{job_type}\"}}").into_bytes().into(),
        headers: [("trace-id", "4bf92f35"), ("tenant", "acme")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
        priority: 7,
        max_attempts: 5,
        timeout: Some(prost_types::Duration {
            seconds: 90,
            nanos: 0,
        }),
        idempotency_key: format!("key-of-{job_type}"),
        ..Default::default()
    }
}

async fn nack(broker: &BrokerProcess, leased: &pb::LeasedJob, error: &str, dead: bool) {
    broker
        .broker()
        .await
        .nack(pb::NackRequest {
            job_id: leased.job.as_ref().unwrap().id.clone(),
            lease_id: leased.lease_id.clone(),
            error: error.into(),
            dead,
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn ack(broker: &BrokerProcess, leased: &pb::LeasedJob) {
    broker
        .broker()
        .await
        .ack(pb::AckRequest {
            job_id: leased.job.as_ref().unwrap().id.clone(),
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
}

async fn cancel(broker: &BrokerProcess, job_id: &str) -> pb::JobState {
    broker
        .admin()
        .await
        .cancel_job(pb::CancelJobRequest {
            job_id: job_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .state()
}

/// A job without what belongs to its current attempt (state, attempt,
/// lease, end), for jobs that a restart moves on by design.
fn without_attempt(job: &pb::Job) -> pb::Job {
    pb::Job {
        state: 0,
        attempt: 0,
        lease_expires_at: None,
        worker_id: String::new(),
        cancel_requested: false,
        finished_at: None,
        ..job.clone()
    }
}

#[tokio::test]
async fn every_field_of_a_job_in_every_state_survives_a_crash() {
    let dir = scratch_dir("recovery-every-field");
    let broker = start(&dir, &["--backoff-initial", "1h", "--backoff-max", "2h"]);

    let ready = broker.enqueue(rich_job("ready")).await;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let scheduled = broker
        .enqueue(pb::EnqueueRequest {
            run_at: Some(in_an_hour.into()),
            ..rich_job("scheduled")
        })
        .await;
    let retrying = broker.enqueue(rich_job("retrying")).await;
    nack(
        &broker,
        &broker.lease_one(QUEUE, "retrying").await,
        "smtp timeout",
        false,
    )
    .await;
    let dead = broker.enqueue(rich_job("dead")).await;
    nack(
        &broker,
        &broker.lease_one(QUEUE, "dead").await,
        "bad input",
        true,
    )
    .await;
    let succeeded = broker.enqueue(rich_job("succeeded")).await;
    ack(&broker, &broker.lease_one(QUEUE, "succeeded").await).await;
    let cancelled = broker.enqueue(rich_job("cancelled")).await;
    assert_eq!(cancel(&broker, &cancelled).await, pb::JobState::Cancelled);
    // Leased at the crash: READY again, the attempt not counted.
    let leased = broker.enqueue(rich_job("leased")).await;
    broker.lease_one(QUEUE, "leased").await;
    // Cancelled while leased: the cancel was acknowledged, so it ends CANCELLED.
    let cancel_requested = broker.enqueue(rich_job("cancel-requested")).await;
    broker.lease_one(QUEUE, "cancel-requested").await;
    assert_eq!(
        cancel(&broker, &cancel_requested).await,
        pb::JobState::Leased
    );

    let settled = [&ready, &scheduled, &retrying, &dead, &succeeded, &cancelled];
    let mut before = Vec::new();
    for id in settled.iter().chain([&&leased, &&cancel_requested]) {
        before.push(broker.job(id).await);
    }
    let states: Vec<_> = before.iter().map(pb::Job::state).collect();
    use pb::JobState::*;
    assert_eq!(
        states,
        [
            Ready, Scheduled, Scheduled, Dead, Succeeded, Cancelled, Leased, Leased
        ]
    );

    let broker = crash_and_restart(broker, &dir);
    for (id, expected) in settled.iter().zip(&before) {
        assert_eq!(&broker.job(id).await, expected, "job {}", expected.job_type);
    }
    let requeued = broker.job(&leased).await;
    assert_eq!((requeued.state(), requeued.attempt), (Ready, 0));
    assert_eq!(without_attempt(&requeued), without_attempt(&before[6]));
    let ended = broker.job(&cancel_requested).await;
    assert_eq!(ended.state(), Cancelled);
    assert!(ended.finished_at.is_some());
    assert_eq!(without_attempt(&ended), without_attempt(&before[7]));

    // Each idempotency key still finds its job, in every state it kept.
    let mut client = broker.broker().await;
    for (id, job_type) in [
        (&ready, "ready"),
        (&dead, "dead"),
        (&succeeded, "succeeded"),
    ] {
        let again = client
            .enqueue(rich_job(job_type))
            .await
            .unwrap()
            .into_inner();
        assert!(
            again.duplicate && &again.job_id == id,
            "{job_type}: {again:?}"
        );
    }
}

#[tokio::test]
async fn every_acknowledged_change_survives_a_crash() {
    let dir = scratch_dir("recovery-every-call");
    let broker = start(&dir, &["--max-attempts", "1"]);
    let mut client = broker.broker().await;
    let mut admin = broker.admin().await;
    let job = |job_type: &str| pb::EnqueueRequest {
        queue: QUEUE.into(),
        job_type: job_type.into(),
        ..Default::default()
    };

    // EnqueueBatch, then AckBatch of what it enqueued.
    let batch = client
        .enqueue_batch(pb::EnqueueBatchRequest {
            jobs: vec![job("batch-a"), job("batch-b"), job("batch-kept")],
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    let ids: Vec<String> = batch.iter().map(|r| r.job_id.clone()).collect();
    let mut acks = Vec::new();
    for job_type in ["batch-a", "batch-b"] {
        let leased = broker.lease_one(QUEUE, job_type).await;
        acks.push(pb::AckRequest {
            job_id: leased.job.unwrap().id,
            lease_id: leased.lease_id,
            ..Default::default()
        });
    }
    let acked = client
        .ack_batch(pb::AckBatchRequest { acks })
        .await
        .unwrap()
        .into_inner();
    assert!(acked.results.iter().all(|r| r.code == 0), "{acked:?}");

    // Release with a delay: SCHEDULED for an hour, no attempt used.
    let released = broker.enqueue(job("released")).await;
    let leased = broker.lease_one(QUEUE, "released").await;
    client
        .release(pb::ReleaseRequest {
            key_delay: None,
            job_id: released.clone(),
            lease_id: leased.lease_id,
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap();

    // RetryJob of a dead job: READY again, attempts reset.
    let retried = broker.enqueue(job("retried")).await;
    nack(
        &broker,
        &broker.lease_one(QUEUE, "retried").await,
        "boom",
        false,
    )
    .await;
    assert_eq!(broker.job(&retried).await.state(), pb::JobState::Dead);
    admin
        .retry_job(pb::RetryJobRequest {
            job_id: retried.clone(),
        })
        .await
        .unwrap();

    // CancelJob of a ready job.
    let cancelled = broker.enqueue(job("cancelled")).await;
    assert_eq!(cancel(&broker, &cancelled).await, pb::JobState::Cancelled);

    // Extend reports a cancel asked for while leased.
    let flagged = broker.enqueue(job("flagged")).await;
    let flagged_lease = broker.lease_one(QUEUE, "flagged").await;
    assert_eq!(cancel(&broker, &flagged).await, pb::JobState::Leased);
    let extended = client
        .extend(pb::ExtendRequest {
            job_id: flagged.clone(),
            lease_id: flagged_lease.lease_id,
            extend_by: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(extended.cancel_requested);

    // PurgeQueue of a queue's READY jobs.
    let mut purged = Vec::new();
    for _ in 0..3 {
        purged.push(
            broker
                .enqueue(pb::EnqueueRequest {
                    queue: "purged".into(),
                    ..job("doomed")
                })
                .await,
        );
    }
    let gone = admin
        .purge_queue(pb::PurgeQueueRequest {
            queue: "purged".into(),
            state: pb::JobState::Ready.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.purged, 3);

    // PauseQueue then ResumeQueue, and PauseQueue alone.
    let resumed_job = broker
        .enqueue(pb::EnqueueRequest {
            queue: "resumed".into(),
            ..job("resumed")
        })
        .await;
    for queue in ["resumed", "paused"] {
        admin
            .pause_queue(pb::PauseQueueRequest {
                queue: queue.into(),
            })
            .await
            .unwrap();
    }
    admin
        .resume_queue(pb::ResumeQueueRequest {
            queue: "resumed".into(),
        })
        .await
        .unwrap();

    let kept = [&ids[0], &ids[1], &ids[2], &released, &retried, &cancelled];
    let mut before = Vec::new();
    for id in kept {
        before.push(broker.job(id).await);
    }
    use pb::JobState::*;
    let states: Vec<_> = before.iter().map(pb::Job::state).collect();
    assert_eq!(
        states,
        [Succeeded, Succeeded, Ready, Scheduled, Ready, Cancelled]
    );

    let broker = crash_and_restart(broker, &dir);
    for (id, expected) in kept.iter().zip(&before) {
        assert_eq!(&broker.job(id).await, expected, "job {}", expected.job_type);
    }
    assert_eq!(broker.job(&flagged).await.state(), Cancelled);
    let mut admin = broker.admin().await;
    for id in &purged {
        let status = admin
            .get_job(pb::GetJobRequest { job_id: id.clone() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "purged job {id}");
    }
    assert!(broker.queue_stats("paused").await.paused);
    assert!(!broker.queue_stats("resumed").await.paused);
    // The resumed queue hands out its job.
    let leased = broker.lease_one("resumed", "resumed").await;
    assert_eq!(leased.job.unwrap().id, resumed_job);
}

#[tokio::test]
async fn a_drain_that_times_out_leaves_its_leased_job_to_the_next_start() {
    let dir = scratch_dir("recovery-drain-timeout");
    let mut broker = start(&dir, &["--drain-timeout", "1s"]);
    let id = broker.enqueue(rich_job("slow")).await;
    let leased = broker.lease_one(QUEUE, "slow").await;
    assert_eq!(leased.job.unwrap().attempt, 1);
    broker.signal(Signal::SIGTERM);
    let status = broker
        .wait_exit(WAIT)
        .expect("the drain ends at its timeout");
    assert!(status.success(), "{status:?}");
    assert!(broker.log().contains("still_leased=1"), "{}", broker.log());

    let broker = start(&dir, &[]);
    let job = broker.job(&id).await;
    assert_eq!((job.state(), job.attempt), (pb::JobState::Ready, 0));
    // And runs as attempt 1 on the next lease.
    let again = broker.lease_one(QUEUE, "slow").await;
    assert_eq!(again.job.unwrap().attempt, 1);
}

#[tokio::test]
async fn a_released_job_reads_the_same_before_and_after_a_restart() {
    let dir = scratch_dir("recovery-released");
    let broker = start(&dir, &[]);
    // Released at once (READY) and after a delay (SCHEDULED).
    let mut released = Vec::new();
    for (job_type, delay) in [("now", 0), ("later", 3600)] {
        let id = broker.enqueue(rich_job(job_type)).await;
        let leased = broker.lease_one(QUEUE, job_type).await;
        broker
            .broker()
            .await
            .release(pb::ReleaseRequest {
                key_delay: None,
                job_id: id.clone(),
                lease_id: leased.lease_id,
                delay: Some(prost_types::Duration {
                    seconds: delay,
                    nanos: 0,
                }),
            })
            .await
            .unwrap();
        let before = broker.job(&id).await;
        // Release uses no attempt: the job reads as never tried.
        assert_eq!(before.attempt, 0, "{before:?}");
        released.push((id, before));
    }
    assert_eq!(released[0].1.state(), pb::JobState::Ready);
    assert_eq!(released[1].1.state(), pb::JobState::Scheduled);
    let broker = crash_and_restart(broker, &dir);
    for (id, before) in released {
        assert_eq!(broker.job(&id).await, before);
    }
}
