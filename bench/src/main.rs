//! `sluice-bench`: load generator for the Sluice broker.
//!
//! `sluice-bench load` starts a broker (or targets `--addr`), runs P
//! producers and C consumers over N jobs, and reports the enqueue rate,
//! end-to-end jobs/s (first enqueue to last ack), enqueue-to-start latency
//! percentiles, and the broker's CPU time and peak memory. `--rate` makes
//! the producers open-loop, so stalls show in the latency instead of
//! slowing the offer. `sluice-bench memory` measures the broker's bytes per
//! queued job. `sluice-bench durable` measures the disk's fsync rate and
//! compares a memory-only broker with one on `--data-dir`. `load --secure`
//! runs with TLS and tokens on, and `sluice-bench security-cost` compares
//! brokers with both on and both off. `sluice-bench cross-ack` compares a
//! worker acking through its stream's broker with one acking through
//! another. `sluice-bench schedules` fires many schedules at once and
//! reports each tick's lag and the broker's CPU. `sluice-bench exec`
//! compares exec handlers with raw fork-exec; `sluice-bench clients` the
//! worker clients (Rust, Python, TypeScript) with exec handlers;
//! `sluice-bench flow` flow control's fairness, cost and rate. Output is a table, or
//! JSON with `--json`.

mod clients;
mod cost;
mod cross;
mod durable;
mod exec;
mod flow;
mod kafka;
mod load;
mod proc_stats;
mod schedules;
mod secure;
mod timed;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sluice_proto::v1 as pb;
use sluice_proto::v1::broker_client::BrokerClient;

use sluice_e2e::BrokerProcess;

/// The same allocator as the broker's, so that the load generator's own
/// malloc is not what a run measures (glibc's cost the worker-library runs
/// about 8% of the client's CPU).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use load::{Api, Load};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Throughput and latency of producers and consumers.
    Load(LoadArgs),
    /// Broker memory per queued job.
    Memory(MemoryArgs),
    /// The disk's fsync rate, then memory-only against --data-dir at 1, 8
    /// and 64 producers and with batched enqueue.
    Durable(DurableArgs),
    /// Batched and unary end-to-end loads against brokers with TLS and
    /// tokens on and with both off, alternating, N rounds: jobs/s of each
    /// and their ratio.
    SecurityCost(cost::CostArgs),
    /// Batched and unary end-to-end loads against brokers with and without
    /// --http-addr (metrics on, scraped every second), alternating, N
    /// rounds: jobs/s of each and their ratio.
    MetricsCost(cost::CostArgs),
    /// Two brokers on a shared --store, one consumer leasing through the
    /// first: jobs/s when it acks through the first and through the
    /// second, alternating, N rounds, and their ratio.
    CrossAck(cross::CrossAckArgs),
    /// Flow control: fairness (a cold key's wait with and without a hot
    /// key holding 90% of the backlog), the cost of a limit that never
    /// binds, and a rate limit's accuracy over a minute.
    Flow(flow::FlowArgs),
    /// Many schedules on one timing (default: 10,000 every minute): per
    /// tick, the jobs fired and the lag from the tick to each enqueue, with
    /// the brokers' CPU.
    Schedules(schedules::SchedulesArgs),
    /// Kafka source throughput: records produced to a topic first, then
    /// read by one sluice-kafka into one broker; records/s to durable
    /// jobs, with the CPU of the source, the broker and Kafka.
    Kafka(kafka::KafkaArgs),
    /// Exec handlers against raw fork-exec: `sh -c COMMAND` spawned C at
    /// a time by this process, and the same through a broker and one
    /// sluice-worker --concurrency C --exec; the medians and their ratio.
    Exec(exec::ExecArgs),
    /// The worker clients end to end with no-op handlers, one worker
    /// process each (the Rust library, Python, TypeScript) beside
    /// sluice-worker --exec, N rounds: jobs/s of each and its multiple of
    /// the exec worker's.
    Clients(clients::ClientsArgs),
}

