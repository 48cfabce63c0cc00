//! The broker's Prometheus metrics, rendered as OpenMetrics text for
//! `GET /metrics` on `--http-addr` (served by [`crate::http`]). Every name
//! starts with `sluice_`; the README lists them.
//!
//! - `job_events.rs`: job counters and wait/run-time histograms per queue
//!   and job type, fed by the queue's observer on every transition;
//! - `queue_gauges.rs`: gauges read from the queue at scrape time;
//! - `rpc.rs`: gRPC latency per method, a tower layer on the server.
//!
//! Metrics exist only when `--http-addr` is set; without it the queue has
//! no observer and the layer passes calls through.

mod job_events;
mod queue_gauges;
mod rpc;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use job_events::JobMetrics;
pub use rpc::{RpcLatency, RpcLatencyLayer, RpcMetrics};

use crate::backend::SharedBackend;
use queue_gauges::QueueGauges;

/// The registry of one broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers every metric of the broker serving `shared`, whose jobs
    /// may hold up to `max_memory` bytes: installs the job observer on its
    /// backend, and returns the RPC metrics for the server's [`RpcLatencyLayer`].
    pub fn new(shared: &SharedBackend, max_memory: Option<u64>) -> (Self, Arc<RpcMetrics>) {
        let mut registry = Registry::with_prefix("sluice");
        let jobs = JobMetrics::register(&mut registry);
        shared.observe(Box::new(jobs));
        registry.register_collector(Box::new(QueueGauges::new(shared.clone(), max_memory)));
        let rpc = Arc::new(RpcMetrics::register(&mut registry));
        (Self { registry }, rpc)
    }

    /// Every metric, as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String does not fail, and no encoder here returns
        // an error of its own.
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding metrics into a String");
        text
    }
}
