//! `sluice-bench durable`: what `--data-dir` costs. Measures the disk's raw
//! fsync rate, then runs the same loads against a memory-only broker and a
//! broker with `--data-dir`, one fresh broker per run: unary Enqueue at 1,
//! 8 and 64 concurrent producers (each waits for its answer before the next
//! call), and batched enqueue.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::load::{self, Api, Load};

/// One row of the table: a load run against both brokers.
struct Row {
    label: &'static str,
    api: Api,
    producers: usize,
    window: usize,
}

const ROWS: [Row; 4] = [
    Row {
        label: "unary, 1 producer",
        api: Api::Unary,
        producers: 1,
        window: 1,
    },
    Row {
        label: "unary, 8 producers",
        api: Api::Unary,
        producers: 8,
        window: 1,
    },
    Row {
        label: "unary, 64 producers",
        api: Api::Unary,
        producers: 64,
        window: 1,
    },
    Row {
        label: "batched (256 per call, 64 calls in flight)",
        api: Api::Batch,
        producers: 1,
        window: 64,
    },
];

/// Writes and fsyncs 4 KiB at a time in `dir` for about two seconds.
pub fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// Runs the table; `jobs` per unary run, ten times as many per batched run.
pub async fn run(broker_bin: &Path, dir: &Path, jobs: u64, json_out: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let fsync = fsync_rate(dir)?;
    let mut results = Vec::new();
    for row in &ROWS {
        let n = if row.api == Api::Batch {
            jobs * 10
        } else {
            jobs
        };
        let mut rates = Vec::new();
        for data_dir in [None, Some(dir.join(format!("data-{}", results.len())))] {
            let mut args = Vec::new();
            if let Some(data_dir) = &data_dir {
                let _ = std::fs::remove_dir_all(data_dir);
                args = vec![
                    "--data-dir".to_owned(),
                    data_dir.to_string_lossy().into_owned(),
                ];
            }
            let broker = crate::start_broker(broker_bin, &args)?;
            let measured = load::run(
                std::slice::from_ref(&broker.addr),
                &Load {
                    jobs: n,
                    producers: row.producers,
                    consumers: 1,
                    in_flight: 64,
                    window: row.window,
                    batch: 256,
                    payload: 64,
                    rate: None,
                    api: row.api,
                    worker_handler: None,
                    queue: "durable-bench".into(),
                    security: Default::default(),
                    report_every: None,
                    max_backlog: None,
                    ack_elsewhere: false,
                    keys: 0,
                },
            )
            .await?;
            drop(broker);
            if let Some(data_dir) = &data_dir {
                let _ = std::fs::remove_dir_all(data_dir);
            }
            rates.push((
                n as f64 / measured.enqueue.as_secs_f64(),
                n as f64 / measured.end_to_end.as_secs_f64(),
            ));
        }
        results.push((row, n, rates));
    }
    if json_out {
        let rows: Vec<_> = results
            .iter()
            .map(|(row, n, r)| {
                json!({ "load": row.label, "jobs": n,
                        "memory": { "enqueue_jobs_per_s": r[0].0, "e2e_jobs_per_s": r[0].1 },
                        "durable": { "enqueue_jobs_per_s": r[1].0, "e2e_jobs_per_s": r[1].1 } })
            })
            .collect();
        println!("{}", json!({ "fsync_per_s": fsync, "rows": rows }));
        return Ok(());
    }
    println!(
        "raw fsync rate of {}: {fsync:.0}/s (4 KiB write + fdatasync)",
        dir.display()
    );
    println!(
        "{:<44} {:>8} {:>14} {:>14} {:>14} {:>14}",
        "load (1 consumer, 64 in flight)",
        "jobs",
        "memory enq/s",
        "memory e2e/s",
        "durable enq/s",
        "durable e2e/s"
    );
    for (row, n, r) in &results {
        println!(
            "{:<44} {:>8} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            row.label, n, r[0].0, r[0].1, r[1].0, r[1].1
        );
    }
    Ok(())
}

/// A directory for the runs: `dir`, or one under the system's temp dir.
pub fn work_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-bench-durable-{}", std::process::id()))
    })
}
