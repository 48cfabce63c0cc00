//! The Kafka source (`sluice-kafka`) end to end: a real Kafka-compatible
//! server (Tansu, tests/src/kafka.rs), a real broker process and the real
//! binary. Mapping and headers, records that cannot be jobs kept as dead
//! letters, a full queue pausing a partition until there is room, a start
//! from a time and `sluice-kafka reset`, the drain on SIGTERM, metrics
//! and health.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::http::Api;
use sluice_e2e::kafka::{Kafka, SourceProcess, record, write_config};
use sluice_e2e::process::binary;
use sluice_e2e::{BrokerProcess, WAIT, all_jobs, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;

/// Waits until `queue` holds `n` jobs (any state); returns them. On
/// timeout, the failure shows `source`'s log.
async fn jobs_of(
    admin: &mut AdminClient<tonic::transport::Channel>,
    queue: &str,
    n: usize,
    source: &SourceProcess,
) -> Vec<pb::Job> {
    let deadline = Instant::now() + WAIT;
    loop {
        let jobs = all_jobs(admin, queue).await;
        if jobs.len() >= n {
            return jobs;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs of {n} in {queue}; the source's log:\n{}",
            jobs.len(),
            source.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kafka with `topic` of `partitions` and a client of it, a broker with
/// `broker_args`, and a config file that reads the topic as the group
/// `{topic}-bridge` with the `[[topic]]` table `table`.
async fn setup(
    topic: &str,
    partitions: i32,
    broker_args: &[&str],
    table: &str,
) -> (
    Kafka,
    rskafka::client::Client,
    BrokerProcess,
    std::path::PathBuf,
) {
    let kafka = Kafka::start().await;
    kafka.create_topic(topic, partitions).await;
    let client = kafka.client().await;
    let broker = BrokerProcess::start(broker_args);
    let dir = scratch_dir(&format!("kafka-{topic}"));
    let config = write_config(&dir, &kafka.addr, &format!("{topic}-bridge"), "", table);
    (kafka, client, broker, config)
}

/// `sluice-kafka reset --config CONFIG --broker URL` with `args`, with the
/// token `token` (none: no token); its output.
fn reset(
    config: &std::path::Path,
    url: &str,
    args: &[&str],
    token: Option<&str>,
) -> std::process::Output {
    let mut command = std::process::Command::new(binary("sluice-kafka"));
    command
        .arg("reset")
        .arg("--config")
        .arg(config)
        .args(["--broker", url])
        .args(args)
        .env_remove("SLUICE_TOKEN");
    if let Some(token) = token {
        command.env("SLUICE_TOKEN", token);
    }
    command.output().unwrap()
}

fn offsets(jobs: &[pb::Job]) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = jobs
        .iter()
        .map(|j| {
            (
                j.headers["kafka-partition"].clone(),
                j.headers["kafka-offset"].parse().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_become_jobs_and_bad_ones_dead_letters_with_metrics_and_health() {
    let (kafka, client, broker, config) = setup(
        "orders",
        2,
        &["--max-payload", "1024"],
        "[[topic]]\nname = \"orders\"\nqueue = \"orders\"\ntype_header = \"type\"\npriority = 4\nmax_attempts = 7\ntimeout = \"45s\"\n",
    )
    .await;
    let good = record(
        Some("customer-9"),
        b"{\"id\":1}",
        &[("type", "order.created"), ("trace", "t-1")],
    );
    let untyped = record(None, b"{}", &[("trace", "t-2")]);
    let mut binary_header = record(None, b"{}", &[("type", "order.created")]);
    binary_header.headers.insert("blob".into(), vec![0xc3]);
    let too_large = record(None, &[b'x'; 2000], &[("type", "order.created")]);
    let bad_value = record(None, b"{}", &[("type", "order.created"), ("bell", "\u{7}")]);
    kafka
        .produce(
            &client,
            "orders",
            0,
            vec![good, untyped, binary_header, too_large, bad_value],
        )
        .await;
    kafka
        .produce(
            &client,
            "orders",
            1,
            vec![record(None, b"{\"id\":2}", &[("type", "order.paid")])],
        )
        .await;
    let source = SourceProcess::start(
        &config,
        &broker.url(),
        "m1",
        &["--http-addr", "127.0.0.1:0"],
    );
    let mut admin = broker.admin().await;
    let jobs = jobs_of(&mut admin, "orders", 6, &source).await;
    assert_eq!(jobs.len(), 6);
    let find = |partition: &str, offset: &str| {
        jobs.iter()
            .find(|j| {
                j.headers["kafka-partition"] == partition && j.headers["kafka-offset"] == offset
            })
            .unwrap_or_else(|| panic!("no job of {partition}/{offset}"))
    };
    let first = find("0", "0");
    assert_eq!(first.state(), pb::JobState::Ready);
    assert_eq!(
        (first.job_type.as_str(), first.priority, first.max_attempts),
        ("order.created", 4, 7)
    );
    assert_eq!(first.timeout.as_ref().unwrap().seconds, 45);
    assert_eq!(&first.payload[..], b"{\"id\":1}");
    assert_eq!(first.headers["kafka-topic"], "orders");
    assert_eq!(first.headers["kafka-key"], "customer-9");
    assert_eq!(first.headers["trace"], "t-1");
    assert!(first.headers["kafka-timestamp"].ends_with('Z'));
    let reasons: Vec<(&str, &str)> = ["1", "2", "3", "4"]
        .iter()
        .map(|o| {
            let j = find("0", o);
            assert_eq!(j.state(), pb::JobState::Dead, "offset {o}: {j:?}");
            assert_eq!(j.attempt, 0);
            (*o, j.last_error.as_str())
        })
        .collect();
    assert!(
        reasons[0].1.contains("\"type\" (the job type) is missing"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].1.contains("\"blob\" is not UTF-8"),
        "{reasons:?}"
    );
    assert!(
        reasons[2]
            .1
            .starts_with("payload: 2000 bytes is over the limit"),
        "{reasons:?}"
    );
    assert!(
        find("0", "3").payload.is_empty(),
        "a payload over the limit is not kept"
    );
    assert!(reasons[3].1.starts_with("headers:"), "{reasons:?}");
    assert_eq!(find("1", "0").job_type, "order.paid");

    let api = Api::new(source.process.http_addr());
    assert_eq!(api.get("/healthz").await.status, 200);
    let metrics = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
    for line in [
        "sluice_kafka_records_read_total{topic=\"orders\",queue=\"orders\"} 6",
        "sluice_kafka_jobs_enqueued_total{topic=\"orders\",queue=\"orders\"} 2",
        "sluice_kafka_dead_letters_total{topic=\"orders\",queue=\"orders\"} 4",
        "sluice_kafka_lag_records{topic=\"orders\",partition=\"0\"} 0",
        "sluice_kafka_partitions_held 2",
    ] {
        assert!(metrics.contains(line), "{line} is not in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_pauses_the_partition_until_there_is_room() {
    let (kafka, client, broker, config) = setup(
        "events",
        1,
        &["--max-queue-size", "5"],
        "[[topic]]\nname = \"events\"\nqueue = \"events\"\njob_type = \"event\"\n",
    )
    .await;
    let records = (0..20)
        .map(|i| record(None, format!("{i}").as_bytes(), &[]))
        .collect();
    kafka.produce(&client, "events", 0, records).await;
    let source = SourceProcess::start(
        &config,
        &broker.url(),
        "m1",
        &["--http-addr", "127.0.0.1:0"],
    );
    let mut admin = broker.admin().await;
    jobs_of(&mut admin, "events", 5, &source).await;
    let api = Api::new(source.process.http_addr());
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = String::from_utf8(api.get("/metrics").await.body.to_vec()).unwrap();
        if metrics.contains("sluice_kafka_pauses_total{topic=\"events\",reason=\"full\"}") {
            break;
        }
        assert!(Instant::now() < deadline, "no pause counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        all_jobs(&mut admin, "events").await.len(),
        5,
        "nothing past the queue's size"
    );
    // Make room: each job run and acked; the partition resumes.
    let mut broker_client = broker.broker().await;
    let mut stream = broker_client
        .lease(pb::LeaseRequest {
            worker_id: "test-worker".into(),
            queues: vec!["events".into()],
            max_in_flight: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..20 {
        let leased = match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(leased))) => leased,
            other => panic!(
                "no job leased: {other:?}; the source's log:\n{}",
                source.process.log()
            ),
        };
        broker_client
            .ack(pb::AckRequest {
                job_id: leased.job.as_ref().unwrap().id.clone(),
                lease_id: leased.lease_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let jobs = all_jobs(&mut admin, "events").await;
    let offsets: Vec<i64> = offsets(&jobs).into_iter().map(|(_, o)| o).collect();
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<i64>>(),
        "every record once, none skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_time_a_drain_and_a_reset_replay_what_they_say() {
    let kafka = Kafka::start().await;
    kafka.create_topic("audit", 2).await;
    let client = kafka.client().await;
    let old: Vec<_> = (0..4)
        .map(|i| record(None, format!("old-{i}").as_bytes(), &[]))
        .collect();
    kafka.produce(&client, "audit", 0, old.clone()).await;
    kafka.produce(&client, "audit", 1, old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new: Vec<_> = (0..3)
        .map(|i| record(None, format!("new-{i}").as_bytes(), &[]))
        .collect();
    kafka.produce(&client, "audit", 0, new.clone()).await;
    kafka.produce(&client, "audit", 1, new).await;
    let broker = BrokerProcess::start(&[]);
    let dir = scratch_dir("kafka-replay");
    let start = format!(
        "start = \"{}\"",
        since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let config = write_config(
        &dir,
        &kafka.addr,
        "audit-bridge",
        &start,
        "[[topic]]\nname = \"audit\"\nqueue = \"audit\"\njob_type = \"audit\"\n",
    );
    let mut source = SourceProcess::start(&config, &broker.url(), "m1", &[]);
    let mut admin = broker.admin().await;
    let jobs = jobs_of(&mut admin, "audit", 6, &source).await;
    let payloads: Vec<String> = jobs
        .iter()
        .map(|j| String::from_utf8(j.payload.to_vec()).unwrap())
        .collect();
    assert!(
        payloads.iter().all(|p| p.starts_with("new-")),
        "only records after the start: {payloads:?}"
    );
    // Drain: SIGTERM, exit 0, the group left.
    source.process.signal(Signal::SIGTERM);
    let status = source.process.wait_exit(WAIT).expect("the source drains");
    assert!(status.success(), "{status:?}\n{}", source.process.log());
    assert!(source.process.log().contains("left the source group"));
    // Reset to earliest: the records are read again, the new ones too.
    let done = reset(
        &config,
        &broker.url(),
        &["--topic", "audit", "--to", "earliest"],
        None,
    );
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let printed = String::from_utf8_lossy(&done.stdout);
    assert!(
        printed.contains("audit partition 0: position 0"),
        "{printed}"
    );
    let source = SourceProcess::start(&config, &broker.url(), "m1", &[]);
    let jobs = jobs_of(&mut admin, "audit", 6 + 14, &source).await;
    assert_eq!(jobs.len(), 20);
    let replayed = offsets(&jobs);
    for partition in ["0", "1"] {
        let of: Vec<i64> = replayed
            .iter()
            .filter(|(p, _)| p == partition)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(of, [0, 1, 2, 3, 4, 4, 5, 5, 6, 6], "partition {partition}");
    }
    // The CLI shows the group, and sets one partition's position by offset.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary("sluice"))
            .args(["--broker", &broker.url(), "-o", "json", "sources"])
            .args(args)
            .env_remove("SLUICE_TOKEN")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let listed = cli(&["list", "audit-bridge"]);
    assert_eq!(listed["members"], serde_json::json!(["m1"]));
    let positions: Vec<i64> = (0..2)
        .map(|i| listed["partitions"][i]["position"].as_i64().unwrap())
        .collect();
    assert_eq!(positions, [7, 7]);
    let set = cli(&[
        "set",
        "audit-bridge",
        "--stream",
        "audit",
        "--partition",
        "1",
        "--to",
        "7",
    ]);
    assert_eq!(set["partitions"][0]["position"], 7);
    assert!(
        set["partitions"][0]["holder"].is_null(),
        "the holder is fenced: {set}"
    );
    // A bad --to is refused, naming it.
    let bad = reset(
        &config,
        &broker.url(),
        &["--topic", "audit", "--to", "yesterday"],
        None,
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--to:"));
}

#[test]
fn a_bad_config_refuses_to_start_naming_the_line() {
    let dir = scratch_dir("kafka-bad-config");
    let config = write_config(
        &dir,
        "127.0.0.1:1",
        "bridge",
        "",
        "[[topic]]\nname = \"t\"\nqueue = \"bad queue\"\njob_type = \"x\"\n",
    );
    let out = std::process::Command::new(binary("sluice-kafka"))
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sluice-kafka.toml:12: topic \"t\": queue:"),
        "{stderr}"
    );
}

const PRODUCER_TOKEN: &str = "kafka-producer-token-0123456789";
const OTHER_PRODUCER_TOKEN: &str = "other-producer-token-0123456789";
const STRANGER_TOKEN: &str = "stranger-producer-token-0123456";
const WORKER_TOKEN: &str = "kafka-worker-token-0123456789ab";
const ADMIN_TOKEN: &str = "kafka-admin-token-0123456789abc";

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = tonic::metadata::AsciiMetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_tls_a_producer_token_of_the_queue_is_what_it_takes() {
    let kafka = Kafka::start().await;
    kafka.create_topic("payments", 1).await;
    let client = kafka.client().await;
    kafka
        .produce(
            &client,
            "payments",
            0,
            vec![record(None, b"{}", &[]), record(None, b"{}", &[])],
        )
        .await;
    let dir = scratch_dir("kafka-tls");
    let pki = sluice_e2e::tls::TestPki::new(&dir.join("pki")).unwrap();
    let tokens = dir.join("auth-tokens");
    std::fs::write(
        &tokens,
        format!(
            "producer {PRODUCER_TOKEN} payments,payments-*\nproducer {OTHER_PRODUCER_TOKEN} other,payments-*\nproducer {STRANGER_TOKEN} other\nworker {WORKER_TOKEN}\nadmin {ADMIN_TOKEN}\n"
        ),
    )
    .unwrap();
    let broker = BrokerProcess::start(&[
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
        "--auth-tokens",
        tokens.to_str().unwrap(),
    ]);
    let url = format!("https://{}", broker.addr);
    let config = write_config(
        &dir,
        &kafka.addr,
        "payments-bridge",
        "",
        "[[topic]]\nname = \"payments\"\nqueue = \"payments\"\njob_type = \"payment\"\n",
    );
    let start = |member: &str, token: &str| {
        let mut command = SourceProcess::command(
            &config,
            &url,
            member,
            &["--tls-ca", pki.ca.to_str().unwrap()],
        );
        command.env("SLUICE_TOKEN", token);
        sluice_e2e::process::Process::spawn(command)
    };
    // A worker's token may not claim; a producer whose queues do not
    // cover the group may not join it; one that covers the group but not
    // the queue may claim but not commit into it: each is told why,
    // nothing added.
    let worker = start("w", WORKER_TOKEN);
    worker.wait_for_log("the worker credential may not ClaimPartitions");
    drop(worker);
    let stranger = start("s", STRANGER_TOKEN);
    stranger.wait_for_log("may not use source group \\\"payments-bridge\\\"");
    drop(stranger);
    let other = start("o", OTHER_PRODUCER_TOKEN);
    other.wait_for_log("may not use queue \\\"payments\\\"");
    drop(other);
    // The producer of the queue reads the topic in.
    let source = SourceProcess {
        process: start("p", PRODUCER_TOKEN),
    };
    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    let channel = sluice_e2e::tls::channel(&broker.addr, sluice_e2e::tls::client_config(&ca, None))
        .await
        .unwrap();
    let mut admin = AdminClient::new(channel);
    let deadline = Instant::now() + WAIT;
    loop {
        let page = admin
            .list_jobs(with_token(
                pb::ListJobsRequest {
                    queue: "payments".into(),
                    ..Default::default()
                },
                ADMIN_TOKEN,
            ))
            .await
            .unwrap()
            .into_inner();
        if page.jobs.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} jobs; the source's log:\n{}",
            page.jobs.len(),
            source.process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // reset takes an admin of every queue: a producer's token is refused.
    let reset_as = |token: &str| {
        let args = [
            "--tls-ca",
            pki.ca.to_str().unwrap(),
            "--topic",
            "payments",
            "--to",
            "earliest",
        ];
        reset(&config, &url, &args, Some(token))
    };
    let refused = reset_as(PRODUCER_TOKEN);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("SetSourcePositions"),
        "{refused:?}"
    );
    let done = reset_as(ADMIN_TOKEN);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        !source.process.log().contains(PRODUCER_TOKEN),
        "the token is never logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_over_tls_with_the_configured_ca() {
    let dir = scratch_dir("kafka-to-kafka-tls");
    let pki = sluice_e2e::tls::TestPki::new(&dir.join("pki")).unwrap();
    let kafka = Kafka::start_behind_tls(&pki).await;
    kafka.create_topic("secure", 1).await;
    let client = kafka.client().await;
    kafka
        .produce(&client, "secure", 0, vec![record(None, b"over tls", &[])])
        .await;
    let broker = BrokerProcess::start(&[]);
    let config = dir.join("tls.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = [\"{}\"]\ntls = {{ ca_file = \"{}\" }}\n\n[source]\ngroup = \"secure-bridge\"\n\n[[topic]]\nname = \"secure\"\nqueue = \"secure\"\njob_type = \"s\"\n",
            kafka.addr,
            pki.ca.display()
        ),
    )
    .unwrap();
    let source = SourceProcess::start(&config, &broker.url(), "m1", &[]);
    let mut admin = broker.admin().await;
    let jobs = jobs_of(&mut admin, "secure", 1, &source).await;
    assert_eq!(&jobs[0].payload[..], b"over tls");
}
