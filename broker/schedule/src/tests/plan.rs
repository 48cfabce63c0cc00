//! Firing passes: on-time ticks always fire; missed ones follow the
//! catch-up policy and are counted; long downtime stays cheap.

use std::time::Instant;

use super::*;
use crate::{CatchUp, Plan, plan};

const SECOND: Millis = 1000;

/// `n` consecutive ticks `step` apart from `first`.
fn ticks(first: Millis, step: Millis, n: i64) -> Vec<Millis> {
    (0..n).map(|i| first + i * step).collect()
}

#[test]
fn a_tick_due_now_fires_and_the_next_is_stored() {
    let calendar = cron("*/5 * * * *", "");
    let due = at("2026-05-01T10:05:00Z");
    for policy in [CatchUp::Skip, CatchUp::One, CatchUp::All] {
        assert_eq!(
            plan(&calendar, policy, due, due + 300),
            Plan {
                fire: vec![due],
                skipped: 0,
                next: Some(at("2026-05-01T10:10:00Z")),
            }
        );
    }
}

#[test]
fn ticks_up_to_ten_seconds_old_are_on_time_whatever_the_policy() {
    let calendar = cron("* * * * * *", "");
    let due = at("2026-05-01T10:00:00Z");
    let now = due + 10 * SECOND;
    let on_time = plan(&calendar, CatchUp::Skip, due, now);
    assert_eq!(on_time.fire, ticks(due, SECOND, 11));
    assert_eq!(on_time.skipped, 0);
    assert_eq!(on_time.next, Some(now + SECOND));
    // One more second: the oldest tick is missed.
    let late = plan(&calendar, CatchUp::Skip, due, now + SECOND);
    assert_eq!(late.fire, ticks(due + SECOND, SECOND, 11));
    assert_eq!(late.skipped, 1);
}

#[test]
fn skip_one_and_all_after_an_hour_down() {
    let calendar = cron("*/5 * * * *", "");
    let due = at("2026-05-01T10:00:00Z");
    // Down from 10:00 to 11:00:05: 10:00 to 10:55 missed, 11:00 on time.
    let now = at("2026-05-01T11:00:05Z");
    let eleven = at("2026-05-01T11:00:00Z");
    let next = Some(at("2026-05-01T11:05:00Z"));
    assert_eq!(
        plan(&calendar, CatchUp::Skip, due, now),
        Plan {
            fire: vec![eleven],
            skipped: 12,
            next
        }
    );
    assert_eq!(
        plan(&calendar, CatchUp::One, due, now),
        Plan {
            fire: vec![at("2026-05-01T10:55:00Z"), eleven],
            skipped: 11,
            next
        }
    );
    let mut all = ticks(due, 300 * SECOND, 12);
    all.push(eleven);
    assert_eq!(
        plan(&calendar, CatchUp::All, due, now),
        Plan {
            fire: all,
            skipped: 0,
            next
        }
    );
}

#[test]
fn all_fires_at_most_a_hundred_missed_ticks() {
    let calendar = cron("* * * * *", "");
    let due = at("2026-05-01T00:00:00Z");
    // 240 minutes missed; none on time.
    let now = at("2026-05-01T04:00:30Z");
    let all = plan(&calendar, CatchUp::All, due, now);
    assert_eq!(
        all.fire,
        ticks(at("2026-05-01T02:21:00Z"), 60 * SECOND, 100)
    );
    assert_eq!(all.skipped, 141);
    assert_eq!(all.next, Some(at("2026-05-01T04:01:00Z")));
}

#[test]
fn a_day_down_of_a_per_second_schedule_is_cheap_and_exact() {
    let due = at("2026-05-01T00:00:00Z");
    let now = due + 86_400 * SECOND;
    let cron = cron("* * * * * *", "Europe/Berlin");
    let interval = Calendar::compile(&every(1, due), due).unwrap();
    for calendar in [&cron, &interval] {
        let started = Instant::now();
        let skip = plan(calendar, CatchUp::Skip, due, now);
        let one = plan(calendar, CatchUp::One, due, now);
        let all = plan(calendar, CatchUp::All, due, now);
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        let on_time = ticks(now - 10 * SECOND, SECOND, 11);
        // 86,400 seconds from due to now - 10 s, exclusive, are missed.
        assert_eq!(skip.fire, on_time);
        assert_eq!(skip.skipped, 86_390);
        assert_eq!(one.fire[0], now - 11 * SECOND);
        assert_eq!(one.fire[1..], on_time);
        assert_eq!(one.skipped, 86_389);
        assert_eq!(all.fire[..100], ticks(now - 110 * SECOND, SECOND, 100));
        assert_eq!(all.fire[100..], on_time);
        assert_eq!(all.skipped, 86_290);
        assert_eq!(all.next, Some(now + SECOND));
    }
}

