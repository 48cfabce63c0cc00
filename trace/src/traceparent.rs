//! The W3C `traceparent` header: `VERSION-TRACEID-PARENTID-FLAGS`, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.

/// The header that names the producer's span.
pub const TRACEPARENT: &str = "traceparent";
/// The vendors' trace state that goes with it.
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` accepted (W3C: vendors must propagate at least 512).
pub const MAX_TRACESTATE: usize = 512;

/// Checks that `value` can be a `tracestate` header: visible ASCII, spaces
/// and tabs, at most [`MAX_TRACESTATE`] characters.
///
/// # Errors
/// What is wrong with it.
pub fn check_tracestate(value: &str) -> Result<(), String> {
    if value.len() > MAX_TRACESTATE {
        return Err(format!(
            "tracestate is {} characters long; at most {MAX_TRACESTATE}",
            value.len()
        ));
    }
    match value
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t'))
    {
        Some(c) => Err(format!(
            "tracestate holds {c:?}: only visible ASCII is allowed"
        )),
        None => Ok(()),
    }
}

/// A checked `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent<'a> {
    value: &'a str,
}

impl<'a> TraceParent<'a> {
    /// Checks `value` against the W3C Trace Context format (version 00, or
    /// a later version whose first four fields have the same shape).
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(value: &'a str) -> Result<Self, &'static str> {
        let mut fields = value.split('-');
        let (Some(version), Some(trace_id), Some(parent_id), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err("expected VERSION-TRACEID-PARENTID-FLAGS");
        };
        let hex = |s: &str, len| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let zero = |s: &str| s.bytes().all(|b| b == b'0');
        if !hex(version, 2) || version == "ff" {
            return Err("the version must be 2 lowercase hex digits, not ff");
        }
        if version == "00" && fields.next().is_some() {
            return Err("version 00 has exactly four fields");
        }
        if !hex(trace_id, 32) || zero(trace_id) {
            return Err("the trace id must be 32 lowercase hex digits, not all zero");
        }
        if !hex(parent_id, 16) || zero(parent_id) {
            return Err("the parent id must be 16 lowercase hex digits, not all zero");
        }
        if !hex(flags, 2) {
            return Err("the flags must be 2 lowercase hex digits");
        }
        Ok(Self { value })
    }

    /// The trace id: 32 hex digits.
    pub fn trace_id(&self) -> &'a str {
        &self.value[3..35]
    }

    /// The whole value.
    pub fn as_str(&self) -> &'a str {
        self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_gives_its_trace_id() {
        let parsed = TraceParent::parse(VALID).unwrap();
        assert_eq!(parsed.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.as_str(), VALID);
        // A later version may add fields.
        assert!(TraceParent::parse(&format!("01{}-extra", &VALID[2..])).is_ok());
    }

    #[test]
    fn a_tracestate_must_be_printable_and_short() {
        assert!(check_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").is_ok());
        assert!(check_tracestate("a=\n").is_err());
        assert!(check_tracestate(&"a".repeat(513)).is_err());
    }

    #[test]
    fn malformed_values_are_refused_with_the_reason() {
        for (value, why) in [
            ("", "expected"),
            ("00-4bf92f35-00f067aa0ba902b7-01", "trace id"),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                "trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "parent id",
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                "flags",
            ),
            (&format!("{VALID}-extra"), "four fields"),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
        ] {
            let error = TraceParent::parse(value).unwrap_err();
            assert!(error.contains(why), "{value:?}: {error}");
        }
    }
}
