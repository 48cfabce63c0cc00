//! `--tls-cert`, `--tls-key`, `--tls-client-ca`: TLS and mutual TLS against
//! the real binary, certificate CN credentials, and replacing the
//! certificate with SIGHUP.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::tls::{self, Ca, Leaf};
use sluice_e2e::{BrokerProcess, binary, scratch_dir};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::Code;
use tonic::transport::Channel;

/// Writes the server's certificate and key into `dir`; returns the flags.
fn server_flags(dir: &Path, server: &Leaf) -> Vec<String> {
    let cert = tls::write(dir, "server.pem", &server.cert);
    let key = tls::write(dir, "server.key", &server.key);
    vec![
        "--tls-cert".into(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ]
}

fn start(flags: &[String]) -> BrokerProcess {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    BrokerProcess::start(&flags)
}

/// Whether a Stats call over `channel` succeeds; the error code if not.
async fn stats(channel: Channel) -> Result<(), Code> {
    AdminClient::new(channel)
        .stats(pb::StatsRequest {})
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

/// Connects and calls Stats; the call's outcome, failing if connecting failed.
async fn reachable(addr: &str, config: tonic::transport::ClientTlsConfig) -> bool {
    match tls::channel(addr, config).await {
        Ok(channel) => stats(channel).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_plaintext_client_fails_fast_against_a_tls_broker() {
    let dir = scratch_dir("tls-plaintext");
    let ca = Ca::new("ca").unwrap();
    let broker = start(&server_flags(&dir, &ca.server().unwrap()));
    let started = Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(5), async {
        let channel = tonic::transport::Endpoint::from_shared(broker.url())
            .unwrap()
            .connect()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(stats(channel).await)
    })
    .await
    .expect("a plaintext client hung against the TLS broker");
    assert!(
        !matches!(outcome, Ok(Ok(()))),
        "a plaintext call succeeded against the TLS broker"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // A client that trusts the broker's CA gets through.
    assert!(reachable(&broker.addr, tls::client_config(&ca.pem, None)).await);
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails() {
    let dir = scratch_dir("tls-other-ca");
    let ca = Ca::new("ca").unwrap();
    let other = Ca::new("other").unwrap();
    let broker = start(&server_flags(&dir, &ca.server().unwrap()));
    assert!(!reachable(&broker.addr, tls::client_config(&other.pem, None)).await);
}

#[test]
fn a_certificate_without_its_key_refuses_to_start() {
    let dir = scratch_dir("tls-no-key");
    let cert = tls::write(
        &dir,
        "server.pem",
        &Ca::new("ca").unwrap().server().unwrap().cert,
    );
    let output = Command::new(binary("sluice-broker"))
        .args(["--addr", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--tls-cert and --tls-key go together"),
        "{stderr}"
    );
}

/// A broker requiring client certificates of `client_ca`, with these tokens.
fn mtls_broker(dir: &Path, ca: &Ca, client_ca: &Ca, tokens: &str) -> BrokerProcess {
    let mut flags = server_flags(dir, &ca.server().unwrap());
    let client_ca = tls::write(dir, "client-ca.pem", &client_ca.pem);
    let tokens = tls::write(dir, "tokens", tokens);
    flags.extend([
        "--tls-client-ca".into(),
        client_ca.display().to_string(),
        "--auth-tokens".into(),
        tokens.display().to_string(),
    ]);
    start(&flags)
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate() {
    let dir = scratch_dir("tls-mtls-none");
    let ca = Ca::new("ca").unwrap();
    let broker = mtls_broker(&dir, &ca, &ca, "admin admin-token-0123456789\n");
    assert!(!reachable(&broker.addr, tls::client_config(&ca.pem, None)).await);
    // Nor one whose certificate another CA signed.
    let stranger = Ca::new("stranger")
        .unwrap()
        .issue("worker-01", &["worker-01"])
        .unwrap();
    assert!(!reachable(&broker.addr, tls::client_config(&ca.pem, Some(&stranger))).await);
}

/// A Lease over `channel`, whose client certificate is its credential.
async fn lease_as_cn(
    channel: &Channel,
) -> Result<tonic::Response<tonic::Streaming<pb::LeasedJob>>, tonic::Status> {
    BrokerClient::new(channel.clone())
        .lease(pb::LeaseRequest {
            worker_id: "cn-worker".into(),
            max_in_flight: 1,
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn a_cert_line_makes_an_mtls_client_a_worker_without_a_token() {
    let dir = scratch_dir("tls-mtls-cn");
    let ca = Ca::new("ca").unwrap();
    let broker = mtls_broker(
        &dir,
        &ca,
        &ca,
        "admin admin-token-0123456789\nworker cert:worker-01\n",
    );
    let client = ca.issue("worker-01", &["worker-01"]).unwrap();
    let channel = tls::channel(&broker.addr, tls::client_config(&ca.pem, Some(&client)))
        .await
        .unwrap();
    let mut broker_client = BrokerClient::new(channel.clone());
    lease_as_cn(&channel).await.unwrap();
    let refused = broker_client
        .enqueue(sluice_e2e::job("t", b""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(refused.message(), "the worker credential may not Enqueue");
    // Another name is not a credential.
    let other = ca.issue("worker-02", &["worker-02"]).unwrap();
    let channel = tls::channel(&broker.addr, tls::client_config(&ca.pem, Some(&other)))
        .await
        .unwrap();
    let status = BrokerClient::new(channel)
        .lease(pb::LeaseRequest {
            worker_id: "other".into(),
            max_in_flight: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sighup_ends_the_stream_of_a_certificate_whose_line_is_gone() {
    let dir = scratch_dir("tls-cn-revoked");
    let ca = Ca::new("ca").unwrap();
    let broker = mtls_broker(
        &dir,
        &ca,
        &ca,
        "admin admin-token-0123456789\nworker cert:worker-01\n",
    );
    let client = ca.issue("worker-01", &["worker-01"]).unwrap();
    let channel = tls::channel(&broker.addr, tls::client_config(&ca.pem, Some(&client)))
        .await
        .unwrap();
    let mut stream = lease_as_cn(&channel).await.unwrap().into_inner();
    tls::write(&dir, "tokens", "admin admin-token-0123456789\n");
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("token file reloaded");
    let end = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the stream went on past a second after the reload");
    assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test]
async fn sighup_replaces_the_certificate_for_new_connections() {
    let dir = scratch_dir("tls-reload");
    let (old_ca, new_ca) = (Ca::new("old").unwrap(), Ca::new("new").unwrap());
    let flags = server_flags(&dir, &old_ca.server().unwrap());
    let broker = start(&flags);
    assert!(reachable(&broker.addr, tls::client_config(&old_ca.pem, None)).await);
    assert!(!reachable(&broker.addr, tls::client_config(&new_ca.pem, None)).await);

    // A key that does not match the certificate: the old pair stays.
    let new_server = new_ca.server().unwrap();
    tls::write(&dir, "server.pem", &new_server.cert);
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("TLS certificate not reloaded");
    assert!(reachable(&broker.addr, tls::client_config(&old_ca.pem, None)).await);

    server_flags(&dir, &new_server);
    broker.signal(Signal::SIGHUP);
    broker.wait_for_log("TLS certificate reloaded");
    assert!(reachable(&broker.addr, tls::client_config(&new_ca.pem, None)).await);
    assert!(!reachable(&broker.addr, tls::client_config(&old_ca.pem, None)).await);
}