#[derive(Debug, Args)]
struct Target {
    /// A running broker to target (no CPU or memory figures then).
    #[arg(long)]
    addr: Option<String>,
    /// The broker binary to start (default: sluice-broker beside this one).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// An extra flag for the started broker; repeatable.
    #[arg(long = "broker-arg", allow_hyphen_values = true)]
    broker_args: Vec<String>,
    /// Where the started brokers keep jobs: `embedded`, a postgres:// or
    /// redis:// URL, `postgres` for a private PostgreSQL this run starts
    /// (initdb in a temporary directory, fsync on, stopped at the end), or
    /// `redis` for a private Redis (AOF with appendfsync always, in a
    /// temporary directory, stopped at the end).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// Brokers to start on --store (a shared store for more than one);
    /// producers and consumers are spread across them.
    #[arg(long, default_value_t = 1)]
    brokers: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct LoadArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    secure: secure::SecureArgs,
    /// Jobs in all.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    jobs: u64,
    #[arg(short = 'p', long, default_value_t = 1)]
    producers: usize,
    #[arg(short = 'c', long, default_value_t = 1)]
    consumers: usize,
    /// max_in_flight of each consumer's stream.
    #[arg(short = 'k', long, default_value_t = 64)]
    in_flight: u32,
    /// Enqueue calls in flight per producer (--api stream: requests
    /// unanswered on its stream).
    #[arg(short = 'w', long, default_value_t = 64)]
    window: usize,
    /// Jobs per EnqueueBatch call (--api batch).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Payload bytes per job (at least 8: the send time).
    #[arg(short = 's', long, default_value_t = 64)]
    payload: usize,
    /// Open loop at this many jobs per second in all.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value_t = Api::Batch)]
    api: Api,
    /// Consumers are sluice-worker library workers (K slots each) whose
    /// handler takes this long, e.g. 0ms; without it, raw clients that ack
    /// each job as it arrives with the calls of --api.
    #[arg(long, value_parser = humantime_duration)]
    worker_handler: Option<std::time::Duration>,
    /// Print the ack rate of every step of this many jobs to stderr, and
    /// with `--store postgres` the tables' and indexes' sizes at the end
    /// (with `--store redis` its memory): a sustained run (say -n 10000000
    /// --report-every 1000000).
    #[arg(long)]
    report_every: Option<u64>,
    /// Producers wait while more than this many jobs are enqueued and not
    /// yet acked: a sustained run with a bounded backlog.
    #[arg(long)]
    max_backlog: Option<u64>,
}

fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix("ms").and_then(|n| n.parse::<u64>().ok()) {
        Some(ms) => Ok(std::time::Duration::from_millis(ms)),
        None => Err(format!("expected milliseconds like 0ms or 5ms, got {s:?}")),
    }
}

#[derive(Debug, Args)]
struct MemoryArgs {
    #[command(flatten)]
    target: Target,
    /// Jobs to queue.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    jobs: u64,
    /// Payload bytes per job.
    #[arg(short = 's', long, default_value_t = 100)]
    payload: usize,
}

#[derive(Debug, Args)]
struct DurableArgs {
    /// The broker binary (default: sluice-broker beside this one).
    #[arg(long)]
    broker_bin: Option<PathBuf>,
    /// Where the data directories go (default: a fresh one under the temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Jobs per unary run; batched runs take ten times as many.
    #[arg(short = 'n', long, default_value_t = 20_000)]
    jobs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Starts the broker at `binary` on a free loopback port with `args`.
fn start_broker(binary: &std::path::Path, args: &[String]) -> anyhow::Result<BrokerProcess> {
    let mut command = std::process::Command::new(binary);
    command
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        // Info for the broker's own lifecycle (the harness waits for its
        // "listening" line); nothing per job.
        .env(
            "RUST_LOG",
            "warn,sluice_broker=info,sluice_broker::queue=warn",
        );
    BrokerProcess::launch(command).map_err(anyhow::Error::msg)
}

/// A binary beside this one (the release build's).
pub(crate) fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::current_exe()?.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: cargo build --release --workspace",
        path.display()
    );
    Ok(path)
}

/// The broker binary to start: `given`, or sluice-broker beside this one.
fn broker_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match given {
        Some(path) => Ok(path),
        None => Ok(std::env::current_exe()?.with_file_name("sluice-broker")),
    }
}

/// A store a run starts for itself.
enum PrivateStore {
    Postgres(sluice_e2e::TestPostgres),
    Redis(sluice_e2e::redis::TestRedis),
}

impl PrivateStore {
    /// The Redis server's CPU seconds so far (`None` for PostgreSQL, whose
    /// work is spread over a process per connection).
    fn cpu_seconds(&self) -> anyhow::Result<Option<f64>> {
        match self {
            Self::Redis(redis) => redis
                .pid()
                .map(|pid| proc_stats::cpu_seconds(i32::try_from(pid)?))
                .transpose(),
            Self::Postgres(_) => Ok(None),
        }
    }
}

