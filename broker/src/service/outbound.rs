//! Outbound translation: what the backend answers ([`JobSnapshot`]s,
//! failed attempts, states, times) as `sluice.v1` messages. Every backend's
//! jobs reach the wire through these functions, so a job reads the same
//! whichever backend holds it.

use prost_types::Timestamp as PbTimestamp;
use sluice_proto::v1 as pb;
use sluice_queue::{FailedAttempt, JobSnapshot, JobState, Timestamp};

/// The wire value of a state.
pub fn state_to_pb(state: JobState) -> pb::JobState {
    match state {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::Ready => pb::JobState::Ready,
        JobState::Leased => pb::JobState::Leased,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Dead => pb::JobState::Dead,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

/// A timestamp on the wire.
pub fn timestamp_to_pb(t: Timestamp) -> PbTimestamp {
    let (seconds, nanos) = t.to_unix_parts();
    PbTimestamp { seconds, nanos }
}

/// A failed attempt on the wire.
pub fn failure_to_pb(failure: FailedAttempt) -> pb::FailedAttempt {
    pb::FailedAttempt {
        failed_at: Some(timestamp_to_pb(failure.failed_at)),
        job_id: failure.job_id.to_string(),
        queue: failure.queue,
        job_type: failure.job_type,
        attempt: failure.attempt,
        error: failure.error,
        dead: failure.dead,
        worker_id: failure.worker_id,
    }
}

/// A job on the wire.
pub fn job_to_pb(job: JobSnapshot) -> pb::Job {
    pb::Job {
        id: job.id.to_string(),
        queue: job.queue,
        job_type: job.job_type,
        payload: job.payload,
        headers: job.headers.into_iter().collect(),
        priority: job.priority,
        state: state_to_pb(job.state).into(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
        timeout: Some(sluice_proto::duration_to_pb(job.timeout)),
        created_at: Some(timestamp_to_pb(job.created_at)),
        run_at: Some(timestamp_to_pb(job.run_at)),
        last_error: job.last_error.unwrap_or_default(),
        lease_expires_at: job.lease.as_ref().map(|l| timestamp_to_pb(l.expires_at)),
        worker_id: job.lease.map(|l| l.worker_id).unwrap_or_default(),
        cancel_requested: job.cancel_requested,
        finished_at: job.finished_at.map(timestamp_to_pb),
        progress: job.progress.map(|p| pb::JobProgress {
            percent: p.percent,
            message: p.message,
            attempt: p.attempt,
            updated_at: Some(timestamp_to_pb(p.updated_at)),
        }),
        result: job.result.unwrap_or_default(),
        key: job.key.unwrap_or_default(),
    }
}

/// A leased job on the wire, as its Lease stream sends it.
pub fn leased_job_to_pb(job: JobSnapshot) -> pb::LeasedJob {
    let (lease_id, lease_expires_at) = match &job.lease {
        Some(lease) => (
            lease.lease_id.to_string(),
            Some(timestamp_to_pb(lease.expires_at)),
        ),
        None => (String::new(), None),
    };
    pb::LeasedJob {
        lease_id,
        lease_expires_at,
        job: Some(job_to_pb(job)),
    }
}
