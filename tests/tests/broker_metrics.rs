//! `/metrics` on `--http-addr`: after a known sequence of job transitions,
//! every counter, gauge and histogram count is exactly what happened, as
//! read by the Prometheus project's own OpenMetrics parser; queue latency
//! grows while a job waits; store gauges with `--data-dir`; schedule ticks
//! fired and skipped by policy, and their lag; the loopback listener stays
//! open when tokens are on.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use prost_types::Timestamp;
use sluice_e2e::metrics::{Scrape, scrape, scrape_tls, scrape_until};
use sluice_e2e::tls::TestPki;
use sluice_e2e::{BrokerProcess, WAIT, job};
use sluice_proto::v1 as pb;
use tokio_stream::StreamExt;

const MAIL: &[(&str, &str)] = &[("queue", "mail"), ("job_type", "send")];

fn in_an_hour() -> Option<Timestamp> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Some(Timestamp {
        seconds: i64::try_from(now.as_secs()).unwrap() + 3600,
        nanos: 0,
    })
}

fn send(key: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: "mail".into(),
        idempotency_key: key.into(),
        ..job("send", b"{}")
    }
}

fn lease_request(max_in_flight: u32, lease: Option<Duration>) -> pb::LeaseRequest {
    pb::LeaseRequest {
        worker_id: "metrics-test".into(),
        queues: vec!["mail".into()],
        max_in_flight,
        lease_duration: lease.map(|d| prost_types::Duration {
            seconds: i64::try_from(d.as_secs()).unwrap(),
            nanos: 0,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_transition_is_counted_exactly() {
    // Failed attempts wait an hour, so that nothing is retried mid-test.
    let broker = BrokerProcess::start(&[
        "--http-addr",
        "127.0.0.1:0",
        "--backoff-initial",
        "1h",
        "--backoff-max",
        "2h",
    ]);
    let url = broker.metrics_url();
    let mut client = broker.broker().await;
    let mut admin = broker.admin().await;

    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(broker.enqueue(send(&format!("a{n}"))).await);
    }
    let duplicate = client.enqueue(send("a1")).await.unwrap().into_inner();
    assert!(duplicate.duplicate);
    let report = broker
        .enqueue(pb::EnqueueRequest {
            queue: "mail".into(),
            run_at: in_an_hour(),
            ..job("report", b"")
        })
        .await;
    broker
        .enqueue(pb::EnqueueRequest {
            queue: "bulk".into(),
            run_at: in_an_hour(),
            ..job("send", b"")
        })
        .await;
    admin
        .cancel_job(pb::CancelJobRequest { job_id: report })
        .await
        .unwrap();
    let purged = admin
        .purge_queue(pb::PurgeQueueRequest {
            queue: "bulk".into(),
            state: pb::JobState::Scheduled.into(),
        })
        .await
        .unwrap();
    assert_eq!(purged.into_inner().purged, 1);

    // Five leased on one stream: 2 acked, 1 nacked (retried later), 1
    // nacked dead, 1 released for an hour.
    let mut stream = client
        .lease(lease_request(5, None))
        .await
        .unwrap()
        .into_inner();
    let mut leased = Vec::new();
    for _ in 0..5 {
        let next = tokio::time::timeout(WAIT, stream.next()).await.unwrap();
        leased.push(next.unwrap().unwrap());
    }
    let lease = |n: usize| {
        let job = leased[n].job.as_ref().unwrap();
        (job.id.clone(), leased[n].lease_id.clone())
    };
    for n in 0..2 {
        let (job_id, lease_id) = lease(n);
        client
            .ack(pb::AckRequest {
                job_id,
                lease_id,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let (job_id, lease_id) = lease(2);
    client
        .nack(pb::NackRequest {
            job_id,
            lease_id,
            error: "boom".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (dead_id, lease_id) = lease(3);
    client
        .nack(pb::NackRequest {
            job_id: dead_id.clone(),
            lease_id,
            error: "bad input".into(),
            dead: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let (job_id, lease_id) = lease(4);
    client
        .release(pb::ReleaseRequest {
            key_delay: None,
            job_id,
            lease_id,
            delay: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap();
    drop(stream);
    // Until the broker has closed the stream, it could lease the next job
    // to it (and take it back): wait, so that each job is leased once.
    let no_streams = |s: &Scrape| s.get("sluice_lease_streams", &[]) == Some(0.0);
    scrape_until(&url, "the first stream to close", no_streams).await;

    // A sixth job, leased for one second and left to expire.
    let expiring = broker.enqueue(send("a6")).await;
    let mut stream = client
        .lease(lease_request(1, Some(Duration::from_secs(1))))
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let expired = scrape_until(&url, "the lease to expire", |s| {
        s.get("sluice_jobs_expired_total", MAIL) == Some(1.0)
    })
    .await;
    assert_eq!(expired.value("sluice_lease_streams", &[]), 1.0);
    drop(stream);
    scrape_until(&url, "the second stream to close", no_streams).await;
    let job = admin
        .get_job(pb::GetJobRequest { job_id: expiring })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), pb::JobState::Scheduled);

    // The dead job goes back to READY and waits: no stream is open.
    admin
        .retry_job(pb::RetryJobRequest { job_id: dead_id })
        .await
        .unwrap();
    let first = scrape(&url);
    assert_eq!(
        first.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );

    let counters = [
        ("sluice_jobs_enqueued_total", MAIL, 6.0),
        (
            "sluice_jobs_enqueued_total",
            &[("queue", "mail"), ("job_type", "report")],
            1.0,
        ),
        (
            "sluice_jobs_enqueued_total",
            &[("queue", "bulk"), ("job_type", "send")],
            1.0,
        ),
        ("sluice_jobs_duplicates_total", MAIL, 1.0),
        ("sluice_jobs_leased_total", MAIL, 6.0),
        ("sluice_jobs_acked_total", MAIL, 2.0),
        ("sluice_jobs_nacked_total", MAIL, 2.0),
        ("sluice_jobs_expired_total", MAIL, 1.0),
        ("sluice_jobs_dead_lettered_total", MAIL, 1.0),
        ("sluice_jobs_released_total", MAIL, 1.0),
        (
            "sluice_jobs_cancelled_total",
            &[("queue", "mail"), ("job_type", "report")],
            1.0,
        ),
        ("sluice_jobs_retried_total", MAIL, 1.0),
        (
            "sluice_jobs_purged_total",
            &[("queue", "bulk"), ("job_type", "send")],
            1.0,
        ),
        // One wait per lease; one run time per ack, nack and expiry.
        ("sluice_job_wait_seconds_count", MAIL, 6.0),
        ("sluice_job_run_seconds_count", MAIL, 5.0),
    ];
    for (name, labels, expected) in counters {
        assert_eq!(first.value(name, labels), expected, "{name} {labels:?}");
    }
    // Once a label pair has seen a job, its other counters read 0 (not absent).
    let bulk = [("queue", "bulk"), ("job_type", "send")];
    assert_eq!(first.value("sluice_jobs_acked_total", &bulk), 0.0);
    assert_eq!(
        first.get(
            "sluice_jobs_acked_total",
            &[("queue", "none"), ("job_type", "send")]
        ),
        None
    );

    // Jobs by state: A3, A5 and A6 wait an hour, A4 is ready again.
    let mail_states = [
        ("scheduled", 3.0),
        ("ready", 1.0),
        ("leased", 0.0),
        ("succeeded", 2.0),
        ("dead", 0.0),
        ("cancelled", 1.0),
    ];
    for (state, expected) in mail_states {
        let labels = [("queue", "mail"), ("state", state)];
        assert_eq!(first.value("sluice_jobs", &labels), expected, "{state}");
    }
    assert_eq!(
        first.value("sluice_queue_paused", &[("queue", "mail")]),
        0.0
    );
    assert_eq!(first.value("sluice_lease_stream_free_slots", &[]), 0.0);

    let rpc = |s: &Scrape, method: &str| {
        s.value("sluice_rpc_duration_seconds_count", &[("method", method)])
    };
    assert_eq!(rpc(&first, "Broker/Enqueue"), 9.0);
    assert_eq!(rpc(&first, "Broker/Lease"), 2.0);
    assert_eq!(rpc(&first, "Broker/Ack"), 2.0);
    assert_eq!(rpc(&first, "Admin/PurgeQueue"), 1.0);
    assert_eq!(rpc(&first, "other"), 0.0);

    // Queue latency: the ready job has waited, and waits on.
    let age = |s: &Scrape| {
        s.value(
            "sluice_queue_oldest_ready_age_seconds",
            &[("queue", "mail")],
        )
    };
    let waited = age(&first);
    assert!(waited >= 0.0, "{waited}");
    let later = scrape_until(&url, "the oldest ready age to grow by a second", |s| {
        age(s) >= waited + 1.0
    })
    .await;
    assert_eq!(
        later.value("sluice_jobs", &[("queue", "mail"), ("state", "ready")]),
        1.0
    );
    // No ready job: an age of 0.
    assert_eq!(
        later.value(
            "sluice_queue_oldest_ready_age_seconds",
            &[("queue", "bulk")]
        ),
        0.0
    );
    // Memory-only: no store gauges.
    assert!(
        later
            .keys()
            .all(|(name, _)| !name.starts_with("sluice_store_"))
    );
}

#[tokio::test]
async fn a_durable_broker_reports_its_data_file_commit_time_and_memory() {
    let dir = sluice_e2e::scratch_dir("metrics-store");
    let broker = BrokerProcess::start(&[
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--max-memory",
        "64MiB",
    ]);
    let url = broker.metrics_url();
    broker.enqueue(job("t", b"payload")).await;
    let scraped = scrape(&url);
    // One job: its overhead and its 7-byte payload, against the limit.
    let held = scraped.value("sluice_jobs_held_bytes", &[]);
    assert_eq!(held, (sluice_queue::JOB_OVERHEAD + 7) as f64);
    assert_eq!(scraped.value("sluice_jobs_retained_bytes", &[]), 0.0);
    assert_eq!(
        scraped.value("sluice_jobs_max_memory_bytes", &[]),
        (64 << 20) as f64
    );
    let files: u64 = ["sluice.redb", "sluice.journal"]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).unwrap().len())
        .sum();
    assert!(files > std::fs::metadata(dir.join("sluice.redb")).unwrap().len());
    assert_eq!(scraped.value("sluice_store_file_bytes", &[]), files as f64);
    let commit = scraped.value("sluice_store_last_commit_seconds", &[]);
    assert!(commit > 0.0 && commit < 10.0, "{commit}");
}

#[tokio::test]
async fn with_tokens_the_loopback_listener_stays_open_to_scrapers() {
    let dir = sluice_e2e::scratch_dir("metrics-tokens");
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "admin admin-token-0123456789\n").unwrap();
    let broker = BrokerProcess::start(&[
        "--http-addr",
        "127.0.0.1:0",
        "--auth-tokens",
        tokens.to_str().unwrap(),
    ]);
    broker.wait_for_log(r#"access="open""#);
    let scraped = scrape(&broker.metrics_url());
    assert_eq!(scraped.value("sluice_lease_streams", &[]), 0.0);
}

#[tokio::test]
async fn with_tls_the_metrics_listener_serves_https_with_the_brokers_certificate() {
    let dir = sluice_e2e::scratch_dir("metrics-tls");
    let pki = TestPki::new(&dir).unwrap();
    let broker = BrokerProcess::start(&[
        "--http-addr",
        "127.0.0.1:0",
        "--tls-cert",
        pki.server_cert.to_str().unwrap(),
        "--tls-key",
        pki.server_key.to_str().unwrap(),
    ]);
    broker.wait_for_log("tls=true");
    let url = broker.metrics_url().replacen("http://", "https://", 1);
    let scraped = scrape_tls(&url, &pki.ca);
    assert_eq!(scraped.value("sluice_lease_streams", &[]), 0.0);
    // Plain HTTP gets no answer from a TLS listener.
    let plain = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)",
        ])
        .arg(broker.metrics_url())
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP was answered");
}

/// A schedule every second into `queue`, with `overlap`.
fn pulse(name: &str, queue: &str, overlap: pb::Overlap) -> pb::CreateScheduleRequest {
    pb::CreateScheduleRequest {
        schedule: Some(pb::Schedule {
            name: name.into(),
            every: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            overlap: overlap.into(),
            job: Some(pb::JobTemplate {
                queue: queue.into(),
                job_type: "tick".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        upsert: false,
    }
}

/// Ticks fired, ticks skipped for overlap (the first tick's job is never
/// taken, so each later tick is skipped) and for catch-up (ticks missed
/// while the broker was down, past the on-time window), and the lag of
/// each fired tick.
#[tokio::test]
async fn schedule_ticks_fired_skipped_and_their_lag_are_counted() {
    let dir = sluice_e2e::scratch_dir("metrics-schedules");
    let args = [
        "--http-addr",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
    ];
    let mut broker = BrokerProcess::start(&args);
    let url = broker.metrics_url();
    let mut admin = broker.admin().await;
    admin
        .create_schedule(pulse("one-at-a-time", "pulse", pb::Overlap::Skip))
        .await
        .unwrap();
    admin
        .create_schedule(pulse("every-second", "beat", pb::Overlap::Allow))
        .await
        .unwrap();
    let one = &[("schedule", "one-at-a-time"), ("queue", "pulse")];
    let skipped_overlap = &[
        ("schedule", "one-at-a-time"),
        ("queue", "pulse"),
        ("reason", "overlap"),
    ];
    let scraped = scrape_until(&url, "two ticks skipped for overlap", |s| {
        s.get("sluice_schedule_ticks_skipped_total", skipped_overlap) >= Some(2.0)
    })
    .await;
    // One job, the first tick's, never taken: every other tick skipped.
    assert_eq!(broker.queue_stats("pulse").await.ready, 1);
    assert_eq!(scraped.value("sluice_schedule_ticks_fired_total", one), 1.0);
    assert_eq!(
        scraped.value("sluice_schedule_tick_lag_seconds_count", one),
        1.0
    );
    let lag = scraped.value("sluice_schedule_tick_lag_seconds_sum", one);
    assert!((0.0..10.0).contains(&lag), "{lag}");

    // Down for 13 s: more than the 10 s a late tick may be and still
    // fire. By the default catch-up policy (skip) the missed ticks are
    // counted and none fires.
    broker.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(broker.wait_exit(WAIT).is_some());
    tokio::time::sleep(Duration::from_secs(13)).await;
    let broker = BrokerProcess::start(&args);
    let url = broker.metrics_url();
    let beat_skipped = &[
        ("schedule", "every-second"),
        ("queue", "beat"),
        ("reason", "catch_up"),
    ];
    let beat = &[("schedule", "every-second"), ("queue", "beat")];
    // The missed ticks are counted; those of the last 10 s fire: they are
    // late, not missed.
    scrape_until(&url, "missed ticks skipped and late ones fired", |s| {
        s.get("sluice_schedule_ticks_skipped_total", beat_skipped) >= Some(1.0)
            && s.get("sluice_schedule_ticks_fired_total", beat) >= Some(1.0)
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
