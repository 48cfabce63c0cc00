//! [`BrokerLink`]: the [`Link`] over gRPC, and the only code of the worker
//! that sees protobuf messages or tonic statuses. Every status becomes a
//! [`BrokerError`] in [`classify`]; nothing above this file reads a code.
//! It also turns the checked [`Security`] into tonic's TLS config and puts
//! the token on every call (sluice-proto's [`Bearer`] interceptor).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sluice_proto::Bearer;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::work_request::Kind;
use sluice_proto::v1::work_result::Answer;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::{debug, warn};

use super::security::{Security, Tls, TlsSources};
use super::session::{self, SessionHandle};
use super::{
    BoxFuture, BrokerError, BrokerErrorKind, Extended, LeaseSpec, LeaseStream, LeasedJob, Link,
    Report, Resolved,
};
use crate::backoff;
use crate::error::WorkerError;
use crate::handler::Job;
use crate::timing::CALL_TIMEOUT;

/// Largest message accepted from the broker.
const MAX_MESSAGE: usize = 256 << 20;

/// A job's timeout when the broker sent none (it always does).
const FALLBACK_JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// The broker's client: every call passes the [`Bearer`] interceptor.
type Client = BrokerClient<InterceptedService<Channel, Bearer>>;

/// The [`Bearer`] of `security`'s token, if it has one: the interceptor
/// every client of the workspace puts on its channel.
///
/// # Errors
/// [`WorkerError::BadToken`] (it cannot happen for a checked token).
pub fn bearer(security: &Security) -> Result<Bearer, WorkerError> {
    // The token is checked to be visible ASCII, so this cannot fail; the
    // error does not show it either way.
    Bearer::new(security.token.as_ref().map(|t| t.expose())).map_err(|_| WorkerError::BadToken {
        reason: "it is not a valid header value".to_owned(),
    })
}

/// tonic's TLS config for checked material: only the given CA, or the
/// system's roots; the client identity for mTLS.
fn tls_config(tls: &Tls) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new().timeout(CALL_TIMEOUT);
    config = match &tls.ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = &tls.identity {
        config = config.identity(Identity::from_pem(cert, key));
    }
    config
}

/// The endpoint of the broker at `url`, as the worker connects to it:
/// connect timeout, HTTP/2 keep-alive, and TLS for an `https://` URL with
/// `security`'s material. For the workspace's other clients (the `sluice`
/// CLI), which add their own call timeout and connect.
///
/// # Errors
/// [`WorkerError::BrokerUrl`] when `url` is not a valid URI or TLS cannot
/// be set up for it.
pub fn endpoint(url: &str, security: &Security) -> Result<Endpoint, WorkerError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| WorkerError::BrokerUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(tls) = &security.tls {
        endpoint = endpoint
            .tls_config(tls_config(tls))
            .map_err(|e| WorkerError::BrokerUrl {
                url: url.to_owned(),
                reason: format!("TLS: {e}"),
            })?;
    }
    Ok(endpoint)
}

/// A cheap, cloneable handle on the broker's `sluice.v1.Broker` service.
/// The connection is made lazily and re-made after it breaks.
#[derive(Clone)]
pub struct BrokerLink {
    client: Client,
    /// The Work session opened last, while it is open: reports go over it
    /// (see `session.rs`); between sessions they go by the unary calls.
    session: Arc<Mutex<Option<Arc<SessionHandle>>>>,
}

impl BrokerLink {
    /// A link to `url` (e.g. `http://127.0.0.1:50051`, or `https://...`
    /// trusting the system's roots), without a token; connects on first use.
    ///
    /// # Errors
    /// [`WorkerError::BrokerUrl`] when `url` is not a valid URI.
    pub fn new(url: &str) -> Result<Self, WorkerError> {
        Self::secured(url, &Security::load(url, &TlsSources::default(), None)?)
    }

    /// A link to `url` with TLS (for an `https://` URL) and a token, both
    /// checked already.
    pub(crate) fn secured(url: &str, security: &Security) -> Result<Self, WorkerError> {
        let channel = endpoint(url, security)?.connect_lazy();
        Ok(Self {
            // A leased job is as large as the broker's --max-payload allows.
            client: BrokerClient::with_interceptor(channel, bearer(security)?)
                .max_decoding_message_size(MAX_MESSAGE),
            session: Arc::default(),
        })
    }

