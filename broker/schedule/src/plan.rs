//! [`plan`]: what one firing pass does for a schedule whose stored next
//! tick has come: which ticks to enqueue now, how many missed ticks the
//! catch-up policy drops, and the next tick to store.

use std::collections::VecDeque;

use sluice_limits::{SCHEDULE_CATCH_UP_MAX, SCHEDULE_ON_TIME};

use crate::{Calendar, CatchUp, Millis};

/// What a firing pass does for one schedule whose stored next tick `due`
/// is <= now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Ticks to enqueue now, oldest first.
    pub fire: Vec<Millis>,
    /// Missed ticks dropped by the catch-up policy (a lower bound after
    /// very long downtime of a cron schedule; see [`plan`]).
    pub skipped: u64,
    /// The first tick strictly after now; `None`: the schedule has ended.
    pub next: Option<Millis>,
}

/// Missed ticks a pass counts one by one before it stops counting.
const MAX_COUNTED: u64 = 100_000;
/// Most ticks looked at in one window when a pass looks for the latest
/// missed ticks after it stopped counting.
const WINDOW_CAP: u64 = 1_000;
/// Most windows tried.
const MAX_WINDOWS: u32 = 96;

/// What a firing pass does, as of `now`, for a schedule whose stored next
/// tick is `due`.
///
/// The due ticks are `due` (if within the schedule's start and end) and
/// every tick after it up to `now` inclusive. A due tick no older than
/// [`SCHEDULE_ON_TIME`] (`tick >= now - 10 s`) is on time and fires
/// whatever the policy. Older ones were missed: [`CatchUp::Skip`] drops
/// them all, [`CatchUp::One`] fires the latest one, [`CatchUp::All`] the
/// latest [`SCHEDULE_CATCH_UP_MAX`]; every dropped one counts in
/// `skipped`.
///
/// Cost: an interval schedule is counted arithmetically, exactly. A cron
/// schedule's missed ticks are counted one by one up to 100,000 (a day of
/// a per-second expression); past that the pass stops counting, finds the
/// latest missed ticks near `now - 10 s` in small windows, and `skipped`
/// is a lower bound. If `due > now`, nothing is due.
pub fn plan(calendar: &Calendar, catch_up: CatchUp, due: Millis, now: Millis) -> Plan {
    let next = calendar.next_after(now);
    if due > now {
        return Plan {
            fire: Vec::new(),
            skipped: 0,
            next,
        };
    }
    let on_time_from = now.saturating_sub(SCHEDULE_ON_TIME.as_millis() as i64);
    let keep = match catch_up {
        CatchUp::Skip => 0,
        CatchUp::One => 1,
        CatchUp::All => SCHEDULE_CATCH_UP_MAX,
    };
    let missed = missed(calendar, due, on_time_from, keep);
    let skipped = missed.count - missed.latest.len() as u64;
    let mut fire = missed.latest;
    let mut tick = if due >= on_time_from && calendar.within_bounds(due) {
        Some(due)
    } else {
        calendar.next_after(due.max(on_time_from.saturating_sub(1)))
    };
    while let Some(at) = tick
        && at <= now
    {
        fire.push(at);
        tick = calendar.next_after(at);
    }
    Plan {
        fire,
        skipped,
        next,
    }
}

/// Missed ticks: how many, and the latest of them, oldest first.
#[derive(Debug, Default)]
struct Missed {
    count: u64,
    latest: Vec<Millis>,
}

/// The ticks from `due` (inclusive, if within bounds) to `before`
/// (exclusive): their count and the latest `keep`.
fn missed(calendar: &Calendar, due: Millis, before: Millis, keep: usize) -> Missed {
    if due >= before {
        return Missed::default();
    }
    let due_counts = calendar.within_bounds(due);
    if let Some((mut count, mut latest)) = calendar.interval_ticks_between(due, before, keep) {
        if due_counts {
            count += 1;
            if latest.len() < keep {
                latest.insert(0, due);
            }
        }
        return Missed { count, latest };
    }
    let first = if due_counts {
        Some(due)
    } else {
        calendar.next_after(due)
    };
    let counted = walk(calendar, first, before, keep, MAX_COUNTED);
    if !counted.capped || keep == 0 {
        return counted.into_missed();
    }
    let Some(cursor) = counted.last else {
        return counted.into_missed();
    };
    // Stopped counting at `cursor`: find a window (lo, before) holding at
    // least `keep` ticks yet few enough to walk, by widening it from
    // `before` and then halving between too narrow and too wide.
    let per_tick = (i128::from(cursor) - i128::from(due)) / i128::from(MAX_COUNTED);
    let guess = (per_tick * 2 * keep as i128).max(1000);
    let mut lo =
        i64::try_from((i128::from(before) - guess).max(i128::from(cursor))).unwrap_or(cursor);
    let (mut narrow, mut wide) = (before, None::<Millis>);
    for _ in 0..MAX_WINDOWS {
        let window = walk(calendar, calendar.next_after(lo), before, keep, WINDOW_CAP);
        if !window.capped && (window.count >= keep as u64 || lo == cursor) {
            let mut latest = if lo == cursor {
                counted.ring
            } else {
                VecDeque::new()
            };
            latest.extend(window.ring);
            while latest.len() > keep {
                latest.pop_front();
            }
            return Missed {
                count: counted.count + window.count,
                latest: latest.into(),
            };
        }
        if window.capped {
            wide = Some(lo);
        } else {
            narrow = lo;
        }
        lo = match wide {
            Some(wide) => wide + (narrow - wide) / 2,
            None => before
                .saturating_sub(before.saturating_sub(lo).saturating_mul(4))
                .max(cursor),
        };
    }
    counted.into_missed()
}

/// Ticks walked one by one.
struct Walk {
    count: u64,
    /// The latest `keep` ticks, oldest first.
    ring: VecDeque<Millis>,
    last: Option<Millis>,
    /// Whether the walk stopped at its cap before `before`.
    capped: bool,
}

impl Walk {
    fn into_missed(self) -> Missed {
        Missed {
            count: self.count,
            latest: self.ring.into(),
        }
    }
}

/// Walks the ticks from `first` on while they are before `before`, at
/// most `cap` of them, keeping the latest `keep`.
fn walk(calendar: &Calendar, first: Option<Millis>, before: Millis, keep: usize, cap: u64) -> Walk {
    let mut walk = Walk {
        count: 0,
        ring: VecDeque::with_capacity(keep),
        last: None,
        capped: false,
    };
    for at in calendar.ticks_from(first) {
        if at >= before {
            break;
        }
        if walk.count == cap {
            walk.capped = true;
            break;
        }
        walk.count += 1;
        walk.last = Some(at);
        if keep > 0 {
            if walk.ring.len() == keep {
                walk.ring.pop_front();
            }
            walk.ring.push_back(at);
        }
    }
    walk
}
