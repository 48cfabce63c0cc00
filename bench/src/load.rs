//! One load run: C consumers hold Lease streams (acking each job as soon
//! as it arrives, like a no-op handler), then P producers enqueue N jobs,
//! closed-loop with a window of calls in flight or open-loop at a fixed
//! rate. Every payload carries its send time, so a consumer measures
//! enqueue-to-start latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use sluice_proto::Bearer;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Which calls the load uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// Enqueue, Lease and Ack: one call per job.
    Unary,
    /// EnqueueBatch, LeaseBatches and AckBatch.
    Batch,
    /// EnqueueStream (a result per job, --window unanswered per producer)
    /// and Work sessions (an Ack report per job).
    Stream,
}

/// What one run does.
#[derive(Debug, Clone)]
pub struct Load {
    pub jobs: u64,
    pub producers: usize,
    pub consumers: usize,
    /// Unresolved jobs per consumer stream (max_in_flight).
    pub in_flight: u32,
    /// Enqueue calls in flight per producer.
    pub window: usize,
    /// Jobs per EnqueueBatch call (batch API).
    pub batch: usize,
    pub payload: usize,
    /// Open loop: total jobs per second, spread over the producers.
    pub rate: Option<f64>,
    pub api: Api,
    /// Consumers are sluice-worker library workers with this handler time
    /// (`None`: raw clients that ack each job as it arrives).
    pub worker_handler: Option<Duration>,
    pub queue: String,
    /// TLS and tokens of the clients (both off by default).
    pub security: ClientSecurity,
    /// Print the ack rate of each step of this many jobs (sustained runs).
    pub report_every: Option<u64>,
    /// Producers wait while more than this many jobs are enqueued and not
    /// yet acked (a sustained run whose backlog stays bounded).
    pub max_backlog: Option<u64>,
    /// Raw consumers ack through the next broker of the run, not the one
    /// their stream is on (as behind a balancer that spreads calls).
    pub ack_elsewhere: bool,
    /// Jobs carry one of this many flow-control keys, in turn (0: none).
    pub keys: u32,
}

/// The flow-control key of a load's `n`-th job of a producer.
fn key_of(load: &Load, n: u64) -> String {
    if load.keys == 0 {
        String::new()
    } else {
        format!("k{}", n % u64::from(load.keys))
    }
}

/// How the load's clients reach the broker: TLS (an `https://` URL) and a
/// bearer token per role, each off by default.
#[derive(Clone, Default)]
pub struct ClientSecurity {
    pub tls: Option<ClientTls>,
    pub tokens: Tokens,
}

/// The clients' TLS files: a CA to trust (else the system's roots), and a
/// client certificate and key (mTLS).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The token each kind of client sends.
#[derive(Clone, Default)]
pub struct Tokens {
    pub producer: Option<String>,
    pub worker: Option<String>,
    pub admin: Option<String>,
}

impl Tokens {
    /// One token for every client.
    pub fn same(token: String) -> Self {
        Self {
            producer: Some(token.clone()),
            worker: Some(token.clone()),
            admin: Some(token),
        }
    }
}

/// Which calls a client makes, so which token it sends.
#[derive(Debug, Clone, Copy)]
pub enum Role {
    Producer,
    Worker,
    Admin,
}

impl std::fmt::Debug for ClientSecurity {
    // Never the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.tokens;
        let tokens = [t.producer.is_some(), t.worker.is_some(), t.admin.is_some()];
        f.debug_struct("ClientSecurity")
            .field("tls", &self.tls)
            .field(
                "tokens (producer, worker, admin)",
                &tokens.map(|set| if set { "<redacted>" } else { "none" }),
            )
            .finish()
    }
}

impl ClientSecurity {
    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The broker's URL at `addr`.
    pub fn url(&self, addr: &str) -> String {
        format!("{}://{addr}", self.scheme())
    }

