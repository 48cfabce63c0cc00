//! What a worker presents to a broker that wants TLS or a token, checked
//! when the worker is built: PEM read and parsed (so a bad file is named at
//! start, not on every reconnect), the token's characters checked, TLS
//! refused on a plain `http://` URL. Plain types only; `grpc` turns a
//! [`Security`] into tonic's TLS config and its bearer-token interceptor.
//! Public so that the workspace's other clients (the `sluice` CLI) take
//! the same options the same way: [`Security::load`], [`TlsSources`],
//! [`token_from_env_or_file`].
//!
//! Secrets never reach a log: the `Debug` of everything here that holds a
//! token or a private key prints `<redacted>` instead.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::defaults::TOKEN_ENV;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::WorkerError;

/// Where a PEM document comes from: a file, or bytes the program gave.
#[derive(Clone)]
pub enum PemSource {
    /// Read when the worker is built.
    File(PathBuf),
    /// Given in memory.
    Memory(Vec<u8>),
}

impl PemSource {
    /// How an error names it.
    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Memory(_) => "(PEM given in memory)".to_owned(),
        }
    }

    fn read(&self, what: &'static str) -> Result<Vec<u8>, WorkerError> {
        match self {
            Self::File(path) => std::fs::read(path).map_err(|e| WorkerError::TlsFile {
                what,
                file: self.name(),
                reason: e.to_string(),
            }),
            Self::Memory(bytes) => Ok(bytes.clone()),
        }
    }
}

impl fmt::Debug for PemSource {
    // Never the bytes: a key's PEM is a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Memory(bytes) => write!(f, "Memory(<{} bytes>)", bytes.len()),
        }
    }
}

/// The TLS settings a builder collected, not yet read.
#[derive(Debug, Clone, Default)]
pub struct TlsSources {
    /// The only CA trusted for the broker's certificate; `None`: the
    /// system's roots.
    pub ca: Option<PemSource>,
    /// The worker's client certificate chain and private key (mTLS).
    pub identity: Option<(PemSource, PemSource)>,
}

impl TlsSources {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }
}

/// TLS material, read and checked.
#[derive(Clone)]
pub struct Tls {
    /// PEM of the CA certificates to trust instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// PEM of the client certificate chain and of its private key.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field(
                "ca",
                &self.ca.as_ref().map(|c| format!("<{} bytes>", c.len())),
            )
            .field(
                "identity",
                &self
                    .identity
                    .as_ref()
                    .map(|_| "<certificate and <redacted> key>"),
            )
            .finish()
    }
}

/// A bearer token, checked; its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Checks `token`: not empty, visible ASCII only (it travels as an HTTP/2
    /// header value after `Bearer `, and whitespace there would split it).
    ///
    /// # Errors
    /// [`WorkerError::BadToken`], saying why without showing the token.
    pub fn new(token: &str) -> Result<Self, WorkerError> {
        let bad = |reason: &str| WorkerError::BadToken {
            reason: reason.to_owned(),
        };
        if token.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Some(at) = token.chars().position(|c| !c.is_ascii_graphic()) {
            let kind = if token.chars().nth(at).is_some_and(char::is_whitespace) {
                "whitespace"
            } else {
                "a character that is not visible ASCII"
            };
            return Err(bad(&format!(
                "it contains {kind} at character {} of {}",
                at + 1,
                token.chars().count()
            )));
        }
        Ok(Self(token.to_owned()))
    }

    /// The token itself, for the `authorization` header alone.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How a link reaches its broker: TLS (exactly when the URL is `https://`)
/// and the token sent on every call.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// `Some` for an `https://` URL.
    pub tls: Option<Tls>,
    /// Sent as `authorization: Bearer TOKEN`.
    pub token: Option<Token>,
}