#[test]
fn past_the_counting_cap_the_latest_missed_ticks_still_fire() {
    // Three days of a per-second expression: counting stops at 100,000,
    // so skipped is a lower bound; the fired ticks are the right ones.
    let due = at("2026-05-01T00:00:00Z");
    let now = due + 3 * 86_400 * SECOND;
    let calendar = cron("* * * * * *", "");
    let all = plan(&calendar, CatchUp::All, due, now);
    assert_eq!(all.fire, ticks(now - 110 * SECOND, SECOND, 111));
    assert!(all.skipped >= 100_000 - 100, "{}", all.skipped);
    let one = plan(&calendar, CatchUp::One, due, now);
    assert_eq!(one.fire, ticks(now - 11 * SECOND, SECOND, 12));
    let skip = plan(&calendar, CatchUp::Skip, due, now);
    assert_eq!(skip.fire, ticks(now - 10 * SECOND, SECOND, 11));
    assert!(skip.skipped >= 100_000);
    // Bursty: every second of 03:00-03:59 only, a month down.
    let calendar = cron("* * 3 * * *", "");
    let now = at("2026-06-01T04:30:00Z");
    let all = plan(&calendar, CatchUp::All, due, now);
    assert_eq!(all.fire, ticks(at("2026-06-01T03:58:20Z"), SECOND, 100));
    let one = plan(&calendar, CatchUp::One, due, now);
    assert_eq!(one.fire, [at("2026-06-01T03:59:59Z")]);
    // The interval is counted exactly, however long the downtime.
    let interval = Calendar::compile(&every(1, due), due).unwrap();
    let skip = plan(&interval, CatchUp::Skip, due, due + 30 * 86_400 * SECOND);
    assert_eq!(skip.skipped, 30 * 86_400 - 10);
}

#[test]
fn the_end_of_a_schedule_leaves_no_next_tick() {
    let due = at("2026-05-01T10:00:00Z");
    let timing = Timing {
        end_at: Some(at("2026-05-01T10:02:00Z")),
        ..cron_timing("* * * * *", "")
    };
    let calendar = Calendar::compile(&timing, new_year()).unwrap();
    let now = at("2026-05-01T10:03:00Z");
    assert_eq!(
        plan(&calendar, CatchUp::All, due, now),
        Plan {
            fire: ticks(due, 60 * SECOND, 3),
            skipped: 0,
            next: None,
        }
    );
    let skip = plan(&calendar, CatchUp::Skip, due, now);
    assert_eq!((skip.fire.len(), skip.skipped, skip.next), (0, 3, None));
}

#[test]
fn nothing_is_due_before_due() {
    let calendar = cron("0 * * * *", "");
    let due = at("2026-05-01T10:00:00Z");
    assert_eq!(
        plan(&calendar, CatchUp::All, due, due - 1),
        Plan {
            fire: vec![],
            skipped: 0,
            next: Some(due)
        }
    );
}

#[test]
fn interval_catch_up_counts_from_due() {
    let due = at("2026-05-01T10:00:00Z");
    let calendar = Calendar::compile(&every(60, due), due).unwrap();
    let now = due + 10 * 60 * SECOND + 5 * SECOND;
    let one = plan(&calendar, CatchUp::One, due, now);
    assert_eq!(one.fire, [due + 9 * 60 * SECOND, due + 10 * 60 * SECOND]);
    assert_eq!(one.skipped, 9);
    let all = plan(&calendar, CatchUp::All, due, now);
    assert_eq!(all.fire, ticks(due, 60 * SECOND, 11));
    assert_eq!(all.skipped, 0);
}
