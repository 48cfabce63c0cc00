//! The worker library against an in-process broker: what handlers return,
//! panics, permanent errors, retry_after, a key delay, timeouts of
//! handlers that ignore cancellation, and progress and results.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use sluice_e2e::in_process::{TestBroker, test_config};
use sluice_proto::v1 as pb;
use sluice_worker::{Job, JobContext, JobError, WorkerBuilder};
use tokio_util::sync::{CancellationToken, DropGuard};

/// A broker whose retries come quickly.
async fn setup() -> TestBroker {
    let mut config = test_config();
    config.queue.backoff.initial = Duration::from_millis(20);
    config.queue.backoff.max = Duration::from_millis(50);
    TestBroker::with_config(config).await
}

/// Runs `worker` until the returned guard drops (the end of the test).
fn run(worker: WorkerBuilder) -> DropGuard {
    let stop = CancellationToken::new();
    tokio::spawn(worker.build().unwrap().run(stop.clone()));
    stop.drop_guard()
}

fn job(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        job_type: job_type.into(),
        ..Default::default()
    }
}

every_backend! {
    async fn a_handler_reports_progress_and_its_ack_carries_its_result() {
        let s = setup().await;
        let (seen_tx, mut seen) = tokio::sync::mpsc::channel::<()>(1);
        let go = std::sync::Arc::new(tokio::sync::Notify::new());
        let wait = go.clone();
        let _worker = run(sluice_worker::Worker::builder(s.url())
            .concurrency(2)
            .handler("report", move |_: Job, ctx: JobContext| {
                let (seen, wait) = (seen_tx.clone(), wait.clone());
                async move {
                    ctx.progress(60, r#"{"rows": 600}"#).await?;
                    let refused = ctx.progress(101, "").await.unwrap_err();
                    assert_eq!(refused.kind(), sluice_worker::BrokerErrorKind::Refused, "{refused}");
                    seen.send(()).await.ok();
                    wait.notified().await;
                    ctx.set_result(&b"\x00six hundred"[..])?;
                    Ok(())
                }
            })
            .handler("too-big", |_: Job, ctx: JobContext| async move {
                ctx.set_result(vec![0u8; sluice_limits::MAX_RESULT_BYTES + 1])?;
                Ok(())
            }));
        let id = s.enqueue_req(job("report")).await;
        seen.recv().await.unwrap();
        let running = s.job(&id).await;
        let progress = running.progress.unwrap();
        assert_eq!((progress.percent, progress.message.as_str(), progress.attempt), (60, r#"{"rows": 600}"#, 1));
        go.notify_one();
        let done = s.wait_for_state(&id, pb::JobState::Succeeded).await;
        assert_eq!(&done.result[..], b"\x00six hundred");

        let id = s.enqueue_req(job("too-big")).await;
        let dead = s.wait_for_state(&id, pb::JobState::Dead).await;
        assert_eq!(dead.last_error, "the result is 65537 bytes, over the limit of 65536 bytes");
    }
}

every_backend! {
    async fn panicking_handler_is_nacked_with_its_message_and_the_worker_goes_on() {
        let s = setup().await;
        let _worker = run(sluice_worker::Worker::builder(s.url()).handler(
            "t",
            |job: Job, _ctx: JobContext| async move {
                assert!(job.attempt > 1, "boom on attempt {}", job.attempt);
                Ok(())
            },
        ));
        let id = s.enqueue_req(job("t")).await;
        let done = s.wait_for_state(&id, pb::JobState::Succeeded).await;
        assert_eq!(
            (done.attempt, done.last_error.as_str()),
            (2, "handler panicked: boom on attempt 1")
        );
    }
}

every_backend! {
    async fn errors_choose_between_retry_dead_and_a_later_retry() {
        let s = setup().await;
        let _worker = run(sluice_worker::Worker::builder(s.url())
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
            }));
        let permanent = s.enqueue_req(job("permanent")).await;
        let later = s.enqueue_req(job("later")).await;
        let mut io = job("io");
        io.max_attempts = 2;
        let io = s.enqueue_req(io).await;

        let dead = s.wait_for_state(&permanent, pb::JobState::Dead).await;
        assert_eq!((dead.attempt, dead.last_error.as_str()), (1, "bad input"));
        let scheduled = s.wait_for_state(&later, pb::JobState::Scheduled).await;
        let ahead = scheduled.run_at.unwrap().seconds - scheduled.created_at.unwrap().seconds;
        assert!(
            (3590..=3610).contains(&ahead),
            "retry_after 1h gave run_at {ahead}s ahead"
        );
        let dead = s.wait_for_state(&io, pb::JobState::Dead).await;
        assert_eq!(dead.attempt, 2, "a `?` error is retried");
        assert!(
            dead.last_error.contains("No such file"),
            "{}",
            dead.last_error
        );
    }
}

every_backend! {
    async fn handler_that_ignores_cancellation_is_dropped_after_its_timeout() {
        let s = setup().await;
        let (dropped_tx, mut dropped_rx) = tokio::sync::mpsc::channel::<()>(1);
        let _worker = run(sluice_worker::Worker::builder(s.url()).handler(
            "stuck",
            move |_: Job, _: JobContext| {
                let guard = DropSignal(dropped_tx.clone());
                async move {
                    let _guard = guard;
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    Ok(())
                }
            },
        ));
        let mut req = job("stuck");
        req.timeout = Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        });
        req.max_attempts = 1;
        let id = s.enqueue_req(req).await;
        let dead = s.wait_for_state(&id, pb::JobState::Dead).await;
        assert_eq!(dead.last_error, "timed out after 1s");
        // Its future was dropped before the job was reported.
        assert!(
            dropped_rx.try_recv().is_ok(),
            "the handler's future was not dropped"
        );
    }
}

