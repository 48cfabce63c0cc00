//! TLS to a shared store (PostgreSQL, Redis), through rustls, with the
//! options libpq names in a URL's query: `sslmode=require` encrypts
//! without checking the server's certificate, `verify-ca` and
//! `verify-full` check its chain against `sslrootcert` (a PEM file of the
//! CA) and its name against the URL's host. Every store takes the same
//! options, read by [`split_params`] and [`client_config`].

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The TLS parameters of a URL, taken off it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode`, if given.
    pub mode: Option<String>,
    /// `sslrootcert`, if given.
    pub root_cert: Option<String>,
}

/// `url` without `sslmode` and `sslrootcert` (kept in the returned
/// [`TlsParams`]); its other query parameters stay.
pub fn split_params(url: &str) -> (String, TlsParams) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), TlsParams::default());
    };
    let (mut params, mut kept) = (TlsParams::default(), Vec::new());
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", v)) => params.mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => params.root_cert = Some(v.to_owned()),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, params)
}

/// The rustls configuration `params` ask for (`default_mode` when the URL
/// names none); `None` for plain TCP (`disable`).
///
/// # Errors
/// A mode not supported, a verifying mode without `sslrootcert`, or a CA
/// file that does not read: the message says which, prefixed with `flag`.
pub fn client_config(
    params: &TlsParams,
    default_mode: &str,
    flag: &str,
) -> Result<Option<Arc<rustls::ClientConfig>>, String> {
    let mode = params.mode.as_deref().unwrap_or(default_mode);
    let verify = match mode {
        "disable" => return Ok(None),
        "require" => Verify::Nothing,
        "verify-ca" | "verify-full" => match &params.root_cert {
            Some(path) => Verify::Against(path.clone()),
            None => {
                return Err(format!(
                    "{flag}: sslmode={mode} needs sslrootcert=<PEM file of the CA>"
                ));
            }
        },
        other => {
            return Err(format!(
                "{flag}: sslmode={other} is not supported (disable, require, verify-ca or verify-full)"
            ));
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{flag} TLS: {e}"))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
        Verify::Against(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let mut roots = rustls::RootCertStore::empty();
            let unreadable = |e: &dyn std::fmt::Display| format!("{flag}: sslrootcert {path}: {e}");
            for cert in CertificateDer::pem_file_iter(&path).map_err(|e| unreadable(&e))? {
                let cert = cert.map_err(|e| unreadable(&e))?;
                roots.add(cert).map_err(|e| unreadable(&e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

enum Verify {
    /// `sslmode=require`: encrypted, the server not authenticated.
    Nothing,
    /// The server's chain must lead to this PEM file's CAs.
    Against(String),
}

/// Accepts any server certificate: what `sslmode=require` means.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_off_the_url_and_the_rest_stays() {
        let (url, params) =
            split_params("redis://h:1/0?sslmode=verify-full&x=1&sslrootcert=/ca.pem");
        assert_eq!(url, "redis://h:1/0?x=1");
        assert_eq!(params.mode.as_deref(), Some("verify-full"));
        assert_eq!(params.root_cert.as_deref(), Some("/ca.pem"));
        let refused = client_config(&params_of("verify-ca", None), "disable", "--store");
        assert!(refused.unwrap_err().contains("needs sslrootcert"));
        assert!(client_config(&params_of("prefer", None), "disable", "--store").is_err());
        assert!(
            client_config(&TlsParams::default(), "disable", "--store")
                .unwrap()
                .is_none()
        );
    }

    fn params_of(mode: &str, root_cert: Option<&str>) -> TlsParams {
        TlsParams {
            mode: Some(mode.to_owned()),
            root_cert: root_cert.map(str::to_owned),
        }
    }
}
