//! The broker registry: each broker's record (its open Lease streams, in
//! the JSON of `cluster::record`) lives with a TTL and is renewed by its
//! heartbeat; its counters beside it. A broker whose record expired is
//! forgotten by the next heartbeat of any other, its counters added to
//! the totals of brokers gone; one that stops cleanly leaves the same way.

use sluice_queue::WorkerInfo;
use tracing::{info, warn};

use super::Inner;
use super::scripts::{reply, scripts};
use crate::backend::BackendError;
use crate::backend::cluster::timing::BROKER_GONE_AFTER;
use crate::backend::cluster::{parse_streams, streams_json};

/// Renews this broker's record (adding it the first time) and forgets the
/// brokers whose record expired.
pub(super) async fn heartbeat(inner: &Inner) -> Result<(), BackendError> {
    let gone = inner
        .call()
        .arg(streams_json(&inner.streams.workers()))
        .arg(inner.counts.to_json())
        .arg(u64::try_from(BROKER_GONE_AFTER.as_millis()).unwrap_or(u64::MAX))
        .run(&inner.conn, &scripts().heartbeat)
        .await?;
    for broker in reply::items(&gone)? {
        let broker = reply::string(broker)?;
        info!(%broker, "forgot a broker whose heartbeat stopped");
    }
    Ok(())
}

/// Leaves the registry at shutdown, adding this broker's counters to the
/// totals.
pub(super) async fn leave(inner: &Inner) {
    let left = inner
        .call()
        .arg(inner.counts.to_json())
        .run(&inner.conn, &scripts().leave)
        .await;
    if let Err(e) = left {
        warn!(error = %e, "could not leave the broker registry; others forget this broker shortly");
    }
}

/// The Lease streams of every live broker: this one's as they are, the
/// others' as of their last heartbeat.
pub(super) async fn workers(inner: &Inner) -> Result<Vec<WorkerInfo>, BackendError> {
    let records = inner.call().run(&inner.conn, &scripts().workers).await?;
    let mut workers = inner.streams.workers();
    for record in reply::items(&records)? {
        workers.extend(parse_streams(&reply::string(record)?));
    }
    Ok(workers)
}
