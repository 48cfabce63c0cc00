//! How EnqueueStream and Work sessions read their requests: in groups.
//! [`next_group`] waits for one request, then takes every request that
//! has arrived meanwhile, without waiting, up to [`STREAM_WINDOW`]: what
//! came while the last group was decided is the next group, so a client
//! with many requests in flight has them decided together, and the broker
//! never holds more than the window read and unanswered.

use sluice_limits::STREAM_WINDOW;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::debug;

use crate::auth::{AuthError, StreamGuard};

/// What the next read of a request stream found.
pub(super) enum Next<T> {
    /// Requests to decide, in order; `last` when the client closed its
    /// side (or the stream broke) after them: answer them, then end.
    Group { requests: Vec<T>, last: bool },
    /// A reload no longer lets the stream's credential make its call.
    Revoked(AuthError),
    /// The broker's drain is over.
    Drained,
    /// The client went away, or closed its side with nothing unread.
    Gone,
}

/// Waits for the next group of `requests`: see the module doc. Also ends
/// on a revocation through `guard`, on `end`, and when `answers_closed`
/// resolves (nobody reads the answers any more).
pub(super) async fn next_group<T>(
    requests: &mut Streaming<T>,
    guard: &mut Option<StreamGuard>,
    end: &CancellationToken,
    answers_closed: impl Future<Output = ()>,
) -> Next<T> {
    let first = tokio::select! {
        biased;
        revoked = revoked(guard) => return Next::Revoked(revoked),
        () = end.cancelled() => return Next::Drained,
        () = answers_closed => return Next::Gone,
        first = requests.next() => first,
    };
    let mut group = match first {
        Some(Ok(request)) => vec![request],
        None => return Next::Gone,
        Some(Err(status)) => {
            debug!(%status, "request stream broke");
            return Next::Gone;
        }
    };
    while group.len() < STREAM_WINDOW {
        match arrived(requests) {
            Some(Some(Ok(request))) => group.push(request),
            Some(Some(Err(status))) => {
                debug!(%status, "request stream broke");
                return Next::Group {
                    requests: group,
                    last: true,
                };
            }
            Some(None) => {
                return Next::Group {
                    requests: group,
                    last: true,
                };
            }
            None => break,
        }
    }
    Next::Group {
        requests: group,
        last: false,
    }
}

/// The next item of `stream` if it is there now; `None` if none has
/// arrived. (Polled with a no-op waker: the next wait registers the
/// task's own.)
fn arrived<S: Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    match std::pin::Pin::new(stream).poll_next(&mut cx) {
        Poll::Ready(item) => Some(item),
        Poll::Pending => None,
    }
}

/// Resolves once `guard`'s credential no longer covers the stream; never
/// on an open broker.
async fn revoked(guard: &mut Option<StreamGuard>) -> AuthError {
    match guard {
        Some(guard) => std::future::poll_fn(|cx| guard.poll_revoked(cx)).await,
        None => std::future::pending().await,
    }
}

/// The status that ends a stream whose credential was revoked.
pub(super) fn revoked_status(revoked: AuthError) -> Status {
    Status::from(super::error::RequestError::from(revoked))
}
