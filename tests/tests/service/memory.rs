//! Overload test of `--max-memory`: producers enqueue 64 KiB jobs as fast
//! as they can into a broker whose one consumer acks slowly, for a bounded
//! time. The broker's resident memory (VmRSS, sampled every 250 ms and
//! printed: run with `--nocapture` to see the curve) must stay below the
//! mark plus the process's own overhead; producers past the mark get
//! RESOURCE_EXHAUSTED and nothing else; and every job whose Enqueue
//! returned OK is acked or still in the broker. An in-process test checks
//! the refusals of EnqueueBatch (per job) and RetryJob at exact sizes.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_e2e::BrokerProcess;
use sluice_e2e::in_process::{TestBroker, job_id, local_only, next_job, test_config};
use sluice_proto::v1 as pb;
use tonic::Code;

const MIB: u64 = 1 << 20;
/// The mark the broker runs with.
const MAX_MEMORY: u64 = 64 * MIB;
/// What the broker may hold beyond the mark: its code, tokio and tonic,
/// request buffers, the allocator's free pages. Measured: see the README.
const PROCESS_OVERHEAD: u64 = 64 * MIB;
const PAYLOAD: usize = 64 * 1024;
const PRODUCERS: usize = 4;
/// How long the producers run.
const LOAD: Duration = Duration::from_secs(8);
/// The consumer's time per job: the producers are far faster.
const WORK: Duration = Duration::from_millis(5);

/// The broker's resident memory, from `/proc/PID/status`.
fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[derive(Default)]
struct Outcomes {
    accepted: Mutex<Vec<String>>,
    refused: AtomicU64,
    other_errors: Mutex<Vec<String>>,
}

async fn produce(broker: Arc<BrokerProcess>, outcomes: Arc<Outcomes>, stop: Arc<AtomicBool>) {
    let mut client = broker.broker().await;
    let payload = bytes::Bytes::from(vec![7u8; PAYLOAD]);
    while !stop.load(Ordering::Acquire) {
        let request = pb::EnqueueRequest {
            queue: "mem".into(),
            job_type: "big".into(),
            payload: payload.clone(),
            ..Default::default()
        };
        match client.enqueue(request).await {
            Ok(response) => outcomes
                .accepted
                .lock()
                .unwrap()
                .push(response.into_inner().job_id),
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert!(
                    status.message().contains("--max-memory"),
                    "{}",
                    status.message()
                );
                outcomes.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) => outcomes
                .other_errors
                .lock()
                .unwrap()
                .push(format!("{status:?}")),
        }
    }
}

