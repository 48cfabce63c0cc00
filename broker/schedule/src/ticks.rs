//! Consecutive ticks of a calendar, exactly as repeated
//! [`Calendar::next_after`] gives them, but cheaper for a firing pass that
//! walks a long run of missed ticks: within a stretch of one UTC offset
//! (no gap, no repeated reading), the next tick of a cron expression is
//! the next matching reading at that offset, found without any zone
//! lookup. Near a transition, or for an interval, it is `next_after`.

use crate::calendar::Rule;
use crate::civil::Civil;
use crate::zone::Stretch;
use crate::{Calendar, Millis};

/// The ticks from a first one on.
pub(crate) struct Ticks<'c> {
    calendar: &'c Calendar,
    next: Option<Millis>,
    /// The stretch the last tick lay in, when it lay in one.
    stretch: Option<Stretch>,
}

impl Calendar {
    /// The ticks from `first` (a tick, or `None` for none) on.
    pub(crate) fn ticks_from(&self, first: Option<Millis>) -> Ticks<'_> {
        Ticks {
            calendar: self,
            next: first,
            stretch: None,
        }
    }
}

impl Iterator for Ticks<'_> {
    type Item = Millis;

    fn next(&mut self) -> Option<Millis> {
        let tick = self.next?;
        self.next = self.after(tick);
        Some(tick)
    }
}

impl Ticks<'_> {
    /// The tick after `tick`.
    fn after(&mut self, tick: Millis) -> Option<Millis> {
        if let Some(next) = self.within_stretch(tick) {
            return Some(next);
        }
        self.calendar.next_after(tick)
    }

    /// The tick after `tick` if it lies in the stretch of `tick`, found on
    /// the wall clock alone; `None` when `next_after` must answer.
    fn within_stretch(&mut self, tick: Millis) -> Option<Millis> {
        let Rule::Cron(cron) = &self.calendar.rule else {
            return None;
        };
        if tick.rem_euclid(1000) != 0 {
            return None;
        }
        let secs = tick / 1000;
        if !self.stretch.is_some_and(|s| s.contains(secs)) {
            self.stretch = self.calendar.zone.stretch_at(secs);
        }
        let stretch = self.stretch?;
        let reading: Civil =
            Civil::from_unix_seconds(secs.checked_add(stretch.offset)?).next_second();
        let matched = cron.next_match(reading, reading.year + 1)?;
        let next = matched.to_unix_seconds()?.checked_sub(stretch.offset)?;
        let next = next.checked_mul(1000)?;
        (next / 1000 < stretch.until && self.calendar.within_bounds(next)).then_some(next)
    }
}
