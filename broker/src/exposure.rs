//! What the broker warns about because of how it is exposed, and its
//! secrets on disk: pure functions of the settings and the files' modes,
//! which `main.rs` logs at startup (and, for the files, on each SIGHUP).
//!
//! - The gRPC listener off loopback without TLS or tokens (anyone who
//!   reaches it does everything), with tokens over plaintext (they cross
//!   the network in the clear), or with TLS but neither tokens nor client
//!   certificates (encrypted, and still open to anyone).
//! - The token file or the TLS key readable by users other than the
//!   broker's (a mode wider than 0640), as ssh does for its keys;
//!   `--strict-permissions` makes it a refusal to start (or to reload).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// How the gRPC listener is exposed.
#[derive(Debug, Clone, Copy)]
pub struct Exposure {
    /// `--addr`.
    pub addr: SocketAddr,
    /// `--tls-cert` and `--tls-key`.
    pub tls: bool,
    /// `--tls-client-ca`: client certificates required.
    pub client_certs: bool,
    /// `--auth-tokens`.
    pub tokens: bool,
}

impl Exposure {
    /// What is risky about it, one sentence each; nothing on loopback.
    pub fn warnings(&self) -> Vec<&'static str> {
        if self.addr.ip().is_loopback() {
            return Vec::new();
        }
        match (self.tls, self.tokens, self.client_certs) {
            (false, false, _) => vec![
                "listening on a non-loopback address without TLS or --auth-tokens: anyone who can reach it can enqueue, lease and administer jobs in plaintext",
            ],
            (false, true, _) => vec![
                "listening on a non-loopback address with --auth-tokens but without TLS: the tokens cross the network in plaintext, for anyone on the path to read and use (add --tls-cert and --tls-key)",
            ],
            (true, false, false) => vec![
                "listening on a non-loopback address with TLS but neither --auth-tokens nor --tls-client-ca: the traffic is encrypted, yet anyone who can reach it can enqueue, lease and administer jobs",
            ],
            _ => Vec::new(),
        }
    }
}

/// The widest mode a secret file may have: read and write for its owner,
/// read for its group (the broker's, in the deployment files).
pub const SECRET_MODE: u32 = 0o640;

/// A secret file that others may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LooseSecret {
    /// Which file (`--auth-tokens`, `--tls-key`).
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
}

impl std::fmt::Display for LooseSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} has mode {:04o}, wider than {SECRET_MODE:04o}: other users can read it (chmod 640 it, or 600)",
            self.what,
            self.path.display(),
            self.mode
        )
    }
}

/// The secret files among `files` whose mode is wider than
/// [`SECRET_MODE`]. A file that cannot be read is not judged here: loading
/// it fails and says why.
pub fn loose_secrets<'a>(
    files: impl IntoIterator<Item = (&'static str, &'a Path)>,
) -> Vec<LooseSecret> {
    files
        .into_iter()
        .filter_map(|(what, path)| {
            let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
            (mode & !SECRET_MODE != 0).then(|| LooseSecret {
                what,
                path: path.to_owned(),
                mode,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposure(addr: &str, tls: bool, client_certs: bool, tokens: bool) -> Vec<&'static str> {
        Exposure {
            addr: addr.parse().unwrap(),
            tls,
            client_certs,
            tokens,
        }
        .warnings()
    }

    #[test]
    fn each_risky_exposure_off_loopback_has_its_warning() {
        assert!(exposure("127.0.0.1:50051", false, false, false).is_empty());
        assert!(exposure("[::1]:50051", false, false, true).is_empty());
        let open = exposure("0.0.0.0:50051", false, false, false);
        assert!(open[0].contains("without TLS or --auth-tokens"), "{open:?}");
        let plain_tokens = exposure("10.0.0.5:50051", false, false, true);
        assert!(plain_tokens[0].contains("tokens cross the network in plaintext"));
        let tls_only = exposure("10.0.0.5:50051", true, false, false);
        assert!(tls_only[0].contains("TLS but neither"));
        assert!(exposure("10.0.0.5:50051", true, true, false).is_empty());
        assert!(exposure("10.0.0.5:50051", true, false, true).is_empty());
    }

    #[test]
    fn a_secret_readable_by_others_is_named_with_its_mode() {
        let dir = std::env::temp_dir().join(format!("sluice-exposure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tokens");
        std::fs::write(&file, "x").unwrap();
        for (mode, loose) in [(0o600, false), (0o640, false), (0o644, true), (0o660, true)] {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            let found = loose_secrets([("--auth-tokens", file.as_path())]);
            assert_eq!(!found.is_empty(), loose, "{mode:o}");
            if loose {
                let said = found[0].to_string();
                assert!(said.contains(&format!("{mode:04o}")), "{said}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
