//! A Work session: the worker's jobs and its reports on one stream. The
//! link opens one per Lease stream it is asked for ([`open`]); while it is
//! open, every report (Ack, Nack, Extend, Release) goes over it as a
//! message with a seq, and its result comes back tagged with that seq.
//!
//! A session is two parts:
//! - [`SessionHandle`], kept by the link: sends reports and credit, and
//!   keeps the request side open. Once the last handle is dropped (the
//!   link opened a newer session, or the worker is gone) the request side
//!   closes, and the broker ends the session after answering every report
//!   it read.
//! - a reader task: reads the broker's messages, hands jobs to the
//!   [`LeaseStream`] the runner reads, and each result to the report
//!   waiting for it. When the broker says it drains, or the stream ends,
//!   the runner's stream ends too (and it reconnects); the session takes
//!   reports for as long as the broker keeps it.
//!
//! Dropping the [`LeaseStream`] (the worker drains) sends credit 0, so
//! the broker sends no more jobs; a job already on its way is released.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sluice_proto::v1 as pb;
use sluice_proto::v1::work_request::Kind;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::debug;

use super::{BoxFuture, BrokerError, LeaseStream, LeasedJob};

/// Reports sent and not yet answered, by seq, and whether the reader
/// has ended (then no report is answered any more).
#[derive(Default)]
struct Waiting {
    reports: Mutex<HashMap<u64, oneshot::Sender<pb::WorkResult>>>,
    ended: AtomicBool,
}

type Pending = Arc<Waiting>;

/// What the reader hands the runner's stream: jobs, or why it ended.
type Jobs = Result<Vec<LeasedJob>, BrokerError>;

/// Reports a session can hold queued for sending.
const QUEUED_REPORTS: usize = 1024;

/// The request side of an open session.
pub struct SessionHandle {
    tx: mpsc::Sender<pb::WorkRequest>,
    pending: Pending,
    next_seq: AtomicU64,
}

impl SessionHandle {
    /// Whether the session still reads results (its reader is running).
    pub fn is_open(&self) -> bool {
        !self.pending.ended.load(Ordering::Acquire) && !self.tx.is_closed()
    }

