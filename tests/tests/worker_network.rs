//! The real `sluice-worker` when its connection to a live broker drops (a
//! TCP proxy between them is cut): the lease stream reconnects naming the
//! leases it holds, and an Ack that fails is retried until it lands, once;
//! and when the connection dies silently (the proxy freezes it), keepalive
//! notices and the worker reconnects.
//! Handlers wait for a file the test creates, so no step depends on how
//! fast the machine is.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use sluice_e2e::proxy::Proxy;
use sluice_e2e::{BrokerProcess, WorkerProcess, job, scratch_dir, wait_for_file};
use sluice_proto::v1 as pb;

/// A handler that records its attempt, says it started, and then runs
/// until the test creates `go`.
fn held_open(dir: &Path) -> String {
    format!(
        "work=echo $SLUICE_ATTEMPT >> {dir}/attempts; echo started > {dir}/started; \
         while [ ! -e {dir}/go ]; do sleep 0.05; done",
        dir = dir.display()
    )
}

/// Polls ListWorkers until `check` holds of it, at most [`sluice_e2e::WAIT`].
async fn wait_for_workers(
    broker: &BrokerProcess,
    what: &str,
    check: impl Fn(&[pb::WorkerInfo]) -> bool,
) -> Vec<pb::WorkerInfo> {
    wait_for_workers_within(broker, what, sluice_e2e::WAIT, check).await
}

/// [`wait_for_workers`], at most `within`.
async fn wait_for_workers_within(
    broker: &BrokerProcess,
    what: &str,
    within: Duration,
    check: impl Fn(&[pb::WorkerInfo]) -> bool,
) -> Vec<pb::WorkerInfo> {
    let mut admin = broker.admin().await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let workers = admin
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if check(&workers) {
            return workers;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {what}: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_reconnects_with_its_held_lease_and_the_job_runs_once() {
    let dir = scratch_dir("network-held");
    let broker = BrokerProcess::start(&[]);
    let proxy = Proxy::start(&broker.addr).await;
    let worker = WorkerProcess::start_at(
        &proxy.url(),
        &["--worker-id", "w-held", "--exec", &held_open(&dir)],
        &[],
    );
    let running = broker.enqueue(job("work", b"")).await;
    wait_for_file(&dir.join("started"));

    proxy.cut(Duration::from_millis(300));
    worker.process.wait_for_log("reconnecting to the broker");
    // The new stream took the running job's lease over: its one slot is
    // taken, so a job enqueued now waits.
    let waiting = broker.enqueue(job("work", b"")).await;
    wait_for_workers(
        &broker,
        "the reconnected stream to hold the running job",
        |w| w.len() == 1 && w[0].in_flight == 1 && w[0].worker_id == "w-held",
    )
    .await;
    assert_eq!(broker.job(&waiting).await.state(), pb::JobState::Ready);

    std::fs::write(dir.join("go"), "").unwrap();
    let done = broker
        .wait_for_state(&running, pb::JobState::Succeeded)
        .await;
    assert_eq!(done.attempt, 1);
    let next = broker
        .wait_for_state(&waiting, pb::JobState::Succeeded)
        .await;
    assert_eq!(next.attempt, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts")).unwrap(),
        "1\n1\n"
    );
    let stats = broker.queue_stats("default").await;
    assert_eq!(
        (stats.acked_total, stats.nacked_total, stats.expired_total),
        (2, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_that_fails_on_a_dropped_connection_is_retried_and_lands_once() {
    let dir = scratch_dir("network-ack");
    let broker = BrokerProcess::start(&[]);
    let proxy = Proxy::start(&broker.addr).await;
    let worker = WorkerProcess::start_at(
        &proxy.url(),
        &["--exec", &held_open(&dir)],
        &[("RUST_LOG", "info,sluice_worker=debug")],
    );
    let id = broker.enqueue(job("work", b"")).await;
    wait_for_file(&dir.join("started"));

    // The job ends while the broker cannot be reached for two seconds.
    proxy.cut(Duration::from_secs(2));
    std::fs::write(dir.join("go"), "").unwrap();
    worker
        .process
        .wait_for_log("resolution not delivered, retrying");

    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!((done.attempt, done.last_error.as_str()), (1, ""));
    assert_eq!(
        std::fs::read_to_string(dir.join("attempts")).unwrap(),
        "1\n"
    );
    let stats = broker.queue_stats("default").await;
    assert_eq!(
        (stats.acked_total, stats.nacked_total, stats.expired_total),
        (1, 0, 0)
    );
    // The broker records the Ack before it answers: the worker logs the
    // outcome once the answer arrives.
    worker.process.wait_for_log("job succeeded");
}

/// A connection that dies without a word (the proxy passes nothing and
/// closes nothing, as when a host vanishes): an idle worker would wait on
/// its session forever; its keepalive (a ping every 10 s, 10 s to answer)
/// notices, and it reconnects and runs the next job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_dies_silently_is_noticed_and_replaced() {
    let dir = scratch_dir("network-silent");
    let broker = BrokerProcess::start(&[]);
    let proxy = Proxy::start(&broker.addr).await;
    let exec = format!("work=echo $SLUICE_JOB_ID >> {}/runs", dir.display());
    let worker = WorkerProcess::start_at(
        &proxy.url(),
        &["--worker-id", "w-silent", "--exec", &exec],
        &[],
    );
    wait_for_workers(&broker, "the worker's session", |w| w.len() == 1).await;

    proxy.freeze();
    // Two keepalive rounds at most, with room for a slow machine.
    let keepalive = Duration::from_secs(45);
    worker
        .process
        .try_wait_for_log_within("reconnecting to the broker", keepalive)
        .unwrap();
    worker
        .process
        .try_wait_for_log_within("lease stream open", keepalive)
        .unwrap();
    // The broker's own keepalive closes the frozen session: one is left.
    wait_for_workers_within(&broker, "the frozen session to close", keepalive, |w| {
        w.len() == 1
    })
    .await;
    let id = broker.enqueue(job("work", b"")).await;
    let done = broker.wait_for_state(&id, pb::JobState::Succeeded).await;
    assert_eq!(done.attempt, 1);
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        format!("{id}\n")
    );
}
