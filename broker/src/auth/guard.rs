//! The [`Authorizer`]: resolves a request's credential (its
//! `authorization: Bearer TOKEN` header, else its client certificate's
//! common name) and checks the call and queues against it. The gRPC
//! server's gate (`crate::gate`) calls [`Authorizer::admit`] with the
//! request's headers, before its body is read, and leaves the [`Checked`]
//! grant in its extensions; the services call [`Authorizer::check`] at
//! the top of each RPC, which takes that grant (or, for a request that
//! did not pass the gate, such as the JSON API's, resolves it itself) and
//! check the queues the message names with it.
//!
//! Without `--auth-tokens` the authorizer is open: every check passes and
//! costs nothing. The credentials sit behind an `RwLock<Arc<_>>` that
//! [`Authorizer::reload`] swaps (SIGHUP); a request holds the `Arc` it
//! read, so a reload never blocks on, or changes, a call in progress. A
//! failed reload keeps the old credentials.

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::watch;
use tokio_stream::Stream as _;
use tokio_stream::wrappers::WatchStream;

use tonic::Request;
use tracing::debug;

use super::credentials::{Credential, Credentials, CredentialsError, Principal};
use super::rights::{Call, Role};
use crate::listener::ConnInfo;
use sluice_queue::QueueScope;

/// Why a call was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// No token and no known client certificate.
    #[error("no credential: send `authorization: Bearer TOKEN`")]
    Missing,
    /// The authorization header is not `Bearer TOKEN`.
    #[error("the authorization header must be `Bearer TOKEN`")]
    Malformed,
    /// A token that no credential has.
    #[error("unknown token")]
    UnknownToken,
    /// The credential of an open stream left the token file (SIGHUP).
    #[error("the credential was removed from the token file")]
    Revoked,
    /// The credential's role may not make this call.
    #[error("the {role} credential may not {call}")]
    Role {
        /// The credential's role.
        role: Role,
        /// The call.
        call: Call,
    },
    /// The credential does not cover this queue.
    #[error("the {role} credential may not use queue {queue:?}")]
    Queue {
        /// The credential's role.
        role: Role,
        /// The queue.
        queue: String,
    },
}

impl AuthError {
    /// Whether the caller is unknown (UNAUTHENTICATED) rather than known
    /// without the right (PERMISSION_DENIED).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::Missing | Self::Malformed | Self::UnknownToken | Self::Revoked
        )
    }
}

/// Checks requests against the token file, or lets everything through.
#[derive(Clone, Default)]
pub struct Authorizer {
    /// `None`: no `--auth-tokens`, every call allowed.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    path: PathBuf,
    /// The credentials in force; a reload sends the new ones, and open
    /// streams watching it check themselves again ([`StreamGuard`]).
    credentials: watch::Sender<Arc<Credentials>>,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            None => f.write_str("Authorizer(open)"),
            Some(inner) => write!(f, "Authorizer({})", inner.path.display()),
        }
    }
}

/// What a request was allowed as: the credential, whose queue scope the
/// service checks against the queues in the message.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `None` when the authorizer is open.
    credential: Option<Arc<Credential>>,
}

/// The scope of an open authorizer's grants.
static EVERY_QUEUE: QueueScope = QueueScope::Every;

impl Grant {
    /// Whether every queue is covered, so the service need not look any up.
    pub fn every_queue(&self) -> bool {
        self.scope().is_every()
    }

    /// The queues the credential covers (every queue when open).
    pub fn scope(&self) -> &QueueScope {
        self.credential.as_ref().map_or(&EVERY_QUEUE, |c| &c.queues)
    }

    /// Whether the credential covers `queue`.
    pub fn allows(&self, queue: &str) -> bool {
        self.scope().allows(queue)
    }

    /// The credential's role; `None` when the authorizer is open.
    pub fn role(&self) -> Option<Role> {
        self.credential.as_ref().map(|c| c.role)
    }

    /// Who presents the credential (a token's digest or a certificate's
    /// name); `None` when the authorizer is open.
    pub fn principal(&self) -> Option<&Principal> {
        self.credential.as_ref().map(|c| &c.principal)
    }

