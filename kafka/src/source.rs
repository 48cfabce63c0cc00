//! The source: a member of its source group in Sluice. Every third of a
//! claim's duration it claims its share of the topics' partitions
//! (Broker.ClaimPartitions); each partition it holds runs a task that
//! fetches records from Kafka (the next fetch under way while a commit
//! runs) and commits them in order (Broker.CommitPartition: the jobs and
//! the partition's new position in one commit, named by the hold's
//! epoch). Nothing is kept here between commits but the position.
//!
//! A commit the broker refuses for room (a full queue, its memory mark)
//! or cannot make (unavailable) pauses the partition and is tried again
//! with backoff, from where the broker says the partition stands; never
//! skipped. A commit refused as stale (the partition moved: another
//! holder, a reset, or an answer lost after the commit was made) ends the
//! partition's task; the next claim starts it again from the stored
//! position if this member still holds the partition.
//!
//! Drain (SIGTERM, SIGINT): no more fetches or claims; each partition's
//! commit in flight is finished, then the source leaves its group so the
//! others take its partitions at their next claim.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::Rng as _;
use rskafka::client::Client;
use rskafka::client::partition::PartitionClient;
use rskafka::record::RecordAndOffset;
use sluice_proto::Bearer;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::config::{Checked, Topic};
use crate::kafka;
use crate::mapping::record_to_job;
use crate::metrics::{PartitionLabels, SourceMetrics, TopicLabels};

/// The broker's client, with the token on every call.
pub type Broker = BrokerClient<InterceptedService<Channel, Bearer>>;

/// How often the topics' partitions are listed again (new partitions).
const RELIST: Duration = Duration::from_secs(30);

/// Shortest and longest pause before a refused commit is tried again.
const PAUSE_MIN: Duration = Duration::from_millis(100);
const PAUSE_MAX: Duration = Duration::from_secs(1);

/// Fetched batches waiting for their commit, per partition.
const PREFETCH: usize = 2;

/// What the fetcher hands the committer.
enum Fetched {
    /// Records from the position on, and the high watermark.
    Records(Vec<RecordAndOffset>, i64),
    /// Kafka no longer holds the records from the position up to this
    /// offset (its retention deleted them before they were read).
    Deleted(i64),
}

/// What every partition task shares.
struct Shared {
    config: Checked,
    kafka: Client,
    broker: Broker,
    member: String,
    metrics: SourceMetrics,
}

/// A member of a source group; see the module doc.
pub struct Source {
    shared: Arc<Shared>,
}

