//! The service tests: what a client sees of the broker's gRPC services,
//! its JSON API and the worker library against a broker served in the
//! test, one module per feature. Each test written with
//! [`sluice_e2e::every_backend!`] runs once per backend (its name ends in
//! `::embedded`, `::postgres` or `::redis`), each broker on a fresh store;
//! those with [`sluice_e2e::shared_backends!`] on each shared backend; the
//! rest (a broker process with flags of its own, the data directory) on
//! the embedded store. `cargo test --test service redis` runs the Redis
//! third. A difference between backends that is intended skips
//! itself, saying why (`local_only`; the README's Scale-out section lists
//! them).

#[macro_use]
extern crate sluice_e2e;

mod admin;
mod auth;
mod batches;
mod bounds;
mod dashboard_api;
mod flow_control;
mod health_reflection_drain;
mod hostile;
mod lease_stream;
mod leases;
mod memory;
mod progress_results;
mod schedules;
mod sources;
mod streams;
mod validation;
mod worker_library;
