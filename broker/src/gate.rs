//! What every gRPC call passes before its request body is read: a tower
//! layer on the gRPC server, in front of every service.
//!
//! 1. **Its credential.** For the Broker and Admin services (and
//!    reflection with `--reflection admin`), the `authorization` header,
//!    or the connection's client certificate, is resolved and its role
//!    checked for the method the path names. A refusal is answered at once
//!    (UNAUTHENTICATED or PERMISSION_DENIED) and the body is never read, so
//!    a caller without a credential makes the broker buffer nothing. The
//!    grant goes in the request's extensions, where the service finds it
//!    (`Authorizer::check`) and checks the queues the message names.
//! 2. **A place among its connection's receiving calls.** At most
//!    [`RECEIVING_PER_CONNECTION`] calls of one connection read their
//!    request at once; the others wait their turn unread, their bytes held
//!    back by HTTP/2 flow control (at most the connection's window, 8 MiB).
//! 3. **A deadline for its request** (`--request-timeout`), from the
//!    moment it has its place: a request not received in full by then is
//!    answered DEADLINE_EXCEEDED and gives its place up. For a call whose
//!    request is a stream (reflection, EnqueueStream, Work), the deadline
//!    and the place end with its first data.
//!
//! Health is open to all, as the README promises; it passes 2 and 3.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{AuthError, Authorizer, Call, ReflectionAccess};
use crate::listener::ConnInfo;

/// Calls of one connection that may receive their request at once.
pub const RECEIVING_PER_CONNECTION: usize = 64;

/// The gate's settings: the layer on the gRPC server.
#[derive(Debug, Clone)]
pub struct Gate {
    /// Whose credentials are checked.
    pub auth: Authorizer,
    /// Who may use reflection.
    pub reflection: ReflectionAccess,
    /// How long a call's request may take to arrive (`--request-timeout`).
    pub request_timeout: Duration,
}

impl<S> Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            gate: Arc::new(self.clone()),
            inner,
        }
    }
}

/// The gRPC server behind the [`Gate`].
#[derive(Debug, Clone)]
pub struct Gated<S> {
    gate: Arc<Gate>,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Which check a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Guard {
    /// A call that needs this right.
    Call(Call),
    /// Open to all (health; reflection unless `--reflection admin`;
    /// unknown paths, which the router answers UNIMPLEMENTED).
    Open,
}

/// Whether the request body is one message or a stream of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Unary,
    Stream,
}

const BROKER: &str = "/sluice.v1.Broker/";
const ADMIN: &str = "/sluice.v1.Admin/";
const REFLECTION: [&str; 2] = [
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

impl Gate {
    fn guard(&self, path: &str) -> (Guard, Request) {
        if let Some(method) = path.strip_prefix(BROKER) {
            let call = Call::broker(method);
            let kind = match call {
                Some(Call::EnqueueStream | Call::Work) => Request::Stream,
                _ => Request::Unary,
            };
            return (call.map_or(Guard::Open, Guard::Call), kind);
        }
        if let Some(method) = path.strip_prefix(ADMIN) {
            return (
                Call::admin(method).map_or(Guard::Open, Guard::Call),
                Request::Unary,
            );
        }
        if REFLECTION.iter().any(|prefix| path.starts_with(prefix)) {
            let guard = match self.reflection {
                ReflectionAccess::Open => Guard::Open,
                ReflectionAccess::Admin => Guard::Call(Call::Reflection),
            };
            return (guard, Request::Stream);
        }
        (Guard::Open, Request::Unary)
    }
}

impl<S> Service<http::Request<Body>> for Gated<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        let (guard, kind) = gate.guard(request.uri().path());
        if let Guard::Call(call) = guard {
            let conn = request.extensions().get::<ConnInfo>();
            let common_name = conn.and_then(|c| c.common_name.clone());
            match gate
                .auth
                .admit(request.headers(), common_name.as_deref(), call)
            {
                Ok(checked) => {
                    request.extensions_mut().insert(checked);
                }
                Err(e) => {
                    let response = refused(e).into_http();
                    return Box::pin(async move { Ok(response) });
                }
            }
        }
        let receiving = request
            .extensions()
            .get::<ConnInfo>()
            .map(|c| c.receiving.clone());
        Box::pin(async move {
            // A place frees when a call's request is in or its time is up,
            // so the wait is bounded by the calls ahead. The semaphore is
            // the connection's own and never closed.
            let permit = match receiving {
                Some(places) => places.acquire_owned().await.ok(),
                None => None,
            };
            let deadline = tokio::time::Instant::now() + gate.request_timeout;
            let request = request.map(|body| {
                Body::new(Receiving {
                    inner: body,
                    deadline: Some(deadline),
                    timer: None,
                    permit,
                    timeout: gate.request_timeout,
                    kind,
                })
            });
            inner.call(request).await
        })
    }
}

/// DEADLINE_EXCEEDED for a request that took longer than `timeout`
/// (`--request-timeout`).
fn too_slow(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the request was not received within {} (--request-timeout)",
        humantime::format_duration(timeout)
    ))
}

/// The gate's one mapping of a credential's refusal to a status: the
/// same codes and words as the services' own (`service/error.rs`).
fn refused(e: AuthError) -> Status {
    if e.is_unauthenticated() {
        Status::unauthenticated(e.to_string())
    } else {
        Status::permission_denied(e.to_string())
    }
}

/// A request body while it is being received: fails past its deadline,
/// and holds its connection's place until complete.
struct Receiving {
    inner: Body,
    /// `None` once received: no deadline any more.
    deadline: Option<tokio::time::Instant>,
    /// Armed only when the body first makes the server wait: a request
    /// already in the connection's buffers (most are) costs no timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection's place, released once received.
    permit: Option<OwnedSemaphorePermit>,
    timeout: Duration,
    kind: Request,
}

impl Receiving {
    fn received(&mut self) {
        self.deadline = None;
        self.timer = None;
        self.permit = None;
    }
}

impl http_body::Body for Receiving {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.received();
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                let ends = match &frame {
                    Ok(frame) => frame.is_trailers() || this.kind == Request::Stream,
                    Err(_) => true,
                };
                if ends || this.inner.is_end_stream() {
                    this.received();
                }
                Poll::Ready(Some(frame))
            }
            Poll::Pending => {
                let Some(deadline) = this.deadline else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.received();
                Poll::Ready(Some(Err(too_slow(this.timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
