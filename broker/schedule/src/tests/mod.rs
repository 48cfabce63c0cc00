//! Unit tests of schedules, with instants given by hand (never the
//! clock). The helpers live here; the tests, one file per area, below.

#![allow(clippy::unwrap_used)]

mod describe;
mod dst;
mod interval;
mod layering;
mod parse;
mod plan;
mod ticks;

use std::time::Duration;

use crate::{Calendar, Millis, SpecError, Timing};

/// An instant from RFC 3339 (`2026-03-08T07:00:00Z`).
fn at(text: &str) -> Millis {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// An instant as RFC 3339 in UTC, for readable failures.
fn show(tick: Millis) -> String {
    jiff::Timestamp::from_millisecond(tick).unwrap().to_string()
}

/// Ticks as RFC 3339 in UTC.
fn shown(ticks: &[Millis]) -> Vec<String> {
    ticks.iter().map(|&t| show(t)).collect()
}

/// The "now" of tests that do not care: the start of 2026.
fn new_year() -> Millis {
    at("2026-01-01T00:00:00Z")
}

/// A cron timing in a zone ("" for UTC).
fn cron_timing(expression: &str, zone: &str) -> Timing {
    Timing {
        cron: Some(expression.to_owned()),
        time_zone: (!zone.is_empty()).then(|| zone.to_owned()),
        ..Timing::default()
    }
}

/// A compiled cron expression in a zone ("" for UTC), as of 2026.
fn cron(expression: &str, zone: &str) -> Calendar {
    Calendar::compile(&cron_timing(expression, zone), new_year()).unwrap()
}

/// An interval timing anchored at `anchor`.
fn every(secs: u64, anchor: Millis) -> Timing {
    Timing {
        every: Some(Duration::from_secs(secs)),
        anchor,
        ..Timing::default()
    }
}

/// Why a timing is refused, as of 2026.
fn refusal(timing: &Timing) -> SpecError {
    Calendar::compile(timing, new_year()).unwrap_err()
}

/// Why a cron expression is refused.
fn cron_refusal(expression: &str) -> String {
    let error = refusal(&cron_timing(expression, ""));
    assert_eq!(error.field, "cron", "{error}");
    error.reason
}

/// The wall clock of an instant in a zone, `2026-03-08T03:00:00-04:00`.
fn wall(tick: Millis, zone: &str) -> String {
    let tz = jiff::tz::TimeZoneDatabase::bundled().get(zone).unwrap();
    let zoned = jiff::Timestamp::from_millisecond(tick)
        .unwrap()
        .to_zoned(tz);
    format!("{}{}", zoned.datetime(), zoned.offset())
}
