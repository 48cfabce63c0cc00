//! Flow control across brokers, end to end with the real broker binary:
//! three brokers over one PostgreSQL (and over one Redis), a backlog of
//! 100,000 jobs over 1,000 keys with one key holding 90% of them, each key
//! allowed 2 jobs in flight, workers on every broker acking through a
//! broker other than their own half the time, and one broker killed with
//! SIGKILL mid-way. The test records every lease its workers get (from
//! receipt until the Ack is sent, or until the lease's expiry for the
//! jobs the killed broker's workers held and for an Ack whose answer was
//! lost) and checks that no key ever had more than 2 leases at once and
//! that every job ran (SUCCEEDED, as the surviving brokers count them: an
//! Ack through the killed broker may have committed with its answer lost).
//!
//! `SLUICE_FLOW_JOBS` sets the backlog (100,000 by default).

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use sluice_e2e::BrokerProcess;
use sluice_e2e::scale_out::broker_on;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

const KEYS: u64 = 1000;
const KEY_LIMIT: u32 = 2;

/// One lease as a worker saw it: its key, and from when to when it held it.
#[derive(Debug, Clone)]
struct Held {
    key: String,
    from: SystemTime,
    to: SystemTime,
}

#[derive(Default)]
struct Record {
    leases: Vec<Held>,
    acked: HashSet<String>,
}

