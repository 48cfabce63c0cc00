//! `sluice-bench flow`: flow control's three goals, measured in one run on
//! one store and printed with their ratios.
//!
//! - Fairness: a backlog of N jobs over K keys, one key holding most of
//!   them (90% by default), each key allowed `--key-limit` in flight. The
//!   cold keys' enqueue-to-start wait (from the moment the workers start
//!   on the backlog) at p50 and p99, against the same run with the hot
//!   key's jobs absent. Goal: p99 at most 2x.
//! - Cost: end-to-end jobs/s of keyed jobs (1,000 keys) with a per-key
//!   limit that never binds, against the same jobs with no limits,
//!   alternating, median of `-r` rounds. Goal: at least 90%.
//! - Rate: a queue limited to `--rate` jobs/s with workers that could run
//!   far more: the jobs started in each second of `--rate-seconds`, their
//!   mean, lowest and highest. Goal: 1,000 ± 2% a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::Target;
use crate::load::{self, Api, ClientSecurity, Conn, Load, Role};

/// Options of `flow`.
#[derive(Debug, Args)]
pub struct FlowArgs {
    #[command(flatten)]
    target: Target,
    /// The parts to run.
    #[arg(long, value_delimiter = ',', default_value = "fairness,cost,rate")]
    parts: Vec<String>,
    /// Jobs in the fairness backlog.
    #[arg(long, default_value_t = 100_000)]
    fair_jobs: u64,
    /// Keys in the fairness backlog (one of them hot).
    #[arg(long, default_value_t = 1000)]
    fair_keys: u64,
    /// The hot key's share of the backlog.
    #[arg(long, default_value_t = 0.9)]
    hot_share: f64,
    /// key_max_in_flight of the fairness runs.
    #[arg(long, default_value_t = 2)]
    key_limit: u32,
    /// Workers (Lease streams) of the fairness and rate runs.
    #[arg(short = 'c', long, default_value_t = 4)]
    consumers: usize,
    /// max_in_flight of each worker.
    #[arg(short = 'k', long, default_value_t = 32)]
    in_flight: u32,
    /// How long each job of the fairness runs takes its worker, in ms.
    #[arg(long, default_value_t = 1)]
    work_ms: u64,
    /// Jobs per cost run.
    #[arg(long, default_value_t = 50_000)]
    cost_jobs: u64,
    /// Cost rounds (each runs with and without limits once).
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// The rate run's limit, jobs a second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds the rate run counts.
    #[arg(long, default_value_t = 60)]
    rate_seconds: u64,
}

/// Runs the parts asked for and prints their figures.
///
/// # Errors
/// A run that fails or stalls.
pub async fn run(args: FlowArgs) -> anyhow::Result<()> {
    let started = args.target.start(&[])?;
    let addr = started.addrs[0].clone();
    let security = ClientSecurity::default();
    let mut admin = AdminClient::new(load::connect(&addr, &security, Role::Admin).await?);
    let mut out = serde_json::Map::new();
    out.insert("store".into(), json!(args.target.store));
    if args.parts.iter().any(|p| p == "fairness") {
        let with = fairness(&started.addrs, &mut admin, &args, true).await?;
        let without = fairness(&started.addrs, &mut admin, &args, false).await?;
        let ratio = with.1 / without.1.max(0.001);
        println!(
            "fairness: {} jobs over {} keys, {:.0}% on one key, key_max_in_flight {}, {} workers x {}",
            args.fair_jobs,
            args.fair_keys,
            args.hot_share * 100.0,
            args.key_limit,
            args.consumers,
            args.in_flight
        );
        println!("| cold keys' wait to start | p50 | p99 |\n|---|---|---|");
        println!("| hot key present | {:.0} ms | {:.0} ms |", with.0, with.1);
        println!(
            "| hot key absent | {:.0} ms | {:.0} ms |",
            without.0, without.1
        );
        println!("p99 with / without: {ratio:.2} (goal: at most 2)\n");
        out.insert(
            "fairness".into(),
            json!({"with_hot_ms": [with.0, with.1], "without_hot_ms": [without.0, without.1],
                   "p99_ratio": ratio}),
        );
    }
    if args.parts.iter().any(|p| p == "cost") {
        let (limited, plain) = cost(&started.addrs, &mut admin, &args).await?;
        let ratio = limited / plain;
        println!(
            "cost: {} keyed jobs (1,000 keys) per run, median of {} rounds",
            args.cost_jobs, args.rounds
        );
        println!("| limits | jobs/s |\n|---|---|");
        println!("| none | {plain:.0} |\n| key_max_in_flight that never binds | {limited:.0} |");
        println!("limited / none: {ratio:.2} (goal: at least 0.90)\n");
        out.insert(
            "cost".into(),
            json!({"none": plain, "limited": limited, "ratio": ratio}),
        );
    }
    if args.parts.iter().any(|p| p == "rate") {
        let seconds = rate(&started.addrs, &mut admin, &args).await?;
        let mean = seconds.iter().sum::<u64>() as f64 / seconds.len() as f64;
        let (low, high) = (
            seconds.iter().min().copied().unwrap_or(0),
            seconds.iter().max().copied().unwrap_or(0),
        );
        let off = |n: f64| (n / args.rate - 1.0) * 100.0;
        println!(
            "rate: limit {} jobs/s (burst {}), {} workers x {}, {} s counted",
            args.rate,
            default_burst(args.rate),
            args.consumers,
            args.in_flight * 8,
            seconds.len()
        );
        println!(
            "jobs started a second: mean {mean:.1} ({:+.2}%), lowest {low} ({:+.2}%), highest {high} ({:+.2}%) (goal: within 2%)",
            off(mean),
            off(low as f64),
            off(high as f64)
        );
        out.insert(
            "rate".into(),
            json!({"limit": args.rate, "per_second": seconds, "mean": mean}),
        );
    }
    if args.target.json {
        println!("{}", serde_json::Value::Object(out));
    }
    Ok(())
}

