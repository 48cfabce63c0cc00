//! Certificates for TLS tests and `sluice-bench load --secure`, made with
//! rcgen (ring) at run time, never for production: a [`Ca`] that issues
//! server and client certificates as PEM, a [`TestPki`] that writes a CA,
//! a server certificate for 127.0.0.1 and `localhost` and client
//! certificates into a directory, and tonic client configurations and
//! channels that trust a CA and may present a client certificate.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::WAIT;

/// A certificate authority.
pub struct Ca {
    /// Its certificate, PEM.
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(e)
}

impl Ca {
    /// A new self-signed CA named `name`.
    ///
    /// # Errors
    /// When a key or the certificate cannot be made.
    pub fn new(name: &str) -> io::Result<Self> {
        let key = KeyPair::generate().map_err(other)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).map_err(other)?;
        Ok(Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `common_name` with these subject alternative
    /// names (DNS names or IP addresses).
    ///
    /// # Errors
    /// When a key or the certificate cannot be made.
    pub fn issue(&self, common_name: &str, sans: &[&str]) -> io::Result<Leaf> {
        let key = KeyPair::generate().map_err(other)?;
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok(Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    ///
    /// # Errors
    /// As [`Ca::issue`].
    pub fn server(&self) -> io::Result<Leaf> {
        self.issue("localhost", &["localhost", "127.0.0.1"])
    }
}

/// A CA in a directory, with a server certificate it signed.
pub struct TestPki {
    /// Where the PEM files are.
    pub dir: PathBuf,
    /// The CA's certificate (`ca.pem`): what clients and the broker trust.
    pub ca: PathBuf,
    /// The server's certificate (`server.pem`), for 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    /// The server's private key (`server-key.pem`).
    pub server_key: PathBuf,
    authority: Ca,
}

/// A client certificate and its key, as PEM files.
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// Makes a CA and a server certificate in `dir` (created if missing).
    ///
    /// # Errors
    /// When a key cannot be made or a file cannot be written.
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let authority = Ca::new("sluice test CA")?;
        let server = authority.server()?;
        let pki = Self {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            authority,
        };
        std::fs::write(&pki.ca, &pki.authority.pem)?;
        std::fs::write(&pki.server_cert, server.cert)?;
        std::fs::write(&pki.server_key, server.key)?;
        Ok(pki)
    }

    /// A client certificate with common name `cn`, signed by the CA, written
    /// as `client-CN.pem` and `client-CN-key.pem`.
    ///
    /// # Errors
    /// When a key cannot be made or a file cannot be written.
    pub fn client(&self, cn: &str) -> io::Result<ClientCert> {
        let leaf = self.authority.issue(cn, &[])?;
        let file: String = cn
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let client = ClientCert {
            cert: self.dir.join(format!("client-{file}.pem")),
            key: self.dir.join(format!("client-{file}-key.pem")),
        };
        std::fs::write(&client.cert, leaf.cert)?;
        std::fs::write(&client.key, leaf.key)?;
        Ok(client)
    }
}

/// Writes `contents` to `dir/name` and returns its path.
pub fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// A client configuration trusting `ca_pem`, presenting `identity` if given.
pub fn client_config(ca_pem: &str, identity: Option<&Leaf>) -> ClientTlsConfig {
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    match identity {
        Some(leaf) => config.identity(Identity::from_pem(&leaf.cert, &leaf.key)),
        None => config,
    }
}

/// A TLS channel to `addr` (host:port); the error if it cannot connect.
pub async fn channel(
    addr: &str,
    config: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)?
        .connect_timeout(WAIT)
        .connect()
        .await
}