/// A field of Redis's `INFO memory` (bytes).
fn redis_memory(redis: &sluice_e2e::redis::TestRedis, field: &str) -> anyhow::Result<u64> {
    let info = redis.command(0, &["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("Redis's INFO memory has no {field}"))
}

/// The brokers of a run and what they stand on.
struct Started {
    /// Their addresses (one with --addr).
    addrs: Vec<String>,
    /// The brokers this run started.
    brokers: Vec<BrokerProcess>,
    /// The private store of `--store postgres` or `redis`, stopped on drop.
    private: Option<PrivateStore>,
    /// The database the brokers use on it.
    database: String,
}

impl Target {
    /// The brokers to load: `--addr`, or those it starts (with `extra` flags too).
    fn start(&self, extra: &[String]) -> anyhow::Result<Started> {
        if let Some(addr) = &self.addr {
            return Ok(Started {
                addrs: vec![addr.clone()],
                brokers: Vec::new(),
                private: None,
                database: String::new(),
            });
        }
        let (url, private) = match self.store.as_str() {
            "embedded" => (None, None),
            "postgres" => {
                let pg = sluice_e2e::TestPostgres::start().map_err(anyhow::Error::msg)?;
                (Some(pg.fresh_database()), Some(PrivateStore::Postgres(pg)))
            }
            "redis" => {
                let redis = sluice_e2e::redis::TestRedis::start().map_err(anyhow::Error::msg)?;
                (
                    Some(redis.fresh_database()),
                    Some(PrivateStore::Redis(redis)),
                )
            }
            url => (Some(url.to_owned()), None),
        };
        anyhow::ensure!(
            self.brokers >= 1 && (self.brokers == 1 || url.is_some()),
            "--brokers above 1 needs a shared --store (PostgreSQL or Redis)"
        );
        let binary = broker_binary(self.broker_bin.clone())?;
        let mut args: Vec<String> = self.broker_args.iter().chain(extra).cloned().collect();
        if let Some(url) = &url {
            args.extend(["--store".to_owned(), url.clone()]);
        }
        let brokers = (0..self.brokers)
            .map(|_| start_broker(&binary, &args))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Started {
            addrs: brokers.iter().map(|b| b.addr.clone()).collect(),
            brokers,
            database: url.clone().unwrap_or_default(),
            private,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load(args) => load(args).await,
        Command::Memory(args) => memory(args).await,
        Command::Durable(args) => {
            let broker_bin = broker_binary(args.broker_bin)?;
            let ours = args.dir.is_none();
            let dir = durable::work_dir(args.dir);
            let result = durable::run(&broker_bin, &dir, args.jobs, args.json).await;
            if ours {
                let _ = std::fs::remove_dir_all(&dir);
            }
            result
        }
        Command::SecurityCost(args) => {
            let broker_bin = broker_binary(args.broker_bin.clone())?;
            secure::security_cost(args, &broker_bin).await
        }
        Command::CrossAck(args) => cross::run(args).await,
        Command::Flow(args) => flow::run(args).await,
        Command::Schedules(args) => schedules::run(args).await,
        Command::Kafka(args) => kafka::run(args).await,
        Command::Exec(args) => exec::run(args).await,
        Command::Clients(args) => clients::run(args).await,
        Command::MetricsCost(args) => {
            let broker_bin = broker_binary(args.broker_bin.clone())?;
            let metrics = cost::Side {
                broker_args: vec!["--http-addr".into(), "127.0.0.1:0".into()],
                scrape: true,
                ..cost::Side::default()
            };
            let comparison = cost::Comparison {
                name: "metrics-cost",
                labels: ["off", "metrics"],
                caption: "off: no --http-addr; metrics: --http-addr, scraped every second",
                sides: [cost::Side::default(), metrics],
            };
            cost::run(args, &broker_bin, comparison).await
        }
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0 && args.consumers > 0 && args.jobs > 0,
        "jobs, producers and consumers must be above 0"
    );
    anyhow::ensure!(
        args.rate.is_none() || args.api != Api::Batch || args.batch == 1,
        "--rate paces job by job: use --api unary or stream, or --batch 1"
    );
    // `generated` keeps --secure's files until the run is over.
    let (security, generated) = args.secure.resolve()?;
    let extra = generated
        .as_ref()
        .map(|g| g.broker_args.clone())
        .unwrap_or_default();
    let started = args.target.start(&extra)?;
    let load = Load {
        jobs: args.jobs,
        producers: args.producers,
        consumers: args.consumers,
        in_flight: args.in_flight,
        window: if args.rate.is_some() {
            args.window.max(100_000)
        } else {
            args.window
        },
        batch: args.batch,
        payload: args.payload,
        rate: args.rate,
        api: args.api,
        worker_handler: args.worker_handler,
        queue: format!("bench-{}", std::process::id()),
        security,
        report_every: args.report_every,
        max_backlog: args.max_backlog,
        ack_elsewhere: false,
        keys: 0,
    };
    // CPU and memory of the brokers it started, summed.
    let cpu_of = |brokers: &[BrokerProcess]| -> anyhow::Result<Option<f64>> {
        if brokers.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0;
        for b in brokers {
            sum += proc_stats::cpu_seconds(b.process.pid())?;
        }
        Ok(Some(sum))
    };
    let store_cpu = |started: &Started| match &started.private {
        Some(store) => store.cpu_seconds(),
        None => Ok(None),
    };
    let cpu_before = cpu_of(&started.brokers)?;
    let store_cpu_before = store_cpu(&started)?;
    let measured = load::run(&started.addrs, &load).await?;
    let store_cpu = match (store_cpu(&started)?, store_cpu_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    match (&started.private, args.report_every) {
        (Some(PrivateStore::Postgres(pg)), Some(_)) => {
            // What the run left behind: the tables and their indexes.
            eprintln!(
                "{}",
                pg.psql(
                    &started.database,
                    "SELECT format('%-16s table %8s  indexes %8s  rows %s', relname,
                         pg_size_pretty(pg_table_size(oid)), pg_size_pretty(pg_indexes_size(oid)),
                         (SELECT reltuples::bigint FROM pg_class c WHERE c.oid = t.oid))
                     FROM pg_class t WHERE relname IN ('sluice_jobs', 'sluice_finished')"
                )
            );
        }
        (Some(PrivateStore::Redis(redis)), Some(_)) => {
            // What the run left behind: the finished jobs kept for
            // --retention, and the most Redis held.
            eprintln!(
                "redis used_memory {:.1} MiB, peak {:.1} MiB",
                redis_memory(redis, "used_memory")? as f64 / (1 << 20) as f64,
                redis_memory(redis, "used_memory_peak")? as f64 / (1 << 20) as f64
            );
        }
        _ => {}
    }
    let cpu = match (cpu_of(&started.brokers)?, cpu_before) {
        (Some(after), Some(before)) => Some(after - before),
        _ => None,
    };
    let mut peak_rss = None;
    for b in &started.brokers {
        let (_, peak) = proc_stats::memory(b.process.pid())?;
        peak_rss = Some(peak_rss.unwrap_or(0) + peak);
    }
    let h = &measured.latency_us;
    let c = &measured.enqueue_call_us;
    let e2e_secs = measured.end_to_end.as_secs_f64();
    let report = json!({
        "api": format!("{:?}", args.api).to_lowercase(),
        "consumer": args.worker_handler.map_or("raw".to_owned(), |d| format!("worker handler {}ms", d.as_millis())),
        "jobs": args.jobs, "producers": args.producers, "consumers": args.consumers,
        "in_flight": args.in_flight, "window": args.window, "batch": args.batch,
        "payload": args.payload, "rate": args.rate,
        "enqueue_jobs_per_s": args.jobs as f64 / measured.enqueue.as_secs_f64(),
        "e2e_jobs_per_s": args.jobs as f64 / e2e_secs,
        "latency_us": { "p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99),
                        "p999": h.value_at_quantile(0.999), "max": h.max() },
        "enqueue_call_us": { "p50": c.value_at_quantile(0.5), "p99": c.value_at_quantile(0.99) },
        "broker_cpu_s": cpu, "broker_cpu_pct": cpu.map(|c| 100.0 * c / e2e_secs),
        "broker_peak_rss_mib": peak_rss.map(|b| b as f64 / (1 << 20) as f64),
        "redis_cpu_s": store_cpu, "redis_cpu_pct": store_cpu.map(|c| 100.0 * c / e2e_secs),
    });
    if args.target.json {
        println!("{report}");
    } else {
        println!(
            "api={} consumer={} n={} p={} c={} k={} w={} batch={} payload={}B rate={}",
            report["api"].as_str().unwrap_or("?"),
            report["consumer"].as_str().unwrap_or("?"),
            args.jobs,
            args.producers,
            args.consumers,
            args.in_flight,
            args.window,
            args.batch,
            args.payload,
            args.rate.map_or("max".into(), |r| format!("{r}/s"))
        );
        println!(
            "  enqueue        {:>12.0} jobs/s",
            report["enqueue_jobs_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  end to end     {:>12.0} jobs/s",
            report["e2e_jobs_per_s"].as_f64().unwrap_or(0.0)
        );
        println!(
            "  latency        p50 {} µs  p99 {} µs  p999 {} µs  max {} µs",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
        println!(
            "  enqueue call   p50 {} µs  p99 {} µs",
            c.value_at_quantile(0.5),
            c.value_at_quantile(0.99)
        );
        if let (Some(cpu), Some(rss)) = (cpu, peak_rss) {
            println!(
                "  broker         {cpu:.2} CPU s ({:.0}% of one core), peak RSS {:.1} MiB",
                100.0 * cpu / e2e_secs,
                rss as f64 / (1 << 20) as f64
            );
        }
        if let Some(cpu) = store_cpu {
            println!(
                "  redis-server   {cpu:.2} CPU s ({:.0}% of one core)",
                100.0 * cpu / e2e_secs
            );
        }
    }
    Ok(())
}

async fn memory(args: MemoryArgs) -> anyhow::Result<()> {
    let started = args.target.start(&[])?;
    let addr = started.addrs[0].clone();
    let broker = started
        .brokers
        .first()
        .context("memory needs a broker the bench starts (no --addr)")?;
    let security = load::ClientSecurity::default();
    let mut client =
        BrokerClient::new(load::connect(&addr, &security, load::Role::Producer).await?);
    let (before, _) = proc_stats::memory(broker.process.pid())?;
    let redis = match &started.private {
        Some(PrivateStore::Redis(redis)) => Some(redis),
        _ => None,
    };
    let redis_before = redis.map(|r| redis_memory(r, "used_memory")).transpose()?;
    let began = Instant::now();
    let payload = bytes::Bytes::from(vec![b'x'; args.payload]);
    // Batches of 1,000 jobs (fewer for large payloads, to stay under about
    // 1 MiB a call): larger calls only add transient buffers to the RSS.
    let per_batch = ((1u64 << 20) / (args.payload as u64 + 64)).clamp(1, 1_000);
    let mut left = args.jobs;
    while left > 0 {
        let n = left.min(per_batch);
        let jobs = (0..n)
            .map(|_| pb::EnqueueRequest {
                queue: "memory".into(),
                job_type: "bench".into(),
                payload: payload.clone(),
                ..Default::default()
            })
            .collect();
        let results = client
            .enqueue_batch(pb::EnqueueBatchRequest { jobs })
            .await?
            .into_inner()
            .results;
        if let Some(failed) = results.iter().find(|r| r.code != 0) {
            anyhow::bail!("the broker refused a job: {}", failed.message);
        }
        left -= n;
    }
    let (after, peak) = proc_stats::memory(broker.process.pid())?;
    let per_job = (after.saturating_sub(before)) as f64 / args.jobs as f64;
    // On Redis the jobs are in Redis: its used_memory grows by them.
    let redis_per_job = match (redis, redis_before) {
        (Some(redis), Some(before)) => Some(
            redis_memory(redis, "used_memory")?.saturating_sub(before) as f64 / args.jobs as f64,
        ),
        _ => None,
    };
    let report = json!({
        "jobs": args.jobs, "payload": args.payload,
        "rss_before_mib": before as f64 / (1 << 20) as f64, "rss_after_mib": after as f64 / (1 << 20) as f64,
        "peak_rss_mib": peak as f64 / (1 << 20) as f64,
        "bytes_per_job": per_job, "bytes_per_job_beyond_payload": per_job - args.payload as f64,
        "enqueue_secs": began.elapsed().as_secs_f64(),
        "redis_bytes_per_job": redis_per_job,
    });
    if args.target.json {
        println!("{report}");
    } else {
        println!(
            "{} queued jobs of {} B: RSS {:.1} -> {:.1} MiB, {:.0} B per job ({:.0} B beyond the payload)",
            args.jobs,
            args.payload,
            before as f64 / (1 << 20) as f64,
            after as f64 / (1 << 20) as f64,
            per_job,
            per_job - args.payload as f64
        );
        if let Some(redis_per_job) = redis_per_job {
            println!(
                "  Redis used_memory: {redis_per_job:.0} B per job ({:.0} B beyond the payload)",
                redis_per_job - args.payload as f64
            );
        }
    }
    Ok(())
}
