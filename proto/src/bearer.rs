//! The client side of the contract's credentials: [`Bearer`] puts
//! `authorization: Bearer TOKEN` on every call of a channel, for the
//! brokers started with `--auth-tokens`. One interceptor for every client
//! in the workspace (the worker, the load generator), so that each sends
//! the token the same way: marked sensitive, so HTTP/2 header compression
//! keeps it out of its shared table, and never shown by `Debug`.

use std::fmt;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;

/// Sends a bearer token on every call, or nothing.
#[derive(Clone, Default)]
pub struct Bearer(Option<AsciiMetadataValue>);

/// A token that cannot be a header value (not visible ASCII).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the token is not visible ASCII")]
pub struct InvalidToken;

impl Bearer {
    /// Sends `token`, if there is one.
    ///
    /// # Errors
    /// [`InvalidToken`] when `token` cannot be a header value.
    pub fn new(token: Option<&str>) -> Result<Self, InvalidToken> {
        let Some(token) = token else {
            return Ok(Self(None));
        };
        let mut value =
            AsciiMetadataValue::try_from(format!("Bearer {token}")).map_err(|_| InvalidToken)?;
        value.set_sensitive(true);
        Ok(Self(Some(value)))
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_some() {
            "<redacted>"
        } else {
            "none"
        };
        f.debug_tuple("Bearer").field(&shown).finish()
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_sent_sensitive_and_never_shown() {
        let mut bearer = Bearer::new(Some("tok-0123456789abcdef")).unwrap();
        assert!(!format!("{bearer:?}").contains("tok-"));
        let request = bearer.call(tonic::Request::new(())).unwrap();
        let value = request.metadata().get("authorization").unwrap();
        assert_eq!(value, "Bearer tok-0123456789abcdef");
        assert!(value.is_sensitive());
        let mut none = Bearer::new(None).unwrap();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
        assert_eq!(Bearer::new(Some("bad\ntoken")).unwrap_err(), InvalidToken);
    }
}
