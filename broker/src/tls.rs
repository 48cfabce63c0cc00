//! TLS for the broker's listener (`--tls-cert`, `--tls-key`, and
//! `--tls-client-ca` for mTLS), with certificates that SIGHUP replaces
//! without a restart.
//!
//! Design: tonic's `ServerTlsConfig` is fixed when serving starts, so the
//! broker terminates TLS itself. [`TlsSettings`] holds the current
//! `rustls::ServerConfig` behind an `RwLock<Arc<_>>`; the listener
//! ([`crate::listener`]) takes an acceptor with the configuration current
//! when a socket's first byte arrives ([`TlsSettings::acceptor`]), and
//! hands the TLS streams to the servers. [`TlsSettings::reload`] builds a
//! new configuration from the files and swaps it in: connections accepted
//! afterwards use it, open ones keep theirs; a failed reload keeps the old
//! one.
//!
//! The gRPC listener's ALPN offers only `h2`. A plaintext client fails its
//! handshake at once: its HTTP/2 preface is not a TLS record, and the
//! connection is closed. The HTTP listener (`--http-addr`) is served over
//! TLS too, with the same certificates (and client CA), offering
//! `http/1.1`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;

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
pub enum Protocol {
    /// The gRPC listener: HTTP/2 (`h2`).
    Grpc,
    /// The HTTP listener: HTTP/1.1.
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

    /// The private key's file (`--tls-key`).
    pub fn key_path(&self) -> &Path {
        &self.files.key
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

    /// An acceptor with the configuration current now, offering
    /// `protocol` in ALPN.
    pub fn acceptor(&self, protocol: Protocol) -> TlsAcceptor {
        let configs = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(match protocol {
            Protocol::Grpc => configs.grpc.clone(),
            Protocol::Http => configs.http.clone(),
        })
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
