//! `sluice-bench schedules`: many schedules firing at the same instant.
//! Creates `--schedules` schedules on one timing (by default every minute
//! on the minute, so every tick of every schedule falls on the same
//! second), waits through `--ticks` ticks, then reads every job the ticks
//! enqueued and reports, per tick, how many fired and the lag from the
//! tick's time to the job's enqueue (`created_at` against
//! `sluice-scheduled-for`), with the brokers' CPU over the window.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use sluice_proto::json::system_time;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use tokio::task::JoinSet;

use crate::load::{self, ClientSecurity, Conn, Role};
use crate::{Target, proc_stats};

/// Options of `schedules`.
#[derive(Debug, Args)]
pub struct SchedulesArgs {
    #[command(flatten)]
    target: Target,
    /// Schedules to create.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    schedules: usize,
    /// Their cron expression (the same for all).
    #[arg(long, default_value = "* * * * *")]
    cron: String,
    /// Ticks to measure, after every schedule exists.
    #[arg(long, default_value_t = 2)]
    ticks: usize,
    /// CreateSchedule calls in flight.
    #[arg(long, default_value_t = 32)]
    window: usize,
}

/// The queue the ticks enqueue into.
const QUEUE: &str = "bench-schedules";
/// How long after the last measured tick its jobs may still be coming.
const GRACE: Duration = Duration::from_secs(10);

/// Runs the benchmark and prints its table (or JSON).
///
/// # Errors
/// A broker that cannot be started or refuses a call.
pub async fn run(args: SchedulesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.schedules > 0 && args.ticks > 0 && args.window > 0,
        "schedules, ticks and window must be above 0"
    );
    let started = args.target.start(&[])?;
    let security = ClientSecurity::default();
    let addr = started.addrs[0].clone();
    let admin = AdminClient::new(load::connect(&addr, &security, Role::Admin).await?);

    let created_in = create_all(&admin, &args).await?;
    eprintln!(
        "{} schedules created in {:.1} s",
        args.schedules,
        created_in.as_secs_f64()
    );
    // The ticks to measure: the next ones of the last schedule created,
    // which every schedule shares.
    let last = admin
        .clone()
        .get_schedule(pb::GetScheduleRequest {
            name: name(args.schedules - 1),
        })
        .await?
        .into_inner();
    let ticks: Vec<SystemTime> = last
        .upcoming
        .iter()
        .filter_map(|t| system_time(Some(t)))
        .take(args.ticks)
        .collect();
    anyhow::ensure!(
        ticks.len() == args.ticks,
        "the schedule shows {} upcoming ticks; measure at most that many",
        ticks.len()
    );

    let cpu = || -> anyhow::Result<Option<f64>> {
        if started.brokers.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0;
        for broker in &started.brokers {
            sum += proc_stats::cpu_seconds(broker.process.pid())?;
        }
        Ok(Some(sum))
    };
    let window_start = SystemTime::now();
    let cpu_before = cpu()?;
    let end = ticks[ticks.len() - 1] + GRACE;
    eprintln!(
        "waiting {:.0} s for {} ticks",
        end.duration_since(window_start)
            .unwrap_or_default()
            .as_secs_f64(),
        ticks.len()
    );
    tokio::time::sleep(end.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let window = SystemTime::now()
        .duration_since(window_start)
        .unwrap_or_default();
    let cpu = cpu()?.zip(cpu_before).map(|(after, before)| after - before);

    let by_tick = lags_by_tick(&admin, &ticks).await?;
    print(&args, &ticks, &by_tick, window, cpu)
}

/// Schedule `i`'s name.
fn name(i: usize) -> String {
    format!("bench-{i:06}")
}

