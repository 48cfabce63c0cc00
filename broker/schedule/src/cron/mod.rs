//! Cron expressions: the compiled form (one bit set per field) and the
//! matcher that finds the next matching wall-clock reading. Parsing is in
//! [`parse`]; time zones are not this module's business: it works on
//! [`Civil`] readings only.

mod parse;

use crate::civil::{Civil, days_in_month};

/// How many years past its starting point a search for the next matching
/// reading looks before it gives up. Eight years separate some 29
/// Februaries (2096 and 2104), so ten is enough for any expression that
/// matches at all.
pub(crate) const SEARCH_YEARS: i64 = 10;

/// A parsed cron expression. Bit `n` of a field's set is value `n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    /// The expression as given, trimmed.
    pub(crate) text: String,
    /// Whether the expression had six fields (seconds first).
    pub(crate) with_seconds: bool,
    pub(crate) seconds: u64,
    pub(crate) minutes: u64,
    pub(crate) hours: u64,
    /// Bits 1 to 31.
    pub(crate) days: u64,
    /// Bits 1 to 12.
    pub(crate) months: u64,
    /// Bits 0 (Sunday) to 6 (Saturday).
    pub(crate) weekdays: u64,
    /// Day-of-month written as `*` or `?` (or starting with `*`, as `*/2`):
    /// it does not restrict the day on its own (Vixie cron's rule).
    pub(crate) days_unrestricted: bool,
    /// Day-of-week written as `*` or `?` (or starting with `*`).
    pub(crate) weekdays_unrestricted: bool,
}

/// The lowest value in `set` at or above `from`.
pub(crate) fn next_in(set: u64, from: u8) -> Option<u8> {
    if from >= 64 {
        return None;
    }
    let above = set & (u64::MAX << from);
    (above != 0).then(|| above.trailing_zeros() as u8)
}

/// The number of values in a set.
pub(crate) fn count(set: u64) -> u32 {
    set.count_ones()
}

/// The values of a set, lowest first.
pub(crate) fn values(set: u64) -> impl Iterator<Item = u8> {
    (0..64u8).filter(move |&v| set & (1 << v) != 0)
}

/// Every hour of the day.
pub(crate) const ALL_HOURS: u64 = (1 << 24) - 1;

impl Cron {
    /// Parses an expression: five or six fields, or an `@name`.
    ///
    /// # Errors
    /// Why the expression is refused, naming the field of the expression
    /// at fault (`minute field: 61 is out of 0-59`).
    pub(crate) fn parse(expression: &str) -> Result<Self, String> {
        parse::parse(expression)
    }

    /// Whether the hour field matches every hour: such an expression runs
    /// at both occurrences of a repeated (fall-back) hour.
    pub(crate) fn every_hour(&self) -> bool {
        self.hours == ALL_HOURS
    }

    /// Whether the expression matches a day: when both day-of-month and
    /// day-of-week are restricted, either may match; otherwise both must.
    pub(crate) fn matches_day(&self, at: Civil) -> bool {
        let by_date = self.days & (1 << at.day) != 0;
        let by_weekday = self.weekdays & (1 << at.weekday()) != 0;
        if self.days_unrestricted || self.weekdays_unrestricted {
            by_date && by_weekday
        } else {
            by_date || by_weekday
        }
    }

    /// The first reading at or after `from` that the expression matches,
    /// or `None` if there is none before the end of year `last_year`.
    /// Skips whole months, days, hours and minutes that cannot match.
    pub(crate) fn next_match(&self, from: Civil, last_year: i64) -> Option<Civil> {
        let mut at = from;
        loop {
            if at.year > last_year {
                return None;
            }
            match next_in(self.months, at.month) {
                Some(month) if month == at.month => {}
                Some(month) => at = Civil::midnight(at.year, month, 1),
                None => {
                    at = Civil::midnight(at.year + 1, 1, 1);
                    continue;
                }
            }
            if at.day > days_in_month(at.year, at.month) || !self.matches_day(at) {
                at = at.next_day();
                continue;
            }
            match next_in(self.hours, at.hour) {
                Some(hour) if hour == at.hour => {}
                Some(hour) => {
                    at = Civil {
                        hour,
                        minute: 0,
                        second: 0,
                        ..at
                    }
                }
                None => {
                    at = at.next_day();
                    continue;
                }
            }
            match next_in(self.minutes, at.minute) {
                Some(minute) if minute == at.minute => {}
                Some(minute) => {
                    at = Civil {
                        minute,
                        second: 0,
                        ..at
                    }
                }
                None => {
                    at = at.next_hour();
                    continue;
                }
            }
            match next_in(self.seconds, at.second) {
                Some(second) => return Some(Civil { second, ..at }),
                None => at = at.next_minute(),
            }
        }
    }
}
