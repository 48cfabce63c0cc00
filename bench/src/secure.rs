//! TLS and tokens for `sluice-bench`: the clients' options (`--tls-ca`,
//! `--tls-cert`, `--tls-key`, `--tls`, `--token-file` or `SLUICE_TOKEN`), the
//! `--secure` mode that makes a CA, a server certificate and a token file
//! in a temporary directory and starts the broker with `--tls-cert
//! --tls-key --auth-tokens`, and `security-cost`, which compares brokers
//! with both on and both off.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use sluice_e2e::tls::TestPki;

use crate::cost::{self, Comparison, CostArgs, Side};
use crate::load::{ClientSecurity, ClientTls, Tokens};

/// How the load's clients reach the broker.
#[derive(Debug, Args)]
pub struct SecureArgs {
    /// Make a CA, a server certificate and a token per role in a temporary
    /// directory; start the broker with --tls-cert, --tls-key and
    /// --auth-tokens, and give the clients the CA and their tokens.
    #[arg(long, conflicts_with_all = ["addr", "tls", "tls_ca", "tls_cert", "tls_key", "token_file"])]
    secure: bool,
    /// Clients connect with TLS (https), trusting the system's roots
    /// unless --tls-ca is given (implied by --tls-ca and --tls-cert).
    #[arg(long)]
    tls: bool,
    /// Clients trust only this PEM CA for the broker's certificate.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Clients present this PEM certificate (mTLS); with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A file whose one line is the token every client sends (else the
    /// SLUICE_TOKEN environment variable, if set).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

/// A temporary directory of generated certificates and tokens, removed on drop.
pub struct Generated {
    dir: PathBuf,
    /// Flags for the broker: --tls-cert, --tls-key, --auth-tokens.
    pub broker_args: Vec<String>,
    /// The clients' side: the CA and a token per role.
    pub clients: ClientSecurity,
}

impl Drop for Generated {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// 32 hex digits from the system's random source.
fn random_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Makes a CA, a server certificate for 127.0.0.1 and a token file
/// (`producer`, `worker` and `admin` lines) in a fresh temporary directory.
///
/// # Errors
/// When a key or a file cannot be made.
pub fn generate() -> anyhow::Result<Generated> {
    let dir = std::env::temp_dir().join(format!(
        "sluice-bench-secure-{}-{}",
        std::process::id(),
        random_token()?
    ));
    let pki = TestPki::new(&dir).context("making the test certificates")?;
    let tokens = Tokens {
        producer: Some(random_token()?),
        worker: Some(random_token()?),
        admin: Some(random_token()?),
    };
    let auth = dir.join("auth-tokens");
    let lines = [
        ("producer", &tokens.producer),
        ("worker", &tokens.worker),
        ("admin", &tokens.admin),
    ]
    .iter()
    .filter_map(|(role, token)| token.as_ref().map(|t| format!("{role} {t}\n")))
    .collect::<String>();
    std::fs::write(&auth, lines).context("writing the token file")?;
    let path = |p: &Path| p.display().to_string();
    Ok(Generated {
        broker_args: vec![
            "--tls-cert".into(),
            path(&pki.server_cert),
            "--tls-key".into(),
            path(&pki.server_key),
            "--auth-tokens".into(),
            path(&auth),
        ],
        clients: ClientSecurity {
            tls: Some(ClientTls {
                ca: Some(pki.ca.clone()),
                identity: None,
            }),
            tokens,
        },
        dir,
    })
}

impl SecureArgs {
    /// The clients' security, and for --secure the generated files (whose
    /// broker flags the started broker gets).
    ///
    /// # Errors
    /// Two tokens, an unreadable token file, or files that cannot be made.
    pub fn resolve(&self) -> anyhow::Result<(ClientSecurity, Option<Generated>)> {
        if self.secure {
            let generated = generate()?;
            return Ok((generated.clients.clone(), Some(generated)));
        }
        let tls =
            (self.tls || self.tls_ca.is_some() || self.tls_cert.is_some()).then(|| ClientTls {
                ca: self.tls_ca.clone(),
                identity: self.tls_cert.clone().zip(self.tls_key.clone()),
            });
        let from_env = std::env::var(sluice_worker::defaults::TOKEN_ENV).ok();
        let token = match (from_env, &self.token_file) {
            (Some(_), Some(_)) => {
                anyhow::bail!("two tokens: SLUICE_TOKEN is set and --token-file is given")
            }
            (Some(token), None) => Some(token),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("reading the token file {}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        let tokens = token.map(Tokens::same).unwrap_or_default();
        Ok((ClientSecurity { tls, tokens }, None))
    }
}

/// Runs `security-cost` and prints its table.
///
/// # Errors
/// A run that fails.
pub async fn security_cost(args: CostArgs, broker_bin: &Path) -> anyhow::Result<()> {
    // One set of certificates and tokens for every secure run.
    let generated = generate()?;
    let secure = Side {
        broker_args: generated.broker_args.clone(),
        clients: generated.clients.clone(),
        scrape: false,
    };
    let comparison = Comparison {
        name: "security-cost",
        labels: ["plain", "secure"],
        caption: "plain: no TLS, no tokens; secure: TLS and tokens",
        sides: [Side::default(), secure],
    };
    cost::run(args, broker_bin, comparison).await
}
