//! Sluice's broker around its queue state machine (the `sluice-queue`
//! crate in `broker/queue/`, which depends on nothing here): the gRPC
//! service that translates to it ([`service`]), the store that keeps its
//! durable view with `--data-dir` ([`storage`]), and the server that runs
//! them with health, reflection, recovery and drain ([`server`]).
//!
//! `main.rs` only reads flags into a [`config::Config`] and calls
//! [`server::run`], which tests call too.

pub mod auth;
pub mod backend;
pub mod clock;
pub mod config;
pub mod exposure;
pub mod fatal;
pub mod gate;
pub mod http;
pub mod limits_record;
pub mod listener;
pub mod memory_limit;
pub mod metrics;
pub mod schedules;
pub mod server;
pub mod service;
pub mod sources;
pub mod storage;
pub mod tls;
