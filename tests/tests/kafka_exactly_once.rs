//! Exactly once under faults, on every store: records produced to a topic
//! of 8 partitions while two `sluice-kafka` sources read it into one
//! broker (`--data-dir`, or over PostgreSQL or Redis), and a loop SIGKILLs
//! a source or the broker at moments drawn from a seed, several times, and
//! freezes Kafka (SIGSTOP, then SIGCONT) once. A killed source comes back
//! under a new member id after a pause (so its partitions move to the
//! other source first); a killed broker comes back on the same address
//! and store. At the end, every offset of every partition must be exactly
//! one job: none missing, none twice.
//!
//! 1,000,000 records on the embedded store, 200,000 on each shared one
//! (the tests' debug broker inserts them a row or a script at a time);
//! `SLUICE_KAFKA_RECORDS` sets the count for all, `SLUICE_KAFKA_SEED`
//! replays a seed; the counts are printed.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sluice_e2e::kafka::{Kafka, SourceProcess, write_config};
use sluice_e2e::{BrokerProcess, binary, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use tonic::transport::Endpoint;

const PARTITIONS: i32 = 8;
/// Records per produce call.
const PRODUCE_BATCH: usize = 2_000;
/// Faults injected, at least.
const FAULTS: usize = 8;
/// The longest the whole run may take before it fails.
const LIMIT: Duration = Duration::from_secs(900);
/// The longest a broker may take to recover its store and serve.
const RECOVERY: Duration = Duration::from_secs(180);

/// One run at a time: each starts Kafka, a broker and two sources, and a
/// broker's recovery under the others' load is what made them slow.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: the fault schedule, from the seed.
struct Draw(u64);

impl Draw {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// Where the broker keeps its jobs.
enum Store {
    DataDir(std::path::PathBuf),
    Shared(String),
}

fn start_broker(addr: &str, store: &Store) -> BrokerProcess {
    let mut command = Command::new(binary("sluice-broker"));
    command.args(["--addr", addr]).env("RUST_LOG", "info");
    match store {
        Store::DataDir(dir) => command.arg("--data-dir").arg(dir),
        Store::Shared(url) => command.args(["--store", url]),
    };
    let broker = BrokerProcess::spawn(command);
    // Recovery reads every job back (up to a million, in a debug build).
    broker
        .process
        .try_wait_for_log_within("broker serving", RECOVERY)
        .unwrap_or_else(|e| panic!("{e}"));
    broker
}

fn source(config: &Path, url: &str, member: &str) -> SourceProcess {
    let mut command = SourceProcess::command(config, url, member, &[]);
    command.env("RUST_LOG", "warn");
    SourceProcess {
        process: sluice_e2e::process::Process::spawn(command),
    }
}

/// Records committed into jobs so far, from the group's positions.
async fn committed(url: &str) -> Option<i64> {
    let channel = Endpoint::from_shared(url.to_owned())
        .ok()?
        .connect()
        .await
        .ok()?;
    let listed = AdminClient::new(channel)
        .list_source_partitions(pb::ListSourcePartitionsRequest { group: "eo".into() })
        .await
        .ok()?
        .into_inner();
    Some(listed.partitions.iter().filter_map(|p| p.position).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_every_record_is_one_job_across_kills_of_sources_and_the_broker() {
    let dir = scratch_dir("kafka-exactly-once-store");
    every_record_is_one_job(Store::DataDir(dir.join("broker")), 1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_every_record_is_one_job_across_kills_of_sources_and_the_broker() {
    let pg = sluice_e2e::postgres::shared().unwrap_or_else(|e| panic!("{e}"));
    every_record_is_one_job(Store::Shared(pg.fresh_database()), 200_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_every_record_is_one_job_across_kills_of_sources_and_the_broker() {
    let redis = sluice_e2e::redis::shared().unwrap_or_else(|e| panic!("{e}"));
    every_record_is_one_job(Store::Shared(redis.fresh_database()), 200_000).await;
}

async fn every_record_is_one_job(store: Store, default_records: u64) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let records = env_or("SLUICE_KAFKA_RECORDS", default_records);
    let seed = env_or("SLUICE_KAFKA_SEED", u64::from(std::process::id()) | 1);
    let store_name = match &store {
        Store::DataDir(_) => "embedded".to_owned(),
        Store::Shared(url) => url.split(':').next().unwrap_or_default().to_owned(),
    };
    println!("{store_name}: seed {seed} (SLUICE_KAFKA_SEED replays it), {records} records");
    let started = Instant::now();
    let kafka = Kafka::start().await;
    kafka.create_topic("stream", PARTITIONS).await;
    let dir = scratch_dir(&format!("kafka-exactly-once-{store_name}"));
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let url = format!("http://{addr}");
    let mut broker = start_broker(&addr, &store);
    let config = write_config(
        &dir,
        &kafka.addr,
        "eo",
        "",
        "[[topic]]\nname = \"stream\"\nqueue = \"stream\"\njob_type = \"event\"\n",
    );

    // The producer: every record's value is its partition and number.
    let produced = Arc::new(AtomicU64::new(0));
    let producer = {
        let client = kafka.client().await;
        let produced = produced.clone();
        let kafka_addr = kafka.addr.clone();
        tokio::spawn(async move {
            let _ = kafka_addr;
            let mut pcs = Vec::new();
            for p in 0..PARTITIONS {
                pcs.push(
                    client
                        .partition_client(
                            "stream",
                            p,
                            rskafka::client::partition::UnknownTopicHandling::Retry,
                        )
                        .await
                        .unwrap(),
                );
            }
            let mut n = 0u64;
            let mut p = 0usize;
            while n < records {
                let count = PRODUCE_BATCH.min(usize::try_from(records - n).unwrap());
                let batch: Vec<_> = (0..count)
                    .map(|i| {
                        sluice_e2e::kafka::record(
                            None,
                            format!("{p}:{}", n + i as u64).as_bytes(),
                            &[],
                        )
                    })
                    .collect();
                pcs[p]
                    .produce(
                        batch,
                        rskafka::client::partition::Compression::NoCompression,
                    )
                    .await
                    .unwrap();
                n += count as u64;
                produced.store(n, Ordering::Relaxed);
                p = (p + 1) % pcs.len();
            }
        })
    };

    let mut sources = [source(&config, &url, "a-0"), source(&config, &url, "b-0")];
    let mut draw = Draw(seed);
    let mut faults = Vec::new();
    let mut generation = 0;
    let tansu = Pid::from_raw(kafka.process.pid());
    // Faults while the records come and go in.
    while faults.len() < FAULTS || committed(&url).await.unwrap_or(0) < records as i64 {
        assert!(
            started.elapsed() < LIMIT,
            "not done in {LIMIT:?}: {faults:?}"
        );
        tokio::time::sleep(Duration::from_millis(1_000 + draw.next(3_000))).await;
        if faults.len() >= FAULTS {
            continue;
        }
        match draw.next(5) {
            0 | 1 => {
                let i = draw.next(2) as usize;
                sources[i].process.signal(Signal::SIGKILL);
                sources[i]
                    .process
                    .wait_exit(Duration::from_secs(10))
                    .unwrap();
                // Away long enough, at times, for its claims to run out.
                tokio::time::sleep(Duration::from_millis(draw.next(4_000))).await;
                generation += 1;
                let member = format!("{}-{generation}", ["a", "b"][i]);
                sources[i] = source(&config, &url, &member);
                faults.push(format!("source {i} killed"));
            }
            2 | 3 => {
                broker.signal(Signal::SIGKILL);
                broker.wait_exit(Duration::from_secs(10)).unwrap();
                broker = start_broker(&addr, &store);
                faults.push("broker killed".to_owned());
            }
            _ if !faults.iter().any(|f| f.starts_with("kafka")) => {
                kill(tansu, Signal::SIGSTOP).unwrap();
                tokio::time::sleep(Duration::from_secs(2)).await;
                kill(tansu, Signal::SIGCONT).unwrap();
                faults.push("kafka frozen 2s".to_owned());
            }
            _ => {}
        }
    }
    producer.await.unwrap();
    let elapsed = started.elapsed();

    // Every job, by its record.
    let mut admin = broker.admin().await;
    let jobs = sluice_e2e::all_jobs(&mut admin, "stream").await;
    let mut seen: HashMap<(i32, i64), u32> = HashMap::with_capacity(jobs.len());
    let mut by_value: HashMap<Vec<u8>, u32> = HashMap::with_capacity(jobs.len());
    for job in &jobs {
        let partition = job.headers["kafka-partition"].parse().unwrap();
        let offset = job.headers["kafka-offset"].parse().unwrap();
        *seen.entry((partition, offset)).or_default() += 1;
        *by_value.entry(job.payload.to_vec()).or_default() += 1;
    }
    let duplicated =
        seen.values().filter(|n| **n > 1).count() + by_value.values().filter(|n| **n > 1).count();
    let client = kafka.client().await;
    let mut missing = 0i64;
    let mut total = 0i64;
    for p in 0..PARTITIONS {
        let pc = client
            .partition_client(
                "stream",
                p,
                rskafka::client::partition::UnknownTopicHandling::Error,
            )
            .await
            .unwrap();
        let (_, high) = sluice_kafka::kafka::bounds(&pc).await.unwrap();
        total += high;
        missing += (0..high).filter(|o| !seen.contains_key(&(p, *o))).count() as i64;
    }
    println!(
        "{store_name}: records {records}, offsets {total}, jobs {}, missing {missing}, \
         duplicated {duplicated}, faults {} ({}), {:.1}s",
        jobs.len(),
        faults.len(),
        faults.join(", "),
        elapsed.as_secs_f64()
    );
    assert_eq!(total, records as i64);
    assert!(faults.len() >= FAULTS);
    assert_eq!(missing, 0, "records with no job");
    assert_eq!(duplicated, 0, "records enqueued twice");
    assert_eq!(jobs.len() as u64, records);
    drop(sources);
}
