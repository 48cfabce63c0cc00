//! W3C trace context for `sluice enqueue`: the `traceparent` and
//! `tracestate` headers a job carries so that its run joins the producer's
//! trace, checked by `sluice-trace` (the rules the broker and worker
//! follow too); nothing is generated.

pub use sluice_trace::{TRACEPARENT, TRACESTATE};

/// A clap value parser for `--traceparent` / `TRACEPARENT`.
///
/// # Errors
/// What is wrong, for a usage error.
pub fn parse_traceparent(value: &str) -> Result<String, String> {
    sluice_trace::TraceParent::parse(value)
        .map(|p| p.as_str().to_owned())
        .map_err(|why| {
            format!(
                "invalid traceparent {value:?}: {why} (e.g. \
                 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01)"
            )
        })
}

/// A clap value parser for `--tracestate` / `TRACESTATE`.
///
/// # Errors
/// What is wrong, for a usage error.
pub fn parse_tracestate(value: &str) -> Result<String, String> {
    sluice_trace::check_tracestate(value).map(|()| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_value_and_show_an_example() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(valid).unwrap(), valid);
        let err = parse_traceparent("00-abc").unwrap_err();
        assert!(err.starts_with("invalid traceparent \"00-abc\""), "{err}");
        assert!(err.contains("e.g. 00-"), "{err}");
        assert!(parse_tracestate("a=\n").is_err());
    }
}
