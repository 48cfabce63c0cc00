//! Several brokers over one Redis (`--store redis://`), end to end with the
//! real binaries and a private `redis-server` (tests/src/redis.rs, AOF with
//! `appendfsync always`):
//!
//! - three brokers, producers and `sluice-worker` processes spread across
//!   them; one broker is SIGKILLed under load. The test records every
//!   lease from Redis's own MONITOR feed (the product keeps no such
//!   history: each script's commands, with the server's time) and checks
//!   that every acknowledged enqueue ran and was acked exactly once, that
//!   no job was leased again before its lease ended, and that the killed
//!   broker's jobs were redelivered within one lease duration;
//! - Redis killed (SIGKILL) and started again from its AOF under load: no
//!   acknowledged job lost, the brokers serve again by themselves;
//! - while Redis is down a broker is NOT_SERVING, refuses Enqueue with
//!   UNAVAILABLE in its own words and ends its Lease streams;
//! - TLS (`rediss://`) against a server with a certificate made here;
//! - settings that would lose jobs, and contradictory flags, refuse to
//!   start, saying why.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::redis::{TestRedis, shared};
use sluice_e2e::scale_out::{LEASE, Producers, broker_id, broker_on, serving_again, workers_of};
use sluice_e2e::tls::{Ca, write};
use sluice_e2e::{BrokerProcess, WAIT, binary, scratch_dir};
use sluice_proto::v1 as pb;
use tonic_health::pb::health_check_response::ServingStatus;

/// One command Redis ran, as MONITOR reports it: the server's time in
/// seconds, the command and its arguments.
#[derive(Debug, Clone)]
struct Ran {
    at: f64,
    words: Vec<String>,
}

/// Every command Redis runs on one database, from its MONITOR feed, kept
/// until dropped.
struct Monitor {
    ran: Arc<Mutex<Vec<Ran>>>,
    stream: TcpStream,
}

impl Monitor {
    fn start(redis: &TestRedis, database: u32) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
        stream.write_all(b"MONITOR\r\n").unwrap();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let reader = BufReader::new(stream.try_clone().unwrap());
        let kept = ran.clone();
        let ours = format!("[{database} ");
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let Some((at, rest)) = line.split_once(' ') else {
                    continue;
                };
                if !rest.starts_with(&ours) {
                    continue;
                }
                let (Ok(at), Some((_, command))) = (at.parse(), rest.split_once("] ")) else {
                    continue;
                };
                let words = words(command);
                kept.lock().unwrap().push(Ran { at, words });
            }
        });
        Self { ran, stream }
    }

    fn ran(&self) -> Vec<Ran> {
        self.ran.lock().unwrap().clone()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The quoted words of a MONITOR line (`"HSET" "key" ...`).
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut word = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => word.extend(chars.next()),
                '"' => break,
                c => word.push(c),
            }
        }
        words.push(word);
    }
    words
}

/// One lease of a job, from the commands that made, extended and ended it.
#[derive(Debug, Clone)]
struct Lease {
    job: String,
    broker: String,
    leased_at: f64,
    /// When it was to run out (an Extend moves it).
    expires_at: f64,
    ended_at: Option<f64>,
}

/// The leases, and how many times each job succeeded, in `ran`.
fn history(ran: &[Ran]) -> (Vec<Lease>, HashMap<String, u32>) {
    let mut leases: Vec<Lease> = Vec::new();
    let mut open: HashMap<String, usize> = HashMap::new();
    let mut succeeded: HashMap<String, u32> = HashMap::new();
    for r in ran {
        let [command, key, rest @ ..] = r.words.as_slice() else {
            continue;
        };
        let Some((_, job)) = key.split_once(":j:") else {
            continue;
        };
        let field = |name: &str| {
            rest.chunks(2)
                .find(|pair| pair[0] == name)
                .and_then(|pair| pair.get(1))
        };
        match command.as_str() {
            "HSET" if field("li").is_some() => {
                assert!(
                    !open.contains_key(job),
                    "job {job} leased again while its lease was open"
                );
                let expires: f64 = field("le").unwrap().parse().unwrap();
                open.insert(job.to_owned(), leases.len());
                leases.push(Lease {
                    job: job.to_owned(),
                    broker: field("b").unwrap().clone(),
                    leased_at: r.at,
                    expires_at: expires / 1e6,
                    ended_at: None,
                });
            }
            "HSET" if field("le").is_some() => {
                if let Some(&i) = open.get(job) {
                    leases[i].expires_at = field("le").unwrap().parse::<f64>().unwrap() / 1e6;
                }
            }
            "HSET" if field("b").is_some() => {
                if let Some(&i) = open.get(job) {
                    leases[i].broker = field("b").unwrap().clone();
                }
            }
            // Any other state ends the lease it had (the claim's own
            // HSET, which names `li`, is matched above).
            "HSET" if field("s").is_some() => {
                if let Some(i) = open.remove(job) {
                    leases[i].ended_at = Some(r.at);
                }
                if field("s").is_some_and(|s| s == "succeeded") {
                    *succeeded.entry(job.to_owned()).or_default() += 1;
                }
            }
            _ => {}
        }
    }
    (leases, succeeded)
}

