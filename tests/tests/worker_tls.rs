//! The clients over TLS with tokens, end to end: the real `sluice-worker`
//! binary over mTLS runs an exec handler, and the Python producer enqueues
//! over TLS with a token. The broker is started with `--tls-cert
//! --tls-key` (and `--tls-client-ca` for mTLS) and `--auth-tokens` (lines
//! `ROLE TOKEN [QUEUES]`); certificates come from [`sluice_e2e::tls`].

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_e2e::tls::{self, Leaf, TestPki};
use sluice_e2e::{BrokerProcess, WAIT, WorkerProcess, scratch_dir, wait_for_file};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;

const PRODUCER_TOKEN: &str = "producer-token-0123456789abcdef";
const WORKER_TOKEN: &str = "worker-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// A broker with TLS (mTLS when `client_ca`), and the token file's `lines`.
fn secure_broker(pki: &TestPki, client_ca: bool, lines: &str) -> BrokerProcess {
    let tokens = pki.dir.join("auth-tokens");
    std::fs::write(&tokens, lines).unwrap();
    let path = |p: &Path| p.display().to_string();
    let mut args = vec![
        "--tls-cert".to_owned(),
        path(&pki.server_cert),
        "--tls-key".to_owned(),
        path(&pki.server_key),
        "--auth-tokens".to_owned(),
        path(&tokens),
    ];
    if client_ca {
        args.extend(["--tls-client-ca".to_owned(), path(&pki.ca)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    BrokerProcess::start(&args)
}

/// A token file line for each role.
fn every_role() -> String {
    format!("producer {PRODUCER_TOKEN}\nworker {WORKER_TOKEN}\nadmin {ADMIN_TOKEN}\n")
}

fn https(broker: &BrokerProcess) -> String {
    format!("https://{}", broker.addr)
}

/// The test's own TLS channel, with a client certificate (which a broker
/// without --tls-client-ca does not ask for).
async fn channel(broker: &BrokerProcess, pki: &TestPki) -> Channel {
    let client = pki.client("sluice-test-admin").unwrap();
    let identity = Leaf {
        cert: std::fs::read_to_string(client.cert).unwrap(),
        key: std::fs::read_to_string(client.key).unwrap(),
    };
    let ca = std::fs::read_to_string(&pki.ca).unwrap();
    tls::channel(&broker.addr, tls::client_config(&ca, Some(&identity)))
        .await
        .unwrap()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = AsciiMetadataValue::try_from(format!("Bearer {token}")).unwrap();
    request.metadata_mut().insert("authorization", value);
    request
}

/// Waits until `job_id` is in `state`, asking as admin.
async fn wait_for_state(admin: &mut AdminClient<Channel>, job_id: &str, state: pb::JobState) {
    let deadline = Instant::now() + WAIT;
    loop {
        let req = pb::GetJobRequest {
            job_id: job_id.into(),
        };
        let job = admin
            .get_job(with_token(req, ADMIN_TOKEN))
            .await
            .unwrap()
            .into_inner();
        if job.state() == state {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "job never reached {state:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mTLS worker's flags and the exec handler writing to `out`.
fn worker_args(pki: &TestPki, cn: &str, out: &Path) -> Vec<String> {
    let client = pki.client(cn).unwrap();
    let path = |p: PathBuf| p.display().to_string();
    vec![
        "--tls-ca".into(),
        pki.ca.display().to_string(),
        "--tls-cert".into(),
        path(client.cert),
        "--tls-key".into(),
        path(client.key),
        "--exec".into(),
        format!("greet=echo \"$(cat) $SLUICE_TOKEN.\" >> {}", out.display()),
    ]
}

/// Starts the mTLS worker (certificate CN `sluice-test-worker`, with
/// `env`), enqueues a greeting and waits until it succeeded; returns the
/// worker and what its handler wrote.
async fn greet_over_mtls(
    broker: &BrokerProcess,
    pki: &TestPki,
    env: &[(&str, &str)],
) -> (WorkerProcess, String) {
    let out = pki.dir.join("greetings");
    let args = worker_args(pki, "sluice-test-worker", &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let worker = WorkerProcess::start_at(&https(broker), &args, env);
    let job_id = enqueue_greeting(broker, pki).await;
    let mut admin = AdminClient::new(channel(broker, pki).await);
    wait_for_state(&mut admin, &job_id, pb::JobState::Succeeded).await;
    (worker, wait_for_file(&out))
}

async fn enqueue_greeting(broker: &BrokerProcess, pki: &TestPki) -> String {
    let mut producer = BrokerClient::new(channel(broker, pki).await);
    let req = pb::EnqueueRequest {
        job_type: "greet".into(),
        payload: b"hello over mtls".to_vec().into(),
        ..Default::default()
    };
    producer
        .enqueue(with_token(req, PRODUCER_TOKEN))
        .await
        .unwrap()
        .into_inner()
        .job_id
}

#[tokio::test]
async fn worker_binary_runs_a_job_over_mtls_with_a_token_from_the_environment() {
    let dir = scratch_dir("worker-mtls-token");
    let pki = TestPki::new(&dir.join("pki")).unwrap();
    let broker = secure_broker(&pki, true, &every_role());
    let (worker, greeting) =
        greet_over_mtls(&broker, &pki, &[("SLUICE_TOKEN", WORKER_TOKEN)]).await;
    // The handler ran, and without the worker's token in its environment.
    assert_eq!(greeting, "hello over mtls .\n");
    assert!(
        !worker.process.log().contains(WORKER_TOKEN),
        "the worker logged its token"
    );
}

#[tokio::test]
async fn worker_binary_runs_a_job_over_mtls_named_by_its_certificate() {
    let dir = scratch_dir("worker-mtls-cert");
    let pki = TestPki::new(&dir.join("pki")).unwrap();
    // The worker's right comes from its certificate's CN, not a token.
    let broker = secure_broker(
        &pki,
        true,
        &format!(
            "producer {PRODUCER_TOKEN}\nworker cert:sluice-test-worker\nadmin {ADMIN_TOKEN}\n"
        ),
    );
    let (_worker, greeting) = greet_over_mtls(&broker, &pki, &[]).await;
    assert_eq!(greeting, "hello over mtls .\n");
}

#[tokio::test]
async fn worker_binary_without_a_token_is_refused_and_says_so() {
    let dir = scratch_dir("worker-no-token");
    let pki = TestPki::new(&dir.join("pki")).unwrap();
    let broker = secure_broker(&pki, false, &format!("worker {WORKER_TOKEN}\n"));
    let ca = pki.ca.display().to_string();
    let mut worker = WorkerProcess::spawn_at(
        &https(&broker),
        &["--tls-ca", &ca, "--exec", "greet=true"],
        &[],
    );
    // UNAUTHENTICATED is a refusal: the worker stops instead of retrying.
    let status = worker.process.wait_exit(WAIT).expect("the worker exits");
    assert!(!status.success());
    assert!(
        worker.process.log().contains("refused"),
        "{}",
        worker.process.log()
    );
}

#[tokio::test]
async fn python_producer_enqueues_over_tls_with_a_token_for_an_mtls_worker() {
    let dir = scratch_dir("python-tls");
    let pki = TestPki::new(&dir.join("pki")).unwrap();
    let broker = secure_broker(&pki, true, &every_role());
    let out = dir.join("greetings");
    let args = worker_args(&pki, "sluice-test-worker", &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _worker =
        WorkerProcess::start_at(&https(&broker), &args, &[("SLUICE_TOKEN", WORKER_TOKEN)]);

    let python = pki.client("sluice-test-python").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/producer.py");
    // The producer over mTLS, without a token unless the caller adds one.
    let producer = || {
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .args(["--broker", &https(&broker), "--tls-ca"])
            .arg(&pki.ca)
            .arg("--tls-cert")
            .arg(&python.cert)
            .arg("--tls-key")
            .arg(&python.key)
            .args(["--job-type", "greet"])
            .env_remove("SLUICE_TOKEN");
        command
    };
    let output = producer()
        .args(["--payload", "hello from python"])
        .env("SLUICE_TOKEN", PRODUCER_TOKEN)
        .output()
        .expect("python3 must be installed");
    assert!(
        output.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let job_id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut admin = AdminClient::new(channel(&broker, &pki).await);
    wait_for_state(&mut admin, &job_id, pb::JobState::Succeeded).await;
    assert_eq!(wait_for_file(&out), "hello from python .\n");

    // Without the token the broker refuses it, and the producer says so.
    let refused = producer().output().unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("UNAUTHENTICATED"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn test_certificates_are_pem_files_the_worker_accepts() {
    // Runs now: the helper's files parse as the worker's --tls-* expect.
    let dir = scratch_dir("certs");
    let pki = TestPki::new(&dir).unwrap();
    let client = pki.client("sluice-test-worker").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    sluice_worker::Worker::builder("https://127.0.0.1:1")
        .tls_ca_file(&pki.ca)
        .tls_identity_files(&client.cert, &client.key)
        .token(WORKER_TOKEN)
        .handler(
            "t",
            |_job: sluice_worker::Job, _ctx: sluice_worker::JobContext| async { Ok(()) },
        )
        .build()
        .expect("the generated PEM files are accepted");
    for file in [&pki.server_cert, &pki.server_key, &client.cert] {
        assert!(
            std::fs::read_to_string(file)
                .unwrap()
                .starts_with("-----BEGIN")
        );
    }
}
