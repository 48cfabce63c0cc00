//! Job states as flag values (`--state dead`), and a job's progress in a
//! table cell. The JSON documents of
//! `--output json`, state names and payload decoding are the contract's
//! own ([`sluice_proto::json`]), shared with the broker's HTTP API.

use clap::ValueEnum;
use sluice_proto::v1 as pb;

pub use sluice_proto::json::{
    Payload, job_json, sorted, source_group_json, state_name, stats_json, workers_json,
};

/// A job state as a flag value (`--state dead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Waiting for its run_at or a retry's backoff.
    Scheduled,
    /// Due, waiting for a worker.
    Ready,
    /// Handed to a worker.
    Leased,
    /// Acknowledged.
    Succeeded,
    /// Out of attempts, or failed for good.
    Dead,
    /// Cancelled by an operator.
    Cancelled,
}

impl From<StateArg> for pb::JobState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Scheduled => Self::Scheduled,
            StateArg::Ready => Self::Ready,
            StateArg::Leased => Self::Leased,
            StateArg::Succeeded => Self::Succeeded,
            StateArg::Dead => Self::Dead,
            StateArg::Cancelled => Self::Cancelled,
        }
    }
}

/// A job's progress in `width` characters at most: `40% message`, or `-`.
pub fn progress_cell(job: &pb::Job, width: usize) -> String {
    match &job.progress {
        None => "-".to_owned(),
        Some(p) if p.message.is_empty() => format!("{}%", p.percent),
        Some(p) => crate::output::one_line(&format!("{}% {}", p.percent, p.message), width),
    }
}
