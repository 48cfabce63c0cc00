//! The policies of a schedule, as their names are written in requests
//! and shown: [`CatchUp`] (what happens to ticks missed while no broker
//! ran) and [`Overlap`] (what happens when a tick fires while the previous
//! run is unfinished; the broker applies it, this crate only names it).

use std::fmt;
use std::str::FromStr;

/// What a firing pass does with ticks missed while no broker ran (ticks
/// older than [`sluice_limits::SCHEDULE_ON_TIME`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// `skip`: missed ticks are dropped; only on-time ticks fire.
    #[default]
    Skip,
    /// `one`: the latest missed tick fires, older ones are dropped.
    One,
    /// `all`: the latest [`sluice_limits::SCHEDULE_CATCH_UP_MAX`] missed
    /// ticks fire, older ones are dropped.
    All,
}

/// What happens when a tick fires while the job of the previous tick is
/// still unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlap {
    /// `allow`: the new job is enqueued anyway.
    #[default]
    Allow,
    /// `skip`: the tick is skipped.
    Skip,
    /// `cancel-previous`: the previous job is cancelled, the new one enqueued.
    CancelPrevious,
}

impl CatchUp {
    /// Every policy, in the order messages list them.
    pub const ALL: [CatchUp; 3] = [Self::Skip, Self::One, Self::All];

    /// The policy's name: `skip`, `one` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::One => "one",
            Self::All => "all",
        }
    }
}

impl Overlap {
    /// Every policy, in the order messages list them.
    pub const ALL: [Overlap; 3] = [Self::Allow, Self::Skip, Self::CancelPrevious];

    /// The policy's name: `allow`, `skip` or `cancel-previous`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Skip => "skip",
            Self::CancelPrevious => "cancel-previous",
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CatchUp {
    type Err = String;

    /// `skip`, `one` or `all`; otherwise a message listing them.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown catch-up policy {s:?} (expected skip, one or all)"))
    }
}

impl FromStr for Overlap {
    type Err = String;

    /// `allow`, `skip` or `cancel-previous`; otherwise a message listing them.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!("unknown overlap policy {s:?} (expected allow, skip or cancel-previous)")
            })
    }
}
