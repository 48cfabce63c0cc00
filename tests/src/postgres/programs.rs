//! Where PostgreSQL's programs are, and whom the server runs as.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User, geteuid};

/// Whom the server runs as when the tests run as root.
pub(super) const SERVER_ACCOUNT: &str = "postgres";
/// Where Debian installs each major version's programs, in `<version>/bin`.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// Under root, the account the server runs as; otherwise None.
pub(super) fn server_account() -> Result<Option<(Uid, Gid)>, String> {
    if !geteuid().is_root() {
        return Ok(None);
    }
    match User::from_name(SERVER_ACCOUNT) {
        Ok(Some(user)) => Ok(Some((user.uid, user.gid))),
        Ok(None) => Err(format!(
            "PostgreSQL refuses to run as root, and these tests run as root: they run it as \
             the user `{SERVER_ACCOUNT}`, which does not exist. Debian's `postgresql` package \
             creates it (`scripts/test` installs the package); or create it yourself \
             (useradd --system {SERVER_ACCOUNT})"
        )),
        Err(e) => Err(format!(
            "could not look up the user `{SERVER_ACCOUNT}`: {e}"
        )),
    }
}

/// The directory of `initdb` and its sibling programs.
pub(super) fn server_bin_dir() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("initdb"))
        .find(|initdb| is_executable(initdb));
    // A symlink on PATH (such as Debian's wrappers in /usr/bin) leads to the
    // directory that holds the matching pg_ctl, createdb and psql.
    if let Some(initdb) = on_path {
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent()
            && has_programs(dir)
        {
            return Ok(dir.to_owned());
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = std::fs::read_dir(DEBIAN_ROOT)
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_programs(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "PostgreSQL's server is not installed: no initdb (with pg_ctl, createdb and psql \
             beside it) on PATH or in {DEBIAN_ROOT}/*/bin. `scripts/test` installs Debian's \
             `postgresql` package; or install it yourself (apt-get install postgresql)"
        )
    })
}

fn has_programs(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "createdb", "psql"]
        .iter()
        .all(|program| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
