//! The HTTP listener of `--http-addr`, separate from gRPC. HTTP/1.1, over
//! TLS with the gRPC listener's certificates when the broker has them,
//! plain otherwise; its connections are admitted by [`crate::listener`]
//! (the caps and the first-byte timeout), and each then has
//! [`HEADER_READ_TIMEOUT`] to send each request's headers, counted from
//! when the server waits for them: a slowloris client, or a kept-alive
//! connection left idle, is cut off then. It serves:
//!
//! - `GET /metrics` (OpenMetrics text, see [`crate::metrics`]); who may
//!   read it is decided by [`access`];
//! - the dashboard at `/` ([`dashboard`]: embedded files, no data);
//! - the JSON API under `/api/v1/` ([`api`]), whose every call is an Admin
//!   call with the Admin service's own credential check.

mod access;
mod api;
mod dashboard;
pub mod hosts;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use sluice_proto::json::status_json;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;
use tracing::{debug, info, warn};

pub use access::HttpAccess;
use hosts::{AllowedHosts, ListenerAddr};

use crate::auth::Authorizer;
use crate::listener::Conn;
use crate::metrics::Metrics;
use crate::service::AdminService;

/// How long open connections may take to close once the broker stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a client may take to send a request's headers, and so also
/// the longest an open connection may stay idle: hyper's timer runs from
/// the moment the server waits for the next request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct AppState {
    metrics: Metrics,
    access: HttpAccess,
}

/// Where the HTTP listener is and who may use it.
#[derive(Debug, Clone)]
pub struct Site {
    /// The listener's address.
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub tls: bool,
    /// Whose credentials are checked.
    pub auth: Authorizer,
    /// The `Host` names it answers to besides its own address and the
    /// loopback names (`--http-allowed-hosts`).
    pub allowed_hosts: AllowedHosts,
}

/// Serves `metrics`, the dashboard and the API (calling `admin`) on the
/// connections of `incoming`, until `stop`.
pub async fn serve(
    incoming: ReceiverStream<std::io::Result<Conn>>,
    site: Site,
    metrics: Metrics,
    admin: AdminService,
    stop: CancellationToken,
) {
    let loopback = site.addr.ip().is_loopback();
    let access = HttpAccess::new(site.auth.clone(), loopback);
    announce(&site, &access);
    let hosts = Arc::new(site.allowed_hosts.clone());
    let state = Arc::new(AppState { metrics, access });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(dashboard::routes())
        .merge(api::routes(admin, site.auth.clone(), hosts.clone()))
        .layer(middleware::from_fn_with_state(hosts, check_host));
    serve_connections(incoming, app, stop).await;
}

/// Logs what is served where and to whom, warning when that is anyone who
/// can reach a non-loopback address, or when a token would cross it in
/// plaintext.
fn announce(site: &Site, access: &HttpAccess) {
    let http_addr = site.addr;
    let (auth, tls) = (&site.auth, site.tls);
    let loopback = http_addr.ip().is_loopback();
    if !loopback && !auth.is_enabled() {
        warn!(%http_addr, "serving metrics and the dashboard on a non-loopback address without --auth-tokens: anyone who can reach it can read every job and retry, cancel or purge them");
    }
    if auth.is_enabled() && !tls {
        warn!(%http_addr, "the dashboard and the metrics take tokens, which cross this plain-HTTP listener unencrypted without --tls-cert");
    }
    let access = if access.is_open() { "open" } else { "token" };
    let dashboard = if auth.is_enabled() { "token" } else { "open" };
    info!(%http_addr, access, dashboard, tls, "metrics at GET /metrics, the dashboard at /, its API at /api/v1/");
}

/// Serves `app` over HTTP/1.1 on each connection of `incoming` until
/// `stop`, then lets open connections finish for [`CLOSE_TIMEOUT`].
async fn serve_connections(
    mut incoming: ReceiverStream<std::io::Result<Conn>>,
    app: Router,
    stop: CancellationToken,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            conn = incoming.next() => conn,
        };
        let conn = match conn {
            Some(Ok(conn)) => conn,
            Some(Err(e)) => {
                warn!(error = %e, "accepting an HTTP connection failed");
                continue;
            }
            None => break,
        };
        // Every request carries the address its client reached (the Host
        // check and the Origin check compare with it).
        let local = ListenerAddr(conn.info().local);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(local);
            let mut app = app.clone();
            async move { app.call(request.map(axum::body::Body::new)).await }
        });
        let io = TokioIo::new(conn);
        let connection = graceful.watch(http1.serve_connection(io, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "HTTP connection ended");
            }
        });
    }
    // A scraper that holds its connection gets CLOSE_TIMEOUT, then the
    // listener stops regardless.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, graceful.shutdown()).await;
}

/// Refuses (403) a request whose `Host` is not one this listener answers
/// to (see [`hosts`]), on every route.
async fn check_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let allowed = request
        .extensions()
        .get::<ListenerAddr>()
        .is_some_and(|local| hosts.allows(host, local.0));
    if allowed {
        return next.run(request).await;
    }
    let message = format!(
        "host {host:?} is not this broker's: it answers to its own address, loopback names and --http-allowed-hosts"
    );
    (
        StatusCode::FORBIDDEN,
        Json(status_json(&tonic::Status::permission_denied(message))),
    )
        .into_response()
}

async fn metrics_text(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let scope = match state.access.check(&headers) {
        Ok(scope) => scope,
        Err(refused) => return refused.into_response(),
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
        state.metrics.render_for(&scope),
    )
        .into_response()
}

/// Why a request was refused, as an HTTP response.
#[derive(Debug)]
pub struct Refused {
    status: StatusCode,
    reason: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, format!("{}\n", self.reason)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
