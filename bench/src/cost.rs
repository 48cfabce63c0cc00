//! What a broker feature costs: batched and unary end-to-end loads against
//! a broker with the feature off and one with it on, alternating which goes
//! first each round (so that drift favours neither), N rounds; the median
//! jobs/s of each and their ratio. `security-cost` (TLS and tokens) and
//! `metrics-cost` (`--http-addr`, scraped every second) are two such
//! comparisons.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use crate::load::{self, Api, ClientSecurity, Load};

/// Options of a cost comparison.
#[derive(Debug, Args)]
pub struct CostArgs {
    /// The broker binary (default: sluice-broker beside this one).
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// Rounds; each runs batched and unary loads with the feature off and
    /// on, alternating.
    #[arg(short = 'r', long, default_value_t = 3)]
    rounds: usize,
    /// Jobs per unary run; batched runs take four times as many.
    #[arg(short = 'n', long, default_value_t = 50_000)]
    jobs: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// One side of a comparison: the broker's extra flags and the clients'.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub broker_args: Vec<String>,
    pub clients: ClientSecurity,
    /// Scrape the broker's /metrics every second during the run.
    pub scrape: bool,
}

/// What is compared: names and sides, off first.
pub struct Comparison {
    /// The queue the loads use, and the name of the comparison.
    pub name: &'static str,
    /// The two sides' names, e.g. "plain" and "secure".
    pub labels: [&'static str; 2],
    /// What the table's first line says.
    pub caption: &'static str,
    pub sides: [Side; 2],
}

/// Runs `comparison` and prints its table (or JSON).
///
/// # Errors
/// A run that fails.
pub async fn run(args: CostArgs, broker_bin: &Path, comparison: Comparison) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.rounds > 0 && args.jobs > 0,
        "rounds and jobs must be above 0"
    );
    let apis = [(Api::Batch, args.jobs * 4), (Api::Unary, args.jobs)];
    // results[api][side] = jobs/s of each round.
    let mut results = vec![[Vec::new(), Vec::new()]; apis.len()];
    for round in 1..=args.rounds {
        for (i, (api, jobs)) in apis.iter().enumerate() {
            let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
            for side in order {
                let label = comparison.labels[side];
                let rate = one_run(
                    broker_bin,
                    *api,
                    *jobs,
                    comparison.name,
                    &comparison.sides[side],
                )
                .await
                .with_context(|| format!("round {round}, {api:?}, {label}"))?;
                results[i][side].push(rate);
                eprintln!("round {round} {api:?} {label}: {rate:.0} jobs/s");
            }
        }
    }
    let [off, on] = comparison.labels;
    let rows: Vec<_> = apis
        .iter()
        .zip(&results)
        .map(|((api, jobs), [a, b])| {
            let (ma, mb) = (median(a), median(b));
            json!({
                "api": format!("{api:?}").to_lowercase(), "jobs": jobs,
                off: a, on: b, "off_median": ma, "on_median": mb,
                "on_over_off": if ma > 0.0 { mb / ma } else { 0.0 },
            })
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({ "comparison": comparison.name, "rounds": args.rounds, "loads": rows })
        );
        return Ok(());
    }
    println!(
        "end-to-end jobs/s, median of {} rounds ({})",
        args.rounds, comparison.caption
    );
    println!("| load | {off} jobs/s | {on} jobs/s | {on} / {off} |\n|---|---|---|---|");
    for row in &rows {
        println!(
            "| {}, {} jobs | {:.0} | {:.0} | {:.2} |",
            row["api"].as_str().unwrap_or("?"),
            row["jobs"],
            row["off_median"].as_f64().unwrap_or(0.0),
            row["on_median"].as_f64().unwrap_or(0.0),
            row["on_over_off"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// End-to-end jobs/s of one load against a fresh broker set up as `side`.
async fn one_run(
    broker_bin: &Path,
    api: Api,
    jobs: u64,
    queue: &str,
    side: &Side,
) -> anyhow::Result<f64> {
    let broker = crate::start_broker(broker_bin, &side.broker_args)?;
    let stop = CancellationToken::new();
    let scraper = side
        .scrape
        .then(|| tokio::spawn(scrape_every_second(broker.metrics_url(), stop.clone())));
    let load = Load {
        jobs,
        producers: 1,
        consumers: 1,
        in_flight: 64,
        window: 64,
        batch: 256,
        payload: 64,
        rate: None,
        api,
        worker_handler: None,
        queue: queue.into(),
        security: side.clients.clone(),
        report_every: None,
        max_backlog: None,
        ack_elsewhere: false,
        keys: 0,
    };
    let measured = load::run(std::slice::from_ref(&broker.addr), &load).await;
    stop.cancel();
    if let Some(scraper) = scraper {
        let scrapes = scraper.await.context("the scraper task")??;
        anyhow::ensure!(scrapes > 0, "the run ended before the first scrape");
    }
    Ok(jobs as f64 / measured?.end_to_end.as_secs_f64())
}

/// GETs `url` (http://HOST:PORT/metrics) every second until `stop`, as a
/// Prometheus with a 1 s interval would; returns how many scrapes were made.
async fn scrape_every_second(url: String, stop: CancellationToken) -> anyhow::Result<u64> {
    let rest = url.strip_prefix("http://").context("a metrics URL")?;
    let (host, path) = rest.split_once('/').context("a metrics URL")?;
    let mut scrapes = 0;
    loop {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        let request = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await?;
        anyhow::ensure!(body.starts_with(b"HTTP/1.1 200"), "a scrape failed");
        scrapes += 1;
        tokio::select! {
            () = stop.cancelled() => return Ok(scrapes),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}
