//! Bounds and warnings of a broker facing a network: `--max-lease-streams`,
//! `--max-concurrent-streams`, `--max-header-list-size`, the data
//! directory's permissions, and the warning for a public address without
//! TLS or tokens.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;

use sluice_e2e::in_process::test_config;
use sluice_e2e::{BrokerProcess, TestBroker, scratch_dir};
use sluice_proto::v1 as pb;
use tonic::Code;

fn lease_request() -> pb::LeaseRequest {
    pb::LeaseRequest {
        worker_id: "w".into(),
        max_in_flight: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn lease_streams_past_the_limit_are_refused_naming_the_flag() {
    let mut config = test_config();
    config.max_lease_streams = 1;
    let b = TestBroker::with_config(config).await;
    let first = b.broker.clone().lease(lease_request()).await.unwrap();
    let refused = b
        .broker
        .clone()
        .lease_batches(lease_request())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-lease-streams"),
        "{refused}"
    );
    // A closed stream gives its place back.
    drop(first);
    sluice_e2e::in_process::eventually("a freed Lease stream slot", || async {
        b.broker.clone().lease(lease_request()).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn the_data_directory_and_its_file_are_private() {
    let dir = scratch_dir("bounds-data-dir").join("nested").join("data");
    let mut config = test_config();
    config.store = sluice_broker::config::StoreConfig::data_dir(dir.clone());
    let b = TestBroker::with_config(config).await;
    b.enqueue("t").await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

#[test]
fn a_public_address_without_tls_or_tokens_is_warned_about() {
    let broker = BrokerProcess::start_on("0.0.0.0:0", &[]);
    broker.wait_for_log("without TLS or --auth-tokens");
    let quiet = BrokerProcess::start(&[]);
    assert!(!quiet.log().contains("without TLS or --auth-tokens"));
}

#[test]
fn a_data_directory_others_may_write_is_warned_about() {
    let dir = scratch_dir("bounds-open-dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let broker = BrokerProcess::start(&["--data-dir", dir.to_str().unwrap()]);
    broker.wait_for_log("the data directory is writable by other users");
}

#[tokio::test]
async fn calls_past_max_concurrent_streams_wait_for_a_free_stream() {
    let mut config = test_config();
    config.max_concurrent_streams = 2;
    let b = TestBroker::with_config(config).await;
    // Two Lease streams take both streams of the connection.
    let first = b.broker.clone().lease(lease_request()).await.unwrap();
    let _second = b.broker.clone().lease(lease_request()).await.unwrap();
    let mut client = b.broker.clone();
    let enqueue = tokio::spawn(async move {
        client
            .enqueue(pb::EnqueueRequest {
                job_type: "t".into(),
                ..Default::default()
            })
            .await
    });
    // The third call waits for a stream (however slow the machine is, it
    // cannot finish while both are taken)...
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!enqueue.is_finished(), "a third stream was opened");
    // ...and goes through once one is freed.
    drop(first);
    let done = sluice_e2e::in_process::within("the waiting Enqueue", enqueue).await;
    assert!(done.unwrap().is_ok());
}

#[tokio::test]
async fn metadata_past_max_header_list_size_is_refused_and_the_broker_serves_on() {
    let mut config = test_config();
    config.max_header_list_size = 4096;
    let b = TestBroker::with_config(config).await;
    let enqueue = |pad: usize| {
        let mut request = tonic::Request::new(pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-pad", "a".repeat(pad).parse().unwrap());
        let mut client = b.broker.clone();
        async move { client.enqueue(request).await }
    };
    assert!(enqueue(16).await.is_ok());
    let refused = enqueue(8 * 1024).await;
    assert!(refused.is_err(), "{refused:?}");
    // The refusal costs the call, not the broker.
    let fresh = sluice_e2e::in_process::connect(b.addr).await;
    let mut client = sluice_proto::v1::broker_client::BrokerClient::new(fresh);
    let ok = client
        .enqueue(pb::EnqueueRequest {
            job_type: "t".into(),
            ..Default::default()
        })
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}
