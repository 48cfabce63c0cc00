//! Cron ticks across daylight saving time transitions, in zones of both
//! hemispheres, with whole-hour and half-hour offsets and shifts: a time
//! in a gap fires once at the gap's end; a repeated time fires once, at
//! its first occurrence, unless the expression runs every hour.

use super::*;

/// The next `n` ticks after `from` as wall-clock readings in `zone`.
fn walls(calendar: &Calendar, from: &str, n: usize, zone: &str) -> Vec<String> {
    calendar
        .upcoming(at(from), n)
        .into_iter()
        .map(|t| wall(t, zone))
        .collect()
}

#[test]
fn new_york_spring_gap_fires_once_at_its_end() {
    let zone = "America/New_York";
    // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
    let daily = cron("30 2 * * *", zone);
    assert_eq!(
        walls(&daily, "2026-03-07T12:00:00Z", 3, zone),
        [
            "2026-03-08T03:00:00-04",
            "2026-03-09T02:30:00-04",
            "2026-03-10T02:30:00-04"
        ]
    );
    assert_eq!(
        daily.next_after(at("2026-03-07T12:00:00Z")),
        Some(at("2026-03-08T07:00:00Z"))
    );
    // Six ticks inside the gap fire once, together.
    let in_gap = cron("*/10 2 * * *", zone);
    assert_eq!(
        walls(&in_gap, "2026-03-08T06:00:00Z", 2, zone),
        ["2026-03-08T03:00:00-04", "2026-03-09T02:00:00-04"]
    );
    // Through the gap every half hour: 02:00, 02:30 and 03:00 are one instant.
    let half_hourly = cron("*/30 * * * *", zone);
    assert_eq!(
        walls(&half_hourly, "2026-03-08T06:00:00Z", 4, zone),
        [
            "2026-03-08T01:30:00-05",
            "2026-03-08T03:00:00-04",
            "2026-03-08T03:30:00-04",
            "2026-03-08T04:00:00-04"
        ]
    );
}

#[test]
fn new_york_fall_fold_fires_once_unless_hourly() {
    let zone = "America/New_York";
    // 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:00-01:59 twice.
    let daily = cron("30 1 * * *", zone);
    assert_eq!(
        walls(&daily, "2026-10-31T12:00:00Z", 3, zone),
        [
            "2026-11-01T01:30:00-04",
            "2026-11-02T01:30:00-05",
            "2026-11-03T01:30:00-05"
        ]
    );
    // From inside the second occurrence, the repeated time is not run again.
    assert_eq!(
        wall(daily.next_after(at("2026-11-01T06:10:00Z")).unwrap(), zone),
        "2026-11-02T01:30:00-05"
    );
    let half_hourly = cron("*/30 * * * *", zone);
    assert_eq!(
        walls(&half_hourly, "2026-11-01T04:45:00Z", 6, zone),
        [
            "2026-11-01T01:00:00-04",
            "2026-11-01T01:30:00-04",
            "2026-11-01T01:00:00-05",
            "2026-11-01T01:30:00-05",
            "2026-11-01T02:00:00-05",
            "2026-11-01T02:30:00-05"
        ]
    );
    // Starting exactly where the second occurrence begins.
    assert_eq!(
        half_hourly.next_after(at("2026-11-01T05:59:59.999Z")),
        Some(at("2026-11-01T06:00:00Z"))
    );
    // Hours 0-3 only: not every hour, so once.
    let some_hours = cron("*/30 0-3 * * *", zone);
    assert_eq!(
        walls(&some_hours, "2026-11-01T04:45:00Z", 4, zone),
        [
            "2026-11-01T01:00:00-04",
            "2026-11-01T01:30:00-04",
            "2026-11-01T02:00:00-05",
            "2026-11-01T02:30:00-05"
        ]
    );
}

#[test]
fn berlin_gap_and_fold() {
    let zone = "Europe/Berlin";
    let daily = cron("30 2 * * *", zone);
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00Z).
    assert_eq!(
        walls(&daily, "2026-03-28T12:00:00Z", 2, zone),
        ["2026-03-29T03:00:00+02", "2026-03-30T02:30:00+02"]
    );
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00Z); 02:30 twice.
    assert_eq!(
        walls(&daily, "2026-10-24T12:00:00Z", 2, zone),
        ["2026-10-25T02:30:00+02", "2026-10-26T02:30:00+01"]
    );
    assert_eq!(
        daily.next_after(at("2026-10-24T12:00:00Z")),
        Some(at("2026-10-25T00:30:00Z"))
    );
    let minutely = cron("* * * * *", zone);
    let ticks = minutely.upcoming(at("2026-10-25T00:00:00Z"), 180);
    // Three hours of elapsed time, a tick each minute, none missing.
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 60_000));
}