    /// The open session, if any.
    fn session(&self) -> Option<Arc<SessionHandle>> {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|s| s.is_open())
            .cloned()
    }

    /// `kind` over the open session; `None` when none is open or it ended
    /// before answering. A result with a code becomes its error.
    async fn over_session(&self, kind: Kind) -> Option<Result<Option<Answer>, BrokerError>> {
        let session = self.session()?;
        let result = match tokio::time::timeout(CALL_TIMEOUT, session.report(kind)).await {
            Ok(result) => result?,
            Err(_) => {
                return Some(Err(classify(
                    Code::DeadlineExceeded,
                    "no answer from the broker in time",
                )));
            }
        };
        Some(match result.code {
            0 => Ok(result.answer),
            code => Err(classify(Code::from(code), &result.message)),
        })
    }

    async fn resolve_once(
        &self,
        job_id: &str,
        lease_id: &str,
        report: &Report,
    ) -> Result<Resolved, BrokerError> {
        let (job_id, lease_id) = (job_id.to_owned(), lease_id.to_owned());
        let kind = match report {
            Report::Ack(result) => Kind::Ack(pb::AckRequest {
                job_id,
                lease_id,
                result: result.clone().unwrap_or_default(),
            }),
            Report::Nack {
                error,
                retry_after,
                dead,
                key_delay,
            } => Kind::Nack(pb::NackRequest {
                job_id,
                lease_id,
                error: error.clone(),
                retry_after: retry_after.map(sluice_proto::duration_to_pb),
                dead: *dead,
                key_delay: key_delay.map(sluice_proto::duration_to_pb),
            }),
            Report::Release => Kind::Release(pb::ReleaseRequest {
                job_id,
                lease_id,
                delay: None,
                key_delay: None,
            }),
        };
        let nack_state = match self.over_session(kind.clone()).await {
            Some(answer) => match answer? {
                Some(Answer::Nack(nack)) => Some(nack.state()),
                _ => None,
            },
            None => {
                let mut client = self.client.clone();
                match kind {
                    Kind::Ack(req) => bounded(client.ack(timed(req))).await.map(|_| None)?,
                    Kind::Nack(req) => {
                        Some(bounded(client.nack(timed(req))).await?.into_inner().state())
                    }
                    Kind::Release(req) => {
                        bounded(client.release(timed(req))).await.map(|_| None)?
                    }
                    _ => None,
                }
            }
        };
        Ok(match report {
            Report::Ack(_) => Resolved::Succeeded,
            Report::Release => Resolved::Released,
            Report::Nack { .. } => match nack_state {
                Some(pb::JobState::Scheduled | pb::JobState::Ready) => Resolved::Retried,
                _ => Resolved::Failed,
            },
        })
    }
}

impl Link for BrokerLink {
    fn lease(&self, spec: LeaseSpec) -> BoxFuture<'_, Result<Box<dyn LeaseStream>, BrokerError>> {
        Box::pin(async move {
            let (requests, handle) = session::requests(lease_request(spec));
            let responses = bounded(self.client.clone().work(requests))
                .await?
                .into_inner();
            let jobs = session::start(responses, &handle, leased_from_pb, from_status);
            // The session opened before stays open for its reports until
            // its last one is answered, then closes with its handle.
            *self.session.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
            Ok(jobs)
        })
    }

    fn extend<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        by: Duration,
    ) -> BoxFuture<'a, Result<Extended, BrokerError>> {
        Box::pin(async move {
            let req = pb::ExtendRequest {
                job_id: job_id.to_owned(),
                lease_id: lease_id.to_owned(),
                extend_by: Some(sluice_proto::duration_to_pb(by)),
            };
            let reply = match self.over_session(Kind::Extend(req.clone())).await {
                Some(answer) => match answer? {
                    Some(Answer::Extend(reply)) => reply,
                    _ => {
                        return Err(classify(
                            Code::Internal,
                            "Extend answered without its answer",
                        ));
                    }
                },
                None => bounded(self.client.clone().extend(timed(req)))
                    .await?
                    .into_inner(),
            };
            Ok(Extended {
                lease_expires_at: reply
                    .lease_expires_at
                    .and_then(|t| std::time::SystemTime::try_from(t).ok()),
                cancel_requested: reply.cancel_requested,
            })
        })
    }

    fn progress<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        percent: u32,
        message: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            let req = pb::ProgressRequest {
                job_id: job_id.to_owned(),
                lease_id: lease_id.to_owned(),
                percent,
                message: message.to_owned(),
            };
            match self.over_session(Kind::Progress(req.clone())).await {
                Some(answer) => answer.map(|_| ()),
                None => bounded(self.client.clone().progress(timed(req)))
                    .await
                    .map(|_| ()),
            }
        })
    }

    fn resolve<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        report: &'a Report,
        give_up_at: Instant,
    ) -> BoxFuture<'a, Result<Resolved, BrokerError>> {
        Box::pin(async move {
            let mut attempt = 0;
            loop {
                match self.resolve_once(job_id, lease_id, report).await {
                    Err(err)
                        if err.kind() == BrokerErrorKind::Unavailable
                            && Instant::now() < give_up_at =>
                    {
                        let delay = backoff::delay(attempt);
                        debug!(job_id, attempt, error = %err, "resolution not delivered, retrying");
                        tokio::time::sleep(
                            delay.min(give_up_at.saturating_duration_since(Instant::now())),
                        )
                        .await;
                        attempt += 1;
                    }
                    result => return result,
                }
            }
        })
    }
}

