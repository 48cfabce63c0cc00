//! Sluice's schedules as pure functions: a schedule's timing (a cron
//! expression or an interval, in an IANA time zone, between optional
//! bounds) is checked and compiled into a [`Calendar`]; the calendar gives
//! the next tick after any instant; [`plan`] decides what a firing pass
//! enqueues after downtime. No I/O and no clock: every function takes
//! `now`. Times are [`Millis`], milliseconds since the Unix epoch (UTC);
//! ticks are whole seconds.
//!
//! # Cron expressions
//!
//! - Five fields `minute hour day-of-month month day-of-week` (second 0),
//!   or six with seconds first: `second minute hour day-of-month month
//!   day-of-week`.
//! - Each field is a comma-separated list of items: `*`, a number `a`, a
//!   range `a-b`, and steps `*/n`, `a-b/n` and `a/n` (from `a` to the
//!   field's end, by `n`). Seconds and minutes are 0-59, hours 0-23, days
//!   of the month 1-31, months 1-12 or `JAN`-`DEC`, days of the week 0-7
//!   (0 and 7 are Sunday) or `SUN`-`SAT`; names in any case. A step is 1
//!   to the number of values of its field (`*/60` in minutes is minute 0,
//!   `*/61` is refused). `?` means `*` in day-of-month and day-of-week.
//!   In day-of-week, `SUN` ending a range is 7 (`FRI-SUN`).
//! - Refused, with a reason naming the field of the expression: values
//!   out of range, reversed ranges (`5-1`), step 0, empty items (`1,,2`),
//!   names in the wrong field, `L`, `W` and `#`, and a count of fields
//!   other than 5 or 6.
//! - Day-of-month and day-of-week: when both are restricted, a day
//!   matches if either matches (Vixie cron); when either is unrestricted,
//!   both must. As in Vixie cron, a field is unrestricted when it starts
//!   with `*` (so `*/2` too) or is `?`.
//! - Shorthands: `@yearly` and `@annually` (`0 0 1 1 *`), `@monthly`
//!   (`0 0 1 * *`), `@weekly` (`0 0 * * 0`), `@daily` and `@midnight`
//!   (`0 0 * * *`), `@hourly` (`0 * * * *`). `@reboot` and unknown names
//!   are refused.
//! - An expression is read on the wall clock of the schedule's zone (UTC
//!   when none is given), with the zone database compiled into Sluice
//!   (jiff's bundled copy), never the host's.
//! - Daylight saving time: a wall-clock time that does not exist (in the
//!   gap when clocks spring forward) fires once, at the first instant
//!   after the gap (a 02:30 tick on a day that jumps from 02:00 to 03:00
//!   fires at 03:00 new time; several ticks inside one gap fire once,
//!   together). A wall-clock time that occurs twice (when clocks fall
//!   back) fires once, at its first occurrence, unless the hour field
//!   matches every hour (the expression runs hourly or more often): then
//!   the repeated times fire at both occurrences, as elapsed time goes
//!   on, so a per-minute job is not silent for an hour.
//! - Ticks are distinct instants, strictly increasing. The next tick is
//!   searched up to ten years ahead; an expression that matches no date
//!   (`0 0 30 2 *`) is refused as "never fires".
//!
//! # Intervals
//!
//! An interval (`every`, whole seconds, 1 s to 366 days) ticks in elapsed
//! time, whatever the zone: at `start_at + k * every` when `start_at` is
//! set (rounded up to a whole second), else at `anchor + k * every`
//! (rounded down to a whole second), for every integer `k`: the anchor
//! sets the phase only.
//!
//! # Bounds
//!
//! `start_at` and `end_at` bound the ticks, both inclusive. A timing
//! without a tick after `now` is refused.

mod calendar;
mod civil;
mod cron;
mod describe;
mod error;
mod interval;
mod plan;
mod policy;
#[cfg(test)]
mod tests;
mod ticks;
mod zone;

pub use calendar::{Calendar, Timing};
pub use error::SpecError;
pub use plan::{Plan, plan};
pub use policy::{CatchUp, Overlap};

/// An instant: milliseconds since the Unix epoch, UTC.
pub type Millis = i64;

/// A tick as written in idempotency keys and headers: RFC 3339 in UTC
/// with whole seconds (milliseconds are dropped), e.g.
/// `2026-12-07T03:00:00Z`.
pub fn format_tick(tick: Millis) -> String {
    format!(
        "{}Z",
        civil::Civil::from_unix_seconds(tick.div_euclid(1000))
    )
}
