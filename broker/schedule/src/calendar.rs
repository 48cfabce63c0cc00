//! [`Calendar`]: a schedule's checked timing, and its ticks. Checking
//! ([`Calendar::compile`]) turns a [`Timing`] into a cron expression or an
//! interval, a zone and bounds; the next tick of a cron expression is
//! found on the zone's wall clock and resolved to an instant here, with
//! the crate's DST rules.

use std::time::Duration;

use crate::Millis;
use crate::civil::Civil;
use crate::cron::{Cron, SEARCH_YEARS};
use crate::error::SpecError;
use crate::interval::Interval;
use crate::zone::{Resolved, Zone};

/// A schedule's timing as the user gave it (not yet checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timing {
    /// A cron expression; exactly one of `cron` and `every` is set.
    pub cron: Option<String>,
    /// An interval in elapsed time; exactly one of `cron` and `every` is set.
    pub every: Option<Duration>,
    /// The IANA zone cron expressions are read in; `None` or `""` means UTC.
    pub time_zone: Option<String>,
    /// No tick before this instant (inclusive).
    pub start_at: Option<Millis>,
    /// No tick after this instant (inclusive).
    pub end_at: Option<Millis>,
    /// Interval schedules tick at `anchor + k * every` (at `start_at + k *
    /// every` when `start_at` is set); cron expressions ignore it.
    pub anchor: Millis,
}

/// A checked, compiled timing.
#[derive(Debug, Clone)]
pub struct Calendar {
    pub(crate) rule: Rule,
    pub(crate) zone: Zone,
    start_at: Option<Millis>,
    end_at: Option<Millis>,
}

/// What the ticks follow.
#[derive(Debug, Clone)]
pub(crate) enum Rule {
    Cron(Cron),
    Every(Interval),
}

impl Calendar {
    /// Checks and compiles `timing`, as of `now`.
    ///
    /// # Errors
    /// A [`SpecError`] naming the field at fault: neither or both of cron
    /// and every (`cron`); an expression that does not parse (`cron`,
    /// naming the field of the expression); an interval under 1 s, not
    /// whole seconds or over 366 days (`every`); an unknown zone
    /// (`time_zone`); a bound outside the years -9999 to 9999 (`start_at`,
    /// `end_at`); `end_at` not after `start_at` (`end_at`); no tick after
    /// `now` (`cron` "never fires" for an expression that matches no date,
    /// else `end_at`).
    pub fn compile(timing: &Timing, now: Millis) -> Result<Self, SpecError> {
        let rule = match (&timing.cron, timing.every) {
            (Some(expression), None) => {
                Rule::Cron(Cron::parse(expression).map_err(|e| SpecError::new("cron", e))?)
            }
            (None, Some(every)) => {
                let every = Interval::seconds(every).map_err(|e| SpecError::new("every", e))?;
                // start_at rounds up (no tick before it), the anchor down.
                let base = match timing.start_at {
                    Some(start) => ceil_seconds(start),
                    None => timing.anchor.div_euclid(1000),
                };
                Rule::Every(Interval { base, every })
            }
            (None, None) => return Err(SpecError::new("cron", "give cron or every")),
            (Some(_), Some(_)) => {
                return Err(SpecError::new("cron", "give cron or every, not both"));
            }
        };
        let zone = match timing.time_zone.as_deref() {
            None | Some("") => Zone::utc(),
            Some(name) => Zone::named(name).map_err(|e| SpecError::new("time_zone", e))?,
        };
        for (field, bound) in [("start_at", timing.start_at), ("end_at", timing.end_at)] {
            if bound.is_some_and(|at| jiff::Timestamp::from_millisecond(at).is_err()) {
                return Err(SpecError::new(field, "is outside the years -9999 to 9999"));
            }
        }
        if let (Some(start), Some(end)) = (timing.start_at, timing.end_at)
            && end <= start
        {
            return Err(SpecError::new("end_at", "must be after start_at"));
        }
        let calendar = Self {
            rule,
            zone,
            start_at: timing.start_at,
            end_at: timing.end_at,
        };
        calendar.check_fires(now)?;
        Ok(calendar)
    }

    /// Refuses a calendar without a tick after `now`, blaming the bound or
    /// the expression.
    fn check_fires(&self, now: Millis) -> Result<(), SpecError> {
        if self.next_after(now).is_some() {
            return Ok(());
        }
        if self.end_at.is_some_and(|end| end <= now) {
            return Err(SpecError::new("end_at", "never fires: ends before now"));
        }
        let unbounded = Self {
            end_at: None,
            ..self.clone()
        };
        if self.end_at.is_some() && unbounded.next_after(now).is_some() {
            Err(SpecError::new(
                "end_at",
                "never fires: no tick before end_at",
            ))
        } else if matches!(self.rule, Rule::Cron(_)) {
            Err(SpecError::new("cron", "never fires"))
        } else {
            Err(SpecError::new("start_at", "never fires: no tick after it"))
        }
    }

