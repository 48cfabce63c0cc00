//! TLS and tokens for `sluice-bench`: the clients' options (`--tls-ca`,
//! `--tls-cert`, `--tls-key`, `--tls`, `--token-file` or `SLUICE_TOKEN`), the
//! `--secure` mode that makes a CA, a server certificate and a token file
//! in a temporary directory and starts the broker with `--tls-cert
//! --tls-key --auth-tokens`, and `security-cost`, which compares brokers
//! with both on and both off.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use sluice_e2e::tls::TestPki;

use crate::load::{self, Api, ClientSecurity, ClientTls, Load, Tokens};

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

/// Options of `security-cost`.
#[derive(Debug, Args)]
pub struct SecurityCostArgs {
    /// The broker binary (default: sluice-broker beside this one).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// Rounds; each runs batched and unary loads on a plain broker and on
    /// one with TLS and tokens, alternating.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// Jobs per unary run; batched runs take four times as many.
    #[arg(short = 'n', long, default_value_t = 50_000)]
    jobs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// End-to-end jobs/s of one load against a fresh broker: plain, or with
/// the TLS and tokens of `secure`.
async fn one_run(
    broker_bin: &Path,
    api: Api,
    jobs: u64,
    secure: Option<&Generated>,
) -> anyhow::Result<f64> {
    let broker_args = secure.map(|g| g.broker_args.clone()).unwrap_or_default();
    let broker = crate::start_broker(broker_bin, &broker_args)?;
    let load = Load {
        jobs,
        producers: 1,
        consumers: 1,
        in_flight: 64,
        window: 64,
        batch: 256,
        payload: 64,
        rate: None,
        api,
        worker_handler: None,
        queue: "security-cost".into(),
        security: secure.map(|g| g.clients.clone()).unwrap_or_default(),
    };
    let measured = load::run(&broker.addr, &load).await?;
    Ok(jobs as f64 / measured.end_to_end.as_secs_f64())
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `security-cost` and prints its table.
///
/// # Errors
/// A run that fails.
pub async fn security_cost(args: SecurityCostArgs, broker_bin: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.jobs > 0,
        "rounds and jobs must be above 0"
    );
    // One set of certificates and tokens for every secure run.
    let generated = generate()?;
    let apis = [(Api::Batch, args.jobs * 4), (Api::Unary, args.jobs)];
    // results[api][secure] = jobs/s of each round.
    let mut results = vec![[Vec::new(), Vec::new()]; apis.len()];
    for round in 1..=args.rounds {
        for (i, (api, jobs)) in apis.iter().enumerate() {
            // Alternate which goes first, so drift does not favour one side.
            let order = if round % 2 == 1 {
                [false, true]
            } else {
                [true, false]
            };
            for secure in order {
                let rate = one_run(broker_bin, *api, *jobs, secure.then_some(&generated))
                    .await
                    .with_context(|| {
                        format!(
                            "round {round}, {api:?}, {}",
                            if secure { "TLS and tokens" } else { "plain" }
                        )
                    })?;
                results[i][usize::from(secure)].push(rate);
                eprintln!(
                    "round {round} {api:?} {}: {rate:.0} jobs/s",
                    if secure { "secure" } else { "plain" }
                );
            }
        }
    }
    let rows: Vec<_> = apis
        .iter()
        .zip(&results)
        .map(|((api, jobs), [plain, secure])| {
            let (p, s) = (median(plain), median(secure));
            json!({
                "api": format!("{api:?}").to_lowercase(), "jobs": jobs,
                "plain_e2e_jobs_per_s": plain, "secure_e2e_jobs_per_s": secure,
                "plain_median": p, "secure_median": s,
                "secure_over_plain": if p > 0.0 { s / p } else { 0.0 },
            })
        })
        .collect();
    if args.json {
        println!("{}", json!({ "rounds": args.rounds, "loads": rows }));
        return Ok(());
    }
    println!(
        "end-to-end jobs/s, median of {} rounds (plain: no TLS, no tokens; secure: TLS and tokens)",
        args.rounds
    );
    println!("| load | plain jobs/s | secure jobs/s | secure / plain |\n|---|---|---|---|");
    for row in &rows {
        println!(
            "| {}, {} jobs | {:.0} | {:.0} | {:.2} |",
            row["api"].as_str().unwrap_or("?"),
            row["jobs"],
            row["plain_median"].as_f64().unwrap_or(0.0),
            row["secure_median"].as_f64().unwrap_or(0.0),
            row["secure_over_plain"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}
