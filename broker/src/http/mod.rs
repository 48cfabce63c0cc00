//! The HTTP listener of `--http-addr`, separate from gRPC. HTTP/1.1, over
//! TLS with the gRPC listener's certificates when the broker has them
//! (`tls_listener.rs`), plain otherwise. It serves:
//!
//! - `GET /metrics` (OpenMetrics text, see [`crate::metrics`]); who may
//!   read it is decided by [`access`];
//! - the dashboard at `/` ([`dashboard`]: embedded files, no data);
//! - the JSON API under `/api/v1/` ([`api`]), whose every call is an Admin
//!   call with the Admin service's own credential check.

mod access;
mod api;
mod dashboard;
mod tls_listener;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use access::HttpAccess;

use crate::auth::Authorizer;
use crate::metrics::Metrics;
use crate::service::AdminService;
use crate::tls::TlsSettings;
use axum::serve::Listener;
use tls_listener::TlsListener;

/// How long open connections may take to close once the broker stops.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The content type of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct AppState {
    metrics: Metrics,
    access: HttpAccess,
}

/// Serves `metrics`, the dashboard and the API (calling `admin`) on
/// `listener`, over TLS with `tls` if given, under `auth`, until `stop`.
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve(
    listener: TcpListener,
    tls: Option<&TlsSettings>,
    metrics: Metrics,
    admin: AdminService,
    auth: Authorizer,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let loopback = addr.ip().is_loopback();
    let access = HttpAccess::new(auth.clone(), loopback);
    announce(addr, &access, &auth, tls.is_some());
    let origin = api::OriginCheck::new(loopback, auth.is_enabled());
    let state = Arc::new(AppState { metrics, access });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(dashboard::routes())
        .merge(api::routes(admin, auth, origin));
    match tls {
        Some(tls) => {
            let local = listener.local_addr()?;
            let incoming = tls.incoming_http(listener, stop.clone());
            serve_on(TlsListener::new(incoming, local), app, stop).await
        }
        None => serve_on(listener, app, stop).await,
    }
}

/// Logs what is served where and to whom, warning when that is anyone who
/// can reach a non-loopback address, or when a token would cross it in
/// plaintext.
fn announce(http_addr: SocketAddr, access: &HttpAccess, auth: &Authorizer, tls: bool) {
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

async fn serve_on<L>(listener: L, app: Router, stop: CancellationToken) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: std::fmt::Debug,
{
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    // Graceful shutdown waits for every open connection: a scraper that
    // holds one gets CLOSE_TIMEOUT, then the listener stops regardless.
    tokio::select! {
        result = server => result,
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(CLOSE_TIMEOUT).await;
        } => Ok(()),
    }
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
