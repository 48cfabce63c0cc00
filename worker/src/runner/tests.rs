//! Unit tests of the runner: the lease stream, reconnects and the drain,
//! against a scripted link under tokio's paused clock, so every time
//! asserted is exact and no test sleeps for real.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::client::fake::{Call, FakeLink, error, leased};
use crate::handler::{Job, JobContext};

const MINUTE: Duration = Duration::from_secs(60);

/// A worker over `link` with `builder`'s settings.
fn worker(link: &Arc<FakeLink>, builder: WorkerBuilder) -> Worker {
    builder.check().expect("valid settings");
    builder.into_worker(link.clone())
}

fn builder() -> WorkerBuilder {
    Worker::builder("http://unused.invalid")
        .worker_id("w1")
        .lease_duration(Duration::from_secs(30))
}

/// The Resolve calls, each as (seconds since `start`, job id, report).
fn resolutions(link: &FakeLink, start: Instant) -> Vec<(Duration, String, Report)> {
    link.resolutions()
        .into_iter()
        .map(|(at, id, r)| (at - start, id, r))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn drain_stops_leasing_acks_jobs_that_finish_and_releases_those_past_the_deadline() {
    let link = FakeLink::new();
    let batches = link.then_stream();
    let worker = worker(
        &link,
        builder()
            .concurrency(2)
            .drain_timeout(Duration::from_secs(10))
            .handler("quick", |_: Job, _: JobContext| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            })
            // Returns Ok once stopped: were it reported, it would be acked.
            .handler("slow", |_: Job, ctx: JobContext| async move {
                ctx.cancelled().await;
                Ok(())
            }),
    );
    let start = Instant::now();
    batches
        .try_send(vec![
            leased("a", "quick", MINUTE),
            leased("b", "slow", MINUTE),
        ])
        .expect("room in the stream");
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));

    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    let summary = run.await.expect("run panicked").expect("run failed");

    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(11),
        "drain timeout 10s after shutdown"
    );
    assert_eq!(link.leases().len(), 1, "leased again after shutdown");
    assert!(
        link.calls()
            .contains(&(start + Duration::from_secs(1), Call::StreamClosed)),
        "the stream was not closed at shutdown: {:?}",
        link.calls()
    );
    assert!(batches.is_closed());
    assert_eq!(
        resolutions(&link, start),
        [
            (Duration::from_secs(5), "a".to_owned(), Report::Ack(None)),
            (Duration::from_secs(11), "b".to_owned(), Report::Release),
        ]
    );
    assert_eq!(
        summary,
        Summary {
            processed: 1,
            released: 1,
            ..Summary::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_waiting_in_the_stream_at_shutdown_are_released_unstarted() {
    let link = FakeLink::new();
    let batches = link.then_stream();
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    let worker = worker(
        &link,
        builder().handler("t", move |_: Job, _: JobContext| {
            count.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }),
    );
    let start = Instant::now();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));
    // The paused clock moves only once the runner waits on the open stream.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(link.leases().len(), 1);

    // Both before the runner runs again: it sees the shutdown first.
    batches
        .try_send(vec![leased("late", "t", MINUTE)])
        .expect("room in the stream");
    shutdown.cancel();
    run.await.expect("run panicked").expect("run failed");

    assert_eq!(started.load(Ordering::SeqCst), 0, "the job was started");
    assert_eq!(
        resolutions(&link, start),
        [(Duration::from_millis(1), "late".to_owned(), Report::Release)]
    );
}

#[tokio::test(start_paused = true)]
async fn refused_lease_stream_ends_the_run_with_the_refusal() {
    let link = FakeLink::new();
    link.then_refuse_lease(error(BrokerErrorKind::Refused));
    let worker = worker(
        &link,
        builder().handler("t", |_: Job, _: JobContext| async { Ok(()) }),
    );

    let result = worker.run(CancellationToken::new()).await;

    match result {
        Err(WorkerError::Refused(err)) => assert_eq!(err.kind(), BrokerErrorKind::Refused),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(link.leases().len(), 1, "a refusal is not retried");
}

#[tokio::test(start_paused = true)]
async fn lease_stream_reopens_after_loss_with_running_jobs_as_held_leases() {
    let link = FakeLink::new();
    let first = link.then_stream();
    link.then_refuse_lease(error(BrokerErrorKind::Unavailable));
    let _third = link.then_stream();
    let worker = worker(
        &link,
        builder()
            .queues(["q1"])
            .concurrency(4)
            .handler("t", |_: Job, _: JobContext| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }),
    );
    let start = Instant::now();
    first
        .try_send(vec![leased("j1", "t", MINUTE)])
        .expect("room in the stream");
    // The broker ends the first stream once it delivered the job.
    drop(first);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(worker.run(shutdown.clone()));

    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    let summary = run.await.expect("run panicked").expect("run failed");

    let leases = link.leases();
    assert_eq!(leases.len(), 3, "{leases:?}");
    assert_eq!(
        leases[0].1,
        LeaseSpec {
            worker_id: "w1".to_owned(),
            queues: vec!["q1".to_owned()],
            job_types: vec!["t".to_owned()],
            max_in_flight: 4,
            lease_duration: Duration::from_secs(30),
            held_leases: vec![],
        }
    );
    let held = vec![("j1".to_owned(), "lease-j1".to_owned())];
    assert_eq!(leases[1].1.held_leases, held, "the running job is not held");
    assert_eq!(leases[2].1.held_leases, held, "the running job is not held");
    // Backoff between attempts: 100ms then 200ms, each ±25%.
    let (gap1, gap2) = (leases[1].0 - leases[0].0, leases[2].0 - leases[1].0);
    assert!(
        gap1 >= Duration::from_millis(75) && gap1 <= Duration::from_millis(125),
        "{gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(150) && gap2 <= Duration::from_millis(250),
        "{gap2:?}"
    );
    // The job outlived its stream and was still acked.
    assert_eq!(
        resolutions(&link, start),
        [(Duration::from_secs(5), "j1".to_owned(), Report::Ack(None))]
    );
    assert_eq!(summary.processed, 1);
}

fn with_handler(builder: WorkerBuilder) -> WorkerBuilder {
    builder.handler("t", |_job: Job, _ctx: JobContext| async { Ok(()) })
}

#[tokio::test]
async fn tls_settings_with_an_http_url_are_refused_by_build() {
    let err = with_handler(Worker::builder("http://127.0.0.1:50051"))
        .tls_identity_pem("cert", "key")
        .build()
        .err()
        .expect("TLS over http:// must be refused");
    assert!(matches!(err, WorkerError::TlsNeedsHttps { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_token_or_a_missing_ca_file_fails_build_naming_the_problem() {
    let err = with_handler(Worker::builder("http://127.0.0.1:50051"))
        .token("has space")
        .build()
        .err()
        .expect("a token with a space must be refused");
    assert!(matches!(err, WorkerError::BadToken { .. }), "{err:?}");
    let err = with_handler(Worker::builder("https://127.0.0.1:50051"))
        .tls_ca_file("/nonexistent/sluice-ca.pem")
        .build()
        .err()
        .expect("a missing CA file must be refused");
    assert!(
        err.to_string().contains("/nonexistent/sluice-ca.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn an_https_url_with_a_token_builds() {
    with_handler(Worker::builder("https://127.0.0.1:50051"))
        .token("0123456789abcdef")
        .build()
        .expect("system roots and a valid token");
}
