//! `sluice-bench clients`: the worker clients end to end with no-op
//! handlers, one worker process each, in one run: the Rust library (a
//! worker in this process), the Python client
//! (`clients/python/examples/bench_worker.py`), the TypeScript client
//! (`clients/typescript/examples/bench_worker.mjs`, built) and
//! `sluice-worker --exec noop=true`. Each worker has a queue of its own
//! and all stay connected; a run enqueues N jobs to one queue in batches
//! and is timed until the broker counts N more acked there. Rounds rotate
//! the order; the medians and each one's multiple of the exec worker's
//! rate are printed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use sluice_proto::v1::admin_client::AdminClient;
use tokio_util::sync::CancellationToken;

use crate::{Target, timed};

/// Options of `clients`.
#[derive(Debug, Args)]
pub struct ClientsArgs {
    #[command(flatten)]
    target: Target,
    /// Jobs per run of a library worker (Rust, Python, TypeScript).
    #[arg(short = 'n', long, default_value_t = 20_000)]
    jobs: u64,
    /// Jobs per run of the exec worker (a process per job).
    #[arg(long, default_value_t = 1_000)]
    exec_jobs: u64,
    /// Each worker's concurrency.
    #[arg(short = 'c', long, default_value_t = 64)]
    concurrency: usize,
    /// Rounds; each runs every worker once.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// The repository's `clients` folder.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../clients"))]
    clients_dir: PathBuf,
}

/// The workers compared, in the order printed.
const WORKERS: [&str; 4] = ["rust-library", "python", "typescript", "exec"];

/// Runs the comparison and prints it.
///
/// # Errors
/// A worker that cannot start, or a run that does not finish within its bound.
pub async fn run(args: ClientsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.jobs > 0 && args.exec_jobs > 0 && args.concurrency > 0,
        "rounds, jobs and concurrency must be above 0"
    );
    let started = args.target.start(&[])?;
    let url = format!("http://{}", started.addrs[0]);
    let channel = tonic::transport::Endpoint::from_shared(url.clone())?
        .connect()
        .await?;
    let mut admin = AdminClient::new(channel.clone());

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let library = sluice_worker::Worker::builder(url.clone())
        .queues([queue_of("rust-library")])
        .concurrency(args.concurrency)
        .worker_id("bench-rust-library")
        .handler(
            "noop",
            |_: sluice_worker::Job, _: sluice_worker::JobContext| async { Ok(()) },
        )
        .build()?;
    tokio::spawn(library.run(stop));
    let c = args.concurrency.to_string();
    let python = spawn(
        tokio::process::Command::new("python3")
            .args(["examples/bench_worker.py", &queue_of("python"), &c])
            .current_dir(args.clients_dir.join("python"))
            .env("PYTHONPATH", "."),
        &url,
        "python3 with grpcio (scripts/test installs it)",
    )?;
    let typescript_dir = args.clients_dir.join("typescript");
    anyhow::ensure!(
        typescript_dir.join("dist/index.js").exists(),
        "clients/typescript is not built: npm ci && npm run build there"
    );
    let typescript = spawn(
        tokio::process::Command::new("node")
            .args(["examples/bench_worker.mjs", &queue_of("typescript"), &c])
            .current_dir(&typescript_dir),
        &url,
        "Node 20",
    )?;
    let exec = spawn(
        tokio::process::Command::new(crate::sibling("sluice-worker")?)
            .args(["--queues", &queue_of("exec"), "--concurrency", &c])
            .args(["--exec", "noop=true"]),
        &url,
        "sluice-worker",
    )?;
    for name in WORKERS {
        // An interpreter's start.
        timed::wait_for_worker(&mut admin, &queue_of(name), Duration::from_secs(30)).await?;
    }

    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); WORKERS.len()];
    for round in 0..args.rounds {
        for turn in 0..WORKERS.len() {
            let index = (round + turn) % WORKERS.len();
            let name = WORKERS[index];
            let jobs = if name == "exec" {
                args.exec_jobs
            } else {
                args.jobs
            };
            let bound = Duration::from_secs(60 + jobs / 100);
            let queue = queue_of(name);
            let rate =
                timed::jobs_per_second(&channel, &mut admin, (&queue, "noop"), jobs, bound).await?;
            eprintln!("round {} {name}: {rate:.0} jobs/s", round + 1);
            rates[index].push(rate);
        }
    }
    drop((python, typescript, exec));

    let medians: Vec<f64> = rates.iter().map(|r| crate::cost::median(r)).collect();
    let exec_median = medians[WORKERS.len() - 1];
    let over_exec = |rate: f64| {
        if exec_median > 0.0 {
            rate / exec_median
        } else {
            0.0
        }
    };
    if args.target.json {
        let workers: serde_json::Map<String, serde_json::Value> = WORKERS
            .iter()
            .zip(&rates)
            .zip(&medians)
            .map(|((name, runs), median)| {
                (
                    (*name).to_owned(),
                    json!({ "runs": runs, "median": median, "over_exec": over_exec(*median) }),
                )
            })
            .collect();
        println!(
            "{}",
            json!({ "jobs": args.jobs, "exec_jobs": args.exec_jobs, "concurrency": args.concurrency,
                    "rounds": args.rounds, "workers": workers })
        );
    } else {
        println!(
            "no-op handlers, one worker process each, concurrency {}, median of {} rounds \
             ({} jobs a run; exec {})",
            args.concurrency, args.rounds, args.jobs, args.exec_jobs
        );
        println!("  {:<14} {:>10} {:>10}", "worker", "jobs/s", "x exec");
        for (name, median) in WORKERS.iter().zip(&medians) {
            println!("  {name:<14} {median:>10.0} {:>10.1}", over_exec(*median));
        }
    }
    Ok(())
}

fn queue_of(worker: &str) -> String {
    format!("bench-{worker}")
}

/// Starts a worker process for the broker at `url`; killed when dropped.
fn spawn(
    command: &mut tokio::process::Command,
    url: &str,
    needs: &str,
) -> anyhow::Result<tokio::process::Child> {
    command
        .env("SLUICE_BROKER", url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {command:?} (needs {needs})"))
}
