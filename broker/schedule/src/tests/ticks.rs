//! The next tick of cron expressions: skipping, seconds, bounds, and the
//! guarantee that ticks are strictly increasing distinct instants whatever
//! instant the search starts from.

use super::*;

#[test]
fn next_tick_is_strictly_after_and_whole_seconds() {
    let calendar = cron("* * * * * *", "");
    let t = at("2026-05-01T10:00:00Z");
    assert_eq!(calendar.next_after(t), Some(t + 1000));
    assert_eq!(calendar.next_after(t - 1), Some(t));
    assert_eq!(calendar.next_after(t + 999), Some(t + 1000));
    let minutely = cron("* * * * *", "");
    assert_eq!(minutely.next_after(t), Some(t + 60_000));
    assert_eq!(minutely.next_after(t + 1), Some(t + 60_000));
}

#[test]
fn matching_skips_whole_months_days_and_hours() {
    let calendar = cron("15 10 5 11 *", "");
    assert_eq!(
        shown(&calendar.upcoming(at("2026-11-05T10:15:00Z"), 2)),
        ["2027-11-05T10:15:00Z", "2028-11-05T10:15:00Z"]
    );
    let calendar = cron("0 30 23 31 12 *", "");
    assert_eq!(
        show(calendar.next_after(new_year()).unwrap()),
        "2026-12-31T23:30:00Z"
    );
    // Ten thousand schedules, a next tick each, are quick.
    let expressions = [
        "0 0 29 2 *",
        "*/7 3 * 1-3 MON",
        "59 23 31 * *",
        "0 0 1 1 *",
        "0 9 * * 1-5",
    ];
    let started = std::time::Instant::now();
    for i in 0..10_000 {
        let calendar = cron(expressions[i % expressions.len()], "Europe/Berlin");
        let from = new_year() + i as i64 * 3_600_000;
        assert!(calendar.next_after(from).unwrap() > from);
    }
    assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
}

#[test]
fn six_fields_tick_on_their_seconds() {
    let calendar = cron("15,45 * * * * *", "");
    assert_eq!(
        shown(&calendar.upcoming(at("2026-05-01T10:00:00Z"), 3)),
        [
            "2026-05-01T10:00:15Z",
            "2026-05-01T10:00:45Z",
            "2026-05-01T10:01:15Z"
        ]
    );
}

