//! Schedules: periodic jobs kept in the store (issue 21). The timing rules
//! (cron expressions, intervals, zones, DST, catch-up) are the pure crate
//! `sluice-schedule`; this layer, between the backend and the services,
//! owns how a schedule is kept and fired:
//!
//! - `record.rs`: a schedule as stored (the contract's `Schedule`, encoded
//!   as the body of a backend's [`crate::backend::StoredSchedule`]), and
//!   the job of a tick (its idempotency key `schedule:<name>:<tick>` and
//!   its `sluice-schedule`, `sluice-scheduled-for` headers);
//! - `firing.rs`: the loop that enqueues due ticks, once each however many
//!   brokers fire them.
//!
//! The Admin calls that create and change schedules are the service's
//! (`service/schedule_rpc.rs`).

pub mod firing;
pub mod record;

use std::time::Duration;

use sluice_schedule::Millis;

use crate::clock::{Clock, TokioClock};

pub use firing::Firing;

/// Why ticks were skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Missed while no broker ran, dropped by the catch-up policy.
    CatchUp,
    /// The previous tick's job was unfinished (overlap `skip`).
    Overlap,
}

impl Skipped {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CatchUp => "catch_up",
            Self::Overlap => "overlap",
        }
    }
}

/// Told of every tick (the metrics).
pub trait TickObserver: Send + Sync {
    /// A tick of `schedule` (whose jobs go to `queue`) was enqueued `lag`
    /// after its time.
    fn fired(&self, schedule: &str, queue: &str, lag: Duration);
    /// `count` ticks were skipped.
    fn skipped(&self, schedule: &str, queue: &str, why: Skipped, count: u64);
}

/// The broker's time in milliseconds since the epoch.
pub fn now_millis(clock: &TokioClock) -> Millis {
    i64::try_from(clock.now().as_micros() / 1000).unwrap_or(i64::MAX)
}
