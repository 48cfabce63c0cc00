//! What every backend shared by several brokers needs, whatever its store
//! (PostgreSQL, Redis): this broker's Lease streams with their credit and
//! the claim loop that fills them (`streams.rs`), the record each broker
//! publishes of its streams and counters (`record.rs`), and the health
//! of the connection to the store (`health.rs`), the maintenance loop
//! (`maintenance.rs`), the gauges of /metrics (`gauges.rs`), and the
//! intervals they keep alike (`timing.rs`). A shared backend
//! implements [`ClaimStore`] for its store and keeps the rest here.

mod gauges;
mod health;
mod maintenance;
mod record;
mod streams;
pub mod timing;

pub use gauges::Gauges;
pub use health::{Health, Ping, wait_for_leases};
pub use maintenance::{Every, between_passes};
pub use record::{Counts, add_counters, parse_streams, streams_json};
pub use streams::{
    ClaimStore, Closer, StreamId, Streams, Want, lease_entry, parse_lease_entry, run_claimer,
};