every_backend! {
    async fn cooperative_handler_sees_cancellation_at_its_timeout() {
        let s = setup().await;
        let _worker = run(sluice_worker::Worker::builder(s.url()).handler(
            "polite",
            |_: Job, ctx: JobContext| async move {
                ctx.cancelled().await;
                Err::<(), _>(JobError::retry("stopped as asked"))
            },
        ));
        let mut req = job("polite");
        req.timeout = Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        });
        req.max_attempts = 1;
        let id = s.enqueue_req(req).await;
        let started = tokio::time::Instant::now();
        let dead = s.wait_for_state(&id, pb::JobState::Dead).await;
        assert_eq!(
            dead.last_error, "timed out after 1s",
            "the timeout, not the handler's own error"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "no grace wasted on a handler that stopped"
        );
    }
}

/// Sends on drop: tells the test a handler's future was dropped.
struct DropSignal(tokio::sync::mpsc::Sender<()>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

every_backend! {
    async fn the_library_runs_jobs_and_reports_over_one_work_session() {
        let s = TestBroker::with_http(test_config()).await;
        let _worker = run(sluice_worker::Worker::builder(s.url())
            .concurrency(4)
            .handler("t", |_: Job, _: JobContext| async { Ok(()) })
            .handler("fails", |_: Job, _: JobContext| async {
                Err(JobError::permanent("no"))
            }));
        let mut ids = Vec::new();
        for _ in 0..20 {
            ids.push(s.enqueue_req(job("t")).await);
        }
        let failing = s.enqueue_req(job("fails")).await;
        for id in &ids {
            s.wait_for_state(id, pb::JobState::Succeeded).await;
        }
        s.wait_for_state(&failing, pb::JobState::Dead).await;
        // Every job was leased and resolved on the session: one Work call,
        // and none of the calls a worker made before it.
        let url = format!("http://{}/metrics", s.http_addr.unwrap());
        let scrape = tokio::task::spawn_blocking(move || sluice_e2e::metrics::scrape(&url))
            .await
            .unwrap();
        let calls = |method: &str| {
            scrape
                .get("sluice_rpc_duration_seconds_count", &[("method", method)])
                .unwrap_or(0.0)
        };
        assert_eq!(calls("Broker/Work"), 1.0);
        for unary in ["Lease", "LeaseBatches", "Ack", "AckBatch", "Nack", "Extend", "Release"] {
            assert_eq!(calls(&format!("Broker/{unary}")), 0.0, "{unary}");
        }
    }
}

every_backend! {
    async fn a_key_delay_from_a_handler_holds_every_job_of_its_key() {
        let s = setup().await;
        let _worker = run(sluice_worker::Worker::builder(s.url())
            .concurrency(4)
            .handler("call-api", |job: Job, _: JobContext| async move {
                if job.payload.as_ref() == b"429" {
                    return Err(JobError::retry("429 Too Many Requests")
                        .with_retry_after(Duration::ZERO)
                        .with_key_delay(Duration::from_secs(3600)));
                }
                Ok(())
            }));
        let keyed = |key: &str, payload: &'static [u8]| pb::EnqueueRequest {
            key: key.into(),
            payload: payload.to_vec().into(),
            ..job("call-api")
        };
        let throttled = s.enqueue_req(keyed("acme", b"429")).await;
        // Nacked once: READY again, its key held back.
        sluice_e2e::in_process::eventually("the 429 to be reported", || async {
            let job = s.job(&throttled).await;
            job.attempt == 1 && job.state() == pb::JobState::Ready
        })
        .await;
        // The key is held back: its jobs wait; another key's run.
        let waiting = s.enqueue_req(keyed("acme", b"ok")).await;
        let other = s.enqueue_req(keyed("globex", b"ok")).await;
        s.wait_for_state(&other, pb::JobState::Succeeded).await;
        let held = s.job(&waiting).await;
        assert_eq!((held.state(), held.attempt), (pb::JobState::Ready, 0));
        let keys = s
            .admin
            .clone()
            .list_keys(pb::ListKeysRequest {
                queue: "default".into(),
                limit: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .keys;
        let acme = keys.iter().find(|k| k.key == "acme").unwrap();
        assert_eq!(acme.held_by, "key_delay");
    }
}
