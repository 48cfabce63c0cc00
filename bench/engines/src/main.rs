//! redb against fjall on the work Sluice's store does: a job's record is
//! written when it is enqueued and deleted when it is acked, many jobs per
//! commit, and every commit is fsynced before anyone is told OK.
//!
//!     cargo run --release --manifest-path bench/engines/Cargo.toml [DIR]
//!
//! For each engine and group size (jobs per commit): N enqueue commits and
//! then N ack commits, each made durable (redb: Durability::Immediate;
//! fjall: a write batch, then persist(SyncAll)). Prints jobs/s through
//! both (enqueue + ack), the file size at the peak and after the acks.

use std::path::{Path, PathBuf};
use std::time::Instant;

const RECORD: usize = 160; // about a job's record plus a 64-byte payload

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

trait Engine {
    fn name(&self) -> &'static str;
    /// Writes `puts`, removes `deletes`, and returns once that is on disk.
    fn commit(&mut self, puts: &[u64], deletes: &[u64]) -> Result<()>;
}

struct Redb(redb::Database);
const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("jobs");

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn commit(&mut self, puts: &[u64], deletes: &[u64]) -> Result<()> {
        let value = [7u8; RECORD];
        let txn = self.0.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            for &k in puts {
                table.insert(k, value.as_slice())?;
            }
            for k in deletes {
                table.remove(k)?;
            }
        }
        // Durability::Immediate, the default.
        txn.commit()?;
        Ok(())
    }
}

struct Fjall {
    db: fjall::Database,
    jobs: fjall::Keyspace,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn commit(&mut self, puts: &[u64], deletes: &[u64]) -> Result<()> {
        let value = [7u8; RECORD];
        let mut batch = self.db.batch();
        for &k in puts {
            batch.insert(&self.jobs, k.to_be_bytes(), value);
        }
        for &k in deletes {
            batch.remove(&self.jobs, k.to_be_bytes());
        }
        batch.commit()?;
        self.db.persist(fjall::PersistMode::SyncAll)?;
        Ok(())
    }
}

/// Bytes of every file under `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// Enqueues then acks `jobs` records, `group` per commit: jobs/s through
/// both, and the bytes on disk at the peak and at the end.
fn run(engine: &mut dyn Engine, dir: &Path, group: u64, jobs: u64) -> Result<(f64, u64, u64)> {
    let started = Instant::now();
    let keys: Vec<u64> = (0..jobs).collect();
    for chunk in keys.chunks(group as usize) {
        engine.commit(chunk, &[])?;
    }
    let peak = dir_size(dir)?;
    for chunk in keys.chunks(group as usize) {
        engine.commit(&[], chunk)?;
    }
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    Ok((rate, peak, dir_size(dir)?))
}

fn main() -> Result<()> {
    let base: PathBuf = std::env::args().nth(1).map_or_else(
        || std::env::temp_dir().join("sluice-engines-bench"),
        PathBuf::from,
    );
    println!(
        "{:<8} {:>6} {:>8} {:>12} {:>12} {:>12}",
        "engine", "group", "jobs", "jobs/s", "peak bytes", "after acks"
    );
    for (group, jobs) in [(1u64, 2_000u64), (64, 64_000), (1024, 500_000)] {
        for which in ["redb", "fjall"] {
            let dir = base.join(format!("{which}-{group}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let mut engine: Box<dyn Engine> = if which == "redb" {
                Box::new(Redb(redb::Database::create(dir.join("db.redb"))?))
            } else {
                let db = fjall::Database::builder(&dir).open()?;
                let jobs = db.keyspace("jobs", fjall::KeyspaceCreateOptions::default)?;
                Box::new(Fjall { db, jobs })
            };
            let (rate, peak, after) = run(engine.as_mut(), &dir, group, jobs)?;
            println!(
                "{:<8} {:>6} {:>8} {:>12.0} {:>12} {:>12}",
                engine.name(),
                group,
                jobs,
                rate,
                peak,
                after
            );
            drop(engine);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(())
}
