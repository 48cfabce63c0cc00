//! TLS between the broker and PostgreSQL (`--store postgres://...?sslmode=`),
//! against a private PostgreSQL serving a certificate made by the test:
//! `verify-full` with the right CA connects (and PostgreSQL says the
//! broker's connections are encrypted), with another CA the broker refuses
//! to start, and `require` encrypts without checking.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use sluice_e2e::postgres::TestPostgres;
use sluice_e2e::tls::{Ca, write};
use sluice_e2e::{BrokerProcess, WAIT, binary, scratch_dir};

/// Gives the file to the server's account (under root, the user
/// `postgres` runs it), readable by it alone, as PostgreSQL demands of a key.
fn hand_to_server(pg: &TestPostgres, path: &std::path::Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(pg.dir()).unwrap();
    use std::os::unix::fs::MetadataExt as _;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(owner.uid())),
        Some(nix::unistd::Gid::from_raw(owner.gid())),
    )
    .unwrap();
}

/// A private PostgreSQL serving TLS with a certificate for 127.0.0.1 that
/// `ca` signed.
fn postgres_with_tls(ca: &Ca) -> TestPostgres {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let leaf = ca.issue("127.0.0.1", &["127.0.0.1"]).unwrap();
    let cert = write(pg.dir(), "server.crt", &leaf.cert);
    let key = write(pg.dir(), "server.key", &leaf.key);
    hand_to_server(&pg, &cert);
    hand_to_server(&pg, &key);
    pg.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
    );
    pg.psql(
        "postgres",
        &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
    );
    pg.psql("postgres", "ALTER SYSTEM SET ssl = on");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    pg
}

fn broker_with(store: &str) -> BrokerProcess {
    let broker = BrokerProcess::start(&["--store", store]);
    broker.wait_for_log("broker serving");
    broker
}

#[tokio::test]
async fn the_broker_talks_to_postgres_over_verified_tls() {
    let dir = scratch_dir("postgres-tls");
    let ca = Ca::new("database CA").unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.pem);
    let pg = postgres_with_tls(&ca);
    let url = pg.fresh_database();

    let broker = broker_with(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca_file.display()
    ));
    let id = broker.enqueue(sluice_e2e::job("t", b"x")).await;
    assert_eq!(broker.job(&id).await.queue, "default");
    // Every connection of the broker is encrypted, as the server sees it.
    let database = url.rsplit('/').next().unwrap();
    let (plain, encrypted) = pg
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE NOT s.ssl), count(*) FILTER (WHERE s.ssl)
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                 WHERE a.application_name = 'sluice-broker' AND a.datname = '{database}'"
            ),
        )
        .split_once('|')
        .map(|(p, e)| (p.to_owned(), e.to_owned()))
        .unwrap();
    assert_eq!(plain, "0");
    assert_ne!(encrypted, "0");
    drop(broker);

    // `require` encrypts without checking the certificate.
    let broker = broker_with(&format!("{url}?sslmode=require"));
    broker.enqueue(sluice_e2e::job("t", b"x")).await;
    drop(broker);

    // A certificate from another CA is refused: the broker does not start.
    let other = write(&dir, "other.pem", &Ca::new("another CA").unwrap().pem);
    let mut command = Command::new(binary("sluice-broker"));
    command.args([
        "--addr",
        "127.0.0.1:0",
        "--store",
        &format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()),
    ]);
    let out = sluice_e2e::cli::run_within(command, None, WAIT).unwrap();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("connecting to the database") && out.stderr.contains("TLS handshake"),
        "{}",
        out.stderr
    );
}