    /// The first tick strictly after `after`, within start and end; `None`
    /// if there is none (a cron expression is searched ten years ahead).
    pub fn next_after(&self, after: Millis) -> Option<Millis> {
        let mut earliest = after.div_euclid(1000).checked_add(1)?;
        if let Some(start) = self.start_at {
            earliest = earliest.max(ceil_seconds(start));
        }
        let tick = match &self.rule {
            Rule::Cron(cron) => next_cron_tick(cron, &self.zone, earliest)?,
            Rule::Every(interval) => interval.at_or_after(earliest)?,
        };
        let tick = tick.checked_mul(1000)?;
        self.end_at.is_none_or(|end| tick <= end).then_some(tick)
    }

    /// The next `n` ticks strictly after `after`, fewer if the schedule
    /// ends first.
    pub fn upcoming(&self, after: Millis, n: usize) -> Vec<Millis> {
        let mut ticks = Vec::with_capacity(n.min(1024));
        let mut at = after;
        while ticks.len() < n {
            let Some(tick) = self.next_after(at) else {
                break;
            };
            ticks.push(tick);
            at = tick;
        }
        ticks
    }

    /// The timing in words, e.g. `every day at 03:00 (Europe/Berlin)`.
    pub fn describe(&self) -> String {
        crate::describe::describe(self)
    }

    /// The IANA zone name (`UTC` by default).
    pub fn time_zone(&self) -> &str {
        self.zone.name()
    }

    /// Whether `tick` lies within start and end.
    pub(crate) fn within_bounds(&self, tick: Millis) -> bool {
        self.start_at.is_none_or(|start| tick >= start) && self.end_at.is_none_or(|end| tick <= end)
    }

    /// For an interval schedule: how many ticks lie strictly between
    /// `after` and `before` (within start and end), and the latest `keep`
    /// of them, oldest first. `None` for a cron expression.
    pub(crate) fn interval_ticks_between(
        &self,
        after: Millis,
        before: Millis,
        keep: usize,
    ) -> Option<(u64, Vec<Millis>)> {
        let Rule::Every(interval) = &self.rule else {
            return None;
        };
        let mut first = after.div_euclid(1000).checked_add(1)?;
        let mut last = ceil_seconds(before).checked_sub(1)?;
        if let Some(start) = self.start_at {
            first = first.max(ceil_seconds(start));
        }
        if let Some(end) = self.end_at {
            last = last.min(end.div_euclid(1000));
        }
        let count = interval.count(first, last);
        let mut latest = Vec::new();
        if count > 0 {
            let mut tick = interval.at_or_before(last)?;
            while latest.len() < keep && tick >= first {
                latest.push(tick.checked_mul(1000)?);
                tick -= interval.every;
            }
            latest.reverse();
        }
        Some((count, latest))
    }
}

/// `ms` in whole seconds, rounded up.
fn ceil_seconds(ms: Millis) -> i64 {
    ms.div_euclid(1000) + i64::from(ms.rem_euclid(1000) != 0)
}

/// The first tick of a cron expression at or after `earliest` (seconds).
///
/// Wall-clock readings that match are resolved to instants: a reading
/// skipped by a gap fires at the gap's end; a repeated reading fires at
/// its first occurrence, and at its second too when the expression runs
/// every hour. Instants before `earliest` are passed over, so the search
/// starts at the earliest reading that can still yield one: the reading
/// just after the clock at `earliest - 1` (which may lie in a gap ending
/// at `earliest`), or the clock at `earliest` if earlier (in a fold).
/// Second occurrences of readings before that start come after
/// `earliest` when it lies in the first pass of a fold: those are looked
/// at too.
fn next_cron_tick(cron: &Cron, zone: &Zone, earliest: i64) -> Option<i64> {
    let at_earliest = zone.wall(earliest)?;
    let just_before = zone.wall(earliest.checked_sub(1)?)?.next_second();
    let ahead = first_tick_from(cron, zone, at_earliest.min(just_before), earliest);
    let repeated = cron
        .every_hour()
        .then(|| zone.repeating_at(earliest))
        .flatten()
        .and_then(|(start, end)| {
            let reading = cron.next_match(start, start.year + 1)?;
            match zone.resolve(reading)? {
                Resolved::Fold { second, .. } if reading < end => Some(second),
                _ => None,
            }
        });
    match (ahead, repeated) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first instant at or after `earliest` of a matching reading at or
/// after `reading`.
fn first_tick_from(cron: &Cron, zone: &Zone, mut reading: Civil, earliest: i64) -> Option<i64> {
    let last_year = reading.year + SEARCH_YEARS;
    loop {
        reading = cron.next_match(reading, last_year)?;
        match zone.resolve(reading)? {
            Resolved::Single(tick) if tick >= earliest => return Some(tick),
            Resolved::Gap { end } if end >= earliest => return Some(end),
            Resolved::Fold { first, .. } if first >= earliest => return Some(first),
            Resolved::Fold { second, .. } if cron.every_hour() && second >= earliest => {
                return Some(second);
            }
            _ => reading = reading.next_second(),
        }
    }
}