fn jobs() -> u64 {
    std::env::var("SLUICE_FLOW_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

/// The backlog: 90% on key "hot", the rest over 999 cold keys, mixed.
fn backlog(n: u64) -> Vec<String> {
    let hot = n * 9 / 10;
    let mut keys: Vec<String> = (0..n - hot)
        .map(|i| format!("c{}", i % (KEYS - 1)))
        .collect();
    keys.extend((0..hot).map(|_| "hot".to_owned()));
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for i in (1..keys.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        keys.swap(i, (state % (i as u64 + 1)) as usize);
    }
    keys
}

fn time_of(ts: Option<prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|t| SystemTime::try_from(t).ok())
        .unwrap_or_else(SystemTime::now)
}

/// A worker on `brokers[own]`: records each lease, acks through its own
/// broker or the next one in turn; a lease it cannot ack (its broker died
/// with its stream) is held until the lease's expiry.
async fn worker(
    own: usize,
    channels: Vec<Channel>,
    name: String,
    record: Arc<Mutex<Record>>,
) -> Result<(), tonic::Status> {
    let mut lease_client = BrokerClient::new(channels[own].clone());
    let mut stream = lease_client
        .lease(pb::LeaseRequest {
            worker_id: name,
            queues: vec!["fair".into()],
            max_in_flight: 16,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut turn = 0usize;
    loop {
        let leased = match stream.message().await {
            Ok(Some(leased)) => leased,
            // Its broker is gone: what it held expires.
            Ok(None) | Err(_) => return Ok(()),
        };
        let from = SystemTime::now();
        let job = leased.job.clone().unwrap_or_default();
        turn += 1;
        let through = if turn.is_multiple_of(2) {
            own
        } else {
            (own + 1) % channels.len()
        };
        let to = SystemTime::now();
        let ack = pb::AckRequest {
            job_id: job.id.clone(),
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        };
        let mut acked = BrokerClient::new(channels[through].clone())
            .ack(ack.clone())
            .await;
        if acked.is_err() && through != own {
            acked = BrokerClient::new(channels[own].clone()).ack(ack).await;
        }
        let mut record = record.lock().unwrap();
        match acked {
            Ok(_) => {
                record.leases.push(Held {
                    key: job.key,
                    from,
                    to,
                });
                record.acked.insert(job.id);
            }
            Err(_) => record.leases.push(Held {
                key: job.key,
                from,
                to: time_of(leased.lease_expires_at),
            }),
        }
    }
}

/// The most leases any key held at once, and the key.
fn most_at_once(leases: &[Held]) -> (usize, String) {
    let mut by_key: HashMap<&str, Vec<(SystemTime, i32)>> = HashMap::new();
    for l in leases {
        let events = by_key.entry(&l.key).or_default();
        events.push((l.from, 1));
        events.push((l.to, -1));
    }
    let mut worst = (0, String::new());
    for (key, mut events) in by_key {
        // At one instant an end comes before a start.
        events.sort();
        let mut now = 0i32;
        for (_, step) in events {
            now += step;
            if now as usize > worst.0 {
                worst = (now as usize, key.to_owned());
            }
        }
    }
    worst
}

async fn run_on(url: &str) {
    let n = jobs();
    let mut brokers: Vec<BrokerProcess> = (0..3).map(|_| broker_on(url, &[])).collect();
    let mut channels = Vec::new();
    for b in &brokers {
        channels.push(b.channel().await);
    }
    let mut admin = brokers[0].admin().await;
    admin
        .set_queue_limits(pb::SetQueueLimitsRequest {
            queue: "fair".into(),
            limits: Some(pb::QueueLimits {
                key_max_in_flight: KEY_LIMIT,
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let mut producer = brokers[0].broker().await;
    for chunk in backlog(n).chunks(1000) {
        let jobs = chunk
            .iter()
            .map(|key| pb::EnqueueRequest {
                queue: "fair".into(),
                job_type: "t".into(),
                key: key.clone(),
                ..Default::default()
            })
            .collect();
        let answer = producer
            .enqueue_batch(pb::EnqueueBatchRequest { jobs })
            .await
            .unwrap()
            .into_inner();
        assert!(answer.results.iter().all(|r| r.code == 0));
    }
    let record = Arc::new(Mutex::new(Record::default()));
    let mut workers = JoinSet::new();
    for own in 0..brokers.len() {
        for w in 0..2 {
            workers.spawn(worker(
                own,
                channels.clone(),
                format!("w{own}-{w}"),
                record.clone(),
            ));
        }
    }
    let started = Instant::now();
    let bound = Duration::from_secs(1500);
    // A third of the way: broker 1 dies with the leases its workers hold.
    while (record.lock().unwrap().acked.len() as u64) < n / 3 {
        assert!(
            started.elapsed() < bound,
            "a third of the jobs did not run in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    brokers[1].crash();
    loop {
        let stats = admin.stats(pb::StatsRequest {}).await.unwrap().into_inner();
        let done = stats
            .queues
            .iter()
            .find(|q| q.queue == "fair")
            .map_or(0, |q| q.succeeded);
        if done >= n {
            break;
        }
        assert!(
            started.elapsed() < bound,
            "only {done} of {n} jobs succeeded within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    workers.abort_all();
    let record = record.lock().unwrap();
    let (most, key) = most_at_once(&record.leases);
    println!(
        "{n} jobs in {:.1} s; {} leases; at most {most} at once (key {key})",
        started.elapsed().as_secs_f64(),
        record.leases.len()
    );
    assert!(
        most <= KEY_LIMIT as usize,
        "key {key} had {most} leases at once"
    );
    // Every job was leased to a worker of the test at least once.
    let leased: u64 = record.leases.len() as u64;
    assert!(leased >= n, "{leased} leases for {n} jobs");
}

#[test]
fn the_checker_sees_three_leases_of_a_key_at_once() {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let held = |key: &str, from, to| Held {
        key: key.into(),
        from: at(from),
        to: at(to),
    };
    let fine = [
        held("a", 0, 10),
        held("a", 5, 15),
        held("a", 10, 20),
        held("b", 0, 30),
    ];
    assert_eq!(
        most_at_once(&fine).0,
        2,
        "an end and a start at 10 are not three"
    );
    let over = [held("a", 0, 10), held("a", 5, 15), held("a", 9, 20)];
    assert_eq!(most_at_once(&over), (3, "a".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_keeps_a_key_limit_across_brokers_and_a_broker_killed() {
    let pg = sluice_e2e::postgres::shared().unwrap_or_else(|e| panic!("{e}"));
    run_on(&pg.fresh_database()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_keeps_a_key_limit_across_brokers_and_a_broker_killed() {
    let redis = sluice_e2e::redis::shared().unwrap_or_else(|e| panic!("{e}"));
    run_on(&redis.fresh_database()).await;
}