/// Runs jobs one at a time, `WORK` each, until `stop`; returns the ids acked.
async fn consume(broker: Arc<BrokerProcess>, stop: Arc<AtomicBool>) -> HashSet<String> {
    let mut client = broker.broker().await;
    let request = pb::LeaseRequest {
        worker_id: "slow-worker".into(),
        queues: vec!["mem".into()],
        max_in_flight: 1,
        ..Default::default()
    };
    let mut stream = client.lease(request).await.unwrap().into_inner();
    let mut acked = HashSet::new();
    while !stop.load(Ordering::Acquire) {
        let leased = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await
        {
            Err(_) => continue,
            Ok(message) => message.unwrap().expect("the stream stays open"),
        };
        tokio::time::sleep(WORK).await;
        let job_id = leased.job.map(|j| j.id).unwrap_or_default();
        let ack = pb::AckRequest {
            job_id: job_id.clone(),
            lease_id: leased.lease_id,
            ..Default::default()
        };
        client.ack(ack).await.unwrap();
        acked.insert(job_id);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_under_overload_and_no_accepted_job_is_lost() {
    let broker = Arc::new(BrokerProcess::start(&[
        "--max-memory",
        "64MiB",
        "--retention",
        "1h",
    ]));
    let pid = broker.process.pid();
    let outcomes = Arc::new(Outcomes::default());
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = tokio::spawn(consume(broker.clone(), stop.clone()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|_| tokio::spawn(produce(broker.clone(), outcomes.clone(), stop.clone())))
        .collect();

    let start = Instant::now();
    let mut curve = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    println!("t_s rss_mib");
    while start.elapsed() < LOAD {
        ticks.tick().await;
        let rss = rss_bytes(pid).expect("the broker is running");
        let t = start.elapsed().as_secs_f64();
        println!("{t:.2} {:.1}", rss as f64 / MIB as f64);
        curve.push((t, rss));
    }
    stop.store(true, Ordering::Release);
    for producer in producers {
        tokio::time::timeout(sluice_e2e::WAIT, producer)
            .await
            .expect("a producer stops")
            .unwrap();
    }
    let acked = tokio::time::timeout(sluice_e2e::WAIT, consumer)
        .await
        .expect("the consumer stops")
        .unwrap();

    let accepted = outcomes.accepted.lock().unwrap().clone();
    let refused = outcomes.refused.load(Ordering::Relaxed);
    println!(
        "accepted {} refused {refused} acked {}",
        accepted.len(),
        acked.len()
    );
    let other = outcomes.other_errors.lock().unwrap().clone();
    assert!(other.is_empty(), "producers got other errors: {other:?}");
    assert!(refused > 0, "the mark was never reached");
    let peak = curve.iter().map(|&(_, rss)| rss).max().unwrap();
    let bound = MAX_MEMORY + PROCESS_OVERHEAD;
    assert!(
        peak < bound,
        "RSS peaked at {} MiB, above the bound of {} MiB",
        peak / MIB,
        bound / MIB
    );

    // Every accepted job is still in the broker, or was acked (and may
    // have been forgotten since, to make room).
    let mut admin = broker.admin().await;
    let mut still_held = 0;
    for job_id in &accepted {
        let request = pb::GetJobRequest {
            job_id: job_id.clone(),
        };
        match admin.get_job(request).await {
            Ok(job) => {
                let state = job.into_inner().state();
                assert!(
                    state != pb::JobState::Dead && state != pb::JobState::Cancelled,
                    "job {job_id} is {state:?}"
                );
                still_held += 1;
            }
            Err(status) if status.code() == Code::NotFound => {
                assert!(acked.contains(job_id), "accepted job {job_id} was lost");
            }
            Err(status) => panic!("GetJob {job_id}: {status:?}"),
        }
    }
    println!("still held {still_held}");
}

every_backend! {
    async fn enqueue_batch_jobs_and_retry_are_refused_over_the_mark() {
        if !local_only(
            "--max-memory bounds one broker's memory; on PostgreSQL the jobs live in the database",
        ) {
            return;
        }
        // Room for two jobs without payload or headers.
        let job_bytes = sluice_queue::JOB_OVERHEAD;
        let mut config = test_config();
        config.queue.max_memory = Some(2 * job_bytes);
        let b = TestBroker::with_config(config).await;
        let jobs = vec![
            pb::EnqueueRequest {
                job_type: "t".into(),
                ..Default::default()
            };
            3
        ];
        let results = b.enqueue_batch(jobs).await.unwrap();
        let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
        assert_eq!(codes, [0, 0, Code::ResourceExhausted as i32]);
        assert!(
            results[2].message.contains("over --max-memory"),
            "{}",
            results[2].message
        );

        // Over the mark (a nack's error), leases and nacks still work; a
        // retry is refused until a retained job can be forgotten for it.
        let mut stream = b.lease("w", 1).await;
        let first = next_job(&mut stream).await;
        let nack = pb::NackRequest {
            job_id: job_id(&first).into(),
            lease_id: first.lease_id.clone(),
            error: "boom".into(),
            dead: true,
            ..Default::default()
        };
        b.broker.clone().nack(nack).await.unwrap();
        let retry = || pb::RetryJobRequest {
            job_id: job_id(&first).into(),
        };
        let refused = b.admin.clone().retry_job(retry()).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        let second = next_job(&mut stream).await;
        b.ack(&second).await.unwrap();
        b.admin.clone().retry_job(retry()).await.unwrap();
        assert_eq!(b.state(job_id(&first)).await, pb::JobState::Leased);
        let forgotten = pb::GetJobRequest {
            job_id: job_id(&second).into(),
        };
        let status = b.admin.clone().get_job(forgotten).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "forgotten to make room");
    }
}
