//! `sluice-broker --data-dir`: jobs survive SIGKILL and SIGTERM restarts
//! as they were, and a damaged data directory stops the start.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use std::process::Command;

use nix::sys::signal::Signal;
use sluice_e2e::{BrokerProcess, WAIT, binary, scratch_dir};
use sluice_proto::v1 as pb;
use tonic::Code;

fn start(dir: &Path) -> BrokerProcess {
    let broker = BrokerProcess::start(&[
        "--data-dir",
        dir.to_str().unwrap(),
        "--max-attempts",
        "3",
        "--backoff-initial",
        "1h",
        "--backoff-max",
        "2h",
    ]);
    broker.wait_for_log("broker serving");
    broker
}

fn job(job_type: &str) -> pb::EnqueueRequest {
    pb::EnqueueRequest {
        queue: "durable".into(),
        job_type: job_type.into(),
        payload: format!("payload of {job_type}").into_bytes().into(),
        ..Default::default()
    }
}

/// Leases the next job of type `job_type` of the queue `durable`.
async fn lease(broker: &BrokerProcess, job_type: &str) -> pb::LeasedJob {
    broker.lease_one("durable", job_type).await
}

/// Enqueues a job of `job_type`, leases it and Nacks it with `error`.
async fn enqueue_and_fail(
    broker: &BrokerProcess,
    job_type: &str,
    error: &str,
    dead: bool,
) -> String {
    let job_id = broker.enqueue(job(job_type)).await;
    let leased = lease(broker, job_type).await;
    broker
        .broker()
        .await
        .nack(pb::NackRequest {
            job_id: job_id.clone(),
            lease_id: leased.lease_id,
            error: error.into(),
            dead,
            ..Default::default()
        })
        .await
        .unwrap();
    job_id
}

/// What a restart must keep of a job.
fn essentials(
    job: &pb::Job,
) -> (
    String,
    i32,
    u32,
    String,
    Option<prost_types::Timestamp>,
    Vec<u8>,
) {
    (
        job.id.clone(),
        job.state,
        job.attempt,
        job.last_error.clone(),
        job.run_at,
        job.payload.to_vec(),
    )
}

