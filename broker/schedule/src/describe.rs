//! A schedule's timing in words, for listings and the dashboard:
//! `every day at 03:00 (Europe/Berlin)`, `every 15 minutes`, `at 09:30 on
//! Monday to Friday (America/New_York)`. Common shapes are put in words;
//! anything else reads `cron "EXPR" (ZONE)`. Never panics.

use crate::calendar::{Calendar, Rule};
use crate::cron::{ALL_HOURS, Cron, count, values};

/// Every second of a minute, or every minute of an hour.
const ALL_SIXTY: u64 = (1 << 60) - 1;
const ALL_DAYS: u64 = ((1 << 32) - 1) & !1;
const ALL_MONTHS: u64 = ((1 << 13) - 1) & !1;
const ALL_WEEKDAYS: u64 = (1 << 7) - 1;

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// Most items a list in words may have before the expression is shown as is.
const MAX_LISTED: usize = 6;

/// The timing of `calendar` in words.
pub(crate) fn describe(calendar: &Calendar) -> String {
    match &calendar.rule {
        Rule::Every(interval) => interval_words(interval.every),
        Rule::Cron(cron) => {
            let zone = &calendar.zone;
            match cron_words(cron) {
                Some((words, false)) if zone.is_utc() => words,
                Some((words, _)) => format!("{words} ({})", zone.name()),
                None => format!("cron \"{}\" ({})", cron.text, zone.name()),
            }
        }
    }
}

/// An interval in its largest whole unit: `every 30 s`, `every 15
/// minutes`, `every hour`, `every 2 days`.
fn interval_words(secs: i64) -> String {
    let (n, unit) = if secs % 86_400 == 0 {
        (secs / 86_400, "day")
    } else if secs % 3600 == 0 {
        (secs / 3600, "hour")
    } else if secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        return if secs == 1 {
            "every second".to_owned()
        } else {
            format!("every {secs} s")
        };
    };
    if n == 1 {
        format!("every {unit}")
    } else {
        format!("every {n} {unit}s")
    }
}

/// A cron expression in words, and whether the words depend on the
/// zone's wall clock (times of day, days, months); `None` for shapes
/// without words.
fn cron_words(cron: &Cron) -> Option<(String, bool)> {
    let days = days_words(cron)?;
    let single_second = (count(cron.seconds) == 1).then(|| cron.seconds.trailing_zeros());
    let times = count(cron.hours) * count(cron.minutes);
    if let Some(second) = single_second
        && times <= 4
    {
        let mut at = Vec::new();
        for hour in values(cron.hours) {
            for minute in values(cron.minutes) {
                at.push(if second == 0 {
                    format!("{hour:02}:{minute:02}")
                } else {
                    format!("{hour:02}:{minute:02}:{second:02}")
                });
            }
        }
        let at = join(&at);
        let words = match days {
            Days::Every => format!("every day at {at}{}", months_words(cron, " in")?),
            Days::Weekdays(on) => format!("at {at} on {on}{}", months_words(cron, " in")?),
            Days::Dates(on) => format!("at {at} on {on}{}", dates_months_words(cron)?),
        };
        return Some((words, true));
    }
    let period = period_words(cron, single_second)?;
    let mut wall_clock = cron.hours != ALL_HOURS;
    let days = match days {
        Days::Every => months_words(cron, " in")?,
        Days::Weekdays(on) => format!(" on {on}{}", months_words(cron, " in")?),
        Days::Dates(on) => format!(" on {on}{}", dates_months_words(cron)?),
    };
    wall_clock |= !days.is_empty();
    Some((format!("{period}{days}"), wall_clock))
}

/// Which days an expression runs on.
enum Days {
    Every,
    Weekdays(String),
    Dates(String),
}

