//! Several brokers over one PostgreSQL (`--store postgres://`), end to end
//! with the real binaries and a private PostgreSQL (tests/src/postgres.rs):
//!
//! - three brokers, producers and `sluice-worker` processes spread across
//!   them; one broker is SIGKILLed under load. The test records every
//!   lease in the database with a trigger of its own (the product keeps no
//!   such history) and checks with SQL that every acknowledged enqueue ran
//!   and was acked exactly once, that no job ever had two unexpired leases
//!   at once, and that the killed broker's jobs were redelivered soon
//!   after their leases ended;
//! - PostgreSQL restarted (`pg_ctl restart -m fast`) under load: no
//!   acknowledged job lost, the brokers serve again by themselves;
//! - a statement the database refuses answers INTERNAL and changes nothing;
//! - brokers started together migrate the schema once; a newer schema,
//!   an unreachable database and contradictory flags refuse to start.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sluice_e2e::postgres::{TestPostgres, shared};
use sluice_e2e::scale_out::{LEASE, Producers, broker_id, broker_on, serving_again, workers_of};
use sluice_e2e::{BrokerProcess, WAIT, binary};
use sluice_proto::v1 as pb;
/// The test's own lease history: a row per lease, with when it began, when
/// it was to expire (extends included) and when and how it ended.
const LEASE_HISTORY: &str = "
CREATE TABLE test_leases (job_id uuid, lease_id uuid PRIMARY KEY, broker_id uuid,
    leased_at timestamptz, expires_at timestamptz, ended_at timestamptz, ended_by text);
CREATE FUNCTION test_lease_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF OLD.lease_id IS NOT NULL AND NEW.lease_id IS DISTINCT FROM OLD.lease_id THEN
      UPDATE test_leases SET ended_at = clock_timestamp(), ended_by = 'update'
      WHERE lease_id = OLD.lease_id;
    END IF;
    IF NEW.lease_id IS NOT NULL AND NEW.lease_id IS DISTINCT FROM OLD.lease_id THEN
      INSERT INTO test_leases VALUES (NEW.id, NEW.lease_id, NEW.broker_id, NEW.leased_at,
          NEW.lease_expires_at, NULL, NULL);
    ELSIF NEW.lease_id IS NOT NULL THEN
      UPDATE test_leases SET expires_at = NEW.lease_expires_at WHERE lease_id = NEW.lease_id;
    END IF;
  ELSIF OLD.lease_id IS NOT NULL THEN
    UPDATE test_leases SET ended_at = clock_timestamp(), ended_by = 'delete'
    WHERE lease_id = OLD.lease_id;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER test_lease_history AFTER UPDATE OR DELETE ON sluice_jobs
    FOR EACH ROW EXECUTE FUNCTION test_lease_history();
";