fn lease_request(spec: LeaseSpec) -> pb::LeaseRequest {
    pb::LeaseRequest {
        worker_id: spec.worker_id,
        queues: spec.queues,
        job_types: spec.job_types,
        max_in_flight: u32::try_from(spec.max_in_flight).unwrap_or(u32::MAX),
        lease_duration: Some(sluice_proto::duration_to_pb(spec.lease_duration)),
        held_leases: spec
            .held_leases
            .into_iter()
            .map(|(job_id, lease_id)| pb::HeldLease { job_id, lease_id })
            .collect(),
    }
}

/// The job of a leased job; `None` (logged) for a message without one.
fn leased_from_pb(leased: pb::LeasedJob) -> Option<LeasedJob> {
    let Some(job) = leased.job else {
        warn!(
            lease_id = leased.lease_id,
            "leased job without a job; ignored"
        );
        return None;
    };
    Some(LeasedJob {
        job: Job {
            timeout: job
                .timeout
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(FALLBACK_JOB_TIMEOUT),
            id: job.id,
            queue: job.queue,
            job_type: job.job_type,
            payload: job.payload,
            headers: job.headers,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        },
        lease_id: leased.lease_id,
    })
}

/// What a gRPC status means for the worker: the one place where codes are
/// read. A stale lease or a job that is gone is a lost lease; errors that a
/// retry over a new connection, or later, may cure are unavailability
/// (RESOURCE_EXHAUSTED among them: the broker's lease streams are all
/// taken, or its store is full, until others let go); the rest are refusals
/// no retry can cure.
fn classify(code: Code, message: &str) -> BrokerError {
    let kind = match code {
        Code::FailedPrecondition | Code::NotFound => BrokerErrorKind::LeaseLost,
        Code::Unavailable
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::ResourceExhausted => BrokerErrorKind::Unavailable,
        Code::Ok
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss
        | Code::Unauthenticated => BrokerErrorKind::Refused,
    };
    let message = if message.is_empty() {
        code.description()
    } else {
        message
    };
    BrokerError::new(kind, message)
}

fn from_status(status: &Status) -> BrokerError {
    classify(status.code(), status.message())
}

/// `call`, failing as unavailable after [`CALL_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => result.map_err(|status| from_status(&status)),
        Err(_) => Err(classify(
            Code::DeadlineExceeded,
            "no answer from the broker in time",
        )),
    }
}

fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor as _;

    use super::*;

    #[test]
    fn the_token_of_the_settings_goes_on_every_call() {
        let security = Security {
            tls: None,
            token: Some(super::super::security::Token::new("tok-0123456789abcdef").unwrap()),
        };
        let mut sent = bearer(&security).unwrap();
        assert!(!format!("{sent:?}").contains("tok-"), "{sent:?}");
        let request = sent.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer tok-0123456789abcdef"
        );
        let mut none = bearer(&Security::default()).unwrap();
        let request = none.call(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }

    #[test]
    fn status_codes_are_classified() {
        use BrokerErrorKind::{LeaseLost, Refused, Unavailable};
        let cases = [
            (Code::FailedPrecondition, LeaseLost),
            (Code::NotFound, LeaseLost),
            (Code::Unavailable, Unavailable),
            (Code::Unknown, Unavailable),
            (Code::DeadlineExceeded, Unavailable),
            (Code::Cancelled, Unavailable),
            (Code::Aborted, Unavailable),
            (Code::InvalidArgument, Refused),
            (Code::PermissionDenied, Refused),
            (Code::Unauthenticated, Refused),
            (Code::ResourceExhausted, Unavailable),
            (Code::Internal, Refused),
        ];
        for (code, kind) in cases {
            assert_eq!(classify(code, "x").kind(), kind, "{code:?}");
        }
        assert_eq!(
            classify(Code::NotFound, "").message(),
            Code::NotFound.description()
        );
    }
}
