//! The real `sluice-broker` binary under SIGTERM and SIGINT.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nix::sys::signal::Signal;
use sluice_e2e::{BrokerProcess, WAIT};
use sluice_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn lease_one(broker: &BrokerProcess) -> (tonic::Streaming<pb::LeasedJob>, pb::LeasedJob) {
    let mut client = broker.broker().await;
    client
        .enqueue(pb::EnqueueRequest {
            job_type: "email".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let req = pb::LeaseRequest {
        worker_id: "w1".into(),
        max_in_flight: 1,
        ..Default::default()
    };
    let mut stream = client.lease(req).await.unwrap().into_inner();
    let leased = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (stream, leased)
}

#[tokio::test]
async fn sigterm_drains_inflight_jobs() {
    let mut broker = BrokerProcess::start(&[]);
    let (mut stream, leased) = lease_one(&broker).await;
    let mut client = broker.broker().await;
    let health_channel = broker.channel().await;

    broker.signal(Signal::SIGTERM);
    // The stream ends and the health check turns NOT_SERVING.
    let end = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(end.is_none(), "stream should end, got {end:?}");
    let status = HealthClient::new(health_channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    // No new work...
    let refused = client
        .enqueue(pb::EnqueueRequest {
            job_type: "email".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    // ...but the job in flight is waited for and can be acked.
    assert!(broker.is_running(), "broker must wait for the leased job");
    let job_id = leased.job.as_ref().unwrap().id.clone();
    client
        .ack(pb::AckRequest {
            job_id,
            lease_id: leased.lease_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();

    let status = broker
        .wait_exit(WAIT)
        .expect("broker should exit once the lease is resolved");
    assert!(status.success(), "{status:?}\n{}", broker.log());
    let log = broker.log();
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("job acked"), "{log}");
    assert!(log.contains("broker stopped"), "{log}");
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait_and_reports_what_is_lost() {
    let mut broker = BrokerProcess::start(&["--drain-timeout", "500ms"]);
    let (_stream, _leased) = lease_one(&broker).await;
    broker
        .broker()
        .await
        .enqueue(pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    broker.signal(Signal::SIGINT);
    let status = broker
        .wait_exit(WAIT)
        .expect("broker should exit after the drain timeout");
    assert!(status.success(), "{status:?}");
    let log = broker.log();
    assert!(log.contains("drain ended with jobs still leased"), "{log}");
    assert!(log.contains("unfinished jobs are lost"), "{log}");
}

#[tokio::test]
async fn second_signal_exits_at_once_with_status_130() {
    let mut broker = BrokerProcess::start(&["--drain-timeout", "1m"]);
    let (_stream, _leased) = lease_one(&broker).await;
    broker.signal(Signal::SIGTERM);
    broker.wait_for_log("draining");
    broker.signal(Signal::SIGTERM);
    let status = broker
        .wait_exit(Duration::from_secs(5))
        .expect("second signal should exit at once");
    assert_eq!(status.code(), Some(130), "{status:?}");
}
