//! Who may read `/metrics`. Without `--auth-tokens`, anyone who can reach
//! the listener. With tokens, a listener on a loopback address stays open
//! (only this host reaches it, as for a Prometheus agent beside the
//! broker), and any other needs `Authorization: Bearer TOKEN` of a
//! `metrics` or an `admin` credential, checked by the same [`Authorizer`]
//! as the gRPC services; a credential scoped to some queues reads only
//! their samples (see [`crate::metrics::Metrics::render_for`]).

use axum::http::{HeaderMap, StatusCode};
use tonic::metadata::MetadataMap;

use super::Refused;
use crate::auth::{Authorizer, Call, QueueScope};

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

    /// Lets the request with `headers` in, saying which queues it may
    /// read, or says why not.
    ///
    /// # Errors
    /// [`Refused`]: 401 without a known token, 403 for a credential that
    /// is neither a `metrics` nor an `admin` one.
    pub fn check(&self, headers: &HeaderMap) -> Result<QueueScope, Refused> {
        if self.is_open() {
            return Ok(QueueScope::Every);
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
        Ok(grant.scope().clone())
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

    fn scope(access: &HttpAccess, headers: &HeaderMap) -> QueueScope {
        access.check(headers).unwrap()
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
    fn with_tokens_any_other_listener_needs_a_metrics_or_admin_token_and_keeps_its_scope() {
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
        assert!(scope(&access, &bearer(ADMIN)).is_every());
        let scoped = scope(&access, &bearer(SCOPED_ADMIN));
        assert!(scoped.allows("orders") && !scoped.allows("billing"));
    }
}
