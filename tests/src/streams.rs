//! Clients of the two stream calls for tests: [`ProducerStream`]
//! (EnqueueStream) and [`WorkSession`] (Work), each a request channel and
//! the response stream, with waits bounded by [`crate::WAIT`].

use std::collections::VecDeque;

use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use sluice_proto::v1::work_request::Kind;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::in_process::{ack_of, within};
use crate::with_token;

/// How a response stream ended: OK, or its status's code.
pub async fn end_code<T>(stream: &mut Streaming<T>) -> (Code, String) {
    within("the stream to end", async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return (Code::Ok, String::new()),
                Err(status) => return (status.code(), status.message().to_owned()),
            }
        }
    })
    .await
}

/// An EnqueueStream.
pub struct ProducerStream {
    tx: Option<mpsc::Sender<pb::EnqueueStreamRequest>>,
    pub responses: Streaming<pb::EnqueueStreamResponse>,
}

impl ProducerStream {
    /// Opens a stream on `channel` with `token`.
    pub async fn open(channel: &Channel, token: Option<&str>) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(4096);
        let responses = BrokerClient::new(channel.clone())
            .enqueue_stream(with_token(ReceiverStream::new(rx), token))
            .await?
            .into_inner();
        Ok(Self {
            tx: Some(tx),
            responses,
        })
    }

    /// Sends `job` tagged `seq`.
    pub async fn send(&self, seq: u64, job: Option<pb::EnqueueRequest>) {
        let tx = self.tx.as_ref().expect("the stream is open");
        tx.send(pb::EnqueueStreamRequest { seq, job })
            .await
            .expect("the request channel is open");
    }

    /// The next response message, waiting at most [`crate::WAIT`].
    pub async fn next(&mut self) -> Result<Option<pb::EnqueueStreamResponse>, Status> {
        within("the next enqueue results", self.responses.message()).await
    }

    /// The next `n` results, across as many messages as they take.
    pub async fn results(&mut self, n: usize) -> Vec<pb::EnqueueStreamResult> {
        let mut results = Vec::new();
        while results.len() < n {
            let response = self.next().await.unwrap().expect("the stream ended");
            results.extend(response.results);
        }
        assert_eq!(results.len(), n, "more results than requests");
        results
    }

    /// Closes the producer's side.
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// A Work session, with the jobs and results it received and has not
/// handed out yet.
pub struct WorkSession {
    tx: Option<mpsc::Sender<pb::WorkRequest>>,
    pub responses: Streaming<pb::WorkResponse>,
    jobs: VecDeque<pb::LeasedJob>,
    results: VecDeque<pb::WorkResult>,
    /// The broker said it drains.
    pub draining: bool,
    next_seq: u64,
}

impl WorkSession {
    /// Opens a session with `open` and `token`.
    pub async fn open(
        channel: &Channel,
        token: Option<&str>,
        open: pb::LeaseRequest,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(4096);
        tx.send(pb::WorkRequest {
            seq: 0,
            kind: Some(Kind::Open(open)),
        })
        .await
        .unwrap();
        let responses = BrokerClient::new(channel.clone())
            .work(with_token(ReceiverStream::new(rx), token))
            .await?
            .into_inner();
        Ok(Self {
            tx: Some(tx),
            responses,
            jobs: VecDeque::new(),
            results: VecDeque::new(),
            draining: false,
            next_seq: 1,
        })
    }

    /// A session of `worker_id` on the default queue holding at most
    /// `max_in_flight`, on an open broker.
    pub async fn start(channel: &Channel, worker_id: &str, max_in_flight: u32) -> Self {
        Self::open(
            channel,
            None,
            pb::LeaseRequest {
                worker_id: worker_id.into(),
                max_in_flight,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// Reads one response message into the session's buffers; `false`
    /// once the stream ended.
    async fn read(&mut self) -> Result<bool, Status> {
        let Some(response) = within("the next work response", self.responses.message()).await?
        else {
            return Ok(false);
        };
        self.jobs.extend(response.jobs);
        self.results.extend(response.results);
        self.draining |= response.draining;
        Ok(true)
    }

    /// The next job leased to the session.
    pub async fn next_job(&mut self) -> pb::LeasedJob {
        loop {
            if let Some(job) = self.jobs.pop_front() {
                return job;
            }
            assert!(self.read().await.unwrap(), "the session ended");
        }
    }

    /// Jobs received and not yet handed out.
    pub fn unread_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Sends a report and returns its seq.
    pub async fn send(&mut self, kind: Option<Kind>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let tx = self.tx.as_ref().expect("the session is open");
        tx.send(pb::WorkRequest { seq, kind }).await.unwrap();
        seq
    }

    /// The next result, in the order the broker sent them.
    pub async fn result(&mut self) -> pb::WorkResult {
        loop {
            if let Some(result) = self.results.pop_front() {
                return result;
            }
            assert!(self.read().await.unwrap(), "the session ended");
        }
    }

    /// Sends a report and waits for its result (the next one).
    pub async fn report(&mut self, kind: Kind) -> pb::WorkResult {
        let seq = self.send(Some(kind)).await;
        let result = self.result().await;
        assert_eq!(result.seq, seq, "results come in order");
        result
    }

    /// Acks `job` on the session.
    pub async fn ack(&mut self, job: &pb::LeasedJob) -> pb::WorkResult {
        self.report(Kind::Ack(ack_of(job))).await
    }

    /// Reads until the broker says it drains.
    pub async fn wait_draining(&mut self) {
        while !self.draining {
            assert!(self.read().await.unwrap(), "the session ended");
        }
    }

    /// Closes the worker's side.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// How the session ended, after anything else it sends.
    pub async fn ended(&mut self) -> (Code, String) {
        loop {
            match self.read().await {
                Ok(true) => {}
                Ok(false) => return (Code::Ok, String::new()),
                Err(status) => return (status.code(), status.message().to_owned()),
            }
        }
    }
}