/// A partition task and what it was started with.
struct Running {
    epoch: u64,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Source {
    /// A source of `config` as `member`, over `kafka` and `broker`.
    pub fn new(
        config: Checked,
        kafka: Client,
        broker: Broker,
        member: String,
        metrics: SourceMetrics,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                kafka,
                broker,
                member,
                metrics,
            }),
        }
    }

    /// Runs until `shutdown`, then drains within `drain_timeout`.
    ///
    /// # Errors
    /// A configured topic Kafka does not have, at the start.
    pub async fn run(
        self,
        shutdown: CancellationToken,
        drain_timeout: Duration,
    ) -> anyhow::Result<()> {
        let shared = &self.shared;
        let config = &shared.config;
        let mut partitions = kafka::partitions(&shared.kafka, config).await?;
        info!(
            source_group = %config.group,
            member_id = %shared.member,
            partitions = partitions.len(),
            "reading Kafka into Sluice"
        );
        let tracker = TaskTracker::new();
        let mut running: HashMap<(String, i32), Running> = HashMap::new();
        let mut tick = tokio::time::interval(config.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listed = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if listed.elapsed() >= RELIST {
                // Bounded: a slow Kafka must not hold up the claims.
                let relisted = tokio::time::timeout(
                    config.lease / 3,
                    kafka::partitions(&shared.kafka, config),
                )
                .await;
                match relisted {
                    Ok(Ok(now)) => partitions = now,
                    Ok(Err(e)) => {
                        warn!(error = %e, "listing the topics' partitions again failed; keeping the last list")
                    }
                    Err(_) => {
                        warn!(
                            "listing the topics' partitions again took too long; keeping the last list"
                        )
                    }
                }
                listed = tokio::time::Instant::now();
            }
            running.retain(|_, r| !r.task.is_finished());
            let held = match self.claim(&partitions).await {
                Ok(held) => held,
                Err(status) => {
                    warn!(code = ?status.code(), error = status.message(), source_group = %config.group, "claiming partitions failed; retrying");
                    continue;
                }
            };
            let held: HashMap<(String, i32), pb::HeldPartition> = held
                .into_iter()
                .map(|h| ((h.stream.clone(), h.partition), h))
                .collect();
            running.retain(|key, r| {
                let keep = held.get(key).is_some_and(|h| h.epoch == r.epoch);
                if !keep {
                    info!(topic = %key.0, partition = key.1, "partition released");
                    r.stop.cancel();
                }
                keep
            });
            for (key, h) in held {
                if running.contains_key(&key) {
                    continue;
                }
                let Some(topic) = config.topic(&key.0).cloned() else {
                    continue;
                };
                info!(topic = %key.0, partition = key.1, epoch = h.epoch, position = ?h.position, "partition taken");
                let stop = shutdown.child_token();
                let epoch = h.epoch;
                let task = tracker.spawn(run_partition(shared.clone(), topic, h, stop.clone()));
                running.insert(key, Running { epoch, stop, task });
            }
            shared
                .metrics
                .partitions_held
                .set(i64::try_from(running.len()).unwrap_or(i64::MAX));
        }
        info!(
            partitions = running.len(),
            "draining: finishing the commits in flight"
        );
        for r in running.values() {
            r.stop.cancel();
        }
        tracker.close();
        if tokio::time::timeout(drain_timeout, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                ?drain_timeout,
                "commits still in flight at the drain deadline; their records are read again by the next holder"
            );
        }
        let left = shared
            .broker
            .clone()
            .leave_source_group(pb::LeaveSourceGroupRequest {
                group: config.group.clone(),
                member_id: shared.member.clone(),
            })
            .await;
        match left {
            Ok(r) => info!(released = r.into_inner().released, "left the source group"),
            Err(s) => warn!(
                error = s.message(),
                "leaving the source group failed; its claims run out instead"
            ),
        }
        Ok(())
    }

    async fn claim(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<pb::HeldPartition>, tonic::Status> {
        let shared = &self.shared;
        let answer = shared
            .broker
            .clone()
            .claim_partitions(pb::ClaimPartitionsRequest {
                group: shared.config.group.clone(),
                member_id: shared.member.clone(),
                partitions: partitions
                    .iter()
                    .map(|(stream, partition)| pb::SourcePartition {
                        stream: stream.clone(),
                        partition: *partition,
                    })
                    .collect(),
                lease_duration: prost_types::Duration::try_from(shared.config.lease).ok(),
            })
            .await?
            .into_inner();
        shared.metrics.members.set(i64::from(answer.members));
        shared
            .metrics
            .last_claim_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
        Ok(answer.held)
    }
}

/// Why a partition's work ended.
enum Ended {
    /// The partition moved on (or the answer to a commit was lost).
    Moved,
    /// Drain, or released.
    Stopped,
}

/// One partition: its start pinned if it has none, then fetch and commit
/// until stopped or moved.
async fn run_partition(
    shared: Arc<Shared>,
    topic: Topic,
    held: pb::HeldPartition,
    stop: CancellationToken,
) {
    let partition = held.partition;
    let labels = PartitionLabels {
        topic: topic.name.clone(),
        partition: partition.to_string(),
    };
    let ended = match partition_work(&shared, &topic, &held, &stop).await {
        Ok(ended) => ended,
        Err(e) => {
            warn!(topic = %topic.name, partition, error = %format!("{e:#}"), "partition stopped; the next claim starts it again");
            Ended::Moved
        }
    };
    shared.metrics.lag.remove(&labels);
    if matches!(ended, Ended::Moved) {
        debug!(topic = %topic.name, partition, "partition moved on");
    }
}

