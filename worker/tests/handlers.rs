//! The worker library against an in-process broker: what handlers return,
//! panics, permanent errors, retry_after, and timeouts of handlers that
//! ignore cancellation.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_broker::config::Config;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_worker::{Job, JobContext, JobError, Worker, WorkerBuilder};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(15);

struct Setup {
    url: String,
    broker: BrokerClient<Channel>,
    admin: AdminClient<Channel>,
    stop: CancellationToken,
}

async fn setup() -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut config = Config::default();
    config.queue.backoff.initial = Duration::from_millis(20);
    config.queue.backoff.max = Duration::from_millis(50);
    let stop = CancellationToken::new();
    tokio::spawn(sluice_broker::server::run(listener, config, stop.clone()));
    let channel = tonic::transport::Endpoint::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    Setup {
        url,
        broker: BrokerClient::new(channel.clone()),
        admin: AdminClient::new(channel),
        stop,
    }
}

impl Setup {
    /// Runs `worker` until the test ends.
    fn run(&self, worker: WorkerBuilder) {
        let worker: Worker = worker.build().unwrap();
        tokio::spawn(worker.run(self.stop.clone()));
    }

    async fn enqueue(&self, req: pb::EnqueueRequest) -> String {
        self.broker
            .clone()
            .enqueue(req)
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    async fn wait_for(&self, job_id: &str, state: pb::JobState) -> pb::Job {
        tokio::time::timeout(WAIT, async {
            loop {
                let req = pb::GetJobRequest {
                    job_id: job_id.into(),
                };
                let job = self.admin.clone().get_job(req).await.unwrap().into_inner();
                if job.state() == state {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("job {job_id} never reached {state:?}"))
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn job(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn panicking_handler_is_nacked_with_its_message_and_the_worker_goes_on() {
    let s = setup().await;
    s.run(
        Worker::builder(&s.url).handler("t", |job: Job, _ctx: JobContext| async move {
            assert!(job.attempt > 1, "boom on attempt {}", job.attempt);
            Ok(())
        }),
    );
    let id = s.enqueue(job("t")).await;
    let done = s.wait_for(&id, pb::JobState::Succeeded).await;
    assert_eq!(
        (done.attempt, done.last_error.as_str()),
        (2, "handler panicked: boom on attempt 1")
    );
}

#[tokio::test]
async fn errors_choose_between_retry_dead_and_a_later_retry() {
    let s = setup().await;
    s.run(
        Worker::builder(&s.url)
            .concurrency(3)
            .handler("permanent", |_: Job, _: JobContext| async {
                Err::<(), _>(JobError::permanent("bad input"))
            })
            .handler("later", |_: Job, _: JobContext| async {
                Err::<(), _>(JobError::retry("busy").with_retry_after(Duration::from_secs(3600)))
            })
            .handler("io", |_: Job, _: JobContext| async {
                std::fs::read("/nonexistent/sluice")?;
                Ok(())
            }),
    );
    let permanent = s.enqueue(job("permanent")).await;
    let later = s.enqueue(job("later")).await;
    let mut io = job("io");
    io.max_attempts = 2;
    let io = s.enqueue(io).await;

    let dead = s.wait_for(&permanent, pb::JobState::Dead).await;
    assert_eq!((dead.attempt, dead.last_error.as_str()), (1, "bad input"));
    let scheduled = s.wait_for(&later, pb::JobState::Scheduled).await;
    let ahead = scheduled.run_at.unwrap().seconds - scheduled.created_at.unwrap().seconds;
    assert!(
        (3590..=3610).contains(&ahead),
        "retry_after 1h gave run_at {ahead}s ahead"
    );
    let dead = s.wait_for(&io, pb::JobState::Dead).await;
    assert_eq!(dead.attempt, 2, "a `?` error is retried");
    assert!(
        dead.last_error.contains("No such file"),
        "{}",
        dead.last_error
    );
}

#[tokio::test]
async fn handler_that_ignores_cancellation_is_dropped_after_its_timeout() {
    let s = setup().await;
    let (dropped_tx, mut dropped_rx) = tokio::sync::mpsc::channel::<()>(1);
    s.run(
        Worker::builder(&s.url).handler("stuck", move |_: Job, _: JobContext| {
            let guard = DropSignal(dropped_tx.clone());
            async move {
                let _guard = guard;
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(())
            }
        }),
    );
    let mut req = job("stuck");
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    req.max_attempts = 1;
    let id = s.enqueue(req).await;
    let dead = s.wait_for(&id, pb::JobState::Dead).await;
    assert_eq!(dead.last_error, "timed out after 1s");
    // Its future was dropped before the job was reported.
    assert!(
        dropped_rx.try_recv().is_ok(),
        "the handler's future was not dropped"
    );
}

#[tokio::test]
async fn cooperative_handler_sees_cancellation_at_its_timeout() {
    let s = setup().await;
    s.run(
        Worker::builder(&s.url).handler("polite", |_: Job, ctx: JobContext| async move {
            ctx.cancelled().await;
            Err::<(), _>(JobError::retry("stopped as asked"))
        }),
    );
    let mut req = job("polite");
    req.timeout = Some(prost_types::Duration {
        seconds: 1,
        nanos: 0,
    });
    req.max_attempts = 1;
    let id = s.enqueue(req).await;
    let started = tokio::time::Instant::now();
    let dead = s.wait_for(&id, pb::JobState::Dead).await;
    assert_eq!(
        dead.last_error, "timed out after 1s",
        "the timeout, not the handler's own error"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no grace wasted on a handler that stopped"
    );
}

/// Sends on drop: tells the test a handler's future was dropped.
struct DropSignal(tokio::sync::mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}
