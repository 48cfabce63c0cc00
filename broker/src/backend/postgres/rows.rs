//! Rows to the contract's messages: the columns every job query selects
//! (from the unfinished and the finished table alike), and their
//! conversion to [`pb::Job`] and [`pb::LeasedJob`].

use std::collections::HashMap;
use std::time::SystemTime;

use sluice_proto::v1 as pb;
use sluice_queue::{JobState, Timestamp};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::service::convert;

/// The columns of an unfinished job, in the order [`job`] reads them.
pub const UNFINISHED_COLUMNS: &str = "id, queue, job_type, payload, headers::text, priority, \
     state, attempt, max_attempts, timeout_ms, cancel_requested, last_error, created_at, run_at, \
     lease_id, worker_id, lease_expires_at, NULL::timestamptz, seq";

/// The same columns of a finished job.
pub const FINISHED_COLUMNS: &str = "id, queue, job_type, payload, headers::text, priority, \
     state, attempt, max_attempts, timeout_ms, false, last_error, created_at, run_at, \
     NULL::uuid, NULL::text, NULL::timestamptz, finished_at, seq";

/// A job state's name in the `state` columns.
pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Scheduled => "scheduled",
        JobState::Ready => "ready",
        JobState::Leased => "leased",
        JobState::Succeeded => "succeeded",
        JobState::Dead => "dead",
        JobState::Cancelled => "cancelled",
    }
}

/// The state a `state` column names.
///
/// # Panics
/// On a name the tables' CHECK constraints do not allow: a broken invariant.
pub fn state_of(name: &str) -> JobState {
    JobState::ALL
        .into_iter()
        .find(|s| state_name(*s) == name)
        .unwrap_or_else(|| panic!("unknown job state {name:?} in the database"))
}

/// A `timestamptz` column as a [`Timestamp`].
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from_system_time(t)
}

/// A row of [`UNFINISHED_COLUMNS`] or [`FINISHED_COLUMNS`] as a job.
pub fn job(row: &Row) -> pb::Job {
    let headers: String = row.get(4);
    let headers: HashMap<String, String> = serde_json::from_str(&headers).unwrap_or_default();
    let lease_expires_at: Option<SystemTime> = row.get(16);
    let finished_at: Option<SystemTime> = row.get(17);
    let state = state_of(row.get(6));
    pb::Job {
        id: row.get::<_, Uuid>(0).to_string(),
        queue: row.get(1),
        job_type: row.get(2),
        payload: row.get::<_, Vec<u8>>(3).into(),
        headers,
        priority: row.get(5),
        state: convert::state_to_pb(state).into(),
        attempt: non_negative(row.get(7)),
        max_attempts: non_negative(row.get(8)),
        timeout: Some(sluice_proto::duration_to_pb(
            std::time::Duration::from_millis(u64::try_from(row.get::<_, i64>(9)).unwrap_or(0)),
        )),
        cancel_requested: row.get(10),
        last_error: row.get::<_, Option<String>>(11).unwrap_or_default(),
        created_at: Some(convert::timestamp_to_pb(timestamp(row.get(12)))),
        run_at: Some(convert::timestamp_to_pb(timestamp(row.get(13)))),
        worker_id: row.get::<_, Option<String>>(15).unwrap_or_default(),
        lease_expires_at: lease_expires_at.map(|t| convert::timestamp_to_pb(timestamp(t))),
        finished_at: finished_at.map(|t| convert::timestamp_to_pb(timestamp(t))),
    }
}

/// A just-leased row of [`UNFINISHED_COLUMNS`] as the message its stream sends.
pub fn leased_job(row: &Row) -> pb::LeasedJob {
    let lease_id: Option<Uuid> = row.get(14);
    let job = job(row);
    pb::LeasedJob {
        lease_id: lease_id.map(|id| id.to_string()).unwrap_or_default(),
        lease_expires_at: job.lease_expires_at,
        job: Some(job),
    }
}

fn non_negative(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}
