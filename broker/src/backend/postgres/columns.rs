//! The columns of a job as every job query selects them, by name, from
//! the unfinished table (`sluice_jobs`) and the finished one
//! (`sluice_finished`) alike, and a row of them as a [`JobSnapshot`]
//! (with its progress, a JSON object written by `leases.rs`);
//! the names of the states in the `state` columns.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use sluice_queue::{JobSnapshot, JobState, LeaseSnapshot, Progress, Timestamp};
use tokio_postgres::Row;
use tracing::error;
use uuid::Uuid;

use super::sql::get;
use crate::backend::BackendError;

/// Which job table a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `sluice_jobs`: SCHEDULED, READY and LEASED jobs.
    Unfinished,
    /// `sluice_finished`: SUCCEEDED, DEAD and CANCELLED jobs.
    Finished,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unfinished => "sluice_jobs",
            Self::Finished => "sluice_finished",
        }
    }

    /// The table that holds jobs in `state`.
    pub fn of(state: JobState) -> Self {
        if state.is_unfinished() {
            Self::Unfinished
        } else {
            Self::Finished
        }
    }
}

/// Each column a job query returns: its name, and its expression in the
/// unfinished and in the finished table (where the lease columns are not).
const COLUMNS: &[(&str, &str, &str)] = &[
    ("id", "id", "id"),
    ("seq", "seq", "seq"),
    ("queue", "queue", "queue"),
    ("job_type", "job_type", "job_type"),
    ("payload", "payload", "payload"),
    ("headers", "headers::text", "headers::text"),
    ("priority", "priority", "priority"),
    ("state", "state", "state"),
    ("attempt", "attempt", "attempt"),
    ("max_attempts", "max_attempts", "max_attempts"),
    ("timeout_ms", "timeout_ms", "timeout_ms"),
    ("cancel_requested", "cancel_requested", "false"),
    ("last_error", "last_error", "last_error"),
    ("created_at", "created_at", "created_at"),
    ("run_at", "run_at", "run_at"),
    ("lease_id", "lease_id", "NULL::uuid"),
    ("worker_id", "worker_id", "NULL::text"),
    ("lease_expires_at", "lease_expires_at", "NULL::timestamptz"),
    ("finished_at", "NULL::timestamptz", "finished_at"),
    ("progress", "progress::text", "progress::text"),
    ("result", "NULL::bytea", "result"),
    ("key", "key", "key"),
];

/// The select list of a job query on `table`, each column named, its
/// table's columns qualified by `alias` (as in `j.id`) if given.
pub fn select_list(table: Table, alias: Option<&str>) -> String {
    COLUMNS
        .iter()
        .map(|&(name, unfinished, finished)| {
            let expr = match table {
                Table::Unfinished => unfinished,
                Table::Finished => finished,
            };
            match alias {
                Some(alias) if !expr.starts_with("NULL") && expr != "false" => {
                    format!("{alias}.{expr} AS {name}")
                }
                _ => format!("{expr} AS {name}"),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`select_list`] of each table without an alias, built once.
pub fn columns(table: Table) -> &'static str {
    static UNFINISHED: OnceLock<String> = OnceLock::new();
    static FINISHED: OnceLock<String> = OnceLock::new();
    match table {
        Table::Unfinished => UNFINISHED.get_or_init(|| select_list(table, None)),
        Table::Finished => FINISHED.get_or_init(|| select_list(table, None)),
    }
}

/// The state a `state` column names; another name (the tables' CHECK
/// constraints allow none) is a defect.
pub fn state_of(name: &str) -> Result<JobState, BackendError> {
    JobState::from_stored_name(name).ok_or_else(|| {
        error!(state = name, "unknown job state in the database");
        BackendError::Internal
    })
}

/// The `state` column of `row`.
pub fn state(row: &Row) -> Result<JobState, BackendError> {
    state_of(get(row, "state")?)
}

/// A `timestamptz` as a [`Timestamp`].
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from_system_time(t)
}

/// A [`Timestamp`] as a `timestamptz`.
pub fn system_time(t: Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(t.as_micros())
}

/// A duration in whole milliseconds, as the interval arithmetic takes it.
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The `seq` column: enqueue order, and ListJobs' page token.
pub fn seq(row: &Row) -> Result<i64, BackendError> {
    get(row, "seq")
}

/// A row of [`select_list`] as a job.
pub fn job(row: &Row) -> Result<JobSnapshot, BackendError> {
    let headers: String = get(row, "headers")?;
    // Stored from a sorted list of valid names: a map reads back sorted.
    let headers: BTreeMap<String, String> = serde_json::from_str(&headers).map_err(|e| {
        error!(error = %e, "job headers in the database are not a JSON object of strings");
        BackendError::Internal
    })?;
    let lease_id: Option<Uuid> = get(row, "lease_id")?;
    let lease = match lease_id {
        None => None,
        Some(lease_id) => Some(LeaseSnapshot {
            lease_id,
            worker_id: get::<Option<String>>(row, "worker_id")?.unwrap_or_default(),
            expires_at: get::<Option<SystemTime>>(row, "lease_expires_at")?
                .map_or(Timestamp::from_micros(0), timestamp),
        }),
    };
    let timeout_ms: i64 = get(row, "timeout_ms")?;
    Ok(JobSnapshot {
        id: get(row, "id")?,
        queue: get(row, "queue")?,
        job_type: get(row, "job_type")?,
        key: get(row, "key")?,
        state: state(row)?,
        priority: get(row, "priority")?,
        attempt: non_negative(get(row, "attempt")?),
        max_attempts: non_negative(get(row, "max_attempts")?),
        cancel_requested: get(row, "cancel_requested")?,
        timeout: Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(0)),
        payload: get::<Vec<u8>>(row, "payload")?.into(),
        headers: headers.into_iter().collect(),
        created_at: timestamp(get(row, "created_at")?),
        run_at: timestamp(get(row, "run_at")?),
        finished_at: get::<Option<SystemTime>>(row, "finished_at")?.map(timestamp),
        last_error: get(row, "last_error")?,
        lease,
        progress: get::<Option<String>>(row, "progress")?
            .as_deref()
            .map(progress)
            .transpose()?,
        result: get::<Option<Vec<u8>>>(row, "result")?.map(Bytes::from),
    })
}

/// The `progress` column, a JSON object as `leases.rs` writes it.
fn progress(json: &str) -> Result<Progress, BackendError> {
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let number = |name: &str| value.get(name).and_then(serde_json::Value::as_u64);
    let parsed = (|| {
        Some(Progress {
            percent: u32::try_from(number("percent")?).ok()?,
            message: value.get("message")?.as_str()?.to_owned(),
            attempt: u32::try_from(number("attempt")?).ok()?,
            updated_at: Timestamp::from_micros(number("at_us")?),
        })
    })();
    parsed.ok_or_else(|| {
        error!("job progress in the database is not the object Sluice writes");
        BackendError::Internal
    })
}

fn non_negative(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_tables_select_the_same_named_columns() {
        let names = |list: &str| -> Vec<String> {
            list.split(", ")
                .map(|c| c.rsplit(" AS ").next().unwrap_or_default().to_owned())
                .collect()
        };
        let unfinished = select_list(Table::Unfinished, Some("j"));
        assert_eq!(names(&unfinished), names(columns(Table::Finished)));
        assert!(unfinished.contains("j.headers::text AS headers"));
        assert!(unfinished.contains("NULL::timestamptz AS finished_at"));
        assert!(columns(Table::Finished).contains("false AS cancel_requested"));
    }
}
