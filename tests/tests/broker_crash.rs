//! Crash test of `--data-dir`: a loop SIGKILLs the broker at random moments
//! while producers enqueue and a consumer runs jobs. Jobs are tracked by
//! the producer's own number (their payload and idempotency key), not by
//! the id the broker returns, so that a job created twice under two ids
//! would count as a duplicate. Every number whose Enqueue returned OK must
//! run at least once; its key must always name the same job, across
//! crashes; runs beyond the first are counted and must stay within what was
//! leased at the kills.
//!
//! Sized for the suite by default; `SLUICE_CRASH_JOBS` and
//! `SLUICE_CRASH_KILLS` scale it (`scripts/crash-test.sh` runs 100,000 jobs
//! and 20 kills). The kill moments come from a seed, printed first;
//! `SLUICE_CRASH_SEED` replays one.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
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

/// What the producers were told: for each job number, every job id an OK
/// answer named (one, if the idempotency key holds across crashes), and how
/// many OK answers were duplicates (a retry that found the first job).
#[derive(Default)]
struct Acknowledged {
    ids: HashMap<u64, BTreeSet<String>>,
    duplicates: u64,
}

/// Enqueues jobs `range`, each with its number as payload and idempotency
/// key, retrying a job until an Enqueue for it returns OK: a retry after an
/// unknown outcome must find the first job instead of adding one.
async fn produce(addr: String, range: std::ops::Range<u64>, acked: Arc<Mutex<Acknowledged>>) {
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
                    let response = response.into_inner();
                    let mut acked = acked.lock().unwrap();
                    acked.ids.entry(n).or_default().insert(response.job_id);
                    acked.duplicates += u64::from(response.duplicate);
                    break;
                }
                // The broker is down or restarting: the outcome is unknown.
                Err(status) if unknown_outcome(&status) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("job {n} was refused: {status:?}"),
            }
        }
    }
}

/// A status a call gets when the broker died or is restarting.
fn unknown_outcome(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Internal
    )
}

/// The job number a leased job carries.
fn number_of(leased: &pb::LeasedJob) -> u64 {
    let payload = &leased
        .job
        .as_ref()
        .expect("a leased job has its job")
        .payload;
    u64::from_be_bytes(payload[..].try_into().expect("an 8-byte job number"))
}

/// Runs jobs until `stop`: records each one received by its number, then acks it.
async fn consume(addr: String, ran: Arc<Mutex<HashMap<u64, u32>>>, stop: Arc<AtomicBool>) {
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
            *ran.lock().unwrap().entry(number_of(&leased)).or_default() += 1;
            let ack = pb::AckRequest {
                job_id: leased.job.map(|j| j.id).unwrap_or_default(),
                lease_id: leased.lease_id,
                ..Default::default()
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

    let seed = std::env::var("SLUICE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| d.as_nanos() as u64)
        });
    println!("crash test seed {seed}: replay with SLUICE_CRASH_SEED={seed}");

    let acked = Arc::new(Mutex::new(Acknowledged::default()));
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
    let mut state = seed | 1;
    let mut slowest_restart = Duration::ZERO;
    for k in 1..=kills {
        let mark = (k * jobs / (kills + 1)) as usize;
        let waited = Instant::now();
        while ran.lock().unwrap().len() < mark {
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "before kill {k}: {} of {mark} jobs ran in 60 s",
                ran.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        tokio::time::sleep(Duration::from_millis(state % 300)).await;
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
    let (acked, retries_found_their_job) = {
        let acked = acked.lock().unwrap();
        (acked.ids.clone(), acked.duplicates)
    };
    assert_eq!(acked.len() as u64, jobs, "every number was acknowledged");
    let renamed: Vec<_> = acked.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(
        renamed.is_empty(),
        "an idempotency key named another job after a crash: {renamed:?}"
    );
    let lost = loop {
        let lost = {
            let ran = ran.lock().unwrap();
            acked.keys().filter(|n| !ran.contains_key(*n)).count()
        };
        if lost == 0 || Instant::now() > deadline {
            break lost;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::Release);
    consumer.await.unwrap();

    let ran = ran.lock().unwrap();
    assert!(
        ran.keys().all(|n| *n < jobs),
        "a job ran that no producer enqueued"
    );
    let duplicates: u32 = ran.values().map(|n| n - 1).sum();
    println!(
        "crash test (seed {seed}): {jobs} jobs, {kills} kills, lost {lost}, ran twice or more \
         {duplicates} (bound {}), retries that found their first job {retries_found_their_job}, \
         slowest restart to serving {} ms",
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
