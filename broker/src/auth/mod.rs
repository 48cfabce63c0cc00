//! Who may call what: bearer tokens and client-certificate common names,
//! each granting one role (producer, worker, admin) on some queues.
//!
//! - `credentials.rs`: the token file (`--auth-tokens`), its format and
//!   parsing; tokens are kept only as SHA-256 digests.
//! - `rights.rs`: which role may make which call, and queue scopes.
//! - `guard.rs`: the [`Authorizer`]: the gRPC server's gate
//!   (`crate::gate`) resolves each call's credential and checks its role
//!   from the headers, before the body is read; the services then check
//!   the queues the decoded message names; reloadable on SIGHUP.
//!
//! The check is in two steps because queue names are inside the protobuf
//! messages, and a message must not be read for a caller who has no
//! right to make the call at all. Nothing here knows the queue or
//! the store; the services map [`AuthError`] to statuses with their other
//! errors. No token is ever logged or put in an error: a credential is
//! named by its role and a fingerprint (the first 8 hex digits of the
//! SHA-256 of its token) or by `cert:CN`.

mod credentials;
mod guard;
mod rights;

pub use credentials::{Credential, Credentials, CredentialsError, Principal, fingerprint};
pub use guard::{AuthError, Authorizer, Checked, Grant, ReflectionAccess, StreamGuard};
pub use rights::{Call, Role};
pub use sluice_queue::{QueuePattern, QueueScope};
