//! The dashboard's files (`broker/dashboard/`: one HTML page, its script
//! and its stylesheet), embedded in the binary at compile time and served
//! at `/` and `/assets/...`. The page is a plain script with no build step
//! and fetches nothing but this broker's `/api/v1/`; the headers below
//! forbid anything else (Content-Security-Policy) and framing by other
//! sites.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

#[derive(rust_embed::RustEmbed)]
#[folder = "dashboard/"]
struct Assets;

/// Only this broker's own files and API; no inline script or style.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `/` (the page) and `/assets/{file}`.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/assets/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
}

fn asset(name: &str) -> Response {
    let Some(file) = Assets::get(name) else {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    };
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Small files: always revalidate, so an upgraded broker serves its
        // own page at once.
        (header::CACHE_CONTROL, "no-cache"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
