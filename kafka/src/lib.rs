//! Sluice's Kafka source: records of Kafka topics become jobs exactly
//! once. The `sluice-kafka` binary (`main.rs`) runs it; the modules:
//!
//! - [`config`]: the config file, checked whole at startup;
//! - [`kafka`]: the Kafka client, partitions and start offsets;
//! - [`mapping`]: a record as a job;
//! - [`source`]: the group member: claims, fetches, commits, drain;
//! - [`metrics`]: Prometheus metrics, `/metrics` and `/healthz`.
//!
//! Why a process of its own rather than a part of the broker: it scales
//! and fails apart from the brokers (a Kafka outage or a slow cluster
//! never touches the job path), it needs only a producer token, and
//! brokers that never see Kafka carry no Kafka client. Exactly once does
//! not need it inside: the broker commits a partition's jobs with its
//! position (see `Broker.CommitPartition`).

pub mod config;
pub mod kafka;
pub mod mapping;
pub mod metrics;
pub mod source;

#[cfg(test)]
mod tests {
    /// The source is a client of the contract, as the worker is: it never
    /// imports the broker's crates (what it shares with the broker goes
    /// through `sluice.v1`, the limits through `sluice-limits`).
    #[test]
    fn the_source_depends_on_the_contract_not_on_the_broker() {
        let manifest = include_str!("../Cargo.toml");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or_default();
        for forbidden in [
            "sluice-broker",
            "sluice-queue",
            "sluice-schedule",
            "sluice-e2e",
        ] {
            assert!(
                !deps.contains(forbidden),
                "sluice-kafka depends on {forbidden}"
            );
        }
        assert!(deps.contains("sluice-proto"));
    }
}
