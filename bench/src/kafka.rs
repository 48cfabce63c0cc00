//! `sluice-bench kafka`: Kafka source throughput. Produces `--records`
//! records to a topic of `--partitions` partitions on a private Tansu
//! (first, so the run measures the source, not the producer), then starts
//! a broker (`--data-dir`, durable) and one `sluice-kafka` (both the
//! release binaries beside this one) and times the records from the topic
//! to durable jobs: until the group's positions cover every record. It
//! reports records/s and the CPU seconds of the source, the broker and
//! Tansu over that window.

use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use sluice_e2e::BrokerProcess;
use sluice_e2e::kafka::{Kafka, record, write_config};
use sluice_e2e::process::Process;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;

use crate::proc_stats;

/// Options of `kafka`.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Records to produce and read.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    records: u64,
    /// The topic's partitions.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Bytes of each record's value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Memory-only broker (default: --data-dir, every commit fsynced).
    #[arg(long)]
    memory_only: bool,
}

const GROUP: &str = "bench";

/// Runs the benchmark and prints its figures.
///
/// # Errors
/// A process that cannot start, or Kafka or the broker refusing.
pub async fn run(args: KafkaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.records > 0 && args.partitions > 0,
        "records and partitions must be above 0"
    );
    let kafka = Kafka::start().await;
    kafka.create_topic("bench", args.partitions).await;
    let client = kafka.client().await;
    let produce_started = Instant::now();
    let value = vec![b'x'; args.value_bytes];
    let per_partition = args.records / u64::try_from(args.partitions)?;
    let remainder = args.records % u64::try_from(args.partitions)?;
    for p in 0..args.partitions {
        let pc = client
            .partition_client("bench", p, UnknownTopicHandling::Retry)
            .await?;
        let mut left = per_partition + u64::from(u64::try_from(p)? < remainder);
        while left > 0 {
            let n = left.min(5_000);
            let batch = (0..n).map(|_| record(None, &value, &[])).collect();
            pc.produce(batch, Compression::NoCompression).await?;
            left -= n;
        }
    }
    eprintln!(
        "{} records of {} bytes produced to {} partitions in {:.1} s",
        args.records,
        args.value_bytes,
        args.partitions,
        produce_started.elapsed().as_secs_f64()
    );

    let dir = std::env::temp_dir().join(format!("sluice-bench-kafka-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut broker_command = Command::new(crate::sibling("sluice-broker")?);
    broker_command
        .args(["--addr", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    if !args.memory_only {
        broker_command.arg("--data-dir").arg(dir.join("data"));
    }
    let broker = BrokerProcess::launch(broker_command).map_err(anyhow::Error::msg)?;
    broker.wait_for_log("broker serving");
    let config = write_config(
        &dir,
        &kafka.addr,
        GROUP,
        "",
        "[[topic]]\nname = \"bench\"\nqueue = \"bench\"\njob_type = \"event\"\n",
    );
    let mut source_command = Command::new(crate::sibling("sluice-kafka")?);
    source_command
        .arg("run")
        .arg("--config")
        .arg(&config)
        .args(["--broker", &broker.url(), "--member-id", "bench"])
        .env("RUST_LOG", "warn");
    let cpu_before = (
        proc_stats::cpu_seconds(broker.process.pid())?,
        proc_stats::cpu_seconds(kafka.process.pid())?,
    );
    let started = Instant::now();
    let source = Process::try_spawn(source_command).map_err(anyhow::Error::msg)?;
    let mut admin = AdminClient::new(broker.channel().await);
    let target = i64::try_from(args.records)?;
    let mut last_log = Instant::now();
    loop {
        let listed = admin
            .list_source_partitions(pb::ListSourcePartitionsRequest {
                group: GROUP.into(),
            })
            .await?
            .into_inner();
        let done: i64 = listed.partitions.iter().filter_map(|p| p.position).sum();
        if done >= target {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "not done in 30 min:\n{}",
            source.log()
        );
        if last_log.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {done} of {target} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_log = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let source_cpu = proc_stats::cpu_seconds(source.pid())?;
    let broker_cpu = proc_stats::cpu_seconds(broker.process.pid())? - cpu_before.0;
    let tansu_cpu = proc_stats::cpu_seconds(kafka.process.pid())? - cpu_before.1;
    let rate = args.records as f64 / elapsed;
    println!(
        "kafka -> sluice ({}): {} records, {} partitions, {} B values: {elapsed:.2} s, {rate:.0} records/s",
        if args.memory_only {
            "memory-only broker"
        } else {
            "--data-dir broker"
        },
        args.records,
        args.partitions,
        args.value_bytes
    );
    println!(
        "CPU seconds: sluice-kafka {source_cpu:.2} ({:.0}% of a core), broker {broker_cpu:.2} ({:.0}%), tansu {tansu_cpu:.2} ({:.0}%)",
        100.0 * source_cpu / elapsed,
        100.0 * broker_cpu / elapsed,
        100.0 * tansu_cpu / elapsed
    );
    println!(
        "per 100,000 records: sluice-kafka {:.2} CPU s, broker {:.2} CPU s",
        source_cpu * 100_000.0 / args.records as f64,
        broker_cpu * 100_000.0 / args.records as f64
    );
    drop(source);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
