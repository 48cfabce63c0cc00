//! Protection against requests a web page on another site makes a browser
//! send. Every `POST` (the API's actions) whose `Origin` header names
//! another origin than the request's `Host`, or that the browser marks as
//! cross-site (`Sec-Fetch-Site`), is refused with PERMISSION_DENIED.
//! Clients that are not browsers (curl, scripts) send neither header and
//! pass; browsers send `Origin` with every `POST`.
//!
//! Without `--auth-tokens` on a loopback listener nothing else stands in
//! the way, so there every request must also name a loopback host
//! (`127.0.0.1:9090`, `[::1]:9090`, `localhost:9090`): a page on a
//! hostile site whose name it points at 127.0.0.1 (DNS rebinding) gets
//! PERMISSION_DENIED for reads too.

use axum::http::{HeaderMap, Method, header};
use tonic::Status;

use super::ApiError;

/// The rule of one listener.
#[derive(Debug, Clone, Copy)]
pub struct OriginCheck {
    /// Only loopback `Host` names are let in (no tokens, loopback listener).
    loopback_hosts_only: bool,
}

impl OriginCheck {
    /// The rule for a listener on a loopback address or not, with tokens
    /// or without.
    pub fn new(loopback: bool, tokens: bool) -> Self {
        Self {
            loopback_hosts_only: loopback && !tokens,
        }
    }

    /// Lets the request in, or says why not.
    ///
    /// # Errors
    /// [`ApiError`] with PERMISSION_DENIED.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = text(headers, header::HOST.as_str());
        if self.loopback_hosts_only && !host.is_some_and(is_loopback_host) {
            return Err(refused(format!(
                "host {:?} is not a loopback name: this listener has no tokens and answers only requests to 127.0.0.1, [::1] or localhost",
                host.unwrap_or_default()
            )));
        }
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
            if Some(origin_host) != host {
                return Err(refused(format!(
                    "origin {origin:?} is not this broker's ({}): cross-site requests may not change anything",
                    host.unwrap_or("no Host header")
                )));
            }
        }
        Ok(())
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn refused(message: String) -> ApiError {
    Status::permission_denied(message).into()
}

/// `localhost`, `127.0.0.1`, `[::1]`... with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(ip, _)| ip),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

    fn allowed(check: OriginCheck, method: Method, pairs: &[(&'static str, &'static str)]) -> bool {
        check.check(&method, &headers(pairs)).is_ok()
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let check = OriginCheck::new(false, true);
        let host = ("host", "broker.internal:9090");
        assert!(allowed(check, Method::POST, &[host]));
        assert!(allowed(
            check,
            Method::POST,
            &[host, ("origin", "https://broker.internal:9090")]
        ));
        assert!(!allowed(
            check,
            Method::POST,
            &[host, ("origin", "https://evil.example")]
        ));
        assert!(!allowed(
            check,
            Method::POST,
            &[host, ("sec-fetch-site", "cross-site")]
        ));
        assert!(allowed(
            check,
            Method::POST,
            &[host, ("sec-fetch-site", "same-origin")]
        ));
        // Reads are not guarded: they change nothing.
        assert!(allowed(
            check,
            Method::GET,
            &[host, ("origin", "https://evil.example")]
        ));
    }

    #[test]
    fn without_tokens_a_loopback_listener_answers_only_loopback_names() {
        let check = OriginCheck::new(true, false);
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "[::1]:9090",
            "LOCALHOST",
        ] {
            assert!(allowed(check, Method::GET, &[("host", host)]), "{host}");
        }
        assert!(!allowed(
            check,
            Method::GET,
            &[("host", "rebound.example:9090")]
        ));
        assert!(!allowed(check, Method::GET, &[]));
        // With tokens, or on another address, any name may be used.
        assert!(allowed(
            OriginCheck::new(true, true),
            Method::GET,
            &[("host", "rebound.example:9090")]
        ));
        assert!(allowed(
            OriginCheck::new(false, false),
            Method::GET,
            &[("host", "broker.internal:9090")]
        ));
    }
}