#[tokio::test]
async fn restart_keeps_every_job_as_it_was() {
    let dir = scratch_dir("durable-restart");
    let mut broker = start(&dir);
    let mut client = broker.broker().await;

    let ready = broker.enqueue(job("ready")).await;
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let scheduled = broker
        .enqueue(pb::EnqueueRequest {
            run_at: Some(in_an_hour.into()),
            ..job("scheduled")
        })
        .await;
    let keyed = broker
        .enqueue(pb::EnqueueRequest {
            idempotency_key: "order-7".into(),
            ..job("keyed")
        })
        .await;

    let failed = enqueue_and_fail(&broker, "failed", "smtp timeout", false).await;
    let dead = enqueue_and_fail(&broker, "dead", "bad input", true).await;

    let succeeded = broker.enqueue(job("succeeded")).await;
    let leased = lease(&broker, "succeeded").await;
    client
        .ack(pb::AckRequest {
            job_id: succeeded.clone(),
            lease_id: leased.lease_id,
            ..Default::default()
        })
        .await
        .unwrap();

    let mut admin = broker.admin().await;
    admin
        .pause_queue(pb::PauseQueueRequest {
            queue: "paused".into(),
        })
        .await
        .unwrap();

    // Leased at the crash: READY again after it, the attempt not counted.
    let in_flight = broker.enqueue(job("in-flight")).await;
    let in_flight_lease = lease(&broker, "in-flight").await;

    let ids = [&ready, &scheduled, &keyed, &failed, &dead, &succeeded];
    let mut before = Vec::new();
    for id in ids {
        before.push(essentials(&broker.job(id).await));
    }
    let in_flight_before = broker.job(&in_flight).await;
    assert_eq!(in_flight_before.state(), pb::JobState::Leased);
    assert_eq!(in_flight_before.attempt, 1);

    broker.signal(Signal::SIGKILL);
    broker.wait_exit(WAIT).unwrap();

    // The second restart also finds the job the first one enqueued.
    for (restart, recovered) in [("after SIGKILL", 7), ("after SIGTERM", 8)] {
        let mut broker = start(&dir);
        assert!(
            broker
                .log()
                .contains(&format!("recovered_jobs={recovered}")),
            "{restart}: {}",
            broker.log()
        );
        for (id, expected) in ids.iter().zip(&before) {
            assert_eq!(&essentials(&broker.job(id).await), expected, "{restart}");
        }
        let requeued = broker.job(&in_flight).await;
        assert_eq!(requeued.state(), pb::JobState::Ready, "{restart}");
        assert_eq!(requeued.attempt, 0, "{restart}");

        let mut client = broker.broker().await;
        // A lease granted before the restart is no lease.
        let stale = client
            .ack(pb::AckRequest {
                job_id: in_flight.clone(),
                lease_id: in_flight_lease.lease_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            stale.code(),
            Code::FailedPrecondition,
            "{restart}: {stale:?}"
        );
        // The idempotency key still finds its job.
        let again = client
            .enqueue(pb::EnqueueRequest {
                idempotency_key: "order-7".into(),
                ..job("keyed")
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            again.duplicate && again.job_id == keyed,
            "{restart}: {again:?}"
        );
        assert!(broker.queue_stats("paused").await.paused, "{restart}");
        // New jobs get new ids.
        let new = broker.enqueue(job("new")).await;
        assert!(!ids.contains(&&new) && new != in_flight, "{restart}");

        broker.signal(if restart == "after SIGKILL" {
            Signal::SIGTERM
        } else {
            Signal::SIGKILL
        });
        broker.wait_exit(WAIT).unwrap();
    }
}

#[tokio::test]
async fn a_damaged_data_directory_stops_the_start() {
    let dir = scratch_dir("durable-damaged");
    let mut broker = start(&dir);
    for i in 0..200 {
        broker.enqueue(job(&format!("t{}", i % 3))).await;
    }
    broker.signal(Signal::SIGTERM);
    broker.wait_exit(WAIT).unwrap();
    let file = dir.join("sluice.redb");
    let pristine = std::fs::read(&file).unwrap();

    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let damages: [(&str, Damage); 3] = [
        (
            "truncated to half",
            Box::new(|b: &mut Vec<u8>| b.truncate(b.len() / 2)),
        ),
        ("emptied", Box::new(|b: &mut Vec<u8>| b.clear())),
        (
            "a bit flipped in every page",
            Box::new(|b: &mut Vec<u8>| {
                for i in (4096 + 100..b.len()).step_by(4096) {
                    b[i] ^= 0x10;
                }
            }),
        ),
    ];
    for (damage, apply) in damages {
        let mut bytes = pristine.clone();
        apply(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        let mut broker = BrokerProcess::start(&["--data-dir", dir.to_str().unwrap()]);
        let status = broker.wait_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "{damage}: the broker started on a damaged file: {}",
                broker.log()
            )
        });
        assert!(!status.success(), "{damage}");
        let log = broker.log();
        assert!(log.contains("is damaged"), "{damage}: {log}");
        assert!(log.contains("will not start"), "{damage}: {log}");
    }
    std::fs::write(&file, &pristine).unwrap();
    let broker = start(&dir);
    assert!(
        broker.log().contains("recovered_jobs=200"),
        "{}",
        broker.log()
    );
}

#[tokio::test]
async fn a_failed_write_refuses_work_stops_the_broker_and_keeps_what_was_acknowledged() {
    let dir = scratch_dir("durable-full");
    // The file may not grow past 3 MB: writes beyond fail (EFBIG), as on a
    // full disk.
    let mut command = Command::new("prlimit");
    command
        .arg("--fsize=3000000")
        .arg(binary("sluice-broker"))
        .args(["--addr", "127.0.0.1:0", "--data-dir", dir.to_str().unwrap()])
        .env("RUST_LOG", "info");
    let mut broker = BrokerProcess::spawn(command);
    broker.wait_for_log("broker serving");
    let mut client = broker.broker().await;
    let mut acknowledged = Vec::new();
    let refused = loop {
        assert!(acknowledged.len() < 100, "3 MB never filled up");
        let req = pb::EnqueueRequest {
            job_type: "big".into(),
            payload: vec![7; 100_000].into(),
            ..Default::default()
        };
        match client.enqueue(req).await {
            Ok(r) => acknowledged.push(r.into_inner().job_id),
            Err(status) => break status,
        }
    };
    // The write that fails may be the journal's (that Enqueue is refused,
    // naming durability) or redb's after the journal took the group (the
    // broker is stopping, or already gone, when the next call comes).
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("durable") || refused.message().contains("connect error"),
        "{refused:?}"
    );
    let status = broker.wait_exit(WAIT).expect("the broker stops");
    assert_eq!(status.code(), Some(1), "{status:?}");
    assert!(
        broker.log().contains("writing the data directory failed"),
        "{}",
        broker.log()
    );

    let broker = start(&dir);
    for id in &acknowledged {
        assert_eq!(broker.job(id).await.state(), pb::JobState::Ready);
    }
    assert!(
        broker
            .log()
            .contains(&format!("recovered_jobs={}", acknowledged.len())),
        "{}",
        broker.log()
    );
}