impl Security {
    /// Reads and checks the TLS material and the token for `url`.
    ///
    /// # Errors
    /// [`WorkerError::TlsNeedsHttps`] for TLS settings with a URL that is not
    /// `https://`; [`WorkerError::TlsFile`] for a file that cannot be read or
    /// holds no certificate or key; [`WorkerError::BadToken`].
    pub fn load(url: &str, sources: &TlsSources, token: Option<&str>) -> Result<Self, WorkerError> {
        let https = url
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("https"));
        if sources.is_set() && !https {
            return Err(WorkerError::TlsNeedsHttps {
                url: url.to_owned(),
            });
        }
        let tls = if https {
            Some(Tls {
                ca: sources
                    .ca
                    .as_ref()
                    .map(|ca| read_certificates(ca, "CA certificate"))
                    .transpose()?,
                identity: sources
                    .identity
                    .as_ref()
                    .map(|(cert, key)| {
                        Ok::<_, WorkerError>((
                            read_certificates(cert, "client certificate")?,
                            read_key(key)?,
                        ))
                    })
                    .transpose()?,
            })
        } else {
            None
        };
        Ok(Self {
            tls,
            token: token.map(Token::new).transpose()?,
        })
    }
}

impl Security {
    /// What a client program's connection options name, as the worker,
    /// the CLI and the Kafka source spell them: the CA file (`--tls-ca`),
    /// a client certificate and key (`--tls-cert`, `--tls-key`) and the
    /// token from `SLUICE_TOKEN` or `token_file` (`--token-file`), for
    /// `url`.
    ///
    /// # Errors
    /// As [`token_from_env_or_file`] and [`Security::load`].
    pub fn from_options(
        url: &str,
        ca: Option<PathBuf>,
        identity: Option<(PathBuf, PathBuf)>,
        token_file: Option<&Path>,
    ) -> Result<Self, WorkerError> {
        let sources = TlsSources {
            ca: ca.map(PemSource::File),
            identity: identity.map(|(cert, key)| (PemSource::File(cert), PemSource::File(key))),
        };
        let token = token_from_env_or_file(token_file)?;
        Self::load(url, &sources, token.as_deref())
    }

    /// The warning a client owes its user when it sends a token in
    /// plaintext to another host: an `http://` URL whose host is not a
    /// loopback name or address. `None` when there is nothing to say.
    pub fn token_in_the_clear(&self, url: &str) -> Option<String> {
        if self.token.is_none() || self.tls.is_some() {
            return None;
        }
        let host = url_host(url)?;
        if is_loopback(host) {
            return None;
        }
        Some(format!(
            "sending the token to {host} over plaintext http://: anyone on the path can read it and use it; use an https:// URL"
        ))
    }
}

/// The host of a URL (`scheme://[user@]host[:port]/...`), without brackets.
fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(host, _)| host);
    }
    Some(
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    )
}

