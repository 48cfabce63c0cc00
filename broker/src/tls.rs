//! TLS for the broker's listener (`--tls-cert`, `--tls-key`, and
//! `--tls-client-ca` for mTLS), with certificates that SIGHUP replaces
//! without a restart.
//!
//! Design: tonic's `ServerTlsConfig` is fixed when serving starts, so the
//! broker terminates TLS itself. [`TlsSettings`] holds the current
//! `rustls::ServerConfig` behind an `RwLock<Arc<_>>`; [`TlsSettings::incoming`]
//! accepts TCP connections, runs each handshake in a task of its own (bounded
//! by [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`], so a slow client does not
//! hold up the others) with the configuration current at accept time, and
//! hands the TLS streams to `serve_with_incoming_shutdown`. tonic's own
//! `Connected` impl for `tokio_rustls::server::TlsStream` puts the peer
//! certificates in each request's extensions (`Request::peer_certs`), which
//! the authorizer reads. [`TlsSettings::reload`] builds a new configuration
//! from the files and swaps it in: connections accepted afterwards use it,
//! open ones keep theirs; a failed reload keeps the old one.
//!
//! The gRPC listener's ALPN offers only `h2`. A plaintext client fails its
//! handshake at once: its HTTP/2 preface is not a TLS record, and the
//! connection is closed. The HTTP listener (`--http-addr`) is served over
//! TLS too, with the same certificates (and client CA), offering
//! `http/1.1` ([`TlsSettings::incoming_http`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest a TLS handshake may take before its connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes in progress at once; accepting waits beyond it.
pub const MAX_HANDSHAKES: usize = 1024;

/// The files of `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to; `Some`
    /// makes a client certificate required (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (`--tls-cert`, ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("TLS certificate and key: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot verify client certificates.
    #[error("--tls-client-ca: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The configurations built from one set of files: one per listener, as
/// they differ only in the protocol ALPN offers.
struct Configs {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

/// Which listener a connection is for: the protocol ALPN offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// The broker's current TLS configuration, replaceable while serving.
#[derive(Clone)]
pub struct TlsSettings {
    files: TlsFiles,
    current: Arc<RwLock<Configs>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads the files and builds the configuration.
    ///
    /// # Errors
    /// [`TlsError`] when a file is unreadable or the certificate, key or CA
    /// is unusable.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let configs = configs(&files)?;
        Ok(Self {
            files,
            current: Arc::new(RwLock::new(configs)),
        })
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Re-reads the files; new connections use the new configuration. On
    /// failure the old one stays.
    ///
    /// # Errors
    /// As [`TlsSettings::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        let configs = configs(&self.files)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = configs;
        Ok(())
    }

    fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let configs = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(match protocol {
            Protocol::Grpc => configs.grpc.clone(),
            Protocol::Http => configs.http.clone(),
        })
    }

    /// Accepts gRPC connections on `listener` until `stop`; see
    /// [`TlsSettings::accept`].
    pub fn incoming(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        self.accept(listener, stop, Protocol::Grpc)
    }

    /// Accepts HTTP/1.1 connections on `listener` until `stop` (the
    /// `--http-addr` listener); see [`TlsSettings::accept`].
    pub fn incoming_http(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        self.accept(listener, stop, Protocol::Http)
    }

    /// Accepts on `listener` until `stop`, yielding connections whose
    /// handshake succeeded; failed handshakes are logged at debug.
    fn accept(
        &self,
        listener: TcpListener,
        stop: CancellationToken,
        protocol: Protocol,
    ) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        let settings = self.clone();
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: back off a little.
                        warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = settings.acceptor(protocol);
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            // The server has stopped if this fails: nothing to do.
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

fn file_error(what: &'static str, path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        what,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no PEM certificate in it"));
    }
    Ok(certs)
}

/// The gRPC and HTTP configurations of `files`.
fn configs(files: &TlsFiles) -> Result<Configs, TlsError> {
    let mut grpc = server_config(files)?;
    let mut http = grpc.clone();
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Configs {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
    })
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = certificates("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error("--tls-key", &files.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("--tls-client-ca", path)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error("--tls-client-ca", path, e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    Ok(builder.with_single_cert(certs, key)?)
}