async fn partition_work(
    shared: &Arc<Shared>,
    topic: &Topic,
    held: &pb::HeldPartition,
    stop: &CancellationToken,
) -> anyhow::Result<Ended> {
    let pc = Arc::new(kafka::partition(&shared.kafka, &topic.name, held.partition).await?);
    let committer = Committer {
        shared: shared.clone(),
        topic: topic.clone(),
        held: held.clone(),
        stop: stop.clone(),
    };
    let mut position = match held.position {
        Some(p) => p,
        None => {
            // Pinned at once, so that a restart reads from the same place
            // (`latest` would move on otherwise).
            let start =
                kafka::start_offset(&pc, shared.config.start, shared.config.fetch_bytes).await?;
            match committer.commit(None, Vec::new(), start).await {
                Committed::To(p) => p,
                Committed::Ended(e) => return Ok(e),
            }
        }
    };
    let (batches, mut fetched) = mpsc::channel(PREFETCH);
    let fetcher = tokio::spawn(fetch(
        shared.clone(),
        pc.clone(),
        topic.name.clone(),
        position,
        stop.clone(),
        batches,
    ));
    let _abort = AbortOnDrop(fetcher);
    let lag = shared
        .metrics
        .lag
        .get_or_create(&PartitionLabels {
            topic: topic.name.clone(),
            partition: held.partition.to_string(),
        })
        .clone();
    while let Some(next) = fetched.recv().await {
        let (mut records, high) = match next {
            Fetched::Records(records, high) => (records, high),
            Fetched::Deleted(earliest) => {
                warn!(
                    topic = %topic.name,
                    partition = held.partition,
                    from = position,
                    to = earliest,
                    "Kafka deleted records before they were read (the topic's retention): going on from its earliest offset"
                );
                let gone = u64::try_from(earliest - position).unwrap_or(0);
                shared
                    .metrics
                    .deleted_unread
                    .get_or_create(&TopicLabels {
                        topic: topic.name.clone(),
                        queue: topic.queue.clone(),
                    })
                    .inc_by(gone);
                match committer.commit(Some(position), Vec::new(), earliest).await {
                    Committed::To(p) => position = p,
                    Committed::Ended(e) => return Ok(e),
                }
                continue;
            }
        };
        records.retain(|r| r.offset >= position);
        let mapped = records
            .into_iter()
            .map(|r| record_to_job(topic, held.partition, r, shared.config.batch_bytes))
            .collect();
        for chunk in chunks(
            mapped,
            shared.config.batch_records,
            shared.config.batch_bytes,
        ) {
            // Drain: the commit in flight was the last.
            if stop.is_cancelled() {
                return Ok(Ended::Stopped);
            }
            let Some(last) = chunk.last() else {
                continue;
            };
            let to = last.offset + 1;
            match committer.commit(Some(position), chunk, to).await {
                Committed::To(p) => position = p,
                Committed::Ended(e) => return Ok(e),
            }
            lag.set(high.saturating_sub(position).max(0));
        }
    }
    Ok(Ended::Stopped)
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Fetches from `offset` on until stopped, sending each non-empty batch
/// with the high watermark; a failed fetch is tried again with backoff.
async fn fetch(
    shared: Arc<Shared>,
    pc: Arc<PartitionClient>,
    topic: String,
    mut offset: i64,
    stop: CancellationToken,
    batches: mpsc::Sender<Fetched>,
) {
    let wait = i32::try_from(shared.config.fetch_wait.as_millis())
        .unwrap_or(i32::MAX)
        .max(kafka::SHORTEST_FETCH_WAIT_MS);
    let read = shared
        .metrics
        .records_read
        .get_or_create(&TopicLabels {
            topic: topic.clone(),
            queue: shared
                .config
                .topic(&topic)
                .map(|t| t.queue.clone())
                .unwrap_or_default(),
        })
        .clone();
    let mut failures = 0;
    loop {
        let fetched = tokio::select! {
            () = stop.cancelled() => return,
            f = pc.fetch_records(offset, 1..shared.config.fetch_bytes, wait) => f,
        };
        match fetched {
            Ok((records, high)) => {
                failures = 0;
                let Some(last) = records.last() else {
                    // Nothing past the offset, or only control records
                    // (transaction markers), which come back as nothing
                    // and at once: wait as a fetch would have.
                    if high > offset {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(shared.config.fetch_wait) => {}
                        }
                    }
                    continue;
                };
                offset = last.offset + 1;
                read.inc_by(records.len() as u64);
                if batches.send(Fetched::Records(records, high)).await.is_err() {
                    return;
                }
            }
            Err(rskafka::client::error::Error::ServerError {
                protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                ..
            }) => match kafka::bounds(&pc).await {
                Ok((earliest, _)) if earliest > offset => {
                    if batches.send(Fetched::Deleted(earliest)).await.is_err() {
                        return;
                    }
                    offset = earliest;
                }
                bounds => {
                    failures += 1;
                    shared.metrics.paused(&topic, "kafka");
                    warn!(
                        topic,
                        partition = pc.partition(),
                        offset,
                        ?bounds,
                        "the position is past what Kafka holds; retrying"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause(failures)) => {}
                    }
                }
            },
            Err(e) => {
                failures += 1;
                shared.metrics.paused(&topic, "kafka");
                warn!(topic, partition = pc.partition(), offset, error = %e, "fetching from Kafka failed; retrying");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause(failures)) => {}
                }
            }
        }
    }
}

