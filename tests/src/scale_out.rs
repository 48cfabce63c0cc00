//! What the scale-out tests of every shared store share: brokers on one
//! store with short leases, `sluice-worker` processes, and producers that
//! spread EnqueueBatch calls over the brokers, move to the next live one
//! when theirs fails, and record every id whose Enqueue returned OK.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;

use crate::{BrokerProcess, WorkerProcess};

/// The lease the workers ask for: a killed broker's jobs run again after it.
pub const LEASE: Duration = Duration::from_secs(2);

/// A broker on the store `url`, once it serves, with `extra` flags.
pub fn broker_on(url: &str, extra: &[&str]) -> BrokerProcess {
    let mut args = vec![
        "--store",
        url,
        "--lease-duration",
        "2s",
        "--backoff-initial",
        "100ms",
        "--backoff-max",
        "200ms",
        "--drain-timeout",
        "2s",
    ];
    args.extend_from_slice(extra);
    let broker = BrokerProcess::start(&args);
    broker.wait_for_log("broker serving");
    broker
}

/// A `sluice-worker` of `broker`, four jobs at a time, running `exec`.
fn worker_of(broker: &BrokerProcess, id: &str, exec: &str) -> WorkerProcess {
    WorkerProcess::start(
        broker,
        &[
            "--exec",
            exec,
            "--concurrency",
            "4",
            "--lease-duration",
            "2s",
            "--worker-id",
            id,
        ],
    )
}

/// `sluice-worker`s of each broker, one per suffix: broker `i`'s are
/// `w{i}{suffix}` (`&[""]`: `w0`, `w1`, ...; `&["a", "b"]`: `w0a`, `w0b`, ...).
/// Their jobs succeed at once, except those of the broker `hanging`
/// names: its workers' jobs run for a minute, so that once it holds a
/// lease it holds it until it is killed (a kill under load that is sure
/// to leave leases behind).
pub fn workers_of(
    brokers: &[BrokerProcess],
    suffixes: &[&str],
    hanging: Option<usize>,
) -> Vec<WorkerProcess> {
    brokers
        .iter()
        .enumerate()
        .flat_map(|(i, b)| {
            let exec = if hanging == Some(i) {
                "t=sleep 60"
            } else {
                "t=true"
            };
            suffixes
                .iter()
                .map(move |suffix| worker_of(b, &format!("w{i}{suffix}"), exec))
        })
        .collect()
}

/// Waits until an Enqueue through each broker succeeds, for at most 10 s
/// after `since` (the store came back). Each refusal meanwhile must be
/// UNAVAILABLE (worth retrying) with a message `in_our_words` accepts
/// (the broker's, not the store's). Returns how long it took.
pub async fn serving_again(
    brokers: &[BrokerProcess],
    since: Instant,
    in_our_words: impl Fn(&str) -> bool,
) -> Duration {
    for broker in brokers {
        let mut client = pb::broker_client::BrokerClient::new(broker.channel().await);
        while let Err(status) = client.enqueue(crate::job("t", b"x")).await {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(in_our_words(status.message()), "{status:?}");
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "{}",
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    since.elapsed()
}

/// The `broker_id` a broker logged on the line that says `connected`
/// (its store's "connected to ...").
pub fn broker_id(broker: &BrokerProcess, connected: &str) -> String {
    let log = broker.wait_for_log(connected);
    log.lines()
        .find(|l| l.contains(connected))
        .and_then(|l| l.split("broker_id=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned()
}

/// Producers: each enqueues `per_producer` jobs in batches through its own
/// broker, moving to the next live one when its broker fails, and with a
/// `backlog` waits while more jobs than that are ready (so that a job given
/// back is not queued behind thousands); every id whose Enqueue returned
/// OK is recorded.
async fn produce(
    urls: Vec<String>,
    start_at: usize,
    per_producer: usize,
    backlog: Option<u64>,
    acked: Arc<Mutex<HashSet<String>>>,
    sent: Arc<AtomicUsize>,
) {
    let mut at = start_at;
    let mut client: Option<tonic::transport::Channel> = None;
    let mut done = 0;
    while done < per_producer {
        if client.is_none() {
            let endpoint = tonic::transport::Endpoint::from_shared(urls[at % urls.len()].clone())
                .unwrap()
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(5));
            match endpoint.connect().await {
                Ok(channel) => client = Some(channel),
                Err(_) => {
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let channel = client.clone().unwrap();
        if let Some(backlog) = backlog {
            let stats = pb::admin_client::AdminClient::new(channel.clone())
                .stats(pb::StatsRequest {})
                .await;
            let ready = stats.map_or(0, |s| {
                let queues = s.into_inner().queues;
                queues
                    .iter()
                    .find(|q| q.queue == "default")
                    .map_or(0, |q| q.ready)
            });
            if ready > backlog {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let batch = 20.min(per_producer - done);
        let jobs = (0..batch).map(|_| crate::job("t", b"x")).collect();
        let reply = pb::broker_client::BrokerClient::new(channel)
            .enqueue_batch(pb::EnqueueBatchRequest { jobs })
            .await;
        match reply {
            Ok(reply) => {
                let mut acked = acked.lock().unwrap();
                for result in reply.into_inner().results {
                    assert_eq!(result.code, 0, "{}", result.message);
                    acked.insert(result.job_id);
                }
                done += batch;
                sent.fetch_add(batch, Ordering::Relaxed);
            }
            // Not acknowledged: tried again (as new jobs) elsewhere.
            Err(_) => {
                client = None;
                at += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One producer per broker (see [`produce`]).
pub struct Producers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acked: Arc<Mutex<HashSet<String>>>,
    sent: Arc<AtomicUsize>,
}

impl Producers {
    /// Starts them: `per_producer` jobs each, waiting while more than
    /// `backlog` are ready.
    pub fn start(brokers: &[BrokerProcess], per_producer: usize, backlog: Option<u64>) -> Self {
        let urls: Vec<String> = brokers.iter().map(BrokerProcess::url).collect();
        let acked = Arc::new(Mutex::new(HashSet::new()));
        let sent = Arc::new(AtomicUsize::new(0));
        let tasks = (0..urls.len())
            .map(|i| {
                let (urls, acked, sent) = (urls.clone(), acked.clone(), sent.clone());
                tokio::spawn(produce(urls, i, per_producer, backlog, acked, sent))
            })
            .collect();
        Self { tasks, acked, sent }
    }

    /// Jobs whose Enqueue returned OK so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits for every producer; returns the ids acknowledged.
    pub async fn finish(self) -> HashSet<String> {
        for task in self.tasks {
            task.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}
