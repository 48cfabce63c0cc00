//! The in-process harness: a broker served by `server::run` inside the
//! test on 127.0.0.1:0, with generated clients and helpers for the
//! service's RPCs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::config::Config;
use sluice_broker::server::{self, DrainReport};
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

pub use crate::WAIT;
pub use crate::backends::local_only;

/// A broker serving on 127.0.0.1:0; stopped (without waiting) on drop.
/// If the server failed or panicked during the test, the drop fails the
/// test with its error instead of losing it.
pub struct TestBroker {
    pub addr: SocketAddr,
    /// The HTTP listener (`--http-addr`), when started [`TestBroker::with_http`].
    pub http_addr: Option<SocketAddr>,
    pub broker: BrokerClient<Channel>,
    pub admin: AdminClient<Channel>,
    pub channel: Channel,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// What `server::run` returned, once it has.
    outcome: Arc<Mutex<Option<Result<DrainReport, String>>>>,
}

/// Test settings: short backoff so retries are quick, the backend of the
/// running test ([`crate::backends`]), everything else default.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.queue.backoff.initial = Duration::from_millis(50);
    config.queue.backoff.max = Duration::from_millis(200);
    config.drain_timeout = Duration::from_secs(5);
    config.store = crate::backends::store_config();
    config
}

impl TestBroker {
    /// A broker with [`test_config`].
    pub async fn start() -> Self {
        Self::with_config(test_config()).await
    }

    /// A broker with `config`.
    pub async fn with_config(config: Config) -> Self {
        Self::start_with(config, None).await
    }

    /// A broker with `config` and an HTTP listener (metrics, dashboard and
    /// API) on 127.0.0.1:0, at [`TestBroker::http_addr`].
    pub async fn with_http(config: Config) -> Self {
        Self::start_with(config, Some("127.0.0.1:0")).await
    }

    /// A broker with `config` and an HTTP listener on every address
    /// (0.0.0.0:0: not a loopback listener, as one that other hosts
    /// reach), at [`TestBroker::http_addr`] as 127.0.0.1 and its port:
    /// the tests still connect over loopback only.
    pub async fn with_http_off_loopback(config: Config) -> Self {
        Self::start_with(config, Some("0.0.0.0:0")).await
    }

