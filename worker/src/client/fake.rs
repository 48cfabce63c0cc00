//! A scripted [`Link`] for unit tests of the runner and the job task: it
//! records every call with the (paused) clock's time, answers Extend from a
//! script (success once the script is used up), resolves as a broker would,
//! and serves Lease streams whose batches the test sends.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    BoxFuture, BrokerError, BrokerErrorKind, Extended, LeaseSpec, LeaseStream, LeasedJob, Link,
    Report, Resolved,
};
use crate::handler::Job;

/// A call the link received.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Call {
    Lease(LeaseSpec),
    /// A Lease stream was dropped.
    StreamClosed,
    Extend {
        job_id: String,
        by: Duration,
    },
    Progress {
        job_id: String,
        percent: u32,
        message: String,
    },
    Resolve {
        job_id: String,
        lease_id: String,
        report: Report,
    },
}

#[derive(Default)]
struct Script {
    calls: Vec<(Instant, Call)>,
    extends: VecDeque<Result<Extended, BrokerError>>,
    streams: VecDeque<Result<mpsc::Receiver<Vec<LeasedJob>>, BrokerError>>,
}

#[derive(Default)]
pub(crate) struct FakeLink {
    script: Arc<Mutex<Script>>,
}

impl FakeLink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Answers the next Extend not yet scripted with `reply`.
    pub fn then_extend(&self, reply: Result<Extended, BrokerError>) {
        self.lock().extends.push_back(reply);
    }

    /// Answers the next Lease not yet scripted with a stream that delivers
    /// what is sent on the returned sender, and ends when it is dropped.
    /// Lease calls past the script get a stream that never delivers.
    pub fn then_stream(&self) -> mpsc::Sender<Vec<LeasedJob>> {
        let (tx, rx) = mpsc::channel(16);
        self.lock().streams.push_back(Ok(rx));
        tx
    }

    /// Answers the next Lease not yet scripted with `err`.
    pub fn then_refuse_lease(&self, err: BrokerError) {
        self.lock().streams.push_back(Err(err));
    }

    /// Every call so far, with when it came.
    pub fn calls(&self) -> Vec<(Instant, Call)> {
        self.lock().calls.clone()
    }

    /// The Resolve calls so far: when, for which job, and how.
    pub fn resolutions(&self) -> Vec<(Instant, String, Report)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Resolve { job_id, report, .. } => Some((at, job_id, report)),
                _ => None,
            })
            .collect()
    }

    /// When each Extend call came.
    pub fn extends(&self) -> Vec<Instant> {
        self.calls()
            .into_iter()
            .filter_map(|(at, call)| matches!(call, Call::Extend { .. }).then_some(at))
            .collect()
    }

    /// The Lease calls so far.
    pub fn leases(&self) -> Vec<(Instant, LeaseSpec)> {
        self.calls()
            .into_iter()
            .filter_map(|(at, call)| match call {
                Call::Lease(spec) => Some((at, spec)),
                _ => None,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        crate::job_task::lock(&self.script)
    }

    fn record(&self, call: Call) {
        self.lock().calls.push((Instant::now(), call));
    }
}

impl Link for FakeLink {
    fn lease(&self, spec: LeaseSpec) -> BoxFuture<'_, Result<Box<dyn LeaseStream>, BrokerError>> {
        self.record(Call::Lease(spec));
        let next = self.lock().streams.pop_front();
        let script = self.script.clone();
        Box::pin(async move {
            let batches = match next {
                Some(Ok(rx)) => Some(rx),
                Some(Err(err)) => return Err(err),
                None => None,
            };
            Ok(Box::new(FakeStream { batches, script }) as Box<dyn LeaseStream>)
        })
    }

    fn extend<'a>(
        &'a self,
        job_id: &'a str,
        _lease_id: &'a str,
        by: Duration,
    ) -> BoxFuture<'a, Result<Extended, BrokerError>> {
        self.record(Call::Extend {
            job_id: job_id.to_owned(),
            by,
        });
        let reply = self.lock().extends.pop_front().unwrap_or(Ok(Extended {
            lease_expires_at: None,
            cancel_requested: false,
        }));
        Box::pin(async move { reply })
    }

    fn progress<'a>(
        &'a self,
        job_id: &'a str,
        _lease_id: &'a str,
        percent: u32,
        message: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.record(Call::Progress {
            job_id: job_id.to_owned(),
            percent,
            message: message.to_owned(),
        });
        Box::pin(async { Ok(()) })
    }

    fn resolve<'a>(
        &'a self,
        job_id: &'a str,
        lease_id: &'a str,
        report: &'a Report,
        _give_up_at: Instant,
    ) -> BoxFuture<'a, Result<Resolved, BrokerError>> {
        self.record(Call::Resolve {
            job_id: job_id.to_owned(),
            lease_id: lease_id.to_owned(),
            report: report.clone(),
        });
        let resolved = match report {
            Report::Ack(_) => Resolved::Succeeded,
            Report::Nack { dead: true, .. } => Resolved::Failed,
            Report::Nack { .. } => Resolved::Retried,
            Report::Release => Resolved::Released,
        };
        Box::pin(async move { Ok(resolved) })
    }
}

struct FakeStream {
    /// `None`: a stream that never delivers.
    batches: Option<mpsc::Receiver<Vec<LeasedJob>>>,
    script: Arc<Mutex<Script>>,
}

impl LeaseStream for FakeStream {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<LeasedJob>>, BrokerError>> {
        Box::pin(async move {
            match self.batches.as_mut() {
                Some(rx) => Ok(rx.recv().await),
                None => std::future::pending().await,
            }
        })
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        crate::job_task::lock(&self.script)
            .calls
            .push((Instant::now(), Call::StreamClosed));
    }
}

/// A leased job `id` of type `job_type` with `timeout`; its lease is
/// `lease-{id}`.
pub(crate) fn leased(id: &str, job_type: &str, timeout: Duration) -> LeasedJob {
    LeasedJob {
        job: Job {
            id: id.to_owned(),
            queue: "default".to_owned(),
            job_type: job_type.to_owned(),
            payload: bytes::Bytes::new(),
            headers: HashMap::new(),
            attempt: 1,
            max_attempts: 3,
            timeout,
        },
        lease_id: format!("lease-{id}"),
    }
}

/// An error of `kind`, as the real link would return it.
pub(crate) fn error(kind: BrokerErrorKind) -> BrokerError {
    BrokerError::new(kind, format!("scripted {kind}"))
}
