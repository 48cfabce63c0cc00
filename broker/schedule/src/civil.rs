//! Civil (wall-clock) date and time in whole seconds, proleptic Gregorian,
//! with the calendar arithmetic the cron matcher needs (days in a month,
//! day of week, the next second, hour or day) and the conversion from
//! seconds since the epoch. Nothing here knows about time zones: a
//! [`Civil`] is what a clock on a wall reads.

use std::fmt;

/// A wall-clock reading to the second. Fields compare in order, so the
/// derived ordering is chronological.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Civil {
    pub(crate) year: i64,
    /// 1 to 12.
    pub(crate) month: u8,
    /// 1 to the days of the month.
    pub(crate) day: u8,
    /// 0 to 23.
    pub(crate) hour: u8,
    /// 0 to 59.
    pub(crate) minute: u8,
    /// 0 to 59.
    pub(crate) second: u8,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl Civil {
    /// Midnight at the start of a day.
    pub(crate) fn midnight(year: i64, month: u8, day: u8) -> Self {
        Self {
            year,
            month,
            day,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    /// The reading of a clock on UTC, `secs` seconds after the epoch.
    pub(crate) fn from_unix_seconds(secs: i64) -> Self {
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let in_day = secs.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = date_from_days(days);
        Self {
            year,
            month,
            day,
            // in_day < 86_400, so each part fits.
            hour: (in_day / 3600) as u8,
            minute: (in_day / 60 % 60) as u8,
            second: (in_day % 60) as u8,
        }
    }

    /// Seconds since the epoch of this reading on a UTC clock; `None` if
    /// it does not fit in an `i64`.
    pub(crate) fn to_unix_seconds(self) -> Option<i64> {
        days_from_date(self.year, self.month, self.day)
            .checked_mul(SECONDS_PER_DAY)?
            .checked_add(
                i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second),
            )
    }

    /// Day of week, 0 = Sunday to 6 = Saturday (cron's numbering).
    pub(crate) fn weekday(self) -> u8 {
        // 1970-01-01 was a Thursday (4).
        (days_from_date(self.year, self.month, self.day) + 4).rem_euclid(7) as u8
    }

    /// One second later.
    pub(crate) fn next_second(self) -> Self {
        if self.second < 59 {
            Self {
                second: self.second + 1,
                ..self
            }
        } else {
            self.next_minute()
        }
    }

    /// The start of the next minute.
    pub(crate) fn next_minute(self) -> Self {
        if self.minute < 59 {
            Self {
                minute: self.minute + 1,
                second: 0,
                ..self
            }
        } else {
            self.next_hour()
        }
    }

    /// The start of the next hour.
    pub(crate) fn next_hour(self) -> Self {
        if self.hour < 23 {
            Self {
                hour: self.hour + 1,
                minute: 0,
                second: 0,
                ..self
            }
        } else {
            self.next_day()
        }
    }

    /// Midnight of the next day.
    pub(crate) fn next_day(self) -> Self {
        if self.day < days_in_month(self.year, self.month) {
            Self::midnight(self.year, self.month, self.day + 1)
        } else if self.month < 12 {
            Self::midnight(self.year, self.month + 1, 1)
        } else {
            Self::midnight(self.year + 1, 1, 1)
        }
    }
}

impl fmt::Display for Civil {
    /// ISO 8601 without an offset: `2026-03-08T02:30:00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Whether `year` has a 29 February.
pub(crate) fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// The number of days of a month (1 to 12) of a year.
pub(crate) fn days_in_month(year: i64, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a date (Howard Hinnant's `days_from_civil`).
fn days_from_date(year: i64, month: u8, day: u8) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date `days` days after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn date_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    // Both fit in a u8: day 1 to 31, month 1 to 12.
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}
