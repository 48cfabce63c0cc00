//! Bounds and warnings of a broker facing a network: `--max-lease-streams`,
//! `--max-concurrent-streams`, `--max-header-list-size`, the data
//! directory's permissions, the broker's umask, the warnings for a public
//! address without TLS or tokens (or with one of them alone), and the
//! secret files others may read (warned, or refused with
//! `--strict-permissions`).

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use sluice_e2e::in_process::test_config;
use sluice_e2e::{BrokerProcess, TestBroker, WAIT, binary, scratch_dir};
use sluice_proto::v1 as pb;
use tonic::Code;

fn lease_request() -> pb::LeaseRequest {
    pb::LeaseRequest {
        worker_id: "w".into(),
        max_in_flight: 1,
        ..Default::default()
    }
}

every_backend! {
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

every_backend! {
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
}

every_backend! {
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
}

/// A token file and a server certificate and key in `dir`, the secret
/// files with `mode`; returns the flags that use them.
fn secret_flags(dir: &std::path::Path, mode: u32) -> Vec<String> {
    let tokens = dir.join("tokens");
    std::fs::write(&tokens, "admin admin-token-0123456789\n").unwrap();
    let server = sluice_e2e::tls::Ca::new("ca").unwrap().server().unwrap();
    let cert = sluice_e2e::tls::write(dir, "server.pem", &server.cert);
    let key = sluice_e2e::tls::write(dir, "server.key", &server.key);
    for file in [&tokens, &key] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    [
        "--auth-tokens",
        tokens.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn each_risky_exposure_off_loopback_is_warned_about() {
    let dir = scratch_dir("bounds-exposure");
    let flags = secret_flags(&dir, 0o600);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let (tokens, tls) = (&flags[..2], &flags[2..]);
    let broker = BrokerProcess::start_on("0.0.0.0:0", tokens);
    broker.wait_for_log("tokens cross the network in plaintext");
    let broker = BrokerProcess::start_on("0.0.0.0:0", tls);
    broker.wait_for_log("TLS but neither --auth-tokens nor --tls-client-ca");
    let both = BrokerProcess::start_on("0.0.0.0:0", &flags);
    let log = both.log();
    assert!(!log.contains("non-loopback address"), "{log}");
}

#[tokio::test]
async fn secrets_others_may_read_are_warned_about_or_refused() {
    let dir = scratch_dir("bounds-secrets");
    let flags = secret_flags(&dir, 0o644);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let broker = BrokerProcess::start(&flags);
    let log = broker.wait_for_log("--tls-key");
    for file in ["tokens", "server.key"] {
        let said = format!("{} has mode 0644", dir.join(file).display());
        assert!(log.contains(&said), "{said} in {log}");
    }
    drop(broker);
    let strict: Vec<&str> = flags
        .iter()
        .copied()
        .chain(["--strict-permissions"])
        .collect();
    let mut refused = sluice_e2e::Process::spawn({
        let mut command = Command::new(binary("sluice-broker"));
        command.args(["--addr", "127.0.0.1:0"]).args(&strict);
        command
    });
    let status = refused.wait_exit(WAIT).expect("refuses to start");
    assert!(!status.success());
    assert!(
        refused.log().contains("--strict-permissions"),
        "{}",
        refused.log()
    );
    for file in ["tokens", "server.key"] {
        let path = dir.join(file);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    // Narrowed, the files pass; widened again, each SIGHUP says so, and
    // a strict broker keeps what it had.
    let broker = BrokerProcess::start(&strict);
    std::fs::set_permissions(dir.join("tokens"), std::fs::Permissions::from_mode(0o604)).unwrap();
    broker.signal(nix::sys::signal::Signal::SIGHUP);
    let log = broker.wait_for_log("SIGHUP: nothing reloaded");
    assert!(log.contains("has mode 0604"), "{log}");
}

#[test]
fn the_broker_creates_files_for_its_user_alone() {
    // Whatever umask it was started with (here 000), its own is 077: no
    // file it creates is readable by others, not even for an instant.
    let mut command = Command::new("sh");
    command.args([
        "-c",
        &format!(
            "umask 000 && exec {} --addr 127.0.0.1:0",
            binary("sluice-broker").display()
        ),
    ]);
    command.env("RUST_LOG", "info");
    let broker = BrokerProcess::spawn(command);
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.process.pid())).unwrap();
    let umask = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(str::trim);
    assert_eq!(umask, Some("0077"), "{status}");
}
