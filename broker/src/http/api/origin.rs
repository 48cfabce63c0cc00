//! Protection against requests a web page on another site makes a browser
//! send. Every `POST` (the API's actions) whose `Origin` header is not one
//! of the listener's allowed hosts (`http/hosts.rs`: its own address, a
//! loopback name, `--http-allowed-hosts`), or that the browser marks as
//! cross-site (`Sec-Fetch-Site`), is refused with PERMISSION_DENIED. The
//! `Origin` is never compared with the request's own `Host`: a rebinding
//! page chooses both. Clients that are not browsers (curl, scripts) send
//! neither header and pass; browsers send `Origin` with every `POST`. (The
//! `Host` of every request, on every route, is checked before this.)

use std::net::SocketAddr;

use axum::http::{HeaderMap, Method, header};
use tonic::Status;

use super::ApiError;
use crate::http::hosts::AllowedHosts;

/// Lets the request in, or says why not.
///
/// # Errors
/// [`ApiError`] with PERMISSION_DENIED.
pub fn check(
    hosts: &AllowedHosts,
    local: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    if let Some(site) = text(headers, "sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused(format!(
            "a {site} request may not change anything: use the dashboard on this broker's own address"
        )));
    }
    if let Some(origin) = text(headers, header::ORIGIN.as_str()) {
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        if !hosts.allows(origin_host, local) {
            return Err(refused(format!(
                "origin {origin:?} is not this broker's (its address, a loopback name or --http-allowed-hosts): cross-site requests may not change anything"
            )));
        }
    }
    Ok(())
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refused(message: String) -> ApiError {
    Status::permission_denied(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn allowed(method: Method, pairs: &[(&'static str, &'static str)]) -> bool {
        let local: SocketAddr = "10.0.0.5:9090".parse().unwrap();
        check(&AllowedHosts::default(), local, &method, &headers(pairs)).is_ok()
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        assert!(allowed(Method::POST, &[]));
        assert!(allowed(
            Method::POST,
            &[("origin", "https://10.0.0.5:9090")]
        ));
        assert!(allowed(
            Method::POST,
            &[("origin", "http://localhost:9090")]
        ));
        assert!(!allowed(
            Method::POST,
            &[("origin", "https://evil.example")]
        ));
        // The attacker's own Host does not make its Origin this broker's.
        assert!(!allowed(
            Method::POST,
            &[("host", "evil.example"), ("origin", "https://evil.example")]
        ));
        assert!(!allowed(Method::POST, &[("sec-fetch-site", "cross-site")]));
        assert!(allowed(Method::POST, &[("sec-fetch-site", "same-origin")]));
        // Reads change nothing; their Host is checked for every route.
        assert!(allowed(Method::GET, &[("origin", "https://evil.example")]));
    }
}