#[test]
fn start_and_end_bound_cron_ticks_inclusively() {
    let timing = Timing {
        start_at: Some(at("2026-06-01T00:00:00Z")),
        end_at: Some(at("2026-06-03T00:00:00Z")),
        ..cron_timing("0 0 * * *", "")
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    assert_eq!(
        shown(&calendar.upcoming(new_year(), 10)),
        [
            "2026-06-01T00:00:00Z",
            "2026-06-02T00:00:00Z",
            "2026-06-03T00:00:00Z"
        ]
    );
    assert_eq!(calendar.next_after(at("2026-06-03T00:00:00Z")), None);
    // A start within a second rounds up to the next whole second.
    let timing = Timing {
        start_at: Some(at("2026-06-01T00:00:00Z") + 1),
        ..cron_timing("* * * * * *", "")
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    assert_eq!(
        show(calendar.next_after(new_year()).unwrap()),
        "2026-06-01T00:00:01Z"
    );
}

#[test]
fn ticks_never_repeat_from_any_starting_instant() {
    // Through every transition of the year in zones with gaps and folds,
    // the next tick from any instant between two ticks is the second one.
    for (zone, expression, days) in [
        (
            "America/New_York",
            "*/20 * * * *",
            ["2026-03-08", "2026-11-01"],
        ),
        (
            "America/New_York",
            "10,50 1-2 * * *",
            ["2026-03-08", "2026-11-01"],
        ),
        ("Europe/Berlin", "0 * * * *", ["2026-03-29", "2026-10-25"]),
        (
            "Australia/Lord_Howe",
            "*/10 * * * *",
            ["2026-04-05", "2026-10-04"],
        ),
        (
            "Australia/Lord_Howe",
            "*/10 1-2 * * *",
            ["2026-04-05", "2026-10-04"],
        ),
        (
            "Australia/Adelaide",
            "59 * * * * *",
            ["2026-04-05", "2026-10-04"],
        ),
    ] {
        let calendar = cron(expression, zone);
        for day in days {
            let from = at(&format!("{day}T00:00:00Z")) - 86_400_000;
            let ticks = calendar.upcoming(from, 200);
            assert!(
                ticks.windows(2).all(|w| w[0] < w[1]),
                "{expression} in {zone}"
            );
            for pair in ticks.windows(2) {
                let mut probe = pair[0];
                while probe < pair[1] {
                    assert_eq!(
                        calendar.next_after(probe),
                        Some(pair[1]),
                        "{expression} in {zone} from {}",
                        show(probe)
                    );
                    probe += 7 * 60_000 + 1;
                }
            }
        }
    }
}

#[test]
fn unknown_zones_are_refused_and_names_are_canonical() {
    let error = refusal(&cron_timing("0 0 * * *", "Mars/Base"));
    assert_eq!(error.field, "time_zone");
    assert_eq!(error.reason, "unknown time zone \"Mars/Base\"");
    assert_eq!(
        error.to_string(),
        "time_zone: unknown time zone \"Mars/Base\""
    );
    assert_eq!(
        refusal(&cron_timing("0 0 * * *", "Etc/Unknown")).field,
        "time_zone"
    );
    assert_eq!(
        cron("0 0 * * *", "europe/berlin").time_zone(),
        "Europe/Berlin"
    );
    assert_eq!(cron("0 0 * * *", "").time_zone(), "UTC");
    let timing = Timing {
        time_zone: Some(String::new()),
        ..cron_timing("0 0 * * *", "")
    };
    assert_eq!(Calendar::compile(&timing, 0).unwrap().time_zone(), "UTC");
}

#[test]
fn cron_and_every_exactly_one() {
    let neither = refusal(&Timing::default());
    assert_eq!(
        (neither.field, neither.reason.as_str()),
        ("cron", "give cron or every")
    );
    let both = Timing {
        every: Some(Duration::from_secs(60)),
        ..cron_timing("* * * * *", "")
    };
    let both = refusal(&both);
    assert_eq!(
        (both.field, both.reason.as_str()),
        ("cron", "give cron or every, not both")
    );
    assert_eq!(
        refusal(&cron_timing("61 * * * *", "")).to_string(),
        "cron: minute field: 61 is out of 0-59"
    );
}

#[test]
fn bounds_that_leave_no_tick_are_refused() {
    let ended = Timing {
        end_at: Some(new_year() - 1000),
        ..cron_timing("* * * * *", "")
    };
    let error = refusal(&ended);
    assert_eq!(
        (error.field, error.reason.as_str()),
        ("end_at", "never fires: ends before now")
    );
    let reversed = Timing {
        start_at: Some(at("2026-06-02T00:00:00Z")),
        end_at: Some(at("2026-06-01T00:00:00Z")),
        ..cron_timing("* * * * *", "")
    };
    let error = refusal(&reversed);
    assert_eq!(
        (error.field, error.reason.as_str()),
        ("end_at", "must be after start_at")
    );
    let too_short = Timing {
        start_at: Some(at("2026-06-02T00:00:01Z")),
        end_at: Some(at("2026-06-02T00:00:59Z")),
        ..cron_timing("* * * * *", "")
    };
    let error = refusal(&too_short);
    assert_eq!(
        (error.field, error.reason.as_str()),
        ("end_at", "never fires: no tick before end_at")
    );
    let far = Timing {
        start_at: Some(i64::MAX),
        ..cron_timing("* * * * *", "")
    };
    assert_eq!(refusal(&far).field, "start_at");
}

#[test]
fn extreme_instants_give_no_tick_and_no_panic() {
    for calendar in [
        cron("* * * * * *", "America/New_York"),
        Calendar::compile(&every(1, 0), 0).unwrap(),
    ] {
        assert_eq!(calendar.next_after(i64::MAX), None);
        let near_the_end = at("9999-12-30T00:00:00Z");
        assert!(
            calendar
                .next_after(near_the_end)
                .is_none_or(|t| t > near_the_end)
        );
        assert!(calendar.upcoming(i64::MIN, 3).len() <= 3);
        for (due, now) in [
            (i64::MIN, i64::MIN),
            (i64::MIN, 0),
            (0, i64::MAX),
            (i64::MAX, i64::MAX),
        ] {
            for policy in [
                crate::CatchUp::Skip,
                crate::CatchUp::One,
                crate::CatchUp::All,
            ] {
                let _ = crate::plan(&calendar, policy, due, now);
            }
        }
    }
    assert!(Calendar::compile(&every(60, i64::MIN), 0).is_ok());
}

#[test]
fn walking_ticks_gives_what_next_after_gives() {
    let transitions = [
        (
            "America/New_York",
            ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"],
        ),
        (
            "Europe/Berlin",
            ["2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z"],
        ),
        (
            "Australia/Lord_Howe",
            ["2026-04-04T15:00:00Z", "2026-10-03T15:30:00Z"],
        ),
        (
            "Australia/Adelaide",
            ["2026-04-04T16:30:00Z", "2026-10-03T16:30:00Z"],
        ),
        // Samoa skipped 30 December 2011 entirely.
        (
            "Pacific/Apia",
            ["2011-12-30T10:00:00Z", "2011-09-24T14:00:00Z"],
        ),
        ("UTC", ["2026-03-08T07:00:00Z", "2026-11-01T06:00:00Z"]),
    ];
    for (zone, instants) in transitions {
        for (expression, hours_before, n) in [
            ("* * * * * *", 2, 4 * 3600),
            ("*/20 * * * *", 48, 300),
            ("10,50 1-3 * * *", 96, 20),
            ("*/5 0-3,12 * * *", 48, 200),
            ("30 2 * * *", 96, 10),
            ("0 12 * * *", 96, 10),
        ] {
            let calendar = cron(expression, zone);
            for instant in instants {
                let from = at(instant) - hours_before * 3_600_000;
                let expected = calendar.upcoming(from, n);
                let walked: Vec<Millis> = calendar
                    .ticks_from(calendar.next_after(from))
                    .take(n)
                    .collect();
                assert_eq!(
                    walked.len(),
                    expected.len(),
                    "{expression} in {zone} at {instant}"
                );
                if let Some(i) = (0..walked.len()).find(|&i| walked[i] != expected[i]) {
                    panic!(
                        "{expression} in {zone} at {instant}: tick {i} walked {} expected {}",
                        show(walked[i]),
                        show(expected[i])
                    );
                }
            }
        }
    }
    // Bounds are kept.
    let timing = Timing {
        end_at: Some(at("2026-06-01T00:00:10Z")),
        ..cron_timing("* * * * * *", "")
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    assert_eq!(
        calendar
            .ticks_from(Some(at("2026-06-01T00:00:00Z")))
            .count(),
        11
    );
}