/// Waits until the database holds no unfinished job, for at most `limit`.
fn wait_all_done(pg: &TestPostgres, url: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        let left: u64 = pg
            .psql(url, "SELECT count(*) FROM sluice_jobs")
            .parse()
            .unwrap();
        if left == 0 {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{left} jobs still unfinished after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every acknowledged id, checked with SQL: SUCCEEDED, acked exactly once.
fn check_every_acked_job_ran_once(pg: &TestPostgres, url: &str, acked: &HashSet<String>) {
    let succeeded: HashSet<String> = pg
        .psql(
            url,
            "SELECT id FROM sluice_finished WHERE state = 'succeeded'",
        )
        .lines()
        .map(str::to_owned)
        .collect();
    let missing: Vec<_> = acked.difference(&succeeded).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged jobs that did not succeed, e.g. {missing:?}"
    );
    let twice = pg.psql(
        url,
        "SELECT count(*) FROM (SELECT job_id FROM test_leases WHERE ended_by = 'delete'
             GROUP BY job_id HAVING count(*) > 1) t",
    );
    assert_eq!(twice, "0", "jobs acked more than once");
    let overlapping = pg.psql(
        url,
        "SELECT count(*) FROM test_leases a JOIN test_leases b
           ON a.job_id = b.job_id AND a.lease_id <> b.lease_id AND a.leased_at <= b.leased_at
          AND b.leased_at < least(a.expires_at, coalesce(a.ended_at, 'infinity'))",
    );
    assert_eq!(overlapping, "0", "a job had two unexpired leases at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_brokers_share_the_work_and_a_killed_brokers_jobs_run_elsewhere() {
    const PER_PRODUCER: usize = 500;
    let pg = shared().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_database();
    let first = broker_on(&url, &[]);
    pg.psql(&url, LEASE_HISTORY);
    let mut brokers = [first, broker_on(&url, &[]), broker_on(&url, &[])];
    let victim_id = broker_id(&brokers[1], "connected to PostgreSQL");
    // The victim (broker 1) holds the leases its workers take until it dies.
    let _workers = workers_of(&brokers, &["a", "b"], Some(1));
    let producers = Producers::start(&brokers, PER_PRODUCER, Some(20));

    // Under load: a third of the jobs in, and the victim holding leases.
    let start = Instant::now();
    loop {
        let held: u64 = pg
            .psql(
                &url,
                &format!(
                    "SELECT count(*) FROM sluice_jobs WHERE state = 'leased' AND broker_id = '{victim_id}'"
                ),
            )
            .parse()
            .unwrap();
        if producers.sent() >= PER_PRODUCER && held > 0 {
            break;
        }
        assert!(start.elapsed() < WAIT * 4, "the load never got going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    brokers[1].signal(Signal::SIGKILL);
    let killed_at = pg.psql(&url, "SELECT clock_timestamp()");
    assert!(brokers[1].wait_exit(WAIT).is_some());

    let acked = producers.finish().await;
    wait_all_done(pg, &url, Duration::from_secs(60));
    check_every_acked_job_ran_once(pg, &url, &acked);

    // The victim's leases that its death left: each job leased again
    // within a lease, the poll interval and the backoff of their end.
    let orphans: u64 = pg
        .psql(
            &url,
            &format!(
                "SELECT count(*) FROM test_leases WHERE broker_id = '{victim_id}'
                   AND ended_by = 'update' AND leased_at <= '{killed_at}'
                   AND ended_at >= '{killed_at}'"
            ),
        )
        .parse()
        .unwrap();
    assert!(orphans > 0, "the victim held no lease when it died");
    // Each orphaned lease ran out at most one lease after the kill (its
    // worker could not extend it through a dead broker); then its job was
    // leased again within one lease duration: the reaper (within the poll
    // interval), the backoff, and its turn among the few jobs ready.
    let timings = pg.psql(
        &url,
        &format!(
            "SELECT extract(epoch FROM o.expires_at - '{killed_at}'::timestamptz)::numeric(8,2),
                 extract(epoch FROM (SELECT min(n.leased_at) FROM test_leases n
                     WHERE n.job_id = o.job_id AND n.leased_at > o.leased_at) - o.expires_at)::numeric(8,2)
             FROM test_leases o WHERE o.broker_id = '{victim_id}' AND o.ended_by = 'update'
               AND o.leased_at <= '{killed_at}' AND o.ended_at >= '{killed_at}'"
        ),
    );
    let mut slowest = 0.0f64;
    for line in timings.lines() {
        let (expired, again) = line.split_once('|').unwrap();
        let (expired, again): (f64, f64) = (expired.parse().unwrap(), again.parse().unwrap());
        assert!(
            expired <= LEASE.as_secs_f64() + 0.1,
            "an orphaned lease ran {expired} s past the kill: {timings}"
        );
        assert!(
            again <= LEASE.as_secs_f64(),
            "a killed broker's job ran again {again} s after its lease expired: {timings}"
        );
        slowest = slowest.max(again);
    }
    let leases: u64 = pg
        .psql(&url, "SELECT count(*) FROM test_leases")
        .parse()
        .unwrap();
    println!(
        "enqueued and acknowledged {}, leases {leases}, leases orphaned by the kill {orphans}, \
         each leased again at most {slowest:.2} s after its lease expired (limit {LEASE:?})",
        acked.len()
    );
    // The survivors list only their own streams now (the victim's row goes
    // with its heartbeat).
    let workers = brokers[0].workers().await;
    assert!(workers.iter().any(|w| w.worker_id == "w2a"), "{workers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_acknowledged_job() {
    const PER_PRODUCER: usize = 500;
    // Its own server: a restart would disturb the other tests' databases.
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_database();
    let brokers = [broker_on(&url, &[]), broker_on(&url, &[])];
    let _workers = workers_of(&brokers, &[""], None);
    let producers = Producers::start(&brokers, PER_PRODUCER, None);
    while producers.sent() < PER_PRODUCER / 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.restart_fast();
    // Each broker serves again by itself, within a few seconds; meanwhile
    // it refuses in its own words, not the database's.
    let recovered = serving_again(&brokers, Instant::now(), |m| !m.contains("db error")).await;
    let acked = producers.finish().await;
    wait_all_done(&pg, &url, Duration::from_secs(60));
    let succeeded: HashSet<String> = pg
        .psql(
            &url,
            "SELECT id FROM sluice_finished WHERE state = 'succeeded'",
        )
        .lines()
        .map(str::to_owned)
        .collect();
    let lost = acked.difference(&succeeded).count();
    assert_eq!(lost, 0, "acknowledged jobs lost in the restart");
    println!(
        "acknowledged {} jobs around a restart; brokers serving again {:.1} s after it",
        acked.len(),
        recovered.as_secs_f64()
    );
}

/// A statement the database refuses (here, a column renamed under the
/// broker) is a defect, not an outage: INTERNAL, without the database's
/// text, the change not made, and the broker serving on.
#[tokio::test]
async fn a_statement_the_database_refuses_is_internal_and_the_broker_serves_on() {
    use sluice_broker::backend::postgres::PostgresSettings;
    use sluice_broker::config::StoreConfig;
    use sluice_e2e::in_process::{TestBroker, next_job, test_config};
    let pg = shared().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_database();
    let mut config = test_config();
    config.store = StoreConfig::Postgres(Box::new(PostgresSettings::new(&url, 4).unwrap()));
    let b = TestBroker::with_config(config).await;
    let id = b.enqueue("t").await;
    let mut stream = b.lease("w", 1).await;
    let leased = next_job(&mut stream).await;
    pg.psql(
        &url,
        "ALTER TABLE sluice_failures RENAME COLUMN error TO renamed",
    );
    let status = b.nack(&leased, "failed").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(
        status.message(),
        "internal error (the broker's log has the details)"
    );
    assert_eq!(b.state(&id).await, pb::JobState::Leased, "nothing changed");
    pg.psql(
        &url,
        "ALTER TABLE sluice_failures RENAME COLUMN renamed TO error",
    );
    let outcome = b.nack(&leased, "failed").await.unwrap();
    assert_eq!(outcome.state(), pb::JobState::Scheduled);
}

#[test]
fn brokers_started_together_migrate_once_and_a_newer_schema_is_refused() {
    let pg = shared().unwrap_or_else(|e| panic!("{e}"));
    let url = pg.fresh_database();
    let brokers: Vec<BrokerProcess> = std::thread::scope(|s| {
        let started: Vec<_> = (0..3).map(|_| s.spawn(|| broker_on(&url, &[]))).collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let version = sluice_broker::backend::postgres::schema::SCHEMA_VERSION;
    assert_eq!(
        pg.psql(&url, "SELECT count(*) FROM sluice_schema"),
        version.to_string()
    );
    let applied: usize = brokers
        .iter()
        .filter(|b| b.log().contains(&format!("migrations_applied={version}")))
        .count();
    assert_eq!(applied, 1, "exactly one broker applies the migrations");
    drop(brokers);

    pg.psql(&url, "INSERT INTO sluice_schema (version) VALUES (99)");
    let mut command = Command::new(binary("sluice-broker"));
    command.args(["--addr", "127.0.0.1:0", "--store", &url]);
    let out = sluice_e2e::cli::run_within(command, None, WAIT).unwrap();
    assert_ne!(out.code, 0);
    assert!(
        out.stderr
            .contains(&format!("version 99, newer than this broker's {version}")),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_store_settings_refuse_to_start_saying_why() {
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--store",
                "postgres://u:secret@127.0.0.1:1/db",
                "--data-dir",
                "/tmp/x",
            ],
            "--data-dir is for the embedded store",
        ),
        (
            &["--store", "mysql://x"],
            "--store must be `embedded`, a postgres:// URL or a redis:// URL",
        ),
        (
            &["--store", "postgres://u@127.0.0.1:1/db?sslmode=verify-full"],
            "sslmode=verify-full needs sslrootcert",
        ),
        (
            &["--store", "postgres://u:secret@127.0.0.1:1/db"],
            "connecting to the database",
        ),
    ];
    for (args, why) in cases {
        let mut command = Command::new(binary("sluice-broker"));
        command.args(["--addr", "127.0.0.1:0"]).args(args);
        let out = sluice_e2e::cli::run_within(command, None, WAIT).unwrap();
        assert_ne!(out.code, 0, "{args:?} started");
        assert!(out.stderr.contains(why), "{args:?}: {}", out.stderr);
        assert!(
            !out.stderr.contains("secret"),
            "the password was logged: {}",
            out.stderr
        );
    }
}
