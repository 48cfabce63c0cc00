//! W3C trace context for Sluice jobs. A producer's `traceparent` and
//! `tracestate` travel as job headers (not gRPC metadata: they must reach
//! the worker that runs the job, maybe hours later). This crate:
//!
//! - [`TraceParent`]: parses and checks a `traceparent` value;
//! - [`continue_trace`]: makes a span a child of the trace in a job's
//!   headers, for the OpenTelemetry exporter;
//! - `export` (feature `export`, for the binaries): the OTLP exporter that
//!   runs only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The spans that carry trace context use the target [`TRACE_TARGET`] at
//! TRACE level, which the log output does not show by default: without the
//! exporter they are disabled at their call site and cost nothing.

#[cfg(feature = "export")]
pub mod export;
mod traceparent;

pub use traceparent::{MAX_TRACESTATE, TRACEPARENT, TRACESTATE, TraceParent, check_tracestate};

use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of the spans that carry a job's trace context.
pub const TRACE_TARGET: &str = "sluice_trace";

/// Makes `span` a child of the producer's span named by the
/// `traceparent` (and `tracestate`) among `headers`, and records its trace
/// id in the span's `trace_id` field if it has one. Does nothing for a
/// disabled span or without a valid `traceparent`.
pub fn continue_trace<'a>(
    span: &tracing::Span,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    if span.is_disabled() {
        return;
    }
    let mut parent = None;
    let mut state = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(TRACEPARENT) {
            parent = Some(value);
        } else if name.eq_ignore_ascii_case(TRACESTATE) {
            state = Some(value);
        }
    }
    let Some(parsed) = parent.and_then(|p| TraceParent::parse(p).ok()) else {
        return;
    };
    span.record("trace_id", parsed.trace_id());
    let carrier = Carrier {
        parent: parsed.as_str(),
        state,
    };
    let context = TraceContextPropagator::new().extract(&carrier);
    // The span is enabled: only a span without an OpenTelemetry layer
    // refuses a parent, and then there is nothing to export anyway.
    let _ = span.set_parent(context);
}

/// The two headers the propagator reads.
struct Carrier<'a> {
    parent: &'a str,
    state: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.parent),
            TRACESTATE => self.state,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}
