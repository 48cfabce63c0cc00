//! W3C trace context for `sluice enqueue`: the `traceparent` and
//! `tracestate` headers a job carries so that its run joins the producer's
//! trace. Only their form is checked here (W3C Trace Context, level 1);
//! nothing is generated.

/// The header names, as W3C Trace Context spells them.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` the CLI sends (W3C: vendors must propagate at least 512).
const MAX_TRACESTATE: usize = 512;

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks `value` is a W3C `traceparent`:
/// `version-traceid-parentid-flags`, lowercase hex of 2, 32, 16 and 2
/// digits, the ids not all zero, the version not `ff`; version `00` has
/// exactly these four fields, later versions may append more after a `-`.
///
/// # Errors
/// What is wrong, for a usage error.
pub fn parse_traceparent(value: &str) -> Result<String, String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid traceparent {value:?}: {why} (expected version-traceid-parentid-flags, \
             e.g. 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01)"
        ))
    };
    let mut fields = value.splitn(5, '-');
    let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return bad("it needs four fields separated by '-'");
    };
    let rest = fields.next();
    if !lower_hex(version, 2) || version == "ff" {
        return bad("the version must be 2 lowercase hex digits, not ff");
    }
    if !lower_hex(trace_id, 32) || trace_id.bytes().all(|b| b == b'0') {
        return bad("the trace id must be 32 lowercase hex digits, not all zero");
    }
    if !lower_hex(parent_id, 16) || parent_id.bytes().all(|b| b == b'0') {
        return bad("the parent id must be 16 lowercase hex digits, not all zero");
    }
    if !lower_hex(flags, 2) {
        return bad("the flags must be 2 lowercase hex digits");
    }
    if version == "00" && rest.is_some() {
        return bad("version 00 has exactly four fields");
    }
    Ok(value.to_owned())
}

/// Checks `value` can be a `tracestate` header: visible ASCII, spaces and
/// tabs, at most 512 characters.
///
/// # Errors
/// What is wrong, for a usage error.
pub fn parse_tracestate(value: &str) -> Result<String, String> {
    if value.len() > MAX_TRACESTATE {
        return Err(format!(
            "tracestate is {} characters long; at most {MAX_TRACESTATE}",
            value.len()
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))
    {
        return Err(format!(
            "tracestate holds {c:?}: only visible ASCII is allowed"
        ));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_is_accepted() {
        assert_eq!(parse_traceparent(VALID).unwrap(), VALID);
        // A later version may carry more fields.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        assert!(parse_traceparent(future).is_ok());
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let err = parse_traceparent(bad).unwrap_err();
            assert!(err.contains("invalid traceparent"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_tracestate_must_be_printable_and_short() {
        assert!(parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").is_ok());
        assert!(parse_tracestate("a=\n").is_err());
        assert!(parse_tracestate(&"a".repeat(513)).is_err());
    }
}