    async fn start_with(config: Config, http: Option<&str>) -> Self {
        init_test_log();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let http = match http {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.unwrap()),
            None => None,
        };
        let http_addr = http.as_ref().map(|l| {
            let port = l.local_addr().unwrap().port();
            SocketAddr::from(([127, 0, 0, 1], port))
        });
        let listeners = server::Listeners {
            grpc: listener,
            http,
        };
        let shutdown = CancellationToken::new();
        let outcome = Arc::new(Mutex::new(None));
        let task = {
            let (outcome, shutdown) = (outcome.clone(), shutdown.clone());
            tokio::spawn(async move {
                let result = server::run(listeners, config, shutdown).await;
                *outcome.lock().unwrap() = Some(result.map_err(|e| e.to_string()));
            })
        };
        let channel = connect(addr).await;
        Self {
            addr,
            http_addr,
            broker: BrokerClient::new(channel.clone()),
            admin: AdminClient::new(channel.clone()),
            channel,
            shutdown,
            task: Some(task),
            outcome,
        }
    }

    /// The broker's URL, for a worker.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `job_id` is in `state`; returns the job.
    pub async fn wait_for_state(&self, job_id: &str, state: pb::JobState) -> pb::Job {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let job = self.job(job_id).await;
                if job.state() == state {
                    return job;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        match waited {
            Ok(job) => job,
            Err(_) => panic!(
                "job {job_id} never reached {state:?} in {WAIT:?}: it is {:?}",
                self.job(job_id).await.state()
            ),
        }
    }

    /// Starts the drain, as SIGTERM does.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the broker to finish draining; fails the test if it failed.
    pub async fn stopped(mut self) -> DrainReport {
        let task = self.task.take().unwrap();
        if let Err(e) = within("the broker to stop", task).await {
            panic!("the broker under test panicked: {e}");
        }
        match self.outcome.lock().unwrap().take() {
            Some(Ok(report)) => report,
            Some(Err(e)) => panic!("the broker under test failed: {e}"),
            None => unreachable!("the server task ended without an outcome"),
        }
    }

    pub async fn enqueue(&self, job_type: &str) -> String {
        self.enqueue_req(pb::EnqueueRequest {
            job_type: job_type.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn enqueue_req(&self, req: pb::EnqueueRequest) -> String {
        self.broker
            .clone()
            .enqueue(req)
            .await
            .unwrap()
            .into_inner()
            .job_id
    }

    pub async fn lease(&self, worker_id: &str, max_in_flight: u32) -> Streaming<pb::LeasedJob> {
        self.lease_req(pb::LeaseRequest {
            worker_id: worker_id.into(),
            max_in_flight,
            ..Default::default()
        })
        .await
    }

    pub async fn lease_req(&self, req: pb::LeaseRequest) -> Streaming<pb::LeasedJob> {
        self.broker.clone().lease(req).await.unwrap().into_inner()
    }

    /// The per-job results of an EnqueueBatch of `jobs`, or the call's refusal.
    pub async fn enqueue_batch(
        &self,
        jobs: Vec<pb::EnqueueRequest>,
    ) -> Result<Vec<pb::EnqueueResult>, tonic::Status> {
        let req = pb::EnqueueBatchRequest { jobs };
        Ok(self
            .broker
            .clone()
            .enqueue_batch(req)
            .await?
            .into_inner()
            .results)
    }

    /// Like [`TestBroker::lease`], on a LeaseBatches stream.
    pub async fn lease_batches(
        &self,
        worker_id: &str,
        max_in_flight: u32,
    ) -> Streaming<pb::LeasedJobBatch> {
        let req = pb::LeaseRequest {
            worker_id: worker_id.into(),
            max_in_flight,
            ..Default::default()
        };
        self.broker
            .clone()
            .lease_batches(req)
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn job(&self, job_id: &str) -> pb::Job {
        self.admin
            .clone()
            .get_job(pb::GetJobRequest {
                job_id: job_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn state(&self, job_id: &str) -> pb::JobState {
        self.job(job_id).await.state()
    }

    pub async fn ack(&self, leased: &pb::LeasedJob) -> Result<(), tonic::Status> {
        self.broker.clone().ack(ack_of(leased)).await.map(|_| ())
    }

    pub async fn nack(
        &self,
        leased: &pb::LeasedJob,
        error: &str,
    ) -> Result<pb::NackResponse, tonic::Status> {
        let req = pb::NackRequest {
            job_id: job_id(leased).into(),
            lease_id: leased.lease_id.clone(),
            error: error.into(),
            ..Default::default()
        };
        self.broker.clone().nack(req).await.map(|r| r.into_inner())
    }

    pub async fn workers(&self) -> Vec<pb::WorkerInfo> {
        let req = pb::ListWorkersRequest {};
        self.admin
            .clone()
            .list_workers(req)
            .await
            .unwrap()
            .into_inner()
            .workers
    }

    /// Leases one job on a one-slot stream of `worker_id`, closes the
    /// stream and waits until the broker has forgotten it; the lease stays
    /// with the job.
    pub async fn lease_then_close_stream(&self, worker_id: &str) -> pb::LeasedJob {
        let mut stream = self.lease(worker_id, 1).await;
        let leased = next_job(&mut stream).await;
        drop(stream);
        eventually("the stream to be gone from ListWorkers", || async {
            self.workers().await.is_empty()
        })
        .await;
        leased
    }

    /// The Stats row of `queue`, which must exist.
    pub async fn queue_stats(&self, queue: &str) -> pb::QueueStats {
        self.find_queue_stats(queue)
            .await
            .unwrap_or_else(|| panic!("Stats has no row for queue {queue:?}"))
    }

    /// The Stats row of `queue`, if the broker knows it.
    pub async fn find_queue_stats(&self, queue: &str) -> Option<pb::QueueStats> {
        let stats = self
            .admin
            .clone()
            .stats(pb::StatsRequest {})
            .await
            .unwrap()
            .into_inner();
        stats.queues.into_iter().find(|q| q.queue == queue)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let Some(task) = self.task.take() else { return };
        let finished = task.is_finished();
        task.abort();
        if std::thread::panicking() {
            return;
        }
        // A server that stopped on its own during the test failed.
        match self.outcome.lock().unwrap().take() {
            Some(Err(e)) => panic!("the broker under test failed: {e}"),
            None if finished => panic!("the broker under test panicked"),
            _ => {}
        }
    }
}

/// With `SLUICE_TEST_LOG` set (a filter, as `RUST_LOG`), the logs of the
/// brokers a test serves inside it, in the test's output.
fn init_test_log() {
    if let Ok(filter) = std::env::var("SLUICE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(WAIT)
        .connect()
        .await
        .unwrap()
}

/// The Ack of a leased job.
pub fn ack_of(job: &pb::LeasedJob) -> pb::AckRequest {
    pb::AckRequest {
        job_id: job_id(job).into(),
        lease_id: job.lease_id.clone(),
        ..Default::default()
    }
}

pub fn job_id(leased: &pb::LeasedJob) -> &str {
    &leased.job.as_ref().unwrap().id
}

/// The next job on a stream, waiting at most [`WAIT`].
pub async fn next_job(stream: &mut Streaming<pb::LeasedJob>) -> pb::LeasedJob {
    within("the next job on the stream", stream.message())
        .await
        .unwrap()
        .expect("stream ended")
}

/// Waits until the stream ends (the broker closed it), failing if a job
/// arrives instead.
pub async fn assert_stream_ends<T: std::fmt::Debug>(stream: &mut Streaming<T>) {
    let next = within("the stream to end", stream.message()).await;
    assert!(
        matches!(next, Ok(None)),
        "expected the stream to end, got {next:?}"
    );
}

/// Asserts that nothing arrives on the stream for `quiet`.
pub async fn assert_quiet(stream: &mut Streaming<pb::LeasedJob>, quiet: Duration) {
    if let Ok(msg) = tokio::time::timeout(quiet, stream.message()).await {
        panic!("expected nothing on the stream, got {msg:?}");
    }
}

/// `fut`, failing the test, saying it waited for `what`, if it takes
/// longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("waited {WAIT:?} for {what}"),
    }
}

/// Polls `check` until it returns true, failing after [`WAIT`] with `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

pub fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.expect_err("expected an error status").code()
}
