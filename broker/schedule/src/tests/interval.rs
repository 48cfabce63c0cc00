//! Interval schedules: elapsed time from an anchor or start, whole
//! seconds, bounds, and the refusals of `every`.

use super::*;

#[test]
fn intervals_tick_at_the_anchor_plus_multiples() {
    let anchor = at("2026-03-08T06:59:30Z");
    let calendar = Calendar::compile(&every(900, anchor), new_year()).unwrap();
    assert_eq!(
        shown(&calendar.upcoming(anchor, 3)),
        [
            "2026-03-08T07:14:30Z",
            "2026-03-08T07:29:30Z",
            "2026-03-08T07:44:30Z"
        ]
    );
    // The anchor sets the phase only: ticks before it exist too.
    assert_eq!(
        show(calendar.next_after(at("2026-03-08T06:00:00Z")).unwrap()),
        "2026-03-08T06:14:30Z"
    );
    // The anchor rounds down to a whole second.
    let calendar = Calendar::compile(&every(60, anchor + 400), new_year()).unwrap();
    assert_eq!(calendar.next_after(anchor + 400), Some(anchor + 60_000));
}

#[test]
fn intervals_ignore_the_zone_clocks() {
    // Every hour across New York's gap: elapsed hours, not wall-clock ones.
    let timing = Timing {
        time_zone: Some("America/New_York".into()),
        ..every(3600, at("2026-03-08T00:00:00Z"))
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    let ticks = calendar.upcoming(at("2026-03-08T05:30:00Z"), 4);
    assert!(ticks.windows(2).all(|w| w[1] - w[0] == 3_600_000));
    assert_eq!(calendar.time_zone(), "America/New_York");
}

#[test]
fn start_at_replaces_the_anchor_and_bounds_ticks() {
    let timing = Timing {
        start_at: Some(at("2026-06-01T12:00:00Z")),
        end_at: Some(at("2026-06-01T12:30:00Z")),
        ..every(600, at("2026-01-01T00:00:07Z"))
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    assert_eq!(
        shown(&calendar.upcoming(new_year(), 10)),
        [
            "2026-06-01T12:00:00Z",
            "2026-06-01T12:10:00Z",
            "2026-06-01T12:20:00Z",
            "2026-06-01T12:30:00Z"
        ]
    );
    // A start within a second: the first tick is the next whole second.
    let timing = Timing {
        start_at: Some(at("2026-06-01T12:00:00Z") + 250),
        ..every(60, 0)
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    assert_eq!(
        show(calendar.next_after(new_year()).unwrap()),
        "2026-06-01T12:00:01Z"
    );
}

#[test]
fn every_is_whole_seconds_from_one_second_to_366_days() {
    for (every, reason) in [
        (
            Duration::from_millis(500),
            "must be whole seconds, got 500ms",
        ),
        (
            Duration::from_millis(1500),
            "must be whole seconds, got 1500ms",
        ),
        (Duration::ZERO, "must be at least 1s"),
        (
            Duration::from_secs(367 * 86_400),
            "must be at most 366 days",
        ),
    ] {
        let timing = Timing {
            every: Some(every),
            ..Timing::default()
        };
        let error = refusal(&timing);
        assert_eq!((error.field, error.reason.as_str()), ("every", reason));
    }
    assert!(Calendar::compile(&every(1, 0), 0).is_ok());
    assert!(Calendar::compile(&every(366 * 86_400, 0), 0).is_ok());
}

#[test]
fn an_interval_window_without_a_tick_never_fires() {
    let timing = Timing {
        start_at: Some(at("2026-06-01T12:00:00.500Z")),
        end_at: Some(at("2026-06-01T12:00:00.900Z")),
        ..every(3600, 0)
    };
    let error = refusal(&timing);
    assert_eq!(
        (error.field, error.reason.as_str()),
        ("end_at", "never fires: no tick before end_at")
    );
    let ended = Timing {
        end_at: Some(new_year()),
        ..every(60, 0)
    };
    assert_eq!(refusal(&ended).reason, "never fires: ends before now");
}