/// Redis's clock now, in seconds.
fn redis_now(redis: &TestRedis) -> f64 {
    // *2\r\n$10\r\nSECONDS\r\n$6\r\nMICROS\r\n
    let reply = redis.command(0, &["TIME"]);
    let numbers: Vec<f64> = reply
        .lines()
        .filter(|l| !l.starts_with('*') && !l.starts_with('$'))
        .map(|l| l.parse().unwrap())
        .collect();
    numbers[0] + numbers[1] / 1e6
}

/// Waits until queue `default` holds no unfinished job, for at most `limit`.
async fn wait_all_done(broker: &BrokerProcess, limit: Duration) {
    let start = Instant::now();
    loop {
        let stats = broker
            .admin()
            .await
            .stats(pb::StatsRequest {})
            .await
            .map(|s| s.into_inner().queues);
        let left = stats.map_or(u64::MAX, |queues| {
            queues
                .iter()
                .find(|q| q.queue == "default")
                .map_or(0, |q| q.scheduled + q.ready + q.leased)
        });
        if left == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{left} jobs still unfinished after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_brokers_share_the_work_and_a_killed_brokers_jobs_run_elsewhere() {
    const PER_PRODUCER: usize = 500;
    let redis = shared().unwrap_or_else(|e| panic!("{e}"));
    let url = redis.fresh_database();
    let database: u32 = url.rsplit('/').next().unwrap().parse().unwrap();
    let monitor = Monitor::start(redis, database);
    let mut brokers = [
        broker_on(&url, &["--redis-require-fsync"]),
        broker_on(&url, &[]),
        broker_on(&url, &[]),
    ];
    let victim = broker_id(&brokers[1], "connected to Redis");
    // The victim (broker 1) holds the leases its workers take until it dies.
    let _workers = workers_of(&brokers, &["a", "b"], Some(1));
    let producers = Producers::start(&brokers, PER_PRODUCER, Some(20));

    // Under load: a third of the jobs in, and the victim holding leases.
    let start = Instant::now();
    loop {
        let (leases, _) = history(&monitor.ran());
        let held = leases
            .iter()
            .filter(|l| l.broker == victim && l.ended_at.is_none())
            .count();
        if producers.sent() >= PER_PRODUCER && held > 0 {
            break;
        }
        assert!(start.elapsed() < WAIT * 4, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    brokers[1].signal(Signal::SIGKILL);
    let killed_at = redis_now(redis);
    assert!(brokers[1].wait_exit(WAIT).is_some());

    let acked = producers.finish().await;
    wait_all_done(&brokers[0], Duration::from_secs(60)).await;
    // The last commands reach the feed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (leases, succeeded) = history(&monitor.ran());
    let missing: Vec<_> = acked
        .iter()
        .filter(|id| succeeded.get(*id) != Some(&1))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged jobs that did not succeed exactly once, e.g. {missing:?}"
    );

    // The victim's leases that its death left: each ran out at most one
    // lease after the kill (its worker could not extend it through a dead
    // broker), and its job was leased again within one lease duration.
    let orphans: Vec<&Lease> = leases
        .iter()
        .filter(|l| {
            l.broker == victim
                && l.leased_at <= killed_at
                && l.ended_at.is_none_or(|e| e >= killed_at)
        })
        .collect();
    assert!(!orphans.is_empty(), "the victim held no lease when it died");
    let mut slowest = 0.0f64;
    for orphan in &orphans {
        let expired = orphan.expires_at - killed_at;
        assert!(
            expired <= LEASE.as_secs_f64() + 0.1,
            "an orphaned lease ran {expired:.2} s past the kill: {orphan:?}"
        );
        let again = leases
            .iter()
            .filter(|l| l.job == orphan.job && l.leased_at > orphan.leased_at)
            .map(|l| l.leased_at - orphan.expires_at)
            .fold(f64::INFINITY, f64::min);
        assert!(
            again <= LEASE.as_secs_f64(),
            "a killed broker's job ran again {again:.2} s after its lease expired: {orphan:?}"
        );
        slowest = slowest.max(again);
    }
    println!(
        "enqueued and acknowledged {}, leases {}, leases orphaned by the kill {}, \
         each leased again at most {slowest:.2} s after its lease expired (limit {LEASE:?})",
        acked.len(),
        leases.len(),
        orphans.len()
    );
    // The survivors list only their own streams once the victim's record
    // expires.
    let workers = brokers[0].workers().await;
    assert!(workers.iter().any(|w| w.worker_id == "w2a"), "{workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_under_load_loses_no_acknowledged_job() {
    const PER_PRODUCER: usize = 500;
    // Its own server: a crash would disturb the other tests' databases.
    let mut redis = TestRedis::start().unwrap_or_else(|e| panic!("{e}"));
    let url = redis.fresh_database();
    let database: u32 = url.rsplit('/').next().unwrap().parse().unwrap();
    let brokers = [
        broker_on(&url, &["--redis-require-fsync"]),
        broker_on(&url, &["--redis-require-fsync"]),
    ];
    let _workers = workers_of(&brokers, &[""], None);
    let producers = Producers::start(&brokers, PER_PRODUCER, None);
    while producers.sent() < PER_PRODUCER / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.start_again();
    // Each broker serves again by itself, within a few seconds.
    let recovered = serving_again(&brokers, Instant::now(), |m| m.contains("Redis is")).await;
    let acked = producers.finish().await;
    wait_all_done(&brokers[0], Duration::from_secs(60)).await;
    let mut lost = Vec::new();
    for id in &acked {
        let state = redis.command(
            database,
            &["HGET", &format!("sluice:{{default}}:j:{id}"), "s"],
        );
        if !state.contains("succeeded") {
            lost.push((id.clone(), state));
        }
    }
    assert!(
        lost.is_empty(),
        "acknowledged jobs lost in the crash: {lost:?}"
    );
    println!(
        "acknowledged {} jobs around a crash of Redis; brokers serving again {:.1} s after it came back",
        acked.len(),
        recovered.as_secs_f64()
    );
}

/// The broker's health as a gRPC health check answers it.
async fn health(broker: &BrokerProcess) -> Option<ServingStatus> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(broker.channel().await);
    let request = tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    client
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status())
}

#[tokio::test]
async fn while_redis_is_down_a_broker_is_not_serving_and_then_serves_again() {
    let mut redis = TestRedis::start().unwrap_or_else(|e| panic!("{e}"));
    let broker = broker_on(&redis.fresh_database(), &[]);
    let mut stream = broker
        .broker()
        .await
        .lease(pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    redis.kill();
    // The stream ends, health says NOT_SERVING, Enqueue is refused in the
    // broker's words.
    let ended = tokio::time::timeout(WAIT, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the Lease stream did not end");
    sluice_e2e::in_process::eventually("NOT_SERVING", || async {
        health(&broker).await == Some(ServingStatus::NotServing)
    })
    .await;
    let status = broker
        .broker()
        .await
        .enqueue(sluice_e2e::job("t", b"x"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("Redis is unreachable"),
        "{status:?}"
    );
    redis.start_again();
    sluice_e2e::in_process::eventually("SERVING again", || async {
        health(&broker).await == Some(ServingStatus::Serving)
    })
    .await;
    broker.enqueue(sluice_e2e::job("t", b"x")).await;
}

#[tokio::test]
async fn at_redis_maxmemory_enqueue_is_refused_and_jobs_still_finish() {
    let redis = TestRedis::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"])
        .unwrap_or_else(|e| panic!("{e}"));
    let broker = broker_on(&redis.fresh_database(), &[]);
    let mut client = broker.broker().await;
    // 64 KiB payloads until Redis is full (4 MiB: well within 200 of them).
    let big = pb::EnqueueRequest {
        job_type: "t".into(),
        payload: vec![b'x'; 64 * 1024].into(),
        ..Default::default()
    };
    let mut accepted = 0;
    let refused = loop {
        match client.enqueue(big.clone()).await {
            Ok(_) => accepted += 1,
            Err(status) => break status,
        }
        assert!(accepted < 200, "Redis at its maxmemory took every job");
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("maxmemory"), "{refused:?}");
    assert!(accepted > 0);
    // The broker serves on, and the jobs it holds still lease and finish:
    // that is what frees the room.
    assert_eq!(health(&broker).await, Some(ServingStatus::Serving));
    let mut stream = client
        .lease(pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let leased = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a job leased at maxmemory")
        .unwrap()
        .unwrap();
    let job = leased.job.unwrap();
    client
        .ack(pb::AckRequest {
            job_id: job.id,
            lease_id: leased.lease_id,
            ..Default::default()
        })
        .await
        .expect("an ack at maxmemory");
}

#[tokio::test]
async fn the_broker_talks_to_redis_over_verified_tls() {
    let dir = scratch_dir("redis-tls");
    let ca = Ca::new("Redis CA").unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.pem);
    let leaf = ca.issue("127.0.0.1", &["127.0.0.1"]).unwrap();
    let cert = write(&dir, "redis.crt", &leaf.cert);
    let key = write(&dir, "redis.key", &leaf.key);
    let (cert, key, ca_path) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca_file.display().to_string(),
    );
    // TLS only: no plain port at all.
    let redis = TestRedis::start_with(&[
        "--tls-port",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca_path,
        "--tls-auth-clients",
        "no",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let url = redis.fresh_database().replace("redis://", "rediss://");

    let broker = broker_on(&format!("{url}?sslrootcert={ca_path}"), &[]);
    let id = broker.enqueue(sluice_e2e::job("t", b"x")).await;
    assert_eq!(broker.job(&id).await.queue, "default");
    drop(broker);

    // `require` encrypts without checking the certificate.
    let broker = broker_on(&format!("{url}?sslmode=require"), &[]);
    broker.enqueue(sluice_e2e::job("t", b"x")).await;
    drop(broker);

    // A certificate from another CA is refused: the broker does not start.
    let other = write(&dir, "other.pem", &Ca::new("another CA").unwrap().pem);
    let out = refused_start(&["--store", &format!("{url}?sslrootcert={}", other.display())]);
    assert!(out.contains("connecting to Redis"), "{out}");
}

/// The standard error of a broker that refused to start with `args`.
fn refused_start(args: &[&str]) -> String {
    let mut command = Command::new(binary("sluice-broker"));
    command.args(["--addr", "127.0.0.1:0"]).args(args);
    let out = sluice_e2e::cli::run_within(command, None, WAIT).unwrap();
    assert_ne!(out.code, 0, "{args:?} started");
    out.stderr
}

#[test]
fn settings_that_would_lose_jobs_refuse_to_start_saying_why() {
    let everysec = TestRedis::start_with(&["--appendfsync", "everysec"]).unwrap();
    let url = everysec.fresh_database();
    let out = refused_start(&["--store", &url, "--redis-require-fsync"]);
    assert!(
        out.contains("appendfsync everysec; set appendonly yes and appendfsync always"),
        "{out}"
    );
    // Without the flag it starts, and says what a job survives.
    let broker = broker_on(&url, &[]);
    broker.wait_for_log("a crash of its machine loses about the last second");
    drop(broker);

    let evicting = TestRedis::start_with(&["--maxmemory-policy", "allkeys-lru"]).unwrap();
    let out = refused_start(&["--store", &evicting.fresh_database()]);
    assert!(out.contains("it would evict jobs"), "{out}");

    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--store",
                "redis://:secret@127.0.0.1:1/0",
                "--data-dir",
                "/tmp/x",
            ],
            "--data-dir is for the embedded store",
        ),
        (
            &["--store", "embedded", "--redis-require-fsync"],
            "--redis-require-fsync is for --store redis://",
        ),
        (
            &["--store", "rediss://127.0.0.1:1/0"],
            "sslmode=verify-full needs sslrootcert",
        ),
        (
            &["--store", "redis://:secret@127.0.0.1:1/0"],
            "connecting to Redis",
        ),
    ];
    for (args, why) in cases {
        let out = refused_start(args);
        assert!(out.contains(why), "{args:?}: {out}");
        assert!(!out.contains("secret"), "the password was logged: {out}");
    }
}

#[test]
fn the_lease_history_reader_sees_leases_and_their_ends() {
    let ran = |at: f64, line: &str| Ran {
        at,
        words: words(line),
    };
    let (leases, succeeded) = history(&[
        ran(
            1.0,
            r#""HSET" "sluice:{q}:j:A" "s" "leased" "a" "1" "li" "L1" "w" "w" "b" "B1" "st" "0" "lm" "2000" "le" "3000000""#,
        ),
        ran(1.5, r#""HSET" "sluice:{q}:j:A" "le" "4000000""#),
        ran(
            2.0,
            r#""HSET" "sluice:{q}:j:A" "s" "succeeded" "ft" "2000000""#,
        ),
    ]);
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].expires_at, leases[0].ended_at), (4.0, Some(2.0)));
    assert_eq!(succeeded.get("A"), Some(&1));
}