async fn set_limits(
    admin: &mut AdminClient<Conn>,
    queue: &str,
    limits: pb::QueueLimits,
) -> anyhow::Result<()> {
    admin
        .set_queue_limits(pb::SetQueueLimitsRequest {
            queue: queue.to_owned(),
            limits: Some(limits),
        })
        .await
        .context("SetQueueLimits")?;
    Ok(())
}

/// The burst `sluice queue limits` gives a rate: a tenth of a second's
/// jobs, which covers a timer's lateness.
fn default_burst(rate: f64) -> u32 {
    (rate / 10.0).ceil().max(1.0) as u32
}

/// A small deterministic generator, to shuffle the backlog the same way
/// in every run.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Enqueues `jobs` (key, payload) to `queue` in batches of 1,000.
async fn enqueue_all(
    addr: &str,
    queue: &str,
    jobs: Vec<(String, &'static [u8])>,
) -> anyhow::Result<()> {
    let mut broker =
        BrokerClient::new(load::connect(addr, &ClientSecurity::default(), Role::Producer).await?);
    for chunk in jobs.chunks(1000) {
        let batch = chunk
            .iter()
            .map(|(key, payload)| pb::EnqueueRequest {
                queue: queue.to_owned(),
                job_type: "flow".into(),
                payload: payload.to_vec().into(),
                key: key.clone(),
                ..Default::default()
            })
            .collect();
        let answer = broker
            .enqueue_batch(pb::EnqueueBatchRequest { jobs: batch })
            .await?
            .into_inner();
        if let Some(failed) = answer.results.iter().find(|r| r.code != 0) {
            bail!("enqueue refused: {}", failed.message);
        }
    }
    Ok(())
}

/// What the workers saw: each job's start, from when they began.
struct Seen {
    cold: Mutex<Histogram<u64>>,
    cold_started: AtomicU64,
    starts: Mutex<Vec<Duration>>,
}

/// `consumers` workers on `queue`, spread over `addrs`, each job taking
/// `work` and then acked; each start noted in `seen` from `t0`. Runs
/// until the returned set is dropped.
async fn workers(
    addrs: &[String],
    queue: &str,
    consumers: usize,
    in_flight: u32,
    work: Duration,
    seen: Arc<Seen>,
    t0: Instant,
) -> anyhow::Result<JoinSet<anyhow::Result<()>>> {
    let mut set = JoinSet::new();
    for i in 0..consumers {
        let conn = load::connect(
            &addrs[i % addrs.len()],
            &ClientSecurity::default(),
            Role::Worker,
        )
        .await?;
        let mut broker = BrokerClient::new(conn);
        let mut stream = broker
            .lease(pb::LeaseRequest {
                worker_id: format!("flow-{i}"),
                queues: vec![queue.to_owned()],
                max_in_flight: in_flight,
                ..Default::default()
            })
            .await?
            .into_inner();
        let seen = seen.clone();
        set.spawn(async move {
            let mut acks = JoinSet::new();
            while let Some(leased) = stream.message().await? {
                let job = leased.job.context("a leased job")?;
                let at = t0.elapsed();
                if job.payload.as_ref() == b"c" {
                    seen.cold.lock().await.record(at.as_millis() as u64)?;
                    seen.cold_started.fetch_add(1, Ordering::AcqRel);
                }
                seen.starts.lock().await.push(at);
                let mut broker = broker.clone();
                acks.spawn(async move {
                    if !work.is_zero() {
                        tokio::time::sleep(work).await;
                    }
                    broker
                        .ack(pb::AckRequest {
                            job_id: job.id,
                            lease_id: leased.lease_id,
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                });
                while acks.try_join_next().is_some() {}
            }
            Ok(())
        });
    }
    Ok(set)
}

fn seen() -> anyhow::Result<Arc<Seen>> {
    Ok(Arc::new(Seen {
        cold: Mutex::new(Histogram::new(3)?),
        cold_started: AtomicU64::new(0),
        starts: Mutex::new(Vec::new()),
    }))
}

/// One fairness run: the cold keys' wait to start at p50 and p99, in ms.
async fn fairness(
    addrs: &[String],
    admin: &mut AdminClient<Conn>,
    args: &FlowArgs,
    with_hot: bool,
) -> anyhow::Result<(f64, f64)> {
    let queue = format!("fair-{}", if with_hot { "hot" } else { "cold" });
    set_limits(
        admin,
        &queue,
        pb::QueueLimits {
            key_max_in_flight: args.key_limit,
            ..Default::default()
        },
    )
    .await?;
    let hot = (args.fair_jobs as f64 * args.hot_share) as u64;
    let cold = args.fair_jobs - hot;
    let cold_keys = args.fair_keys.saturating_sub(1).max(1);
    let mut jobs: Vec<(String, &'static [u8])> = (0..cold)
        .map(|i| (format!("c{}", i % cold_keys), b"c" as &[u8]))
        .collect();
    if with_hot {
        jobs.extend((0..hot).map(|_| ("hot".to_owned(), b"h" as &[u8])));
    }
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    for i in (1..jobs.len()).rev() {
        let j = (next_random(&mut state) % (i as u64 + 1)) as usize;
        jobs.swap(i, j);
    }
    enqueue_all(&addrs[0], &queue, jobs).await?;
    let seen = seen()?;
    let t0 = Instant::now();
    let running = workers(
        addrs,
        &queue,
        args.consumers,
        args.in_flight,
        Duration::from_millis(args.work_ms),
        seen.clone(),
        t0,
    )
    .await?;
    while seen.cold_started.load(Ordering::Acquire) < cold {
        if t0.elapsed() > Duration::from_secs(900) {
            bail!("the cold jobs did not all start within 15 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(running);
    let cold = seen.cold.lock().await;
    let waits = (
        cold.value_at_quantile(0.5) as f64,
        cold.value_at_quantile(0.99) as f64,
    );
    eprintln!(
        "fairness, hot key {}: cold p50 {} ms, p99 {} ms",
        if with_hot { "present" } else { "absent" },
        waits.0,
        waits.1
    );
    purge(admin, &queue).await?;
    Ok(waits)
}

async fn purge(admin: &mut AdminClient<Conn>, queue: &str) -> anyhow::Result<()> {
    admin
        .purge_queue(pb::PurgeQueueRequest {
            queue: queue.to_owned(),
            state: pb::JobState::Ready.into(),
        })
        .await
        .context("PurgeQueue")?;
    Ok(())
}

/// The cost rounds: median jobs/s with a never-binding key limit, and
/// with no limits.
async fn cost(
    addrs: &[String],
    admin: &mut AdminClient<Conn>,
    args: &FlowArgs,
) -> anyhow::Result<(f64, f64)> {
    let mut rates = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for side in order {
            let queue = format!("cost-{round}-{side}");
            if side == 0 {
                set_limits(
                    admin,
                    &queue,
                    pb::QueueLimits {
                        key_max_in_flight: 1_000_000,
                        ..Default::default()
                    },
                )
                .await?;
            }
            let load = Load {
                jobs: args.cost_jobs,
                producers: 1,
                consumers: 1,
                in_flight: 64,
                window: 64,
                batch: 256,
                payload: 64,
                rate: None,
                api: Api::Batch,
                worker_handler: None,
                queue,
                security: ClientSecurity::default(),
                report_every: None,
                max_backlog: None,
                ack_elsewhere: false,
                keys: 1000,
            };
            let measured = load::run(addrs, &load).await?;
            let rate = args.cost_jobs as f64 / measured.end_to_end.as_secs_f64();
            eprintln!(
                "cost round {round}, {}: {rate:.0} jobs/s",
                if side == 0 { "limited" } else { "none" }
            );
            rates[side].push(rate);
        }
    }
    Ok((
        crate::cost::median(&rates[0]),
        crate::cost::median(&rates[1]),
    ))
}

/// The rate run: the jobs started in each whole second counted.
async fn rate(
    addrs: &[String],
    admin: &mut AdminClient<Conn>,
    args: &FlowArgs,
) -> anyhow::Result<Vec<u64>> {
    let queue = "rate";
    set_limits(
        admin,
        queue,
        pb::QueueLimits {
            rate: Some(pb::RateLimit {
                per_second: args.rate,
                burst: default_burst(args.rate),
            }),
            ..Default::default()
        },
    )
    .await?;
    let total = (args.rate * (args.rate_seconds + 3) as f64) as u64;
    enqueue_all(
        &addrs[0],
        queue,
        (0..total).map(|_| (String::new(), b"r" as &[u8])).collect(),
    )
    .await?;
    let seen = seen()?;
    let t0 = Instant::now();
    let running = workers(
        addrs,
        queue,
        args.consumers,
        args.in_flight * 8,
        Duration::ZERO,
        seen.clone(),
        t0,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(args.rate_seconds + 2)).await;
    drop(running);
    let starts = seen.starts.lock().await;
    // Whole seconds from the first second after the start (the bucket's
    // first token goes at once).
    let mut seconds = vec![0u64; args.rate_seconds as usize];
    for at in starts.iter() {
        let s = at.as_secs();
        if s >= 1 && s <= args.rate_seconds {
            seconds[s as usize - 1] += 1;
        }
    }
    purge(admin, queue).await?;
    Ok(seconds)
}