/// `localhost` (and its subdomains) or a loopback address.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token a client sends: from the [`TOKEN_ENV`] environment variable
/// (it stays out of `ps`) or from the file `token_file` (its one line,
/// trimmed), refusing both at once; `None` when neither is given.
///
/// # Errors
/// [`WorkerError::TokenSource`] for two tokens, a variable that is not
/// UTF-8 or a file that cannot be read (never showing the token).
pub fn token_from_env_or_file(token_file: Option<&Path>) -> Result<Option<String>, WorkerError> {
    let bad = |reason: String| WorkerError::TokenSource { reason };
    match (std::env::var_os(TOKEN_ENV), token_file) {
        (Some(_), Some(file)) => Err(bad(format!(
            "two tokens: {TOKEN_ENV} is set and --token-file (or SLUICE_TOKEN_FILE) names {}; \
             give the token one way only",
            file.display()
        ))),
        (Some(value), None) => value
            .into_string()
            .map(Some)
            .map_err(|_| bad(format!("{TOKEN_ENV} is not valid UTF-8"))),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| bad(format!("reading the token file {}: {e}", file.display())))?;
            // The line's end (and any stray spaces around it) is not the token.
            Ok(Some(text.trim().to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// The PEM of `source`, which must hold at least one certificate.
fn read_certificates(source: &PemSource, what: &'static str) -> Result<Vec<u8>, WorkerError> {
    let pem = source.read(what)?;
    let invalid = |reason: String| WorkerError::TlsFile {
        what,
        file: source.name(),
        reason,
    };
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| invalid(format!("not valid PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(invalid("no PEM certificate in it".to_owned()));
    }
    Ok(pem)
}

/// The PEM of `source`, which must hold a private key.
fn read_key(source: &PemSource) -> Result<Vec<u8>, WorkerError> {
    const WHAT: &str = "client key";
    let pem = source.read(WHAT)?;
    // The parse error names the PEM section, never the key's bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| WorkerError::TlsFile {
        what: WHAT,
        file: source.name(),
        reason: format!("no PEM private key in it: {e}"),
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_over_plaintext_to_another_host_is_warned_about() {
        let none = TlsSources::default();
        let warn = |url: &str, token: Option<&str>| {
            Security::load(url, &none, token)
                .unwrap()
                .token_in_the_clear(url)
        };
        let said = warn("http://broker.internal:50051", Some("t0ken")).unwrap();
        assert!(
            said.contains("broker.internal") && !said.contains("t0ken"),
            "{said}"
        );
        assert!(warn("http://10.1.2.3:50051/", Some("t0ken")).is_some());
        assert!(warn("http://[fd00::1]:50051", Some("t0ken")).is_some());
        for quiet in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
            "https://broker.internal:50051",
        ] {
            assert_eq!(warn(quiet, Some("t0ken")), None, "{quiet}");
        }
        assert_eq!(warn("http://broker.internal:50051", None), None);
    }

    #[test]
    fn a_token_of_visible_ascii_is_accepted() {
        let token = Token::new("s3cr3t-Token_0123456789.~+/=").unwrap();
        assert_eq!(token.expose(), "s3cr3t-Token_0123456789.~+/=");
    }

    #[test]
    fn an_empty_token_is_refused() {
        let err = Token::new("").unwrap_err();
        assert!(matches!(err, WorkerError::BadToken { .. }), "{err:?}");
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn a_token_with_whitespace_or_invisible_characters_is_refused_without_showing_it() {
        for token in [
            "secret-token-1234 x",
            "secret-token-1234\n",
            "\tsecret-token-1234",
        ] {
            let err = Token::new(token).unwrap_err().to_string();
            assert!(err.contains("whitespace"), "{err}");
            assert!(!err.contains("secret"), "the error shows the token: {err}");
        }
        for token in [
            "secret-token-1234\u{7f}",
            "secret-tökén-1234",
            "secret\0token",
        ] {
            let err = Token::new(token).unwrap_err().to_string();
            assert!(err.contains("not visible ASCII"), "{err}");
            assert!(!err.contains("secret"), "the error shows the token: {err}");
        }
    }

    #[test]
    fn debug_redacts_the_token_and_the_private_key() {
        let security = Security {
            tls: Some(Tls {
                ca: Some(b"CA PEM".to_vec()),
                identity: Some((b"CERT PEM".to_vec(), b"KEY-SECRET".to_vec())),
            }),
            token: Some(Token::new("token-secret-0123456789").unwrap()),
        };
        let shown = format!("{security:?} {:?}", security.token);
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains("token-secret"), "{shown}");
        assert!(!shown.contains("KEY-SECRET"), "{shown}");
        let source = format!("{:?}", PemSource::Memory(b"KEY-SECRET".to_vec()));
        assert!(!source.contains("KEY-SECRET"), "{source}");
    }

    #[test]
    fn tls_settings_with_an_http_url_are_refused() {
        let sources = TlsSources {
            ca: Some(PemSource::Memory(b"x".to_vec())),
            identity: None,
        };
        let err = Security::load("http://127.0.0.1:50051", &sources, None).unwrap_err();
        assert!(matches!(err, WorkerError::TlsNeedsHttps { .. }), "{err:?}");
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn an_https_url_turns_tls_on_and_an_http_one_leaves_it_off() {
        let none = TlsSources::default();
        let secure = Security::load("https://broker.example:50051", &none, None).unwrap();
        assert!(secure.tls.is_some_and(|t| t.ca.is_none()));
        let plain = Security::load("http://127.0.0.1:50051", &none, Some("t0ken")).unwrap();
        assert!(plain.tls.is_none());
        assert_eq!(plain.token.unwrap().expose(), "t0ken");
    }

    #[test]
    fn an_unreadable_or_empty_tls_file_is_named() {
        let missing = TlsSources {
            ca: Some(PemSource::File("/nonexistent/ca.pem".into())),
            identity: None,
        };
        let err = Security::load("https://h:1", &missing, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(err.contains("CA certificate"), "{err}");

        let not_pem = TlsSources {
            ca: Some(PemSource::Memory(b"hello".to_vec())),
            identity: None,
        };
        let err = Security::load("https://h:1", &not_pem, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
