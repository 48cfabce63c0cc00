//! Test certificates, made with rcgen (ring): a CA, a server certificate
//! for `127.0.0.1` and `localhost`, and client certificates with a given
//! common name, written as PEM files into a directory. For the TLS tests
//! and `sluice-bench load --secure`; never for production.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

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
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate and its key, as PEM files.
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn other(e: rcgen::Error) -> io::Error {
    io::Error::other(e)
}

impl TestPki {
    /// Makes a CA and a server certificate in `dir` (created if missing).
    ///
    /// # Errors
    /// When a key cannot be made or a file cannot be written.
    pub fn new(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(other)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().map_err(other)?)
            .map_err(other)?;
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, issuer.pem())?;
        let pki = Self {
            dir: dir.to_owned(),
            ca,
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            issuer,
        };
        let (cert, key) = pki.sign(
            "sluice test broker",
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        std::fs::write(&pki.server_cert, cert)?;
        std::fs::write(&pki.server_key, key)?;
        Ok(pki)
    }

    /// A client certificate with common name `cn`, signed by the CA, written
    /// as `client-CN.pem` and `client-CN-key.pem`.
    ///
    /// # Errors
    /// When a key cannot be made or a file cannot be written.
    pub fn client(&self, cn: &str) -> io::Result<ClientCert> {
        let (cert, key) = self.sign(cn, &[], ExtendedKeyUsagePurpose::ClientAuth)?;
        let file: String = cn
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let client = ClientCert {
            cert: self.dir.join(format!("client-{file}.pem")),
            key: self.dir.join(format!("client-{file}-key.pem")),
        };
        std::fs::write(&client.cert, cert)?;
        std::fs::write(&client.key, key)?;
        Ok(client)
    }

    /// A certificate's and its key's PEM.
    fn sign(
        &self,
        cn: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> io::Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(other)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(other)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(other)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}
