//! The cron expression parser: fields, items, ranges, steps, names and
//! the `@` shorthands, into a [`Cron`]. Every refusal names the field of
//! the expression and says what is wrong with it.

use super::Cron;

/// One field of an expression: its name in messages, its values, and the
/// names it accepts.
struct Field {
    name: &'static str,
    min: u8,
    /// Highest value accepted (7 for day-of-week, also Sunday).
    max: u8,
    /// Highest value of `*` and of `a/n` (6 for day-of-week).
    star_max: u8,
    /// Names of the values from `min`, upper case.
    names: &'static [&'static str],
    /// How the names read in messages.
    names_label: &'static str,
    /// Day fields: `?` is accepted as `*`, and `L`/`W` get their own refusal.
    day: bool,
}

const SECOND: Field = Field {
    name: "second",
    min: 0,
    max: 59,
    star_max: 59,
    names: &[],
    names_label: "",
    day: false,
};
const MINUTE: Field = Field {
    name: "minute",
    ..SECOND
};
const HOUR: Field = Field {
    name: "hour",
    max: 23,
    star_max: 23,
    ..SECOND
};
const DAY_OF_MONTH: Field = Field {
    name: "day-of-month",
    min: 1,
    max: 31,
    star_max: 31,
    names: &[],
    names_label: "",
    day: true,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    star_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    names_label: "a month name (JAN-DEC)",
    day: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    star_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    names_label: "a day name (SUN-SAT)",
    day: true,
};

/// The `@` shorthands and the five fields each stands for.
const SHORTHANDS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// Parses a whole expression (see [`Cron::parse`]).
pub(super) fn parse(expression: &str) -> Result<Cron, String> {
    let text = expression.trim();
    if text.is_empty() {
        return Err("is empty".to_owned());
    }
    if text.starts_with('@') {
        return shorthand(text);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    let (with_seconds, fields): (bool, [&str; 6]) = match *fields.as_slice() {
        [minute, hour, day, month, weekday] => (false, ["0", minute, hour, day, month, weekday]),
        [second, minute, hour, day, month, weekday] => {
            (true, [second, minute, hour, day, month, weekday])
        }
        _ => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) \
                 or 6 (second first), got {}",
                fields.len()
            ));
        }
    };
    let [second, minute, hour, day, month, weekday] = fields;
    Ok(Cron {
        text: text.to_owned(),
        with_seconds,
        seconds: field(second, &SECOND)?,
        minutes: field(minute, &MINUTE)?,
        hours: field(hour, &HOUR)?,
        days: field(day, &DAY_OF_MONTH)?,
        months: field(month, &MONTH)?,
        weekdays: field(weekday, &DAY_OF_WEEK)?,
        days_unrestricted: unrestricted(day),
        weekdays_unrestricted: unrestricted(weekday),
    })
}

/// An `@name`: one of [`SHORTHANDS`], alone.
fn shorthand(text: &str) -> Result<Cron, String> {
    let mut words = text.split_whitespace();
    let name = words.next().unwrap_or(text);
    if words.next().is_some() {
        return Err(format!("expected nothing after {name}"));
    }
    if name.eq_ignore_ascii_case("@reboot") {
        return Err("@reboot is not supported: schedules fire at times, not at start-up".into());
    }
    let Some((_, fields)) = SHORTHANDS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
    else {
        return Err(format!(
            "unknown name {name} (expected @yearly, @annually, @monthly, @weekly, \
             @daily, @midnight or @hourly)"
        ));
    };
    let mut cron = parse(fields)?;
    cron.text = name.to_ascii_lowercase();
    Ok(cron)
}

/// Whether a day field leaves the day unrestricted: `*`, `?` or a step
/// over `*` (Vixie cron looks at the first character).
fn unrestricted(text: &str) -> bool {
    text.starts_with('*') || text == "?"
}