#[test]
fn sydney_southern_hemisphere_ends_in_april_starts_in_october() {
    let zone = "Australia/Sydney";
    let daily = cron("30 2 * * *", zone);
    // 2026-04-05: 03:00 AEDT becomes 02:00 AEST; 02:30 twice: first one.
    assert_eq!(
        walls(&daily, "2026-04-04T00:00:00Z", 2, zone),
        ["2026-04-05T02:30:00+11", "2026-04-06T02:30:00+10"]
    );
    // 2026-10-04: 02:00 AEST becomes 03:00 AEDT; 02:30 does not exist.
    assert_eq!(
        walls(&daily, "2026-10-03T00:00:00Z", 2, zone),
        ["2026-10-04T03:00:00+11", "2026-10-05T02:30:00+11"]
    );
    assert_eq!(
        daily.next_after(at("2026-10-03T00:00:00Z")),
        Some(at("2026-10-03T16:00:00Z"))
    );
}

#[test]
fn adelaide_half_hour_offset_with_dst() {
    let zone = "Australia/Adelaide";
    let daily = cron("30 2 * * *", zone);
    assert_eq!(
        walls(&daily, "2026-04-04T00:00:00Z", 2, zone),
        ["2026-04-05T02:30:00+10:30", "2026-04-06T02:30:00+09:30"]
    );
    assert_eq!(
        daily.next_after(at("2026-04-04T00:00:00Z")),
        Some(at("2026-04-04T16:00:00Z"))
    );
    assert_eq!(
        walls(&daily, "2026-10-03T00:00:00Z", 2, zone),
        ["2026-10-04T03:00:00+10:30", "2026-10-05T02:30:00+10:30"]
    );
    assert_eq!(
        daily.next_after(at("2026-10-03T00:00:00Z")),
        Some(at("2026-10-03T16:30:00Z"))
    );
}

#[test]
fn lord_howe_half_hour_shift() {
    let zone = "Australia/Lord_Howe";
    // 2026-04-05: 02:00 +11 becomes 01:30 +10:30; 01:30-01:59 twice.
    let daily = cron("45 1 * * *", zone);
    assert_eq!(
        walls(&daily, "2026-04-04T00:00:00Z", 2, zone),
        ["2026-04-05T01:45:00+11", "2026-04-06T01:45:00+10:30"]
    );
    let quarterly = cron("*/15 * * * *", zone);
    assert_eq!(
        walls(&quarterly, "2026-04-04T14:20:00Z", 5, zone),
        [
            "2026-04-05T01:30:00+11",
            "2026-04-05T01:45:00+11",
            "2026-04-05T01:30:00+10:30",
            "2026-04-05T01:45:00+10:30",
            "2026-04-05T02:00:00+10:30"
        ]
    );
    // 2026-10-04: 02:00 +10:30 becomes 02:30 +11; 02:15 does not exist.
    let daily = cron("15 2 * * *", zone);
    assert_eq!(
        walls(&daily, "2026-10-03T00:00:00Z", 2, zone),
        ["2026-10-04T02:30:00+11", "2026-10-05T02:15:00+11"]
    );
    assert_eq!(
        walls(&quarterly, "2026-10-03T15:10:00Z", 3, zone),
        [
            "2026-10-04T01:45:00+10:30",
            "2026-10-04T02:30:00+11",
            "2026-10-04T02:45:00+11"
        ]
    );
}

#[test]
fn kolkata_and_utc_have_no_transitions() {
    let daily = cron("0 9 * * *", "Asia/Kolkata");
    assert_eq!(
        shown(&daily.upcoming(at("2026-03-08T00:00:00Z"), 2)),
        ["2026-03-08T03:30:00Z", "2026-03-09T03:30:00Z"]
    );
    let daily = cron("30 2 * * *", "UTC");
    assert_eq!(daily.time_zone(), "UTC");
    assert_eq!(
        shown(&daily.upcoming(at("2026-03-08T00:00:00Z"), 2)),
        ["2026-03-08T02:30:00Z", "2026-03-09T02:30:00Z"]
    );
}

#[test]
fn a_year_of_a_daily_job_is_one_tick_a_day_in_every_zone() {
    for zone in [
        "America/New_York",
        "Europe/Berlin",
        "Australia/Sydney",
        "Australia/Adelaide",
        "Australia/Lord_Howe",
        "Asia/Kolkata",
        "UTC",
    ] {
        for (expression, year, days) in [
            ("30 2 * * *", 2026, 365),
            ("30 1 * * *", 2026, 365),
            ("0 2 * * *", 2028, 366),
        ] {
            let calendar = cron(expression, zone);
            // From the end of the previous year in every zone.
            let from = at(&format!("{}-12-31T00:00:00Z", year - 1)) - 86_400_000;
            let ticks = calendar.upcoming(from, 400);
            let in_year: Vec<Millis> = ticks
                .iter()
                .copied()
                .filter(|&t| wall(t, zone).starts_with(&year.to_string()))
                .collect();
            assert_eq!(in_year.len(), days, "{expression} in {zone}");
            assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{zone}");
            let mut dates: Vec<String> = in_year
                .iter()
                .map(|&t| wall(t, zone)[..10].to_owned())
                .collect();
            dates.dedup();
            assert_eq!(dates.len(), days, "one tick a day: {expression} in {zone}");
        }
    }
}
