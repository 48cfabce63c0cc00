//! `sluice-bench exec`: exec handlers against raw fork-exec, in one run.
//! Raw: this process spawns `sh -c COMMAND` C at a time until N have run.
//! End to end: a broker, one `sluice-worker --concurrency C --exec
//! bench=COMMAND` beside this binary, N jobs enqueued at once, timed from
//! the first enqueue until the broker counts N acked. Rounds alternate
//! which goes first; the medians and their ratio are printed.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use sluice_proto::v1::admin_client::AdminClient;
use tokio::task::JoinSet;

use crate::{Target, timed};

/// Options of `exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    #[command(flatten)]
    target: Target,
    /// The command each job runs.
    #[arg(long, default_value = "true")]
    command: String,
    /// Commands at once: the raw spawner's and the worker's --concurrency.
    #[arg(short = 'c', long, default_value_t = 8)]
    concurrency: usize,
    /// Commands per run.
    #[arg(short = 'n', long, default_value_t = 2_000)]
    jobs: u64,
    /// Rounds; each runs raw and end to end once.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// The worker binary (default: sluice-worker beside this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
}

/// Runs the comparison and prints it.
///
/// # Errors
/// A run that fails or does not finish within its bound.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.jobs > 0 && args.concurrency > 0,
        "rounds, jobs and concurrency must be above 0"
    );
    let started = args.target.start(&[])?;
    let addr = started.addrs[0].clone();
    let worker_bin = match &args.worker_bin {
        Some(path) => path.clone(),
        None => crate::sibling("sluice-worker")?,
    };
    let mut worker = tokio::process::Command::new(&worker_bin)
        .args(["--broker", &format!("http://{addr}")])
        .args(["--concurrency", &args.concurrency.to_string()])
        .args(["--exec", &format!("bench={}", args.command)])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", worker_bin.display()))?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut admin = AdminClient::new(channel.clone());
    let queue = sluice_limits::DEFAULT_QUEUE;
    timed::wait_for_worker(&mut admin, queue, Duration::from_secs(10)).await?;

    let (mut raw, mut through) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        for raw_first in [round % 2 == 1, round % 2 == 0] {
            if raw_first {
                let rate = spawn_raw(&args).await?;
                eprintln!("round {round} raw: {rate:.0} commands/s");
                raw.push(rate);
            } else {
                let bound = Duration::from_secs(60.max(args.jobs / 50));
                let rate = timed::jobs_per_second(
                    &channel,
                    &mut admin,
                    (queue, "bench"),
                    args.jobs,
                    bound,
                )
                .await?;
                eprintln!("round {round} end to end: {rate:.0} jobs/s");
                through.push(rate);
            }
        }
    }
    let _ = worker.start_kill();
    let (raw_median, through_median) = (crate::cost::median(&raw), crate::cost::median(&through));
    let ratio = if raw_median > 0.0 {
        through_median / raw_median
    } else {
        0.0
    };
    if args.target.json {
        println!(
            "{}",
            json!({ "command": args.command, "concurrency": args.concurrency, "jobs": args.jobs,
                    "rounds": args.rounds, "raw": raw, "end_to_end": through,
                    "raw_median": raw_median, "end_to_end_median": through_median,
                    "end_to_end_over_raw": ratio })
        );
    } else {
        println!(
            "sh -c {:?}, {} at a time, median of {} rounds of {}",
            args.command, args.concurrency, args.rounds, args.jobs
        );
        println!("  raw fork-exec        {raw_median:>8.0} commands/s");
        println!("  broker + worker      {through_median:>8.0} jobs/s");
        println!("  end to end / raw     {:>8.0} %", ratio * 100.0);
    }
    Ok(())
}

/// Commands per second, spawning `sh -c COMMAND` C at a time.
async fn spawn_raw(args: &ExecArgs) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut running = JoinSet::new();
    for _ in 0..args.jobs {
        if running.len() >= args.concurrency {
            running.join_next().await.context("a command")???;
        }
        let mut command = tokio::process::Command::new("sh");
        command
            .args(["-c", &args.command])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        running.spawn(async move {
            let status = command.status().await?;
            anyhow::ensure!(status.success(), "sh -c exited with {status}");
            Ok::<_, anyhow::Error>(())
        });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(args.jobs as f64 / started.elapsed().as_secs_f64())
}
