//! The token file of `--auth-tokens`: one credential per line,
//!
//! ```text
//! # ROLE TOKEN [QUEUES]      or      ROLE cert:CN [QUEUES]
//! producer 3f9c0a7d1e2b4c5a6d7e8f90 orders,billing.*
//! worker   c1d2e3f4a5b6c7d8e9f0a1b2 orders
//! admin    0a1b2c3d4e5f60718293a4b5
//! worker   cert:worker-01.internal
//! ```
//!
//! ROLE is `producer`, `worker`, `admin`, `metrics` or `viewer`; a TOKEN has at least
//! [`MIN_TOKEN_LEN`] characters; QUEUES is a comma-separated list of queue
//! names, each possibly ending in `*` to match a prefix (absent: every
//! queue). `cert:CN` grants the role to a client certificate (mTLS) whose
//! subject common name is CN. `#` starts a comment line; blank lines are
//! ignored.
//!
//! A malformed file is refused whole, naming the line and what is wrong,
//! never echoing a token. Tokens are kept only as SHA-256 digests and
//! matched in constant time against every credential.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use subtle::ConstantTimeEq as _;

use sluice_queue::{QueuePattern, QueueScope};

use super::rights::Role;

/// Shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file was refused.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read.
    #[error("reading the token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path}, line {line}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// From 1.
        line: usize,
        /// What is wrong (never the token).
        reason: String,
    },
    /// The file holds no credential, so every call would be refused.
    #[error("token file {path} holds no credential: every call would be refused")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What a credential identifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A bearer token, kept as its SHA-256 digest.
    Token {
        /// SHA-256 of the token.
        digest: [u8; 32],
    },
    /// A client certificate whose subject common name is this.
    Cert {
        /// The common name.
        common_name: String,
    },
}

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// What it may do.
    pub role: Role,
    /// Who presents it.
    pub principal: Principal,
    /// Where it may do it.
    pub queues: QueueScope,
    /// How logs name it: a token's fingerprint, or `cert:CN`.
    pub label: String,
}

/// Every credential of a token file.
#[derive(Debug, Default)]
pub struct Credentials {
    list: Vec<Arc<Credential>>,
    has_certs: bool,
}

/// The first 8 hex digits of the SHA-256 of `token`: names a token in logs.
pub fn fingerprint(token: &str) -> String {
    hex8(&digest(token))
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex8(digest: &[u8; 32]) -> String {
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    /// Reads and parses the token file at `path`.
    ///
    /// # Errors
    /// [`CredentialsError`] when it cannot be read, a line is malformed, or
    /// it holds no credential.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses the text of a token file; `path` only names it in errors.
    ///
    /// # Errors
    /// [`CredentialsError::Malformed`] or [`CredentialsError::Empty`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, CredentialsError> {
        let mut list: Vec<Arc<Credential>> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let malformed = |reason: String| CredentialsError::Malformed {
                path: path.to_owned(),
                line: n + 1,
                reason,
            };
            let credential = parse_line(line).map_err(malformed)?;
            if let Some(earlier) = list
                .iter()
                .position(|c| c.principal == credential.principal)
            {
                return Err(malformed(format!(
                    "the same {} as an earlier line (credential {})",
                    match credential.principal {
                        Principal::Token { .. } => "token",
                        Principal::Cert { .. } => "certificate name",
                    },
                    earlier + 1
                )));
            }
            list.push(Arc::new(credential));
        }
        if list.is_empty() {
            return Err(CredentialsError::Empty {
                path: path.to_owned(),
            });
        }
        let has_certs = list
            .iter()
            .any(|c| matches!(c.principal, Principal::Cert { .. }));
        Ok(Self { list, has_certs })
    }

    /// How many credentials there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there are none (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether any line names a certificate.
    pub fn has_certs(&self) -> bool {
        self.has_certs
    }

    /// The credential of `token`. Compares its digest with every token's in
    /// constant time, so neither the match nor its position shows in timing.
    pub fn by_token(&self, token: &str) -> Option<Arc<Credential>> {
        self.by_digest(&digest(token))
    }

    /// The credential of the token whose SHA-256 is `presented`, compared
    /// as [`Credentials::by_token`] does.
    pub fn by_digest(&self, presented: &[u8; 32]) -> Option<Arc<Credential>> {
        let mut found = None;
        for credential in &self.list {
            if let Principal::Token { digest } = &credential.principal
                && bool::from(digest.ct_eq(presented))
            {
                found = Some(credential.clone());
            }
        }
        found
    }

    /// The credential of a client certificate named `common_name`.
    pub fn by_cert(&self, common_name: &str) -> Option<Arc<Credential>> {
        self.list
            .iter()
            .find(|c| matches!(&c.principal, Principal::Cert { common_name: cn } if cn == common_name))
            .cloned()
    }
}