    /// Refuses `queue` unless the credential covers it.
    ///
    /// # Errors
    /// [`AuthError::Queue`].
    pub fn check_queue(&self, queue: &str) -> Result<(), AuthError> {
        match &self.credential {
            Some(c) if !c.queues.allows(queue) => {
                debug!(role = %c.role, credential = %c.label, queue, "request refused: queue not covered");
                Err(AuthError::Queue {
                    role: c.role,
                    queue: queue.to_owned(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl Authorizer {
    /// Lets every call through (no `--auth-tokens`).
    pub fn open() -> Self {
        Self::default()
    }

    /// Checks calls against the token file at `path`.
    ///
    /// # Errors
    /// [`CredentialsError`] when the file is unreadable or malformed.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let credentials = Credentials::load(path)?;
        Ok(Self {
            inner: Some(Arc::new(Inner {
                path: path.to_owned(),
                credentials: watch::Sender::new(Arc::new(credentials)),
            })),
        })
    }

    /// The token file (`--auth-tokens`); `None` when open.
    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|inner| inner.path.as_path())
    }

    /// Whether calls are checked at all.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Re-reads the token file; on failure the old credentials stay.
    /// Returns how many credentials are now in force (0 when open).
    ///
    /// # Errors
    /// [`CredentialsError`] when the file is unreadable or malformed.
    pub fn reload(&self) -> Result<usize, CredentialsError> {
        let Some(inner) = &self.inner else {
            return Ok(0);
        };
        let credentials = Credentials::load(&inner.path)?;
        let count = credentials.len();
        inner.credentials.send_replace(Arc::new(credentials));
        Ok(count)
    }

    /// Resolves the credential of a request with `headers`, on a
    /// connection whose client certificate is named `common_name`, and
    /// checks that its role may make `call`.
    ///
    /// # Errors
    /// [`AuthError`]: unknown caller, or a role without the right.
    pub fn admit(
        &self,
        headers: &http::HeaderMap,
        common_name: Option<&str>,
        call: Call,
    ) -> Result<Checked, AuthError> {
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let grant = self.grant(authorization, common_name, call)?;
        Ok(Checked { call, grant })
    }

    /// The grant of `request` for `call`: the gate's, if the request
    /// passed it, else resolved from its metadata now.
    ///
    /// # Errors
    /// [`AuthError`]: unknown caller, or a role without the right.
    pub fn check<T>(&self, request: &Request<T>, call: Call) -> Result<Grant, AuthError> {
        if let Some(checked) = request.extensions().get::<Checked>()
            && checked.call == call
        {
            return Ok(checked.grant.clone());
        }
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let common_name = request
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.common_name.clone());
        self.grant(authorization, common_name.as_deref(), call)
    }

    fn grant(
        &self,
        authorization: Option<&[u8]>,
        common_name: Option<&str>,
        call: Call,
    ) -> Result<Grant, AuthError> {
        let Some(inner) = &self.inner else {
            return Ok(Grant { credential: None });
        };
        let credentials = inner.credentials.borrow().clone();
        let credential = resolve(&credentials, authorization, common_name).inspect_err(
            |e| debug!(call = %call, error = %e, "request refused: not authenticated"),
        )?;
        if !credential.role.may(call) {
            debug!(role = %credential.role, credential = %credential.label, call = %call, "request refused: role");
            return Err(AuthError::Role {
                role: credential.role,
                call,
            });
        }
        Ok(Grant {
            credential: Some(credential),
        })
    }
}

impl Authorizer {
    /// A guard that ends a stream opened with `grant` for `call` on
    /// `queues` once a reload removes its credential or takes away the
    /// right or a queue; `None` when the authorizer is open.
    pub fn guard_stream(
        &self,
        grant: &Grant,
        call: Call,
        queues: Vec<String>,
    ) -> Option<StreamGuard> {
        let inner = self.inner.as_ref()?;
        Some(StreamGuard {
            changes: WatchStream::from_changes(inner.credentials.subscribe()),
            grant: grant.clone(),
            call,
            queues,
        })
    }
}

/// Watches the token file's reloads for one open stream; see
/// [`Authorizer::guard_stream`].
pub struct StreamGuard {
    changes: WatchStream<Arc<Credentials>>,
    grant: Grant,
    call: Call,
    queues: Vec<String>,
}

impl fmt::Debug for StreamGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGuard")
            .field("call", &self.call)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl StreamGuard {
    /// The stream's credential as the last reload left it: a stream that
    /// names queues per message (EnqueueStream, Work) checks each one
    /// against this, so a reload that narrows a scope applies to the next
    /// message.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Ready with the reason once a reload no longer lets the stream's
    /// credential make its call on its queues; pending until then.
    pub fn poll_revoked(&mut self, cx: &mut std::task::Context<'_>) -> Poll<AuthError> {
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(credentials)) => {
                    if let Err(e) = self.recheck(&credentials) {
                        return Poll::Ready(e);
                    }
                }
                // The authorizer is gone (the broker stops): nothing to do.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Checks the stream against `credentials`, and keeps its credential
    /// from them when it still may.
    fn recheck(&mut self, credentials: &Credentials) -> Result<(), AuthError> {
        let Some(old) = &self.grant.credential else {
            return Ok(());
        };
        let current = match &old.principal {
            Principal::Token { digest } => credentials.by_digest(digest),
            Principal::Cert { common_name } => credentials.by_cert(common_name),
        }
        .ok_or(AuthError::Revoked)?;
        if !current.role.may(self.call) {
            return Err(AuthError::Role {
                role: current.role,
                call: self.call,
            });
        }
        let grant = Grant {
            credential: Some(current),
        };
        for queue in &self.queues {
            grant.check_queue(queue)?;
        }
        self.grant = grant;
        Ok(())
    }
}

/// A request's grant, checked by the gate for `call` before its body was
/// read; kept in the request's extensions.
#[derive(Debug, Clone)]
pub struct Checked {
    call: Call,
    grant: Grant,
}

/// The token's credential if there is a token, else the certificate's.
fn resolve(
    credentials: &Credentials,
    authorization: Option<&[u8]>,
    common_name: Option<&str>,
) -> Result<Arc<Credential>, AuthError> {
    if let Some(value) = authorization {
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        return credentials.by_token(token).ok_or(AuthError::UnknownToken);
    }
    if credentials.has_certs()
        && let Some(cn) = common_name
        && let Some(credential) = credentials.by_cert(cn)
    {
        return Ok(credential);
    }
    Err(AuthError::Missing)
}

/// Who may use gRPC reflection (`--reflection`); the gate applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "bin", derive(clap::ValueEnum))]
pub enum ReflectionAccess {
    /// Anyone, as health.
    #[default]
    Open,
    /// Admin credentials only.
    Admin,
}
