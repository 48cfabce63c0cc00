//! Unit tests of the job task: one attempt against a scripted link, under
//! tokio's paused clock, so every time asserted is exact and no test sleeps
//! for real.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::client::fake::{FakeLink, error, leased};
use crate::summary::Summary;

const LEASE: Duration = Duration::from_secs(3);
/// Heartbeats come every third of the lease.
const BEAT: Duration = Duration::from_secs(1);

fn shared(link: &Arc<FakeLink>, job_type: &str, handler: impl Handler) -> Shared {
    let mut handlers: Registry = HashMap::new();
    handlers.insert(job_type.to_owned(), Arc::new(handler));
    Shared {
        link: link.clone(),
        handlers: Arc::new(handlers),
        worker_id: "test-worker".into(),
        lease_duration: LEASE,
        slots: Arc::new(Semaphore::new(1)),
        running: Arc::new(Mutex::new(HashMap::new())),
        counters: Arc::new(Counters::default()),
        metrics: WorkerMetrics::register(&mut prometheus_client::registry::Registry::default()),
        stop_leasing: CancellationToken::new(),
        force_stop: CancellationToken::new(),
    }
}

/// When the handler saw its context cancelled.
#[derive(Clone, Default)]
struct CancelSeen(Arc<Mutex<Option<Instant>>>);

impl CancelSeen {
    /// A handler that waits for cancellation, notes when it came, and
    /// then returns `Ok`: were it reported, it would be acked.
    fn handler(&self) -> impl Handler {
        let seen = self.clone();
        move |_: Job, ctx: JobContext| {
            let seen = seen.clone();
            async move {
                ctx.cancelled().await;
                *lock(&seen.0) = Some(Instant::now());
                Ok(())
            }
        }
    }

    fn at(&self) -> Option<Instant> {
        *lock(&self.0)
    }
}

/// Sets its flag when dropped: tells that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn nack(error: &str, dead: bool) -> Report {
    Report::Nack {
        error: error.to_owned(),
        retry_after: None,
        dead,
        key_delay: None,
    }
}

#[tokio::test(start_paused = true)]
async fn handler_that_ignores_its_timeout_is_dropped_after_the_grace_and_nacked_for_retry() {
    let link = FakeLink::new();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let shared = shared(&link, "stuck", move |_: Job, _: JobContext| {
        let guard = DropFlag(flag.clone());
        async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        }
    });
    let start = Instant::now();

    run(
        leased("j1", "stuck", Duration::from_secs(1)),
        shared.clone(),
    )
    .await;

    assert!(
        dropped.load(Ordering::SeqCst),
        "the handler's future was not dropped"
    );
    assert_eq!(
        link.resolutions(),
        [(
            start + Duration::from_secs(1) + STOP_GRACE,
            "j1".to_owned(),
            nack("timed out after 1s", false)
        )]
    );
    assert_eq!(
        shared.counters.summary(),
        Summary {
            retried: 1,
            ..Summary::default()
        }
    );
    assert!(lock(&shared.running).is_empty());
}

#[tokio::test(start_paused = true)]
async fn handler_that_stops_at_its_timeout_is_nacked_at_once_with_the_timeout() {
    let link = FakeLink::new();
    let seen = CancelSeen::default();
    let shared = shared(&link, "polite", seen.handler());
    let start = Instant::now();

    run(leased("j1", "polite", Duration::from_secs(1)), shared).await;

    assert_eq!(seen.at(), Some(start + Duration::from_secs(1)));
    assert_eq!(
        link.resolutions(),
        [(
            start + Duration::from_secs(1),
            "j1".to_owned(),
            nack("timed out after 1s", false)
        )],
        "the timeout is reported, not the handler's Ok, and no grace is spent"
    );
}

