//! The rules every backend applies the same way, as pure functions: what
//! a failed attempt leads to, which states an operator's action takes a
//! job from (and the one wording of its refusal), and whether a queue has
//! room. The local queue calls them; so does each shared backend, where
//! the state lives in a database, so that no rule is written twice.

use std::time::Duration;

use uuid::Uuid;

use crate::{Backoff, JobState, QueueError};

/// What a failed attempt (a Nack, or an expired lease) leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AfterFailure {
    /// An operator asked to cancel the job while it was leased.
    Cancelled,
    /// No attempt left, or the worker said retrying cannot help.
    Dead,
    /// Due again after this delay.
    Retry(Duration),
}

/// What a failed attempt leads to. `attempt` is the failed attempt's
/// number (from 1), `dead` the worker's verdict, `retry_after` its
/// requested delay; without one, the backoff of this attempt with
/// `unit` (uniform in [0, 1)) as its jitter.
pub fn after_failure(
    attempt: u32,
    max_attempts: u32,
    cancel_requested: bool,
    dead: bool,
    retry_after: Option<Duration>,
    backoff: &Backoff,
    unit: f64,
) -> AfterFailure {
    if cancel_requested {
        AfterFailure::Cancelled
    } else if dead || attempt >= max_attempts {
        AfterFailure::Dead
    } else {
        AfterFailure::Retry(retry_after.unwrap_or_else(|| backoff.delay(attempt, unit)))
    }
}

/// An operator's action on one job, and the states it applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// RetryJob: a DEAD or CANCELLED job runs again.
    Retry,
    /// CancelJob: an unfinished job is cancelled (a leased one when its
    /// worker resolves it).
    Cancel,
}

impl Action {
    /// Whether the action applies to a job in `state`.
    pub fn applies_to(self, state: JobState) -> bool {
        match self {
            Self::Retry => matches!(state, JobState::Dead | JobState::Cancelled),
            Self::Cancel => state.is_unfinished(),
        }
    }

    /// The refusal of the action on job `job_id`, in `state`.
    pub fn wrong_state(self, job_id: Uuid, state: JobState) -> QueueError {
        let (action, allowed) = match self {
            Self::Retry => ("RetryJob", "DEAD or CANCELLED"),
            Self::Cancel => ("CancelJob", "SCHEDULED, READY or LEASED"),
        };
        QueueError::WrongState {
            job_id,
            state,
            action,
            allowed,
        }
    }

    /// Refuses the action unless it applies to `state`.
    ///
    /// # Errors
    /// [`QueueError::WrongState`].
    pub fn check(self, job_id: Uuid, state: JobState) -> Result<(), QueueError> {
        if self.applies_to(state) {
            Ok(())
        } else {
            Err(self.wrong_state(job_id, state))
        }
    }
}

/// Refuses a job more in `queue`, which holds `unfinished` jobs, past
/// `--max-queue-size`.
///
/// # Errors
/// [`QueueError::QueueFull`].
pub fn check_room(
    queue: &str,
    unfinished: u64,
    max_queue_size: Option<u64>,
) -> Result<(), QueueError> {
    match max_queue_size {
        Some(limit) if unfinished >= limit => Err(QueueError::QueueFull {
            queue: queue.to_owned(),
            limit,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_cancelled_then_dead_then_retried() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: 0.0,
        };
        let after = |attempt, cancel, dead, retry_after| {
            after_failure(attempt, 3, cancel, dead, retry_after, &backoff, 0.5)
        };
        assert_eq!(after(3, true, true, None), AfterFailure::Cancelled);
        assert_eq!(after(3, false, false, None), AfterFailure::Dead);
        assert_eq!(after(1, false, true, None), AfterFailure::Dead);
        assert_eq!(
            after(2, false, false, None),
            AfterFailure::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            after(1, false, false, Some(Duration::ZERO)),
            AfterFailure::Retry(Duration::ZERO)
        );
    }

    #[test]
    fn each_action_names_the_states_it_takes() {
        let id = Uuid::nil();
        assert!(Action::Retry.check(id, JobState::Dead).is_ok());
        assert!(Action::Cancel.check(id, JobState::Leased).is_ok());
        let refused = Action::Retry.check(id, JobState::Ready).unwrap_err();
        assert!(
            refused
                .to_string()
                .ends_with("RetryJob applies only to DEAD or CANCELLED jobs")
        );
        assert!(check_room("q", 2, Some(2)).is_err());
        assert!(check_room("q", 2, None).is_ok());
    }
}
