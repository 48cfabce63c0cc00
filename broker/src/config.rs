//! The broker's settings, with their defaults. Only `main.rs` reads flags
//! and environment variables into it; tests build it directly.

use std::net::SocketAddr;
use std::time::Duration;

use sluice_queue::QueueConfig;

use crate::auth::{Authorizer, ReflectionAccess};
pub use crate::backend::StoreConfig;
use crate::tls::TlsSettings;

/// Where the broker listens unless `--addr` says otherwise: loopback, so a
/// broker started without thought is not reachable from other hosts.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    50051,
));

/// Everything [`crate::server::run`] needs besides its listener.
#[derive(Debug, Clone)]
pub struct Config {
    /// Rules of the queue.
    pub queue: QueueConfig,
    /// Largest job payload accepted, in bytes.
    pub max_payload: usize,
    /// How long a drain waits for leased jobs to be resolved.
    pub drain_timeout: Duration,
    /// Where jobs live: the local queue (on disk with `--data-dir`), or
    /// a PostgreSQL database (`--store postgres://...`).
    pub store: StoreConfig,
    /// Who may call what (`--auth-tokens`); open by default.
    pub auth: Authorizer,
    /// TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`); plaintext if `None`.
    pub tls: Option<TlsSettings>,
    /// Who may use reflection.
    pub reflection: ReflectionAccess,
    /// HTTP/2 streams (calls) open at once per connection.
    pub max_concurrent_streams: u32,
    /// Lease, LeaseBatches and Work streams open at once, over all connections.
    pub max_lease_streams: usize,
    /// Lease, LeaseBatches and Work streams of one credential open at once.
    pub max_lease_streams_per_credential: usize,
    /// Largest HTTP/2 header list (metadata) accepted, in bytes.
    pub max_header_list_size: u32,
    /// How long a call's request may take to arrive, from its headers.
    pub request_timeout: Duration,
    /// Connections open at once, over both listeners.
    pub max_connections: usize,
    /// Connections open at once from one client address.
    pub max_connections_per_ip: usize,
    /// `Host` names the HTTP listener answers to besides its own address
    /// and the loopback names.
    pub http_allowed_hosts: Vec<crate::http::hosts::AllowedHost>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            max_payload: 1024 * 1024,
            drain_timeout: Duration::from_secs(30),
            store: StoreConfig::default(),
            auth: Authorizer::open(),
            tls: None,
            reflection: ReflectionAccess::Open,
            max_concurrent_streams: 1024,
            max_lease_streams: 10_000,
            max_lease_streams_per_credential: 1_000,
            max_header_list_size: 16 * 1024,
            request_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            http_allowed_hosts: Vec::new(),
        }
    }
}
