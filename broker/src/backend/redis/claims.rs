//! Claims: how this broker's Lease streams (`cluster::Streams`) get jobs
//! from Redis. A claim (`lua/claim.lua`) takes up to a stream's credit of
//! ready jobs over its queues (paused ones left out) and job types, in the
//! contract's order, atomically, with lease ids made here from the
//! operating system's generator. A stream that opens adopts the leases
//! its worker says it still holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sluice_queue::{ConsumerSpec, JobSnapshot};
use uuid::Uuid;

use super::scripts::{reply, scripts};
use super::{Inner, job, leases};
use crate::backend::cluster::{ClaimStore, Closer, StreamId, Streams, Want, parse_lease_entry};
use crate::backend::{BackendError, LeaseFeed, LeaseRef};

type Result<T> = std::result::Result<T, BackendError>;

/// Opens a stream: adopts the leases the worker says it still holds, then
/// lets the claimer fill it.
pub(super) async fn open(inner: &Arc<Inner>, spec: ConsumerSpec) -> Result<LeaseFeed> {
    let stream = inner.streams.next_id();
    let lease = spec.lease_duration.unwrap_or(inner.queue.lease_duration);
    let mut adopted = HashSet::new();
    if !spec.held_leases.is_empty() {
        let call = inner
            .call()
            .arg(stream)
            .arg(&spec.worker_id)
            .arg(spec.max_in_flight)
            .args(
                spec.held_leases
                    .iter()
                    .flat_map(|(job, lease)| [job.to_string(), lease.to_string()]),
            );
        let ids = call.run(&inner.conn, &scripts().adopt).await?;
        for id in reply::items(&ids)? {
            adopted.insert(parse_id(id)?);
        }
    }
    let jobs = inner.streams.open(stream, spec, lease, adopted);
    Ok(LeaseFeed {
        jobs,
        closer: Arc::new(Closer::new(inner, stream)),
    })
}

fn parse_id(v: &redis::Value) -> Result<Uuid> {
    reply::string(v)?
        .parse()
        .map_err(|_| reply::malformed("a job id"))
}

#[tonic::async_trait]
impl ClaimStore for Inner {
    fn streams(&self) -> &Streams {
        &self.streams
    }

    async fn ready(&self, queues: &[String], most: u64) -> Result<u64> {
        let count = self
            .call()
            .arg(most)
            .args(queues)
            .run(&self.conn, &scripts().ready)
            .await?;
        reply::int(&count)
    }

    async fn claim(&self, want: &Want) -> Result<Vec<JobSnapshot>> {
        let lease_ms = u64::try_from(want.lease.as_millis()).unwrap_or(u64::MAX);
        let call = self
            .call()
            .arg(want.stream)
            .arg(&want.worker_id)
            .arg(lease_ms)
            .arg(want.credit)
            .arg(want.queues.len())
            .args(&want.queues)
            .arg(want.job_types.len())
            .args(&want.job_types)
            .args((0..want.credit).map(|_| Uuid::new_v4().to_string()));
        let claimed = call.run(&self.conn, &scripts().claim).await?;
        let claimed = reply::items(&claimed)?;
        // A limit that held jobs ends then: a round at that time.
        if let (Some(wake), Some(now)) = (
            reply::number::<u64>(reply::at(claimed, 1)?)?,
            reply::number::<u64>(reply::at(claimed, 2)?)?,
        ) {
            let delay = std::time::Duration::from_micros(wake.saturating_sub(now));
            self.streams.wake_at(tokio::time::Instant::now() + delay);
        }
        reply::items(reply::at(claimed, 0)?)?
            .iter()
            .map(|fields| job::job(reply::items(fields)?))
            .collect()
    }

    async fn held(&self) -> Result<HashMap<StreamId, HashSet<Uuid>>> {
        let entries = self.call().run(&self.conn, &scripts().held).await?;
        let mut held: HashMap<StreamId, HashSet<Uuid>> = HashMap::new();
        for entry in reply::items(&entries)? {
            let (stream, job) = parse_lease_entry(&reply::string(entry)?)
                .ok_or_else(|| reply::malformed("a held lease"))?;
            held.entry(stream).or_default().insert(job);
        }
        Ok(held)
    }

    async fn give_back(&self, leases: Vec<LeaseRef>) -> Result<()> {
        for lease in leases {
            // A lease that ended meanwhile (expired, resolved) is not ours
            // to give back: a refusal is fine.
            let zero = std::time::Duration::ZERO;
            match leases::release(self, lease, zero, zero).await {
                Ok(_) | Err(BackendError::Queue(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
