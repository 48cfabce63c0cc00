//! Who may read the HTTP listener. Without `--auth-tokens`, anyone who can
//! reach it. With tokens, a listener on a loopback address stays open (only
//! this host reaches it, as for a Prometheus agent beside the broker), and
//! any other needs `Authorization: Bearer TOKEN` of a `metrics` or an
//! `admin` credential for every queue, checked by the same [`Authorizer`]
//! as the gRPC services.

use axum::http::{HeaderMap, StatusCode};
use tonic::metadata::MetadataMap;

use super::Refused;
use crate::auth::{Authorizer, Call};

/// The access rule of one listener.
#[derive(Debug, Clone)]
pub struct HttpAccess {
    auth: Authorizer,
    /// The listener is on a loopback address.
    loopback: bool,
}

impl HttpAccess {
    /// The rule for a listener on a loopback address or not, under `auth`.
    pub fn new(auth: Authorizer, loopback: bool) -> Self {
        Self { auth, loopback }
    }

    /// Whether tokens are needed at all.
    pub fn is_open(&self) -> bool {
        self.loopback || !self.auth.is_enabled()
    }

    /// Lets the request with `headers` in, or says why not.
    ///
    /// # Errors
    /// [`Refused`]: 401 without a known token, 403 for a credential that
    /// is neither a `metrics` nor an `admin` one for every queue.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if self.is_open() {
            return Ok(());
        }
        let request = tonic::Request::from_parts(
            MetadataMap::from_headers(headers.clone()),
            tonic::Extensions::default(),
            (),
        );
        let grant = self
            .auth
            .check(&request, Call::Metrics)
            .map_err(|e| Refused {
                status: if e.is_unauthenticated() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::FORBIDDEN
                },
                reason: e.to_string(),
            })?;
        // The metrics name every queue: not for a credential held to some.
        if !grant.every_queue() {
            return Err(Refused {
                status: StatusCode::FORBIDDEN,
                reason: "metrics cover every queue: this credential is limited to some".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const PRODUCER: &str = "producer-token-0123456789";
    const SCOPED_ADMIN: &str = "scoped-admin-token-0123456789";
    const SCRAPER: &str = "metrics-token-0123456789";

    fn authorizer() -> Authorizer {
        let path = std::env::temp_dir().join(format!("sluice-http-access-{}", std::process::id()));
        std::fs::write(
            &path,
            format!("admin {ADMIN}\nproducer {PRODUCER}\nadmin {SCOPED_ADMIN} orders\nmetrics {SCRAPER}\n"),
        )
        .unwrap();
        let auth = Authorizer::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        auth
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    }

    fn status(access: &HttpAccess, headers: &HeaderMap) -> Option<StatusCode> {
        access.check(headers).err().map(|r| r.status)
    }

    #[test]
    fn without_tokens_every_listener_is_open() {
        let access = HttpAccess::new(Authorizer::open(), false);
        assert_eq!(status(&access, &HeaderMap::new()), None);
    }

    #[test]
    fn with_tokens_a_loopback_listener_stays_open() {
        let access = HttpAccess::new(authorizer(), true);
        assert_eq!(status(&access, &HeaderMap::new()), None);
    }

    #[test]
    fn with_tokens_any_other_listener_needs_an_admin_token() {
        let access = HttpAccess::new(authorizer(), false);
        assert_eq!(status(&access, &bearer(ADMIN)), None);
        assert_eq!(status(&access, &bearer(SCRAPER)), None);
        assert_eq!(
            status(&access, &HeaderMap::new()),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &bearer("unknown-token-0123456789")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&access, &bearer(PRODUCER)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(&access, &bearer(SCOPED_ADMIN)),
            Some(StatusCode::FORBIDDEN)
        );
    }
}
