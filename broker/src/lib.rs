//! Sluice's broker: the queue state machine ([`queue`]), the gRPC service
//! that translates to it ([`service`]), and the server that runs them with
//! health, reflection and drain ([`server`]).
//!
//! `main.rs` only reads flags into a [`config::Config`] and calls
//! [`server::run`], which tests call too.

pub mod clock;
pub mod config;
pub mod error;
pub mod queue;
pub mod server;
pub mod service;
pub mod storage;
