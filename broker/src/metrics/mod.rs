//! The broker's Prometheus metrics, rendered as OpenMetrics text for
//! `GET /metrics` on `--http-addr` (served by [`crate::http`]). Every name
//! starts with `sluice_`; the README lists them.
//!
//! - `job_events.rs`: job counters and wait/run-time histograms per queue
//!   and job type, fed by the queue's observer on every transition;
//! - `queue_gauges.rs`: gauges read from the queue at scrape time;
//! - `rpc.rs`: gRPC latency per method, a tower layer on the server;
//! - `schedule_ticks.rs`: schedule ticks fired and skipped, and their lag,
//!   fed by the firing loop.
//!
//! Metrics exist only when `--http-addr` is set; without it the queue has
//! no observer and the layer passes calls through.

mod job_events;
mod queue_gauges;
mod rpc;
mod schedule_ticks;

use std::sync::Arc;

use prometheus_client::registry::Registry;
use sluice_queue::QueueScope;

pub use job_events::JobMetrics;
pub use rpc::{RpcLatency, RpcLatencyLayer, RpcMetrics};
pub use schedule_ticks::ScheduleMetrics;

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
    /// backend, and returns the RPC metrics for the server's
    /// [`RpcLatencyLayer`] and the tick metrics for the firing loop.
    pub fn new(
        shared: &SharedBackend,
        max_memory: Option<u64>,
    ) -> (Self, Arc<RpcMetrics>, Arc<ScheduleMetrics>) {
        let mut registry = Registry::with_prefix("sluice");
        let jobs = JobMetrics::register(&mut registry);
        shared.observe(Box::new(jobs));
        registry.register_collector(Box::new(QueueGauges::new(shared.clone(), max_memory)));
        let rpc = Arc::new(RpcMetrics::register(&mut registry));
        let ticks = Arc::new(ScheduleMetrics::register(&mut registry));
        (Self { registry }, rpc, ticks)
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

    /// The metrics a credential covering `scope` may read: every sample
    /// whose `queue` label names a queue outside it is left out (the
    /// broker-wide figures, which name no queue, stay).
    pub fn render_for(&self, scope: &QueueScope) -> String {
        in_scope(self.render(), scope)
    }
}

/// The lines of `text` that a credential covering `scope` may read.
fn in_scope(text: String, scope: &QueueScope) -> String {
    if scope.is_every() {
        return text;
    }
    let mut kept = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.starts_with('#') || queue_label(line).is_none_or(|q| scope.allows(q)) {
            kept.push_str(line);
        }
    }
    kept
}

/// The value of the `queue` label of a sample line, if it has one. Queue
/// names hold no quote or backslash (see `sluice_limits`), but other
/// labels' values may, so values are skipped escape by escape.
fn queue_label(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once('{')?;
    let mut rest = rest;
    loop {
        let (name, after) = rest.split_once("=\"")?;
        let mut end = None;
        let mut escaped = false;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end?;
        if name.trim_start_matches(',') == "queue" {
            return Some(&after[..end]);
        }
        rest = &after[end + 1..];
        if rest.starts_with('}') {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_queue::QueuePattern;

    use super::*;

    #[test]
    fn the_queue_label_is_found_among_others_and_escapes() {
        assert_eq!(
            queue_label("sluice_jobs{queue=\"mail\",state=\"ready\"} 3\n"),
            Some("mail")
        );
        assert_eq!(
            queue_label("x_bucket{job_type=\"a\\\",queue=\\\"b\",queue=\"real\",le=\"1\"} 0"),
            Some("real")
        );
        assert_eq!(queue_label("sluice_lease_streams 2"), None);
        assert_eq!(queue_label("m{method=\"Ack\"} 1"), None);
    }

    #[test]
    fn a_scope_keeps_its_queues_and_the_broker_wide_figures() {
        let text = "# TYPE sluice_jobs gauge\n\
                    sluice_jobs{queue=\"orders\",state=\"ready\"} 1\n\
                    sluice_jobs{queue=\"billing\",state=\"ready\"} 2\n\
                    sluice_lease_streams 3\n";
        let scope = QueueScope::Only(vec![QueuePattern::Exact("orders".into())]);
        let kept = in_scope(text.to_owned(), &scope);
        assert!(kept.contains("orders") && kept.contains("sluice_lease_streams 3"));
        assert!(!kept.contains("billing"));
    }
}
