//! The advisory check that `scripts/test` runs (`cargo deny --offline
//! check advisories`, against the copy of the RustSec database kept in
//! the repository) fails where it must: on a crate with a known
//! vulnerability and on a yanked one (the fixtures under
//! `tests/fixtures/`), and passes on this workspace. Needs cargo-deny
//! (installed by `scripts/test`) and the package registry, from which the
//! fixtures' crates are fetched (never built).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sluice_e2e::scratch_dir;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The advisory database, made by `scripts/advisory-db` in `dir`; the
/// config that reads it, with the workspace's rules.
fn database(dir: &Path) -> PathBuf {
    let db_path = dir.join("advisory-dbs");
    let made = Command::new(repo().join("scripts/advisory-db"))
        .arg(&db_path)
        .status()
        .unwrap();
    assert!(made.success(), "scripts/advisory-db failed");
    let rules = std::fs::read_to_string(repo().join("deny.toml")).unwrap();
    let config = dir.join("deny.toml");
    std::fs::write(
        &config,
        rules.replace(
            "db-path = \"target/advisory-dbs\"",
            &format!("db-path = {:?}", db_path.display().to_string()),
        ),
    )
    .unwrap();
    config
}

/// `cargo deny --offline check advisories` of the package at `manifest`.
fn check_advisories(manifest: &Path, config: &Path) -> Output {
    Command::new("cargo")
        .args(["deny", "--offline", "--manifest-path"])
        .arg(manifest)
        .arg("--config")
        .arg(config)
        .args(["check", "advisories"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cargo deny could not run ({e}): install it with `cargo install --locked cargo-deny` (scripts/test does)")
        })
}

/// A copy of fixture `name` with its crates fetched (so that the offline
/// check can read their metadata).
fn fixture(name: &str, dir: &Path) -> PathBuf {
    let copy = dir.join(name);
    std::fs::create_dir_all(copy.join("src")).unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::copy(
            repo().join("tests/fixtures").join(name).join(file),
            copy.join(file),
        )
        .unwrap();
    }
    let manifest = copy.join("Cargo.toml");
    let fetched = Command::new("cargo")
        .args(["fetch", "--locked", "--manifest-path"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "cargo fetch {name}: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    manifest
}

#[test]
fn the_advisory_check_fails_on_a_vulnerable_and_a_yanked_crate_and_passes_here() {
    let dir = scratch_dir("supply-chain");
    let config = database(&dir);
    for (name, finding) in [
        ("deny-vulnerable", "RUSTSEC-2021-0003"),
        ("deny-yanked", "detected yanked crate"),
    ] {
        let output = check_advisories(&fixture(name, &dir), &config);
        let report = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name} passed: {report}");
        assert!(report.contains(finding), "{name}: no {finding} in {report}");
    }
    let ours = check_advisories(&repo().join("Cargo.toml"), &config);
    let report = String::from_utf8_lossy(&ours.stderr);
    assert!(ours.status.success(), "the workspace: {report}");
    let _ = std::fs::remove_dir_all(&dir);
}
