//! Crash test of `--data-dir`: a loop SIGKILLs the broker at random moments
//! while producers enqueue and a consumer runs jobs. Every job whose Enqueue
//! returned OK must run at least once; jobs run twice are counted and must
//! stay within what was leased at the kills.
//!
//! Sized for the suite by default; `SLUICE_CRASH_JOBS` and
//! `SLUICE_CRASH_KILLS` scale it (`scripts/crash-test.sh` runs 100,000 jobs
//! and 20 kills).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::{BrokerProcess, binary, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::transport::{Channel, Endpoint};

/// Jobs the consumer's stream holds at once.
const IN_FLIGHT: u32 = 32;
/// At most this many jobs run again per kill: those leased when the broker
/// died, and the one whose ack was not yet durable (the consumer acks one
/// at a time; the broker frees the slot before the commit, so that job is
/// not among the leased).
const RERUN_PER_KILL: u64 = IN_FLIGHT as u64 + 1;
const PRODUCERS: u64 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts the broker on `addr` over `dir`; returns it once it serves, with
/// how long that took.
fn start(addr: &str, dir: &Path) -> (BrokerProcess, Duration) {
    let started = Instant::now();
    let mut command = Command::new(binary("sluice-broker"));
    command
        .args(["--addr", addr, "--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let broker = BrokerProcess::spawn(command);
    broker.wait_for_log("broker serving");
    (broker, started.elapsed())
}

fn client(addr: &str) -> BrokerClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    BrokerClient::new(channel)
}

/// Enqueues jobs `range`, each with its number as idempotency key, retrying
/// a job until an Enqueue for it returns OK: a retry after an unknown
/// outcome finds the first job instead of adding one.
async fn produce(addr: String, range: std::ops::Range<u64>, acked: Arc<Mutex<HashSet<String>>>) {
    let mut client = client(&addr);
    for n in range {
        loop {
            let req = pb::EnqueueRequest {
                queue: "crash".into(),
                job_type: "t".into(),
                payload: n.to_be_bytes().to_vec().into(),
                idempotency_key: n.to_string(),
                ..Default::default()
            };
            match client.enqueue(req).await {
                Ok(response) => {
                    acked.lock().unwrap().insert(response.into_inner().job_id);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

/// Runs jobs until `stop`: records each one received, then acks it.
async fn consume(addr: String, ran: Arc<Mutex<HashMap<String, u32>>>, stop: Arc<AtomicBool>) {
    let mut client = client(&addr);
    while !stop.load(Ordering::Acquire) {
        let request = pb::LeaseRequest {
            worker_id: "crash-worker".into(),
            queues: vec!["crash".into()],
            max_in_flight: IN_FLIGHT,
            ..Default::default()
        };
        let Ok(response) = client.lease(request).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut stream = response.into_inner();
        while !stop.load(Ordering::Acquire) {
            let message = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
            let leased = match message {
                Err(_) => continue,
                Ok(Ok(Some(leased))) => leased,
                Ok(_) => break,
            };
            let job_id = leased.job.map(|j| j.id).unwrap_or_default();
            *ran.lock().unwrap().entry(job_id.clone()).or_default() += 1;
            let ack = pb::AckRequest {
                job_id,
                lease_id: leased.lease_id,
            };
            // A failed ack (broker gone) leaves the job to run again.
            let _ = client.ack(ack).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_job_is_lost_across_kills() {
    let jobs = env_or("SLUICE_CRASH_JOBS", 4_000);
    let kills = env_or("SLUICE_CRASH_KILLS", 5);
    let dir = scratch_dir("crash");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let (mut broker, _) = start(&addr, &dir);

    let acked = Arc::new(Mutex::new(HashSet::new()));
    let ran = Arc::new(Mutex::new(HashMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let range = p * jobs / PRODUCERS..(p + 1) * jobs / PRODUCERS;
        producers.push(tokio::spawn(produce(addr.clone(), range, acked.clone())));
    }
    let consumer = tokio::spawn(consume(addr.clone(), ran.clone(), stop.clone()));

    // Kills spread over the whole run: kill k waits until k/(kills+1) of
    // the jobs have run, then a random 0-300 ms more, so that kills land
    // mid-enqueue and mid-ack from the first jobs to the last.
    let mut seed = u64::from(port) | 1;
    let mut slowest_restart = Duration::ZERO;
    for k in 1..=kills {
        let mark = (k * jobs / (kills + 1)) as usize;
        let waited = Instant::now();
        while ran.lock().unwrap().len() < mark && waited.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 300)).await;
        broker.signal(Signal::SIGKILL);
        broker.wait_exit(Duration::from_secs(10)).unwrap();
        let (restarted, serving) = start(&addr, &dir);
        broker = restarted;
        slowest_restart = slowest_restart.max(serving);
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    for producer in producers {
        tokio::time::timeout_at(deadline.into(), producer)
            .await
            .expect("producers finish")
            .unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert_eq!(acked.len() as u64, jobs, "one acknowledged job per number");
    let lost = loop {
        let lost = {
            let ran = ran.lock().unwrap();
            acked.iter().filter(|id| !ran.contains_key(*id)).count()
        };
        if lost == 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Release);
    consumer.await.unwrap();

    let ran = ran.lock().unwrap();
    let duplicates: u32 = ran.values().map(|n| n - 1).sum();
    println!(
        "crash test: {jobs} jobs, {kills} kills, lost {lost}, ran twice or more {duplicates} \
         (bound {}), slowest restart to serving {} ms",
        kills * RERUN_PER_KILL,
        slowest_restart.as_millis()
    );
    assert_eq!(lost, 0, "acknowledged jobs never ran");
    assert!(
        u64::from(duplicates) <= kills * RERUN_PER_KILL,
        "{duplicates} jobs ran again: more than were in flight at the kills"
    );
    broker.signal(Signal::SIGTERM);
    assert!(broker.wait_exit(Duration::from_secs(10)).unwrap().success());
}
