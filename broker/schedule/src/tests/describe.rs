//! Timings in words, and ticks as RFC 3339.

use super::*;
use crate::format_tick;

#[test]
fn common_expressions_in_words() {
    for (expression, zone, words) in [
        (
            "0 3 * * *",
            "Europe/Berlin",
            "every day at 03:00 (Europe/Berlin)",
        ),
        ("0 3 * * *", "", "every day at 03:00 (UTC)"),
        ("*/15 * * * *", "", "every 15 minutes"),
        (
            "*/15 * * * *",
            "Asia/Kolkata",
            "every 15 minutes (Asia/Kolkata)",
        ),
        ("* * * * *", "", "every minute"),
        ("0 * * * * *", "", "at second 0 of every minute"),
        ("* * * * * *", "", "every second"),
        ("*/30 * * * * *", "", "every 30 s"),
        (
            "30 9 * * 1-5",
            "America/New_York",
            "at 09:30 on Monday to Friday (America/New_York)",
        ),
        ("0 9,17 * * *", "", "every day at 09:00 and 17:00 (UTC)"),
        ("0 0 * * 0,6", "", "at 00:00 on Saturday and Sunday (UTC)"),
        (
            "0 0 * * MON,WED,FRI",
            "",
            "at 00:00 on Monday, Wednesday and Friday (UTC)",
        ),
        ("@yearly", "", "at 00:00 on day 1 of January (UTC)"),
        ("@monthly", "", "at 00:00 on day 1 of every month (UTC)"),
        (
            "0 12 1,15 * *",
            "",
            "at 12:00 on days 1 and 15 of every month (UTC)",
        ),
        (
            "0 0 * 6-8 *",
            "",
            "every day at 00:00 in June to August (UTC)",
        ),
        ("@hourly", "", "every hour"),
        ("0 0 * * * *", "Europe/Berlin", "every hour (Europe/Berlin)"),
        ("0,30 * * * *", "", "every 30 minutes"),
        ("5,35 * * * *", "", "at minutes 5 and 35 of every hour"),
        ("30 * * * *", "", "at minute 30 of every hour"),
        ("0 */2 * * *", "", "every 2 hours (UTC)"),
        (
            "15 */6 * * *",
            "",
            "every day at 00:15, 06:15, 12:15 and 18:15 (UTC)",
        ),
        ("15 */3 * * *", "", "every 3 hours at minute 15 (UTC)"),
        (
            "*/10 * * * 1-5",
            "",
            "every 10 minutes on Monday to Friday (UTC)",
        ),
        ("15 10 4 * * *", "", "every day at 04:10:15 (UTC)"),
        (
            "0 9-17 * * 1-5",
            "Europe/Berlin",
            "cron \"0 9-17 * * 1-5\" (Europe/Berlin)",
        ),
        ("0 0 1 * MON", "", "cron \"0 0 1 * MON\" (UTC)"),
        ("*/7 * * * *", "", "cron \"*/7 * * * *\" (UTC)"),
    ] {
        assert_eq!(cron(expression, zone).describe(), words, "{expression}");
    }
}

#[test]
fn intervals_in_their_largest_whole_unit() {
    for (secs, words) in [
        (1, "every second"),
        (30, "every 30 s"),
        (90, "every 90 s"),
        (60, "every minute"),
        (900, "every 15 minutes"),
        (3600, "every hour"),
        (5400, "every 90 minutes"),
        (7200, "every 2 hours"),
        (86_400, "every day"),
        (7 * 86_400, "every 7 days"),
    ] {
        let calendar = Calendar::compile(&every(secs, 0), 0).unwrap();
        assert_eq!(calendar.describe(), words);
    }
}

#[test]
fn describing_never_panics() {
    for expression in [
        "* * * * *",
        "0-59/7 0-23/5 1-31/3 1-12/5 0-6/2",
        "59 59 23 31 12 7",
        "1,2,3,4,5,6,7,8 * * * *",
        "0 0 1,3,5,7,9,11,13,15 * *",
        "0 0 * JAN,MAR,MAY,JUL,SEP,NOV,DEC *",
        "@weekly",
        "0 0 29 2 *",
    ] {
        assert!(
            !cron(expression, "Australia/Lord_Howe")
                .describe()
                .is_empty()
        );
    }
}

#[test]
fn ticks_are_rfc_3339_in_utc_with_whole_seconds() {
    assert_eq!(format_tick(0), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_tick(at("2026-12-07T03:00:00Z")),
        "2026-12-07T03:00:00Z"
    );
    assert_eq!(
        format_tick(at("2026-12-07T03:00:00Z") + 999),
        "2026-12-07T03:00:00Z"
    );
    assert_eq!(format_tick(-1), "1969-12-31T23:59:59Z");
    assert_eq!(
        format_tick(at("2000-02-29T23:59:59Z")),
        "2000-02-29T23:59:59Z"
    );
    // Agrees with jiff over a long stretch of days and seconds.
    let mut t = at("1900-01-01T00:00:00Z");
    while t < at("2400-01-01T00:00:00Z") {
        let expected = jiff::Timestamp::from_millisecond(t)
            .unwrap()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        assert_eq!(format_tick(t), expected);
        t += 86_400_000 * 3 + 3_601_001;
    }
}