/// `records` cut into commits of at most `max_records` and (unless one
/// record alone, which the mapping keeps under `max_bytes`) `max_bytes`
/// encoded: the broker takes a message of its `--max-payload` and 512
/// KiB more, and `max_bytes` is at most its `--max-payload`.
fn chunks(
    records: Vec<pb::SourceRecord>,
    max_records: usize,
    max_bytes: usize,
) -> Vec<Vec<pb::SourceRecord>> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for record in records {
        // The record's field in the request: its bytes and framing.
        let size = prost::Message::encoded_len(&record) + 8;
        if !chunk.is_empty() && (chunk.len() >= max_records || bytes + size > max_bytes) {
            out.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(record);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

/// The backoff before try `n` (1, 2, ...): doubling from [`PAUSE_MIN`] to
/// [`PAUSE_MAX`], with up to a quarter of jitter.
fn pause(n: u32) -> Duration {
    let base = PAUSE_MIN
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(PAUSE_MAX);
    base.mul_f64(1.0 - rand::rng().random_range(0.0..0.25))
}

/// What a commit came to.
enum Committed {
    /// The partition's position now.
    To(i64),
    /// The partition's work ends.
    Ended(Ended),
}

/// Commits records of one held partition.
struct Committer {
    shared: Arc<Shared>,
    topic: Topic,
    held: pb::HeldPartition,
    stop: CancellationToken,
}

impl Committer {
    /// Commits `records` from `from` until every one is taken: a refusal
    /// pauses and tries the rest again. Once stopped, the commit in flight
    /// is finished and no other is tried.
    async fn commit(
        &self,
        mut from: Option<i64>,
        mut records: Vec<pb::SourceRecord>,
        to: i64,
    ) -> Committed {
        let shared = &self.shared;
        let labels = TopicLabels {
            topic: self.topic.name.clone(),
            queue: self.topic.queue.clone(),
        };
        let mut failures = 0;
        loop {
            let request = pb::CommitPartitionRequest {
                group: shared.config.group.clone(),
                member_id: shared.member.clone(),
                stream: self.topic.name.clone(),
                partition: self.held.partition,
                epoch: self.held.epoch,
                from_position: from,
                records: records.clone(),
                to_position: to,
            };
            let reason = match shared.broker.clone().commit_partition(request).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    let taken = answer.results.iter().filter(|r| r.code == 0).count();
                    let dead = u64::from(answer.dead_lettered);
                    shared.metrics.commits.get_or_create(&labels).inc();
                    shared
                        .metrics
                        .dead_letters
                        .get_or_create(&labels)
                        .inc_by(dead);
                    shared
                        .metrics
                        .jobs_enqueued
                        .get_or_create(&labels)
                        .inc_by((taken as u64).saturating_sub(dead));
                    if taken == records.len() {
                        return Committed::To(answer.position);
                    }
                    let refusal = answer
                        .results
                        .last()
                        .map(|r| r.message.clone())
                        .unwrap_or_default();
                    debug!(topic = %self.topic.name, partition = self.held.partition, taken, refusal, "commit refused in part; pausing");
                    records.drain(..taken);
                    from = Some(answer.position);
                    "full"
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return Committed::Ended(Ended::Moved);
                }
                Err(status) => {
                    warn!(topic = %self.topic.name, partition = self.held.partition, code = ?status.code(), error = status.message(), "commit failed; pausing the partition");
                    match status.code() {
                        Code::ResourceExhausted => "full",
                        Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::Cancelled
                        | Code::Unknown => "unavailable",
                        _ => "error",
                    }
                }
            };
            failures += 1;
            shared.metrics.paused(&self.topic.name, reason);
            tokio::select! {
                () = self.stop.cancelled() => return Committed::Ended(Ended::Stopped),
                () = tokio::time::sleep(pause(failures)) => {}
            }
        }
    }
}
