//! What a credential scoped to some queues may know of the jobs it names by
//! id. A job outside its queues is answered exactly as a job that does not
//! exist: NOT_FOUND with the unknown-job message, reached by the same steps
//! (one lookup of the ids' queues, then the answer, with no work on the
//! job), so neither the status, the message nor the time taken tells a
//! foreign job from a missing one. An unscoped credential (or an open
//! broker) skips the lookup; its unknown ids are the backend's to answer.

use std::collections::HashMap;

use sluice_queue::QueueError;
use uuid::Uuid;

use super::error::RequestError;
use crate::auth::Grant;
use crate::backend::SharedBackend;

/// Which of `ids` `grant` may see: `true` for each visible id, in order.
///
/// # Errors
/// The backend's, when it cannot look the jobs up.
pub(super) async fn visible(
    shared: &SharedBackend,
    grant: &Grant,
    ids: &[Uuid],
) -> Result<Vec<bool>, RequestError> {
    if grant.every_queue() {
        return Ok(vec![true; ids.len()]);
    }
    let queues: HashMap<Uuid, String> = shared.queues_of(ids).await?.into_iter().collect();
    Ok(ids
        .iter()
        .map(|id| queues.get(id).is_some_and(|queue| grant.allows(queue)))
        .collect())
}

/// Refuses `job_id` as unknown unless `grant` may see it.
///
/// # Errors
/// [`QueueError::UnknownJob`] for a job outside the grant's queues or
/// missing; the backend's error when the lookup fails.
pub(super) async fn check_visible(
    shared: &SharedBackend,
    grant: &Grant,
    job_id: Uuid,
) -> Result<(), RequestError> {
    match visible(shared, grant, &[job_id]).await?.first() {
        Some(true) => Ok(()),
        _ => Err(unknown(job_id)),
    }
}

/// The answer to a job the caller may not see: the same as to one that
/// does not exist.
pub(super) fn unknown(job_id: Uuid) -> RequestError {
    QueueError::UnknownJob { job_id }.into()
}