#[tokio::test(start_paused = true)]
async fn lost_lease_cancels_the_handler_and_reports_nothing() {
    let link = FakeLink::new();
    link.then_extend(Err(error(BrokerErrorKind::LeaseLost)));
    let seen = CancelSeen::default();
    let shared = shared(&link, "t", seen.handler());
    let start = Instant::now();

    run(leased("j1", "t", Duration::from_secs(60)), shared.clone()).await;

    assert_eq!(link.extends(), [start + BEAT]);
    assert_eq!(
        seen.at(),
        Some(start + BEAT),
        "the handler was not cancelled"
    );
    assert_eq!(
        link.resolutions(),
        [],
        "a job whose lease is lost is not reported"
    );
    assert_eq!(shared.counters.summary(), Summary::default());
    assert!(
        lock(&shared.running).is_empty(),
        "the lost lease is still held"
    );
}

/// A heartbeat that fails for want of the broker (H4), or is refused for
/// another reason than a lost lease (H5: INVALID_ARGUMENT,
/// PERMISSION_DENIED...), leaves the job running until the lease runs out
/// by the worker's own clock; then it is lost.
#[tokio::test(start_paused = true)]
async fn lease_that_runs_out_between_failed_heartbeats_is_lost() {
    for kind in [BrokerErrorKind::Unavailable, BrokerErrorKind::Refused] {
        let link = FakeLink::new();
        for _ in 0..5 {
            link.then_extend(Err(error(kind)));
        }
        let seen = CancelSeen::default();
        let shared = shared(&link, "t", seen.handler());
        let start = Instant::now();

        run(leased("j1", "t", Duration::from_secs(60)), shared).await;

        assert_eq!(link.extends(), [start + BEAT, start + 2 * BEAT], "{kind:?}");
        assert_eq!(seen.at(), Some(start + LEASE), "{kind:?}");
        assert_eq!(link.resolutions(), [], "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn transient_heartbeat_failure_is_retried_and_the_job_still_acks() {
    let link = FakeLink::new();
    link.then_extend(Err(error(BrokerErrorKind::Unavailable)));
    // Runs past the first lease's expiry: only the retried heartbeat
    // keeps the job. Ends between beats, so that none ties with it.
    let shared = shared(&link, "t", |_: Job, _: JobContext| async {
        tokio::time::sleep(LEASE + BEAT / 2).await;
        Ok(())
    });
    let start = Instant::now();

    run(leased("j1", "t", Duration::from_secs(60)), shared.clone()).await;

    assert_eq!(
        link.extends(),
        [start + BEAT, start + 2 * BEAT, start + 3 * BEAT]
    );
    assert_eq!(
        link.resolutions(),
        [(start + LEASE + BEAT / 2, "j1".to_owned(), Report::Ack(None))]
    );
    assert_eq!(
        shared.counters.summary(),
        Summary {
            processed: 1,
            ..Summary::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn operator_cancel_answered_to_a_heartbeat_fails_the_job_for_good() {
    let link = FakeLink::new();
    link.then_extend(Ok(Extended {
        lease_expires_at: None,
        cancel_requested: true,
    }));
    let seen = CancelSeen::default();
    let shared = shared(&link, "t", seen.handler());
    let start = Instant::now();

    run(leased("j1", "t", Duration::from_secs(60)), shared.clone()).await;

    assert_eq!(seen.at(), Some(start + BEAT));
    assert_eq!(
        link.resolutions(),
        [(start + BEAT, "j1".to_owned(), nack("cancelled", true))]
    );
    assert_eq!(
        shared.counters.summary(),
        Summary {
            failed: 1,
            ..Summary::default()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn job_without_a_handler_is_released() {
    let link = FakeLink::new();
    let shared = shared(&link, "t", |_: Job, _: JobContext| async { Ok(()) });

    run(leased("j1", "other", Duration::from_secs(60)), shared).await;

    assert_eq!(link.extends(), []);
    let resolutions: Vec<_> = link
        .resolutions()
        .into_iter()
        .map(|(_, id, r)| (id, r))
        .collect();
    assert_eq!(resolutions, [("j1".to_owned(), Report::Release)]);
}