/// One non-comment line; the error never contains the token.
fn parse_line(line: &str) -> Result<Credential, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (role, who, queues) = match fields.as_slice() {
        [role, who] => (*role, *who, None),
        [role, who, queues] => (*role, *who, Some(*queues)),
        [_] => return Err("expected ROLE TOKEN [QUEUES]: the token is missing".into()),
        more => {
            return Err(format!(
                "expected ROLE TOKEN [QUEUES], found {} fields",
                more.len()
            ));
        }
    };
    let role = Role::parse(role).ok_or_else(|| {
        format!("unknown role {role:?}: expected producer, worker, admin, metrics or viewer")
    })?;
    let (principal, label) = match who.strip_prefix("cert:") {
        Some("") => return Err("cert: needs a common name (cert:CN)".into()),
        Some(cn) => (
            Principal::Cert {
                common_name: cn.to_owned(),
            },
            format!("cert:{cn}"),
        ),
        None if who.chars().count() < MIN_TOKEN_LEN => {
            return Err(format!(
                "the token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        None => {
            let digest = digest(who);
            (Principal::Token { digest }, hex8(&digest))
        }
    };
    let queues = match queues {
        None => QueueScope::Every,
        Some(list) => parse_queues(list)?,
    };
    Ok(Credential {
        role,
        principal,
        queues,
        label,
    })
}

fn parse_queues(list: &str) -> Result<QueueScope, String> {
    let mut patterns = Vec::new();
    for entry in list.split(',') {
        if entry == "*" {
            return Ok(QueueScope::Every);
        }
        let (name, prefix) = match entry.strip_suffix('*') {
            Some(name) => (name, true),
            None => (entry, false),
        };
        sluice_limits::check_queue_name(name)
            .map_err(|reason| format!("queue {entry:?}: {reason}"))?;
        patterns.push(if prefix {
            QueuePattern::Prefix(name.to_owned())
        } else {
            QueuePattern::Exact(name.to_owned())
        });
    }
    Ok(QueueScope::Only(patterns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef-secret";

    fn parse(text: &str) -> Result<Credentials, CredentialsError> {
        Credentials::parse(text, Path::new("tokens"))
    }

    #[test]
    fn a_file_with_comments_roles_scopes_and_certs_parses() {
        let creds = parse(&format!(
            "# comment\n\nproducer {TOKEN} orders,billing.*\nworker cert:w1\nadmin {TOKEN}x\n"
        ))
        .unwrap();
        assert_eq!(creds.len(), 3);
        assert!(creds.has_certs());
        let producer = creds.by_token(TOKEN).unwrap();
        assert_eq!(producer.role, Role::Producer);
        assert!(producer.queues.allows("billing.eu"));
        assert!(!producer.queues.allows("mail"));
        assert_eq!(producer.label, fingerprint(TOKEN));
        assert_eq!(creds.by_cert("w1").unwrap().role, Role::Worker);
        assert!(creds.by_token("0123456789abcdef-other").is_none());
    }

    #[test]
    fn a_malformed_line_is_named_without_its_token() {
        for (text, says) in [
            (format!("\nboss {TOKEN}"), "line 2: unknown role \"boss\""),
            (
                "worker short".to_owned(),
                "line 1: the token is shorter than 16",
            ),
            (
                format!("worker {TOKEN} bad/queue"),
                "line 1: queue \"bad/queue\"",
            ),
            (
                format!("worker {TOKEN} a b"),
                "line 1: expected ROLE TOKEN [QUEUES], found 4",
            ),
            (
                format!("worker {TOKEN}\nadmin {TOKEN}"),
                "line 2: the same token",
            ),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(says), "{err:?} should say {says:?}");
            assert!(!err.contains(TOKEN), "{err:?} echoes the token");
        }
        assert!(matches!(
            parse("# only\n"),
            Err(CredentialsError::Empty { .. })
        ));
    }
}
