//! How many Lease, LeaseBatches and Work streams may be open: `--max-lease-streams`
//! over all, and `--max-lease-streams-per-credential` for any one
//! credential, so that one worker token cannot take the whole pool from
//! the others. Each open stream holds a [`LeasePermit`], which gives its
//! places back when the stream is dropped. (An open broker has no
//! credentials: only the global cap applies.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::RequestError;
use crate::auth::{Grant, Principal};

/// Streams open per credential; an entry goes when its count is zero.
type Counts = Arc<Mutex<HashMap<Principal, usize>>>;

/// The two caps and the streams open under each.
#[derive(Debug)]
pub struct LeasePermits {
    all: Arc<Semaphore>,
    max_all: usize,
    max_per_credential: usize,
    per_credential: Counts,
}

/// One open stream's places.
#[derive(Debug)]
pub struct LeasePermit {
    _all: OwnedSemaphorePermit,
    credential: Option<(Principal, Counts)>,
}

impl LeasePermits {
    /// At most `max_all` streams, `max_per_credential` of one credential.
    pub fn new(max_all: usize, max_per_credential: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(max_all)),
            max_all,
            max_per_credential,
            per_credential: Arc::default(),
        }
    }

    /// A place for one more stream of `grant`'s credential.
    ///
    /// # Errors
    /// [`RequestError::TooManyLeaseStreams`] naming the cap reached.
    pub fn take(&self, grant: &Grant) -> Result<LeasePermit, RequestError> {
        let all = self.all.clone().try_acquire_owned().map_err(|_| {
            RequestError::TooManyLeaseStreams {
                limit: self.max_all,
                flag: "--max-lease-streams",
                whose: "over all credentials",
            }
        })?;
        let Some(principal) = grant.principal() else {
            return Ok(LeasePermit {
                _all: all,
                credential: None,
            });
        };
        let mut open = self
            .per_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(principal.clone()).or_default();
        if *count >= self.max_per_credential {
            return Err(RequestError::TooManyLeaseStreams {
                limit: self.max_per_credential,
                flag: "--max-lease-streams-per-credential",
                whose: "for this credential",
            });
        }
        *count += 1;
        Ok(LeasePermit {
            _all: all,
            credential: Some((principal.clone(), self.per_credential.clone())),
        })
    }
}

impl Drop for LeasePermit {
    fn drop(&mut self) {
        let Some((principal, per_credential)) = self.credential.take() else {
            return;
        };
        let mut open = per_credential
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&principal) {
            *count -= 1;
            if *count == 0 {
                open.remove(&principal);
            }
        }
    }
}