/// Creates every schedule, `window` calls at a time; how long it took.
async fn create_all(admin: &AdminClient<Conn>, args: &SchedulesArgs) -> anyhow::Result<Duration> {
    let began = std::time::Instant::now();
    let mut calls = JoinSet::new();
    for i in 0..args.schedules {
        if calls.len() >= args.window
            && let Some(done) = calls.join_next().await
        {
            done??;
        }
        let mut admin = admin.clone();
        let schedule = pb::Schedule {
            name: name(i),
            cron: args.cron.clone(),
            job: Some(pb::JobTemplate {
                queue: QUEUE.into(),
                job_type: "tick".into(),
                payload: format!(r#"{{"n": {i}}}"#).into_bytes().into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        calls.spawn(async move {
            admin
                .create_schedule(pb::CreateScheduleRequest {
                    schedule: Some(schedule),
                    upsert: true,
                })
                .await
                .with_context(|| format!("creating schedule {i}"))
                .map(drop)
        });
    }
    while let Some(done) = calls.join_next().await {
        done??;
    }
    Ok(began.elapsed())
}

/// Each measured tick's jobs: their lags in milliseconds.
async fn lags_by_tick(
    admin: &AdminClient<Conn>,
    ticks: &[SystemTime],
) -> anyhow::Result<BTreeMap<SystemTime, Histogram<u64>>> {
    let mut by_tick: BTreeMap<SystemTime, Histogram<u64>> = BTreeMap::new();
    for tick in ticks {
        by_tick.insert(*tick, Histogram::new(3)?);
    }
    let mut admin = admin.clone();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_jobs(pb::ListJobsRequest {
                queue: QUEUE.into(),
                page_size: sluice_limits::MAX_PAGE_SIZE,
                page_token,
                ..Default::default()
            })
            .await?
            .into_inner();
        for job in &page.jobs {
            let tick = job
                .headers
                .get("sluice-scheduled-for")
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            let created = system_time(job.created_at.as_ref());
            if let (Some(tick), Some(created)) = (tick, created)
                && let Some(lags) = by_tick.get_mut(&tick)
            {
                let lag = created.duration_since(tick).unwrap_or_default();
                lags.record(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX))?;
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(by_tick);
        }
        page_token = page.next_page_token;
    }
}

fn print(
    args: &SchedulesArgs,
    ticks: &[SystemTime],
    by_tick: &BTreeMap<SystemTime, Histogram<u64>>,
    window: Duration,
    cpu: Option<f64>,
) -> anyhow::Result<()> {
    let rows: Vec<serde_json::Value> = ticks
        .iter()
        .map(|tick| {
            let lags = &by_tick[tick];
            json!({
                "tick": humantime::format_rfc3339_seconds(*tick).to_string(),
                "fired": lags.len(),
                "missing": (args.schedules as u64).saturating_sub(lags.len()),
                "lag_p50_ms": lags.value_at_quantile(0.5),
                "lag_p99_ms": lags.value_at_quantile(0.99),
                "lag_max_ms": lags.max(),
                "within_1s": lags.count_between(0, 1000),
            })
        })
        .collect();
    let window_s = window.as_secs_f64();
    let summary = json!({
        "schedules": args.schedules,
        "cron": args.cron,
        "store": args.target.store,
        "brokers": args.target.brokers,
        "ticks": rows,
        "window_s": window_s,
        "broker_cpu_s": cpu,
        "broker_cpu_pct": cpu.map(|c| 100.0 * c / window_s),
    });
    if args.target.json {
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{} schedules ({:?}), store {}, {} broker(s)",
        args.schedules, args.cron, args.target.store, args.target.brokers
    );
    println!(
        "{:<22} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "tick", "fired", "missing", "p50 ms", "p99 ms", "max ms", "within 1s"
    );
    for row in &rows {
        println!(
            "{:<22} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
            row["tick"].as_str().unwrap_or_default(),
            row["fired"].to_string(),
            row["missing"].to_string(),
            row["lag_p50_ms"].to_string(),
            row["lag_p99_ms"].to_string(),
            row["lag_max_ms"].to_string(),
            row["within_1s"].to_string(),
        );
    }
    match cpu {
        Some(cpu) => println!(
            "broker CPU: {cpu:.2} s over the {window_s:.0} s window ({:.1}% of one core): {:.0} ms per tick of {} jobs, idle time included",
            100.0 * cpu / window_s,
            1000.0 * cpu / ticks.len() as f64,
            args.schedules
        ),
        None => println!("broker CPU: not measured (--addr)"),
    }
    Ok(())
}
