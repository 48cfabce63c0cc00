//! What an acknowledged job survives, read from the server at startup and
//! said in the log: with `appendonly yes` and `appendfsync always`, a
//! crash of Redis or of its machine (every write is fsynced before Redis
//! answers); with `everysec`, all but about the last second; with `no`,
//! what the operating system flushed; without AOF, nothing after the last
//! RDB snapshot. `--redis-require-fsync` refuses to start unless it is
//! `always`.
//!
//! A replica does not add durability: replication is asynchronous, and a
//! failover to a replica loses what it had not received (WAIT would only
//! say how many replicas had it). `min-replicas-to-write` makes the
//! primary refuse writes while too few replicas are connected, which
//! bounds that loss to their lag; it is logged too.
//!
//! An eviction policy that may evict any key (`allkeys-*`) would drop jobs
//! under memory pressure: refused. `noeviction` makes Redis refuse writes
//! at `maxmemory` instead, which the broker answers as RESOURCE_EXHAUSTED.

use redis::aio::MultiplexedConnection;
use tracing::{info, warn};

/// What the server's settings make of an acknowledged job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `appendonly`.
    pub aof: bool,
    /// `appendfsync`.
    pub fsync: String,
    /// `maxmemory-policy`.
    pub eviction: String,
    /// `min-replicas-to-write`.
    pub min_replicas: u32,
}

impl Persistence {
    /// What an acknowledged job survives, in words.
    pub fn survives(&self) -> &'static str {
        match (self.aof, self.fsync.as_str()) {
            (true, "always") => "a crash of Redis or of its machine (fsynced before each answer)",
            (true, "everysec") => {
                "a crash of Redis; a crash of its machine loses about the last second"
            }
            (true, _) => {
                "a crash of Redis; a crash of its machine loses what the OS had not flushed"
            }
            (false, _) => "nothing after the last RDB snapshot (no AOF)",
        }
    }
}

/// Reads the persistence settings, logs what they mean, and refuses to
/// start on an evicting policy, or without fsync on every write when
/// `require_fsync`.
///
/// # Errors
/// Why the broker refuses to start.
pub async fn check(conn: &mut MultiplexedConnection, require_fsync: bool) -> Result<(), String> {
    let read = read(conn).await;
    let persistence = match read {
        Ok(p) => p,
        Err(e) if require_fsync => {
            return Err(format!(
                "--redis-require-fsync: could not read Redis's persistence settings (CONFIG GET: {e})"
            ));
        }
        Err(e) => {
            warn!(error = %e, "could not read Redis's persistence settings (CONFIG GET); what an acknowledged job survives is unknown");
            return Ok(());
        }
    };
    if persistence.eviction.starts_with("allkeys-") {
        return Err(format!(
            "Redis's maxmemory-policy is {}: it would evict jobs under memory pressure; set noeviction",
            persistence.eviction
        ));
    }
    if require_fsync && !(persistence.aof && persistence.fsync == "always") {
        return Err(format!(
            "--redis-require-fsync: Redis has appendonly {} and appendfsync {}; set appendonly yes and appendfsync always",
            if persistence.aof { "yes" } else { "no" },
            persistence.fsync
        ));
    }
    info!(
        appendonly = persistence.aof,
        appendfsync = %persistence.fsync,
        maxmemory_policy = %persistence.eviction,
        min_replicas_to_write = persistence.min_replicas,
        "an acknowledged job survives {}",
        persistence.survives()
    );
    if persistence.eviction != "noeviction" {
        warn!(maxmemory_policy = %persistence.eviction, "Redis may evict the brokers' records (keys with a TTL); noeviction is safest");
    }
    Ok(())
}

async fn read(conn: &mut MultiplexedConnection) -> Result<Persistence, String> {
    let get = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let pair: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            pair.get(1)
                .cloned()
                .ok_or_else(|| format!("{name} is not a setting of this server"))
        }
    };
    Ok(Persistence {
        aof: get("appendonly").await? == "yes",
        fsync: get("appendfsync").await?,
        eviction: get("maxmemory-policy").await?,
        min_replicas: get("min-replicas-to-write").await?.parse().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_says_what_a_job_survives() {
        let of = |aof, fsync: &str| Persistence {
            aof,
            fsync: fsync.into(),
            eviction: "noeviction".into(),
            min_replicas: 0,
        };
        assert!(of(true, "always").survives().contains("fsynced"));
        assert!(of(true, "everysec").survives().contains("last second"));
        assert!(of(false, "always").survives().contains("snapshot"));
    }
}
