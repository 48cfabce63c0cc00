//! Time zones: looking a zone up by its IANA name in the zone database
//! compiled into this crate (jiff's bundled copy, never the host's
//! `/usr/share/zoneinfo`, so a schedule fires alike on every machine), and
//! the two conversions a schedule needs: the wall clock at an instant, and
//! the instant(s) of a wall-clock reading, with DST gaps and folds made
//! explicit.

use std::sync::OnceLock;

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};

use crate::civil::Civil;

/// The zone of a schedule that names none.
pub(crate) const UTC: &str = "UTC";

/// A time zone of the bundled database, with the name it is shown by.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    tz: TimeZone,
    name: String,
}

/// The instants at which a wall-clock reading occurs, in seconds since the
/// epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolved {
    /// The reading occurs once.
    Single(i64),
    /// The reading is skipped (a spring-forward gap); `end` is the first
    /// instant after the gap, the transition itself.
    Gap { end: i64 },
    /// The reading occurs twice (a fall-back fold): first with the offset
    /// before the transition, then with the offset after it.
    Fold { first: i64, second: i64 },
}

/// A stretch of time with one UTC offset in which every wall-clock
/// reading occurs exactly once: no gap, and no reading that also occurs
/// with the offset before or after the stretch. Seconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stretch {
    /// Seconds east of UTC.
    pub(crate) offset: i64,
    /// The first instant of the stretch.
    pub(crate) from: i64,
    /// The instant after the stretch.
    pub(crate) until: i64,
}

impl Stretch {
    /// Whether `secs` lies in the stretch.
    pub(crate) fn contains(&self, secs: i64) -> bool {
        self.from <= secs && secs < self.until
    }
}

/// The bundled zone database, opened once. `jiff::tz::db()` would prefer
/// the host's copy; this one only ever reads the data compiled in.
fn bundled() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

impl Zone {
    /// UTC.
    pub(crate) fn utc() -> Self {
        Self {
            tz: TimeZone::UTC,
            name: UTC.to_owned(),
        }
    }

    /// The zone of an IANA name (case-insensitive), shown by its canonical
    /// spelling.
    ///
    /// # Errors
    /// `unknown time zone "Mars/Base"` when the bundled database lacks it.
    pub(crate) fn named(name: &str) -> Result<Self, String> {
        let unknown = || format!("unknown time zone {name:?}");
        let tz = bundled().get(name).map_err(|_| unknown())?;
        // jiff answers "Etc/Unknown" with its placeholder zone: not a zone.
        if tz.is_unknown() {
            return Err(unknown());
        }
        let name = tz.iana_name().unwrap_or(name).to_owned();
        Ok(Self { tz, name })
    }

    /// The IANA name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is UTC.
    pub(crate) fn is_utc(&self) -> bool {
        self.name == UTC
    }

    /// The wall clock at `secs` seconds after the epoch; `None` outside
    /// the years jiff represents (-9999 to 9999).
    pub(crate) fn wall(&self, secs: i64) -> Option<Civil> {
        let at = Timestamp::from_second(secs).ok()?;
        let offset = self.tz.to_offset(at).seconds();
        Some(Civil::from_unix_seconds(
            secs.checked_add(i64::from(offset))?,
        ))
    }

    /// If `secs` lies in the first pass of a repeated range of readings
    /// (before a fall-back transition), that range: its first reading and
    /// the reading just after it.
    pub(crate) fn repeating_at(&self, secs: i64) -> Option<(Civil, Civil)> {
        let reading = self.wall(secs)?;
        if !matches!(self.resolve(reading)?, Resolved::Fold { first, .. } if first == secs) {
            return None;
        }
        let transition = self
            .tz
            .following(Timestamp::from_second(secs).ok()?)
            .next()?
            .timestamp()
            .as_second();
        let start = self.wall(transition)?;
        let end = self.wall(transition.checked_sub(1)?)?.next_second();
        (start < end).then_some((start, end))
    }

    /// The stretch of one offset with unrepeated readings around `secs`,
    /// if `secs` lies in one (not in either pass of a fold).
    pub(crate) fn stretch_at(&self, secs: i64) -> Option<Stretch> {
        let at = Timestamp::from_second(secs).ok()?;
        let offset_at = |t: Timestamp| i64::from(self.tz.to_offset(t).seconds());
        let offset = offset_at(at);
        let after = Timestamp::from_second(secs.checked_add(1)?).ok()?;
        // A fold's second pass ends `before - offset` after its transition.
        let from = match self.tz.preceding(after).next() {
            Some(transition) => {
                let start = transition.timestamp();
                let before = offset_at(start.checked_sub(jiff::SignedDuration::from_secs(1)).ok()?);
                start.as_second() + (before - offset).max(0)
            }
            None => i64::MIN,
        };
        // A fold's first pass starts `offset - next` before its transition.
        let until = match self.tz.following(at).next() {
            Some(transition) => {
                let next = i64::from(transition.offset().seconds());
                transition.timestamp().as_second() - (offset - next).max(0)
            }
            None => i64::MAX,
        };
        let stretch = Stretch {
            offset,
            from,
            until,
        };
        stretch.contains(secs).then_some(stretch)
    }

    /// The instants of a wall-clock reading; `None` outside the years
    /// jiff represents.
    pub(crate) fn resolve(&self, civil: Civil) -> Option<Resolved> {
        let dt = DateTime::new(
            i16::try_from(civil.year).ok()?,
            civil.month as i8,
            civil.day as i8,
            civil.hour as i8,
            civil.minute as i8,
            civil.second as i8,
            0,
        )
        .ok()?;
        let local = civil.to_unix_seconds()?;
        let at = |offset: jiff::tz::Offset| local.checked_sub(i64::from(offset.seconds()));
        Some(match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => Resolved::Single(at(offset)?),
            AmbiguousOffset::Gap { after, .. } => {
                // Read with the new offset the reading lies before the
                // transition; the transition is the gap's end.
                let before_gap = Timestamp::from_second(at(after)?).ok()?;
                let end = self.tz.following(before_gap).next()?.timestamp();
                Resolved::Gap {
                    end: end.as_second(),
                }
            }
            AmbiguousOffset::Fold { before, after } => Resolved::Fold {
                first: at(before)?,
                second: at(after)?,
            },
        })
    }
}
