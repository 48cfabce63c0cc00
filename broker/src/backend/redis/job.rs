//! A job as the scripts answer it (the fields of `scripts::FIELDS`, in
//! their order) read into a [`JobSnapshot`], and the names of the states
//! in a job hash.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::Value;
use sluice_queue::{JobSnapshot, JobState, LeaseSnapshot, Progress, Timestamp};
use tracing::error;

use super::scripts::{FIELDS, reply};
use crate::backend::BackendError;

/// The state a job hash names; another name is a defect.
pub fn state_of(name: &str) -> Result<JobState, BackendError> {
    JobState::from_stored_name(name).ok_or_else(|| reply::malformed("a job state"))
}

/// A time in microseconds since the epoch.
pub fn timestamp(us: u64) -> Timestamp {
    Timestamp::from_micros(us)
}

/// The job of a reply of [`FIELDS`].
pub fn job(fields: &[Value]) -> Result<JobSnapshot, BackendError> {
    let field = |name: &str| -> Result<&Value, BackendError> {
        let at = FIELDS
            .iter()
            .position(|f| *f == name)
            .ok_or_else(|| reply::malformed("a known field"))?;
        reply::at(fields, at)
    };
    let text = |name: &str| reply::text(field(name)?);
    let micros = |name: &str| -> Result<Option<Timestamp>, BackendError> {
        Ok(reply::number::<u64>(field(name)?)?.map(timestamp))
    };
    let id = reply::string(field("id")?)?
        .parse()
        .map_err(|_| reply::malformed("a job id"))?;
    let headers: BTreeMap<String, String> =
        serde_json::from_str(&text("h")?.unwrap_or_else(|| "{}".into())).map_err(|e| {
            error!(error = %e, "job headers in Redis are not a JSON object of strings");
            BackendError::Internal
        })?;
    let lease = match text("li")? {
        None => None,
        Some(lease_id) => Some(LeaseSnapshot {
            lease_id: lease_id
                .parse()
                .map_err(|_| reply::malformed("a lease id"))?,
            worker_id: text("w")?.unwrap_or_default(),
            expires_at: micros("le")?.unwrap_or(Timestamp::from_micros(0)),
        }),
    };
    let state = state_of(&reply::string(field("s")?)?)?;
    let progress = match reply::number::<u32>(field("gp")?)? {
        None => None,
        Some(percent) => Some(Progress {
            percent,
            message: text("gm")?.unwrap_or_default(),
            attempt: reply::number(field("ga")?)?.unwrap_or(0),
            updated_at: micros("gt")?.unwrap_or(Timestamp::from_micros(0)),
        }),
    };
    let result = match field("rs")? {
        Value::Nil => None,
        value => Some(reply::bytes(value)?.into()),
    };
    Ok(JobSnapshot {
        id,
        queue: reply::string(field("q")?)?,
        job_type: reply::string(field("t")?)?,
        key: text("fk")?,
        state,
        priority: reply::int(field("pr")?)?,
        attempt: reply::number(field("a")?)?.unwrap_or(0),
        max_attempts: reply::int(field("m")?)?,
        cancel_requested: text("c")?.as_deref() == Some("1"),
        timeout: Duration::from_millis(reply::int(field("to")?)?),
        payload: reply::bytes(field("p")?)?.into(),
        headers: headers.into_iter().collect(),
        created_at: micros("ct")?.unwrap_or(Timestamp::from_micros(0)),
        run_at: micros("ra")?.unwrap_or(Timestamp::from_micros(0)),
        finished_at: micros("ft")?,
        last_error: text("e")?,
        lease: lease.filter(|_| state == JobState::Leased),
        progress,
        result,
    })
}