    /// Sends `kind` and waits for its result; `None` when the session
    /// ended before answering (the report may or may not have been
    /// applied: resolutions are retried, and a repeated one is refused as
    /// for a lease that is gone).
    pub async fn report(&self, kind: Kind) -> Option<pb::WorkResult> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        lock(&self.pending.reports).insert(seq, reply);
        // Checked after the insert: a reader that ends from now on drops
        // the reply's sender, and one that ended before will not.
        if self.pending.ended.load(Ordering::Acquire) {
            lock(&self.pending.reports).remove(&seq);
            return None;
        }
        let request = pb::WorkRequest {
            seq,
            kind: Some(kind),
        };
        if self.tx.send(request).await.is_err() {
            lock(&self.pending.reports).remove(&seq);
            return None;
        }
        answer.await.ok()
    }

    /// Sends credit without waiting for its result.
    fn credit(&self, window: u32) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.try_send(pb::WorkRequest {
            seq,
            kind: Some(Kind::Credit(pb::WorkCredit { window })),
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The request side to give tonic, with the opening message queued, and
/// the handle that sends the rest.
pub fn requests(open: pb::LeaseRequest) -> (ReceiverStream<pb::WorkRequest>, Arc<SessionHandle>) {
    let (tx, rx) = mpsc::channel(QUEUED_REPORTS);
    let opening = pb::WorkRequest {
        seq: 0,
        kind: Some(Kind::Open(open)),
    };
    // A fresh channel has room for its first message.
    let _ = tx.try_send(opening);
    let handle = SessionHandle {
        tx,
        pending: Arc::default(),
        next_seq: AtomicU64::new(1),
    };
    (ReceiverStream::new(rx), Arc::new(handle))
}

/// Starts the reader of an opened session; returns the runner's stream.
pub fn start(
    responses: Streaming<pb::WorkResponse>,
    handle: &Arc<SessionHandle>,
    from_pb: fn(pb::LeasedJob) -> Option<LeasedJob>,
    status_error: fn(&tonic::Status) -> BrokerError,
) -> Box<dyn LeaseStream> {
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
    let reader = Reader {
        responses,
        pending: handle.pending.clone(),
        // Weak: the reader must not keep the request side open.
        requests: handle.tx.downgrade(),
        jobs: Some(jobs_tx),
        from_pb,
        status_error,
    };
    tokio::spawn(reader.run());
    Box::new(SessionJobs {
        jobs: jobs_rx,
        handle: Arc::downgrade(handle),
    })
}

struct Reader {
    responses: Streaming<pb::WorkResponse>,
    pending: Pending,
    requests: mpsc::WeakSender<pb::WorkRequest>,
    /// `None` once the runner's stream ended.
    jobs: Option<mpsc::UnboundedSender<Jobs>>,
    from_pb: fn(pb::LeasedJob) -> Option<LeasedJob>,
    status_error: fn(&tonic::Status) -> BrokerError,
}

impl Reader {
    async fn run(mut self) {
        loop {
            let response = match self.responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(status) => {
                    debug!(%status, "work session broke");
                    if let Some(jobs) = self.jobs.take() {
                        let _ = jobs.send(Err((self.status_error)(&status)));
                    }
                    break;
                }
            };
            for result in response.results {
                if let Some(reply) = lock(&self.pending.reports).remove(&result.seq) {
                    let _ = reply.send(result);
                }
            }
            let jobs: Vec<LeasedJob> = response.jobs.into_iter().filter_map(self.from_pb).collect();
            if !jobs.is_empty() {
                let unsent = match &self.jobs {
                    Some(tx) => tx.send(Ok(jobs)).err().and_then(|e| e.0.ok()),
                    None => Some(jobs),
                };
                if let Some(unsent) = unsent {
                    self.release(unsent);
                }
            }
            if response.draining {
                debug!("the broker drains: the session takes no more jobs");
                self.jobs = None;
            }
        }
        // Reports still waiting get no answer: dropping their senders says so.
        self.pending.ended.store(true, Ordering::Release);
        lock(&self.pending.reports).clear();
    }

    /// Gives back jobs that arrived after the runner's stream ended.
    fn release(&self, jobs: Vec<LeasedJob>) {
        if let Some(tx) = self.requests.upgrade() {
            release(&tx, jobs);
        }
    }
}

/// Releases `jobs` on the session of `tx`, without waiting for the
/// results (sent with a seq no report uses, and so ignored).
fn release(tx: &mpsc::Sender<pb::WorkRequest>, jobs: Vec<LeasedJob>) {
    for leased in jobs {
        debug!(job_id = leased.job.id, "job released unstarted");
        let release = pb::ReleaseRequest {
            job_id: leased.job.id,
            lease_id: leased.lease_id,
            delay: None,
            key_delay: None,
        };
        let _ = tx.try_send(pb::WorkRequest {
            seq: UNANSWERED,
            kind: Some(Kind::Release(release)),
        });
    }
}

/// The seq of a report whose result nobody waits for.
const UNANSWERED: u64 = u64::MAX;

/// The runner's view of a session: its jobs.
struct SessionJobs {
    jobs: mpsc::UnboundedReceiver<Jobs>,
    handle: std::sync::Weak<SessionHandle>,
}

impl LeaseStream for SessionJobs {
    fn next_batch(&mut self) -> BoxFuture<'_, Result<Option<Vec<LeasedJob>>, BrokerError>> {
        // `recv` is cancel-safe, and so this is.
        Box::pin(async move { self.jobs.recv().await.transpose() })
    }
}

impl Drop for SessionJobs {
    fn drop(&mut self) {
        // No more jobs: what is on its way the reader releases, and so is
        // what arrived and was never read.
        self.jobs.close();
        let mut unread = Vec::new();
        while let Ok(Ok(jobs)) = self.jobs.try_recv() {
            unread.extend(jobs);
        }
        if let Some(handle) = self.handle.upgrade() {
            handle.credit(0);
            release(&handle.tx, unread);
        }
    }
}
