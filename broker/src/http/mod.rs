//! The HTTP listener of `--http-addr`, separate from gRPC: `GET /metrics`
//! (OpenMetrics text, see [`crate::metrics`]). HTTP/1.1, over TLS with the
//! gRPC listener's certificates when the broker has them (`tls_listener.rs`),
//! plain otherwise; who may read it is decided by [`access`].

mod access;
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

/// Serves `metrics` on `listener`, over TLS with `tls` if given, to whom
/// the access rule under `auth` lets in (see [`access`]), until `stop`.
///
/// # Errors
/// The listener's I/O error, if serving fails.
pub async fn serve(
    listener: TcpListener,
    tls: Option<&TlsSettings>,
    metrics: Metrics,
    auth: Authorizer,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let access = HttpAccess::new(auth, addr.ip().is_loopback());
    announce(addr, &access, tls.is_some());
    let state = Arc::new(AppState { metrics, access });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(state);
    match tls {
        Some(tls) => {
            let local = listener.local_addr()?;
            let incoming = tls.incoming_http(listener, stop.clone());
            serve_on(TlsListener::new(incoming, local), app, stop).await
        }
        None => serve_on(listener, app, stop).await,
    }
}

/// Logs where metrics are served and to whom, warning when that is anyone
/// who can reach a non-loopback address, or when a token would cross it
/// in plaintext.
fn announce(http_addr: SocketAddr, access: &HttpAccess, tls: bool) {
    let loopback = http_addr.ip().is_loopback();
    let open = access.is_open();
    if !loopback && open {
        warn!(%http_addr, "serving metrics on a non-loopback address without --auth-tokens: anyone who can reach it can read them");
    }
    if !open && !tls {
        warn!(%http_addr, "metrics need a metrics or admin token, which crosses this plain-HTTP listener unencrypted without --tls-cert");
    }
    let access = if open { "open" } else { "token" };
    info!(%http_addr, access, tls, "metrics at GET /metrics");
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
    if let Err(refused) = state.access.check(&headers) {
        return refused.into_response();
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS))],
        state.metrics.render(),
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