/// A comma-separated field, as a set; refusals are prefixed with the
/// field's name.
fn field(text: &str, field: &Field) -> Result<u64, String> {
    let mut set = 0u64;
    for item in text.split(',') {
        set |=
            parse_item(item, field).map_err(|reason| format!("{} field: {reason}", field.name))?;
    }
    if field.max == 7 && set & (1 << 7) != 0 {
        // 7 is Sunday too.
        set = (set & !(1 << 7)) | 1;
    }
    Ok(set)
}

/// One item of a list: `*`, `?`, `a`, `a-b`, each with an optional `/n`.
fn parse_item(item: &str, field: &Field) -> Result<u64, String> {
    if item.is_empty() {
        return Err("empty item in a list".to_owned());
    }
    if item.contains('#') {
        return Err(format!(
            "{item}: # (nth weekday of the month) is not supported"
        ));
    }
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step, field)?)),
        None => (item, None),
    };
    let (low, high) = match range {
        "*" => (field.min, field.star_max),
        "?" if !field.day => {
            return Err("? is only allowed in day-of-month and day-of-week".to_owned());
        }
        "?" if step.is_some() => return Err(format!("{item}: ? takes no step")),
        "?" => (field.min, field.star_max),
        "" => return Err(format!("{item}: a step needs a start, as */n or a/n")),
        _ => match range.split_once('-') {
            Some((low, high)) if !low.is_empty() && !high.is_empty() && !high.contains('-') => {
                let low = value(low, field)?;
                // FRI-SUN: Sunday as the end of a range is 7.
                let high = if field.max == 7 && high.eq_ignore_ascii_case("SUN") {
                    7
                } else {
                    value(high, field)?
                };
                if low > high {
                    return Err(format!("{range} is a reversed range"));
                }
                (low, high)
            }
            Some(_) => return Err(format!("{range} is not a valid range")),
            None => {
                let low = value(range, field)?;
                match step {
                    Some(_) => (low, field.star_max.max(low)),
                    None => (low, low),
                }
            }
        },
    };
    let mut set = 0u64;
    for v in (low..=high).step_by(usize::from(step.unwrap_or(1))) {
        set |= 1 << v;
    }
    Ok(set)
}

/// The `n` of `/n`: 1 to the number of values of the field.
fn parse_step(text: &str, field: &Field) -> Result<u8, String> {
    let span = u32::from(field.star_max - field.min) + 1;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("step {text:?} is not a number"));
    }
    match text.parse::<u32>() {
        Ok(step) if (1..=span).contains(&step) => Ok(step as u8),
        _ => Err(format!("step {text} is out of 1-{span}")),
    }
}

/// One value: a number in the field's range, or a name (any case).
fn value(text: &str, field: &Field) -> Result<u8, String> {
    let out_of_range = || format!("{text} is out of {}-{}", field.min, field.max);
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(v) if (u32::from(field.min)..=u32::from(field.max)).contains(&v) => Ok(v as u8),
            _ => Err(out_of_range()),
        };
    }
    if let Some(index) = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))
    {
        return Ok(field.min + index as u8);
    }
    if field.day
        && let Some(reason) = unsupported_day_rule(text)
    {
        return Err(format!("{text}: {reason}"));
    }
    if field.names.is_empty() {
        Err(format!("{text} is not a number"))
    } else {
        Err(format!("{text} is not a number or {}", field.names_label))
    }
}

/// Quartz-style day rules (`L`, `15W`, `LW`, `5L`), refused by name.
fn unsupported_day_rule(text: &str) -> Option<&'static str> {
    let upper = text.to_ascii_uppercase();
    let numbered = |suffix: char| {
        upper
            .strip_suffix(suffix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
    };
    if upper == "L" || numbered('L') {
        Some("L (last day) is not supported")
    } else if upper == "LW" || numbered('W') {
        Some("W (nearest weekday) is not supported")
    } else {
        None
    }
}
