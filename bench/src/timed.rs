//! Timing workers end to end, for `exec` and `clients`: wait for a
//! worker's session on a queue, then enqueue N jobs there in batches and
//! time them until the broker counts N more acked.

use std::time::{Duration, Instant};

use anyhow::bail;
use sluice_proto::v1 as pb;
use sluice_proto::v1::admin_client::AdminClient;
use sluice_proto::v1::broker_client::BrokerClient;
use tonic::transport::Channel;

/// Jobs of `job_type` per second through `queue`'s worker: `jobs` are
/// enqueued in batches of 1,000, timed from the first enqueue until all
/// are acked; an error past `bound`.
pub async fn jobs_per_second(
    channel: &Channel,
    admin: &mut AdminClient<Channel>,
    (queue, job_type): (&str, &str),
    jobs: u64,
    bound: Duration,
) -> anyhow::Result<f64> {
    let before = acked_total(admin, queue).await?;
    let mut broker = BrokerClient::new(channel.clone());
    let started = Instant::now();
    let mut left = jobs;
    while left > 0 {
        let n = left.min(1000);
        let batch = (0..n)
            .map(|_| pb::EnqueueRequest {
                queue: queue.to_owned(),
                job_type: job_type.to_owned(),
                ..Default::default()
            })
            .collect();
        broker
            .enqueue_batch(pb::EnqueueBatchRequest { jobs: batch })
            .await?;
        left -= n;
    }
    loop {
        let acked = acked_total(admin, queue).await? - before;
        if acked >= jobs {
            return Ok(jobs as f64 / started.elapsed().as_secs_f64());
        }
        if started.elapsed() > bound {
            bail!("{queue}: only {acked} of {jobs} jobs acked within {bound:?}");
        }
        // Rarely enough to cost the machine nothing next to the workers,
        // often enough to add under 1% to a run of seconds.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The jobs the broker counts acked in `queue` so far.
async fn acked_total(admin: &mut AdminClient<Channel>, queue: &str) -> anyhow::Result<u64> {
    let stats = admin.stats(pb::StatsRequest {}).await?.into_inner();
    Ok(stats
        .queues
        .iter()
        .find(|q| q.queue == queue)
        .map_or(0, |q| q.acked_total))
}

/// Waits up to `within` for a worker's session on `queue`.
pub async fn wait_for_worker(
    admin: &mut AdminClient<Channel>,
    queue: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let workers = admin.list_workers(pb::ListWorkersRequest {}).await?;
        if workers
            .into_inner()
            .workers
            .iter()
            .any(|w| w.queues.iter().any(|q| q == queue))
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("no worker opened a session on {queue} within {within:?}")
}