fn days_words(cron: &Cron) -> Option<Days> {
    let any_date = cron.days == ALL_DAYS;
    let any_weekday = cron.weekdays == ALL_WEEKDAYS;
    let either = !(cron.days_unrestricted || cron.weekdays_unrestricted);
    if (either && (any_date || any_weekday)) || (any_date && any_weekday) {
        Some(Days::Every)
    } else if either {
        // Day-of-month or day-of-week: no words for it.
        None
    } else if any_date {
        // Monday-first, so that 0,6 reads "Saturday and Sunday".
        let mut order: Vec<u8> = values(cron.weekdays).map(|d| (d + 6) % 7).collect();
        order.sort_unstable();
        let on = runs(&order, |d| WEEKDAYS[usize::from((d + 1) % 7)].to_owned())?;
        Some(Days::Weekdays(on))
    } else if any_weekday {
        let dates: Vec<u8> = values(cron.days).collect();
        let on = runs(&dates, |d| d.to_string())?;
        let noun = if dates.len() == 1 { "day" } else { "days" };
        Some(Days::Dates(format!("{noun} {on}")))
    } else {
        None
    }
}

/// ` in January to March`, or nothing for every month.
fn months_words(cron: &Cron, preposition: &str) -> Option<String> {
    if cron.months == ALL_MONTHS {
        return Some(String::new());
    }
    let months: Vec<u8> = values(cron.months).collect();
    let names = runs(&months, |m| MONTHS[usize::from(m - 1)].to_owned())?;
    Some(format!("{preposition} {names}"))
}

/// ` of every month` or ` of January`, after days of the month.
fn dates_months_words(cron: &Cron) -> Option<String> {
    if cron.months == ALL_MONTHS {
        Some(" of every month".to_owned())
    } else {
        months_words(cron, " of")
    }
}

/// How often within a day an expression runs, for shapes that are not a
/// few times of day: `every second`, `every 30 s`, `every minute`, `every
/// 15 minutes`, `every hour`, `at minute 30 of every hour`, `every 2
/// hours`.
fn period_words(cron: &Cron, single_second: Option<u32>) -> Option<String> {
    let every_hour = cron.hours == ALL_HOURS;
    let every_minute = every_hour && cron.minutes == ALL_SIXTY;
    if every_minute {
        if let Some(second) = single_second {
            return Some(if second == 0 && !cron.with_seconds {
                "every minute".to_owned()
            } else {
                format!("at second {second} of every minute")
            });
        }
        let step = step_from_zero(cron.seconds, 60)?;
        return Some(if step == 1 {
            "every second".to_owned()
        } else {
            format!("every {step} s")
        });
    }
    if single_second != Some(0) {
        return None;
    }
    if every_hour {
        if cron.minutes == 1 {
            return Some("every hour".to_owned());
        }
        if let Some(step) = step_from_zero(cron.minutes, 60) {
            return Some(format!("every {step} minutes"));
        }
        let minutes: Vec<String> = values(cron.minutes).map(|m| m.to_string()).collect();
        let noun = if minutes.len() == 1 {
            "minute"
        } else {
            "minutes"
        };
        return (minutes.len() <= MAX_LISTED)
            .then(|| format!("at {noun} {} of every hour", join(&minutes)));
    }
    let step = step_from_zero(cron.hours, 24)?;
    if count(cron.minutes) != 1 {
        return None;
    }
    Some(match cron.minutes.trailing_zeros() {
        0 => format!("every {step} hours"),
        minute => format!("every {step} hours at minute {minute}"),
    })
}

/// `n` if `set` is exactly 0, n, 2n, ... below `span` with `n` dividing
/// `span` and more than one value.
fn step_from_zero(set: u64, span: u8) -> Option<u8> {
    let mut ticks = values(set);
    let (first, second) = (ticks.next()?, ticks.next()?);
    let step = second - first;
    let expected: u64 = (0..span).step_by(usize::from(step)).map(|v| 1 << v).sum();
    (first == 0 && span.is_multiple_of(step) && set == expected).then_some(step)
}

/// Sorted, distinct keys in words: runs of three or more as `A to B`,
/// the rest listed; `None` past [`MAX_LISTED`] items.
fn runs(keys: &[u8], label: impl Fn(u8) -> String) -> Option<String> {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let mut j = i;
        while j + 1 < keys.len() && keys[j + 1] == keys[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{} to {}", label(keys[i]), label(keys[j])));
        } else {
            parts.extend(keys[i..=j].iter().map(|&k| label(k)));
        }
        i = j + 1;
    }
    (parts.len() <= MAX_LISTED).then(|| join(&parts))
}

/// `a`, `a and b`, `a, b and c`.
fn join(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
