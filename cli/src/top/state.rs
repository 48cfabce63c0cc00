//! What `sluice top` shows: the latest [`Snapshot`] of the broker (Stats,
//! the workers, the running jobs with their progress and the schedules due
//! soonest), and the error of the latest refresh, if it failed.
//! A failed refresh keeps the last snapshot on screen: the view goes on
//! while the broker is away and catches up when it is back.

use std::time::SystemTime;

use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;

/// One refresh's data.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Per-queue stats and the recent failures.
    pub stats: pb::StatsResponse,
    /// The open Lease streams.
    pub workers: Vec<pb::WorkerInfo>,
    /// The first running (LEASED) jobs, with their progress.
    pub running: Vec<pb::Job>,
    /// The schedules that fire soonest, soonest first.
    pub schedules: Vec<pb::Schedule>,
    /// When it was taken.
    pub taken_at: SystemTime,
}

/// The view's state between frames.
#[derive(Debug, Clone)]
pub struct TopState {
    /// The broker's URL, for the title.
    pub url: String,
    /// The latest successful refresh.
    pub snapshot: Option<Snapshot>,
    /// Why the latest refresh failed, until one succeeds.
    pub error: Option<String>,
}

impl TopState {
    /// Nothing fetched yet.
    pub fn new(url: String) -> Self {
        Self {
            url,
            snapshot: None,
            error: None,
        }
    }

    /// Takes a refresh's outcome: a new snapshot clears the error; an
    /// error keeps the old snapshot.
    pub fn update(&mut self, result: Result<Snapshot, CliError>) {
        match result {
            Ok(snapshot) => {
                self.snapshot = Some(snapshot);
                self.error = None;
            }
            Err(e) => self.error = Some(e.to_string()),
        }
    }
}

/// How many of the schedules due soonest are shown.
pub const SCHEDULES_SHOWN: u32 = 5;

/// How many running jobs are shown.
pub const RUNNING_SHOWN: u32 = 8;

/// Fetches Stats, the workers, the running jobs and the schedules due soonest.
///
/// # Errors
/// The broker's refusal, or UNAVAILABLE while it cannot be reached.
pub async fn fetch(conn: &mut Connection) -> Result<Snapshot, CliError> {
    let stats = conn.stats().await?;
    let workers = conn.workers().await?;
    let running = conn.running_jobs(RUNNING_SHOWN).await?;
    let schedules = conn.soonest_schedules(SCHEDULES_SHOWN).await?;
    Ok(Snapshot {
        stats,
        workers,
        running,
        schedules,
        taken_at: SystemTime::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            stats: pb::StatsResponse::default(),
            workers: Vec::new(),
            running: Vec::new(),
            schedules: Vec::new(),
            taken_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_snapshot_and_a_good_one_clears_the_error() {
        let mut state = TopState::new("http://127.0.0.1:1".into());
        state.update(Ok(snapshot()));
        state.update(Err(CliError::Local("gone".into())));
        assert!(state.snapshot.is_some());
        assert_eq!(state.error.as_deref(), Some("gone"));
        state.update(Ok(snapshot()));
        assert!(state.error.is_none());
    }
}