    fn token(&self, role: Role) -> Option<&String> {
        match role {
            Role::Producer => self.tokens.producer.as_ref(),
            Role::Worker => self.tokens.worker.as_ref(),
            Role::Admin => self.tokens.admin.as_ref(),
        }
    }

    fn tls_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(config))
    }
}

/// A channel whose calls carry the role's bearer token.
pub type Conn = InterceptedService<Channel, Bearer>;

/// What one run measured.
pub struct Measured {
    /// From the first enqueue sent to the last enqueue answered.
    pub enqueue: Duration,
    /// From the first enqueue sent to the last ack answered.
    pub end_to_end: Duration,
    /// Enqueue (send) to receipt by a consumer, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Enqueue or EnqueueBatch calls, send to answer, in microseconds.
    pub enqueue_call_us: Histogram<u64>,
}

/// How late an open-loop send may be before it counts as a stall.
const STALL: Duration = Duration::from_millis(5);

struct Progress {
    acked: AtomicU64,
    /// Jobs the producers sent (for --max-backlog).
    sent: AtomicU64,
    /// Cancelled once every job is acked (level-triggered: no missed wake-up).
    done: CancellationToken,
    target: u64,
}

pub async fn run(addrs: &[String], load: &Load) -> anyhow::Result<Measured> {
    // Producer and consumer i use broker i (of several, round robin).
    let at = |i: usize| addrs[i % addrs.len()].as_str();
    let addr = at(0);
    let epoch = Instant::now();
    let progress = Arc::new(Progress {
        acked: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        done: CancellationToken::new(),
        target: load.jobs,
    });
    let mut consumers = JoinSet::new();
    for id in 0..load.consumers {
        let client = BrokerClient::new(connect(at(id), &load.security, Role::Worker).await?);
        let acks_to = if load.ack_elsewhere {
            BrokerClient::new(connect(at(id + 1), &load.security, Role::Worker).await?)
        } else {
            client.clone()
        };
        let (load, progress) = (load.clone(), progress.clone());
        match load.worker_handler {
            None => consumers.spawn(consume(client, acks_to, id, load, progress, epoch)),
            Some(work) => consumers.spawn(consume_with_worker(
                at(id).to_owned(),
                id,
                load,
                progress,
                epoch,
                work,
            )),
        };
    }
    wait_for_workers(addr, &load.security, load.consumers).await?;
    if load.worker_handler.is_some() {
        // The library acks on its own: the broker's count says when all are.
        let admin = AdminClient::new(connect(addr, &load.security, Role::Admin).await?);
        tokio::spawn(watch_acks(admin, load.queue.clone(), progress.clone()));
    }

    let started = Instant::now();
    if let Some(step) = load.report_every {
        tokio::spawn(report_steps(progress.clone(), step, started));
    }
    let mut producers = JoinSet::new();
    let per_producer = load.jobs / load.producers as u64;
    for id in 0..load.producers {
        let count = if id == 0 {
            load.jobs - per_producer * (load.producers as u64 - 1)
        } else {
            per_producer
        };
        let client = BrokerClient::new(connect(at(id), &load.security, Role::Producer).await?);
        let (load, progress) = (load.clone(), progress.clone());
        match load.api {
            Api::Stream => producers.spawn(produce_stream(
                client, count, load, progress, epoch, started,
            )),
            Api::Unary | Api::Batch => {
                producers.spawn(produce(client, count, load, progress, epoch, started))
            }
        };
    }
    let mut enqueue_call_us = Histogram::<u64>::new(3)?;
    while let Some(result) = producers.join_next().await {
        enqueue_call_us.add(result??)?;
    }
    let enqueue = started.elapsed();
    // A consumer that fails ends the run with its error, not a timeout.
    // The bound grows with the run: at least 300 s, or 1,000 jobs a second.
    let bound = Duration::from_secs(300.max(load.jobs / 1000));
    let waited = tokio::time::timeout(bound, async {
        // Biased: a consumer returns right after `done` fires, and that is
        // the end of the run, not an early end of its stream.
        tokio::select! {
            biased;
            () = progress.done.cancelled() => Ok(()),
            Some(result) = consumers.join_next() => match result? {
                Err(e) => Err(e),
                Ok(_) => Err(anyhow::anyhow!("a consumer's stream ended before every job was acked")),
            },
        }
    })
    .await;
    match waited {
        Err(_) => bail!(
            "only {} of {} jobs acked within {bound:?}",
            progress.acked.load(Ordering::Acquire),
            load.jobs
        ),
        Ok(result) => result?,
    }
    let end_to_end = started.elapsed();
    let mut latency_us = Histogram::<u64>::new(3)?;
    while let Some(result) = consumers.join_next().await {
        latency_us.add(result??)?;
    }
    Ok(Measured {
        enqueue,
        end_to_end,
        latency_us,
        enqueue_call_us,
    })
}

