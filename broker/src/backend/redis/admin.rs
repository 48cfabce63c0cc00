//! The operator's actions on jobs and queues: RetryJob, CancelJob,
//! PurgeQueue, PauseQueue and ResumeQueue, each a script. Which states an
//! action takes a job from, and its refusal, are the queue crate's
//! ([`Action`]); the room a queue has is counted in the script.

use sluice_queue::{Action, JobState, QueueError, check_room};
use tracing::info;
use uuid::Uuid;

use super::scripts::{reply, scripts};
use super::{Inner, job};
use crate::backend::BackendError;

type Result<T> = std::result::Result<T, BackendError>;

/// Jobs deleted per step of a purge.
const PURGE_STEP: u64 = 1000;

/// A script's answer that the action does not apply: an unknown job, or
/// its state.
fn refused(answer: &[redis::Value], id: Uuid, action: Action) -> Result<BackendError> {
    match reply::string(reply::at(answer, 0)?)?.as_str() {
        "unknown" => Ok(QueueError::UnknownJob { job_id: id }.into()),
        "wrong" => {
            let state = job::state_of(&reply::string(reply::at(answer, 1)?)?)?;
            Ok(action.wrong_state(id, state).into())
        }
        _ => Err(reply::malformed("a refusal")),
    }
}

pub(super) async fn retry(inner: &Inner, id: Uuid) -> Result<()> {
    let limit = inner.queue.max_queue_size;
    let answer = inner
        .call()
        .arg(id.to_string())
        .arg(limit.map_or_else(String::new, |l| l.to_string()))
        .run(&inner.conn, &scripts().retry)
        .await?;
    let answer = reply::items(&answer)?;
    match reply::string(reply::at(answer, 0)?)?.as_str() {
        "ok" => {
            let (queue, job_type) = (
                reply::string(reply::at(answer, 1)?)?,
                reply::string(reply::at(answer, 2)?)?,
            );
            info!(job_id = %id, %queue, %job_type, attempt = 0, "job retried by operator");
            inner.streams.wake();
            Ok(())
        }
        "full" => {
            let queue = reply::string(reply::at(answer, 1)?)?;
            let limit = limit.unwrap_or(0);
            Err(check_room(&queue, limit, Some(limit))
                .err()
                .map_or_else(|| reply::malformed("a full queue"), BackendError::from))
        }
        _ => Err(refused(answer, id, Action::Retry)?),
    }
}

pub(super) async fn cancel(inner: &Inner, id: Uuid) -> Result<JobState> {
    let answer = inner
        .call()
        .arg(id.to_string())
        .run(&inner.conn, &scripts().cancel)
        .await?;
    let answer = reply::items(&answer)?;
    let state = match reply::string(reply::at(answer, 0)?)?.as_str() {
        // Its worker learns it on Extend, through whichever broker.
        "leased" => JobState::Leased,
        "cancelled" => JobState::Cancelled,
        _ => return Err(refused(answer, id, Action::Cancel)?),
    };
    let (queue, job_type, attempt) = (
        reply::string(reply::at(answer, 1)?)?,
        reply::string(reply::at(answer, 2)?)?,
        reply::string(reply::at(answer, 3)?)?,
    );
    info!(job_id = %id, %queue, %job_type, %attempt, "job cancelled by operator");
    Ok(state)
}

/// Purges in bounded steps, each its own script, so that a large purge
/// does not hold Redis for long; jobs enqueued during it are spared.
pub(super) async fn purge(inner: &Inner, queue: String, state: JobState) -> Result<u64> {
    if state == JobState::Leased {
        return Err(QueueError::PurgeLeased.into());
    }
    let (mut purged, mut horizon) = (0, String::new());
    loop {
        let answer = inner
            .call()
            .arg(&queue)
            .arg(state.stored_name())
            .arg(&horizon)
            .arg(PURGE_STEP)
            .run(&inner.conn, &scripts().purge)
            .await?;
        let answer = reply::items(&answer)?;
        if reply::string(reply::at(answer, 0)?)? != "ok" {
            return Err(QueueError::UnknownQueue { queue }.into());
        }
        let deleted: u64 = reply::int(reply::at(answer, 1)?)?;
        horizon = reply::string(reply::at(answer, 2)?)?;
        purged += deleted;
        if deleted < PURGE_STEP {
            break;
        }
    }
    if purged > 0 {
        info!(%queue, %state, purged, "jobs purged");
    }
    Ok(purged)
}

pub(super) async fn pause(inner: &Inner, queue: String, paused: bool) -> Result<()> {
    inner
        .call()
        .arg(&queue)
        .arg(if paused { "1" } else { "0" })
        .run(&inner.conn, &scripts().pause)
        .await?;
    if paused {
        info!(%queue, "queue paused");
    } else {
        info!(%queue, "queue resumed");
        inner.streams.wake();
    }
    Ok(())
}
