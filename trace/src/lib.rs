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

/// A job's trace context: its valid `traceparent` and the `tracestate`
/// that goes with it, found among its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext<'a> {
    /// The producer's span.
    pub parent: TraceParent<'a>,
    /// The vendors' state, if any.
    pub state: Option<&'a str>,
}

impl<'a> TraceContext<'a> {
    /// The trace context among `headers`, whose names match in any case
    /// (the exact lowercase name wins if a job has two spellings); `None`
    /// without a valid `traceparent`.
    pub fn from_headers(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let mut parent: Option<(bool, &str)> = None;
        let mut state: Option<(bool, &str)> = None;
        for (name, value) in headers {
            let slot = if name.eq_ignore_ascii_case(TRACEPARENT) {
                &mut parent
            } else if name.eq_ignore_ascii_case(TRACESTATE) {
                &mut state
            } else {
                continue;
            };
            let exact = name == TRACEPARENT || name == TRACESTATE;
            if slot.is_none_or(|(was_exact, _)| exact && !was_exact) {
                *slot = Some((exact, value));
            }
        }
        let parent = TraceParent::parse(parent?.1).ok()?;
        Some(Self {
            parent,
            state: state.map(|(_, s)| s),
        })
    }
}

/// Makes `span` a child of the producer's span named by `context`, and
/// records its trace id in the span's `trace_id` field if it has one. Does
/// nothing for a disabled span or without a context.
pub fn continue_trace(span: &tracing::Span, context: Option<TraceContext<'_>>) {
    let Some(context) = context.filter(|_| !span.is_disabled()) else {
        return;
    };
    span.record("trace_id", context.parent.trace_id());
    let carrier = Carrier {
        parent: context.parent.as_str(),
        state: context.state,
    };
    let extracted = TraceContextPropagator::new().extract(&carrier);
    // The span is enabled: only a span without an OpenTelemetry layer
    // refuses a parent, and then there is nothing to export anyway.
    let _ = span.set_parent(extracted);
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

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OTHER: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn header_names_match_in_any_case_and_the_exact_name_wins() {
        let found = TraceContext::from_headers([("TraceParent", PARENT), ("x", "y")]).unwrap();
        assert_eq!((found.parent.as_str(), found.state), (PARENT, None));
        for headers in [
            [("Traceparent", OTHER), ("traceparent", PARENT)],
            [("traceparent", PARENT), ("TRACEPARENT", OTHER)],
        ] {
            let found = TraceContext::from_headers(headers).unwrap();
            assert_eq!(found.parent.as_str(), PARENT);
        }
        let with_state =
            TraceContext::from_headers([("traceparent", PARENT), ("tracestate", "a=1")]).unwrap();
        assert_eq!(with_state.state, Some("a=1"));
        assert_eq!(
            TraceContext::from_headers([("traceparent", "00-bad")]),
            None
        );
    }
}