/// Prints to stderr, for each `step` jobs acked, the ack rate over that
/// step: a sustained run shows whether the rate holds.
async fn report_steps(progress: Arc<Progress>, step: u64, started: Instant) {
    let mut next = step;
    let mut last = started;
    while !progress.done.is_cancelled() || progress.acked.load(Ordering::Acquire) >= next {
        if progress.acked.load(Ordering::Acquire) >= next {
            let now = Instant::now();
            let rate = step as f64 / (now - last).as_secs_f64();
            eprintln!(
                "acked {next:>10}: {rate:>8.0} jobs/s over the last {step} ({:.0} s in)",
                (now - started).as_secs_f64()
            );
            last = now;
            next += step;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A connection to `addr` with `security`'s TLS, sending `role`'s token.
pub async fn connect(addr: &str, security: &ClientSecurity, role: Role) -> anyhow::Result<Conn> {
    let mut endpoint = Endpoint::from_shared(security.url(addr))?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20));
    if let Some(config) = security.tls_config()? {
        endpoint = endpoint.tls_config(config)?;
    }
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", security.url(addr)))?;
    let bearer = Bearer::new(security.token(role).map(String::as_str))
        .map_err(|_| anyhow::anyhow!("the {role:?} token is not visible ASCII"))?;
    Ok(InterceptedService::new(channel, bearer))
}

/// Consumers count as ready once the broker lists their streams.
async fn wait_for_workers(addr: &str, security: &ClientSecurity, n: usize) -> anyhow::Result<()> {
    let mut admin = AdminClient::new(connect(addr, security, Role::Admin).await?);
    for _ in 0..500 {
        if admin
            .list_workers(pb::ListWorkersRequest {})
            .await?
            .into_inner()
            .workers
            .len()
            >= n
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("consumers did not register within 5s")
}

/// When job number `sent` of a producer is due (open loop), and the time
/// to stamp it with: the send time, or its due time when it is sent more
/// than [`STALL`] late (timer slop stays well under it), so that a
/// producer held up by the broker shows in the latency rather than
/// quietly offering less (as peerbench does).
struct Pacing {
    interval: Option<Duration>,
    started: Instant,
    epoch: Instant,
}

impl Pacing {
    fn new(load: &Load, started: Instant, epoch: Instant) -> Self {
        let interval = load
            .rate
            .map(|rate| Duration::from_secs_f64(load.producers as f64 / rate));
        Self {
            interval,
            started,
            epoch,
        }
    }

    /// Waits until job `sent` is due (at once, closed loop).
    async fn due(&self, sent: u64) {
        if let Some(interval) = self.interval {
            tokio::time::sleep_until(self.started + interval.mul_f64(sent as f64)).await;
        }
    }

    fn stamp(&self, sent: u64) -> u64 {
        let now = self.epoch.elapsed();
        let due = self
            .interval
            .map(|i| (self.started + i.mul_f64(sent as f64)).duration_since(self.epoch));
        match due {
            Some(due) if now > due + STALL => due.as_nanos() as u64,
            _ => now.as_nanos() as u64,
        }
    }
}

/// Waits while more than `--max-backlog` jobs are enqueued and not acked.
async fn hold_backlog(load: &Load, progress: &Progress) {
    if let Some(most) = load.max_backlog {
        while progress.sent.load(Ordering::Acquire) > progress.acked.load(Ordering::Acquire) + most
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A producer on one EnqueueStream with at most `--window` requests
/// unanswered; the call time of each is its send to its result.
async fn produce_stream(
    mut client: BrokerClient<Conn>,
    count: u64,
    load: Load,
    progress: Arc<Progress>,
    epoch: Instant,
    started: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let pacing = Pacing::new(&load, started, epoch);
    let (tx, rx) = tokio::sync::mpsc::channel(load.window.max(1));
    let mut responses = client
        .enqueue_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .context("EnqueueStream")?
        .into_inner();
    let window = Arc::new(tokio::sync::Semaphore::new(load.window.max(1)));
    // Send times by seq, for the call times; results come in order.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(0)).collect());
    let reader = {
        let (window, sent_at) = (window.clone(), sent_at.clone());
        tokio::spawn(async move {
            let mut call_us = Histogram::<u64>::new(3)?;
            let mut answered = 0u64;
            while answered < count {
                let Some(response) = responses.message().await.context("EnqueueStream")? else {
                    bail!("the EnqueueStream ended after {answered} of {count} results");
                };
                let now = epoch.elapsed().as_nanos() as u64;
                for result in &response.results {
                    if result.code != 0 {
                        bail!("EnqueueStream request failed: {}", result.message);
                    }
                    let at = sent_at
                        .get(result.seq as usize)
                        .map_or(now, |a| a.load(Ordering::Acquire));
                    call_us.record(now.saturating_sub(at) / 1000)?;
                }
                answered += response.results.len() as u64;
                window.add_permits(response.results.len());
            }
            Ok(call_us)
        })
    };
    for seq in 0..count {
        window.acquire().await?.forget();
        pacing.due(seq).await;
        hold_backlog(&load, &progress).await;
        let at = pacing.stamp(seq);
        sent_at[seq as usize].store(epoch.elapsed().as_nanos() as u64, Ordering::Release);
        let job = pb::EnqueueRequest {
            queue: load.queue.clone(),
            job_type: "bench".into(),
            payload: payload(load.payload, at),
            key: key_of(&load, seq),
            ..Default::default()
        };
        if tx
            .send(pb::EnqueueStreamRequest {
                seq,
                job: Some(job),
            })
            .await
            .is_err()
        {
            break;
        }
        progress.sent.fetch_add(1, Ordering::AcqRel);
    }
    let call_us = reader.await??;
    drop(tx);
    Ok(call_us)
}

/// A payload stamped with `at`, nanoseconds since the run's epoch.
fn payload(size: usize, at: u64) -> bytes::Bytes {
    let mut p = vec![0u8; size.max(8)];
    p[..8].copy_from_slice(&at.to_le_bytes());
    p.into()
}

/// Microseconds from the send time stamped in `payload` until now.
fn latency_us(payload: &[u8], epoch: Instant) -> u64 {
    let now = epoch.elapsed().as_nanos() as u64;
    let sent = payload
        .get(..8)
        .map_or(now, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    now.saturating_sub(sent) / 1000
}

/// [`latency_us`] of a leased job.
fn latency_of(job: &pb::LeasedJob, epoch: Instant) -> u64 {
    job.job
        .as_ref()
        .map_or(0, |j| latency_us(&j.payload, epoch))
}

async fn produce(
    client: BrokerClient<Conn>,
    count: u64,
    load: Load,
    progress: Arc<Progress>,
    epoch: Instant,
    started: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut calls = JoinSet::new();
    let mut call_us = Histogram::<u64>::new(3)?;
    let pacing = Pacing::new(&load, started, epoch);
    let request = |at: u64, n: u64| pb::EnqueueRequest {
        queue: load.queue.clone(),
        job_type: "bench".into(),
        payload: payload(load.payload, at),
        key: key_of(&load, n),
        ..Default::default()
    };
    let stamp = |sent: u64| pacing.stamp(sent);
    let mut sent = 0u64;
    while sent < count {
        if calls.len() >= load.window {
            call_us.record(calls.join_next().await.context("a call")???)?;
        }
        pacing.due(sent).await;
        hold_backlog(&load, &progress).await;
        match load.api {
            Api::Unary => {
                let mut c = client.clone();
                let req = request(stamp(sent), sent);
                calls.spawn(async move {
                    let at = Instant::now();
                    c.enqueue(req).await.context("Enqueue")?;
                    Ok(at.elapsed().as_micros() as u64)
                });
                sent += 1;
                progress.sent.fetch_add(1, Ordering::AcqRel);
            }
            Api::Batch => {
                let n = (count - sent).min(load.batch as u64);
                let jobs = (0..n).map(|i| request(stamp(sent), sent + i)).collect();
                let mut c = client.clone();
                calls.spawn(async move {
                    let at = Instant::now();
                    let results = c
                        .enqueue_batch(pb::EnqueueBatchRequest { jobs })
                        .await
                        .context("EnqueueBatch")?;
                    match results.into_inner().results.iter().find(|r| r.code != 0) {
                        Some(failed) => bail!("EnqueueBatch item failed: {}", failed.message),
                        None => Ok(at.elapsed().as_micros() as u64),
                    }
                });
                sent += n;
                progress.sent.fetch_add(n, Ordering::AcqRel);
            }
            Api::Stream => bail!("a stream producer is produce_stream"),
        }
    }
    while let Some(result) = calls.join_next().await {
        call_us.record(result??)?;
    }
    Ok(call_us)
}

async fn consume(
    mut client: BrokerClient<Conn>,
    acks_to: BrokerClient<Conn>,
    id: usize,
    load: Load,
    progress: Arc<Progress>,
    epoch: Instant,
) -> anyhow::Result<Histogram<u64>> {
    let mut latency = Histogram::<u64>::new(3)?;
    let request = pb::LeaseRequest {
        worker_id: format!("bench-{id}"),
        queues: vec![load.queue.clone()],
        max_in_flight: load.in_flight,
        ..Default::default()
    };
    let mut acks: JoinSet<anyhow::Result<u64>> = JoinSet::new();
    let finished = |n: u64| {
        if progress.acked.fetch_add(n, Ordering::AcqRel) + n >= progress.target {
            progress.done.cancel();
        }
    };
    match load.api {
        Api::Stream => {
            let (tx, rx) = tokio::sync::mpsc::channel(load.in_flight as usize + 1);
            let open = pb::WorkRequest {
                seq: 0,
                kind: Some(pb::work_request::Kind::Open(request)),
            };
            tx.send(open).await.context("Work")?;
            let mut session = client
                .work(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .context("Work")?
                .into_inner();
            let mut seq = 0;
            loop {
                tokio::select! {
                    () = progress.done.cancelled() => break,
                    message = session.message() => {
                        let Some(response) = message? else { break };
                        let mut ok = 0;
                        for result in &response.results {
                            if result.code != 0 {
                                bail!("Ack on the session failed: {}", result.message);
                            }
                            ok += 1;
                        }
                        if ok > 0 {
                            finished(ok);
                        }
                        for job in response.jobs {
                            latency.record(latency_of(&job, epoch))?;
                            seq += 1;
                            let ack = pb::AckRequest { job_id: job.job.map(|j| j.id).unwrap_or_default(), lease_id: job.lease_id, ..Default::default() };
                            tx.send(pb::WorkRequest { seq, kind: Some(pb::work_request::Kind::Ack(ack)) }).await.context("Work")?;
                        }
                    }
                }
            }
        }
        Api::Unary => {
            let mut stream = client.lease(request).await?.into_inner();
            loop {
                tokio::select! {
                    () = progress.done.cancelled() => break,
                    Some(acked) = acks.join_next(), if !acks.is_empty() => finished(acked??),
                    message = stream.message() => {
                        let Some(job) = message? else { break };
                        latency.record(latency_of(&job, epoch))?;
                        let mut c = acks_to.clone();
                        let req = pb::AckRequest { job_id: job.job.map(|j| j.id).unwrap_or_default(), lease_id: job.lease_id, ..Default::default() };
                        acks.spawn(async move { c.ack(req).await.context("Ack").map(|_| 1) });
                    }
                }
            }
        }
        Api::Batch => {
            let mut stream = client.lease_batches(request).await?.into_inner();
            loop {
                tokio::select! {
                    () = progress.done.cancelled() => break,
                    Some(acked) = acks.join_next(), if !acks.is_empty() => finished(acked??),
                    message = stream.message() => {
                        let Some(batch) = message? else { break };
                        let mut ack_list = Vec::with_capacity(batch.jobs.len());
                        for job in batch.jobs {
                            latency.record(latency_of(&job, epoch))?;
                            ack_list.push(pb::AckRequest { job_id: job.job.map(|j| j.id).unwrap_or_default(), lease_id: job.lease_id, ..Default::default() });
                        }
                        let mut c = acks_to.clone();
                        acks.spawn(async move {
                            let n = ack_list.len() as u64;
                            let results = c.ack_batch(pb::AckBatchRequest { acks: ack_list }).await.context("AckBatch")?;
                            match results.into_inner().results.iter().find(|r| r.code != 0) {
                                Some(failed) => bail!("AckBatch item failed: {}", failed.message),
                                None => Ok(n),
                            }
                        });
                    }
                }
            }
        }
    }
    Ok(latency)
}

/// Cancels `progress.done` once the broker counts every job of the queue acked.
async fn watch_acks(
    mut admin: AdminClient<Conn>,
    queue: String,
    progress: Arc<Progress>,
) -> anyhow::Result<()> {
    while !progress.done.is_cancelled() {
        let stats = admin.stats(pb::StatsRequest {}).await?.into_inner();
        let acked = stats
            .queues
            .iter()
            .find(|q| q.queue == queue)
            .map_or(0, |q| q.acked_total);
        progress.acked.store(acked, Ordering::Release);
        if acked >= progress.target {
            progress.done.cancel();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A sluice-worker library worker with K slots whose handler records the
/// job's latency, then works for `work` (nothing when zero).
async fn consume_with_worker(
    addr: String,
    id: usize,
    load: Load,
    progress: Arc<Progress>,
    epoch: Instant,
    work: Duration,
) -> anyhow::Result<Histogram<u64>> {
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let recorder = latency.clone();
    let security = &load.security;
    let mut builder = sluice_worker::Worker::builder(security.url(&addr));
    if let Some(tls) = &security.tls {
        if let Some(ca) = &tls.ca {
            builder = builder.tls_ca_file(ca);
        }
        if let Some((cert, key)) = &tls.identity {
            builder = builder.tls_identity_files(cert, key);
        }
    }
    if let Some(token) = security.token(Role::Worker) {
        builder = builder.token(token.clone());
    }
    let worker = builder
        .worker_id(format!("bench-{id}"))
        .queues([load.queue.clone()])
        .concurrency(load.in_flight as usize)
        .handler(
            "bench",
            move |job: sluice_worker::Job, _ctx: sluice_worker::JobContext| {
                if let Ok(mut h) = recorder.lock() {
                    let _ = h.record(latency_us(&job.payload, epoch));
                }
                async move {
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    Ok(())
                }
            },
        )
        .build()?;
    worker.run(progress.done.clone()).await?;
    let latency = latency
        .lock()
        .map_err(|_| anyhow::anyhow!("latency histogram poisoned"))?
        .clone();
    Ok(latency)
}
