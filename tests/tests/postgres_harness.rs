//! The private PostgreSQL harness itself (`sluice_e2e::postgres`): the
//! shared cluster answers in fresh, separate databases with the settings
//! the broker's tests rely on; a restart keeps the server on its port with
//! its data; an own cluster is gone after its drop, and the shared one
//! after its test process exits. Without PostgreSQL these tests fail,
//! saying what to install: `scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_e2e::cli::run_within;
use sluice_e2e::postgres::{START_LIMIT, shared};
use sluice_e2e::{TestPostgres, WAIT, wait_gone};

fn cluster() -> &'static TestPostgres {
    shared().unwrap_or_else(|e| panic!("{e}"))
}

fn own_cluster() -> TestPostgres {
    TestPostgres::start().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_shared_cluster_answers_in_a_fresh_database() {
    let postgres = cluster();
    let url = postgres.fresh_database();
    let prefix = format!("postgres://sluice@127.0.0.1:{}/", postgres.port());
    assert!(
        url.starts_with(&prefix),
        "{url} does not start with {prefix}"
    );
    assert_eq!(postgres.psql(&url, "select 1"), "1");
    let settings = postgres.psql(
        &url,
        "select name || '=' || setting from pg_settings \
         where name in ('fsync', 'synchronous_commit', 'max_connections', 'listen_addresses') \
         order by name",
    );
    assert_eq!(
        settings,
        "fsync=on\nlisten_addresses=127.0.0.1\nmax_connections=300\nsynchronous_commit=on"
    );
}

#[test]
fn fresh_databases_are_distinct() {
    let postgres = cluster();
    let (a, b) = (postgres.fresh_database(), postgres.fresh_database());
    assert_ne!(a, b);
    postgres.psql(&a, "create table only_in_a (n int)");
    let count = "select count(*) from pg_tables where tablename = 'only_in_a'";
    assert_eq!(postgres.psql(&a, count), "1");
    assert_eq!(postgres.psql(&b, count), "0");
}

#[test]
fn fresh_databases_can_be_taken_by_many_tests_at_once() {
    let postgres = cluster();
    let urls: Vec<String> = std::thread::scope(|scope| {
        let takers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| postgres.fresh_database()))
            .collect();
        takers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for url in &urls {
        assert_eq!(postgres.psql(url, "select 1"), "1");
    }
    let mut distinct = urls.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), urls.len(), "{urls:?}");
}

#[test]
fn restart_fast_keeps_the_server_answering_on_its_port() {
    let postgres = own_cluster();
    let url = postgres.fresh_database();
    postgres.psql(
        &url,
        "create table kept (n int); insert into kept values (42)",
    );
    let before = postgres
        .server_pid()
        .expect("a running server has a pid file");
    postgres.restart_fast();
    let after = postgres
        .server_pid()
        .expect("a running server has a pid file");
    assert_ne!(before, after, "the server was not restarted");
    assert!(
        wait_gone(before, WAIT),
        "the old server {before} is still running"
    );
    // The same URL, so the same port.
    assert_eq!(postgres.psql(&url, "select n from kept"), "42");
}

#[test]
fn an_own_cluster_is_stopped_and_removed_on_drop() {
    let postgres = own_cluster();
    assert_eq!(postgres.psql("postgres", "select 1"), "1");
    let dir = postgres.dir().to_owned();
    let pid = postgres
        .server_pid()
        .expect("a running server has a pid file");
    drop(postgres);
    assert!(wait_gone(pid, WAIT), "the server {pid} outlived its drop");
    assert!(!dir.exists(), "{} outlived its drop", dir.display());
}

/// Run by [`the_shared_cluster_is_gone_once_its_test_process_exits`] in a
/// process of its own: starts the shared cluster, says where, and exits.
#[test]
#[ignore = "a step of the_shared_cluster_is_gone_once_its_test_process_exits"]
fn start_the_shared_cluster_and_exit() {
    let postgres = cluster();
    println!("dir={}", postgres.dir().display());
    println!(
        "pid={}",
        postgres
            .server_pid()
            .expect("a running server has a pid file")
    );
}

#[test]
fn the_shared_cluster_is_gone_once_its_test_process_exits() {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args([
        "--exact",
        "start_the_shared_cluster_and_exit",
        "--ignored",
        "--nocapture",
    ]);
    let output = run_within(command, None, START_LIMIT.saturating_add(WAIT))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(output.code, 0, "{output:#?}");
    let value = |key: &str| {
        output
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {output:#?}"))
            .to_owned()
    };
    let dir = PathBuf::from(value("dir="));
    let pid: i32 = value("pid=").parse().unwrap();
    assert!(
        wait_gone(pid, WAIT),
        "the server {pid} outlived its test process"
    );
    // The watchdog's own command line names the directory too: this also
    // waits for it to finish.
    let deadline = Instant::now() + WAIT;
    while dir.exists() || !processes_naming(&dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} or processes naming it {:?} outlived their test process",
            dir.display(),
            processes_naming(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The live processes whose command line names `path` (as `pgrep -f`).
fn processes_naming(path: &Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .expect("/proc lists the processes")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .filter(|&pid| sluice_e2e::is_alive(pid))
        .collect()
}
