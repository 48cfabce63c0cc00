//! The broker registry, `sluice_brokers`: each broker's row, renewed by
//! its heartbeat, holds its open Lease streams and its lifetime counters
//! (`cluster::record` writes both). A broker whose heartbeat stopped is
//! forgotten by the next heartbeat of any other, its counters folded into
//! `sluice_counters`; one that stops cleanly leaves the same way.

use deadpool_postgres::Transaction;
use sluice_queue::{Counters, WorkerInfo};
use tracing::{info, warn};
use uuid::Uuid;

use super::Inner;
use super::sql::{self, get};
use crate::backend::BackendError;
use crate::backend::cluster::timing::BROKER_GONE_AFTER;
use crate::backend::cluster::{Counts, parse_streams, streams_json};

type Result<T> = std::result::Result<T, BackendError>;

/// Renews this broker's row (adding it the first time) and forgets the
/// brokers that stopped renewing theirs.
pub(super) async fn heartbeat(inner: &Inner) -> Result<()> {
    let mut client = sql::connection(&inner.pool).await?;
    sql::execute(
        &client,
        "INSERT INTO sluice_brokers (broker_id, heartbeat, streams, counters)
             VALUES ($1, now(), $2::text::jsonb, $3::text::jsonb)
             ON CONFLICT (broker_id) DO UPDATE
             SET heartbeat = now(), streams = excluded.streams, counters = excluded.counters",
        &[
            &inner.broker_id,
            &streams_json(&inner.streams.workers()),
            &inner.counts.to_json(),
        ],
    )
    .await?;
    let tx = sql::transaction(&mut client).await?;
    let gone = sql::query(
        &tx,
        "DELETE FROM sluice_brokers WHERE heartbeat < now() - $1::bigint * interval '1 second'
             RETURNING broker_id, counters::text AS counters",
        &[&gone_after_secs()],
    )
    .await?;
    for row in &gone {
        fold_counters(&tx, &Counts::parse(get(row, "counters")?)).await?;
        let broker: Uuid = get(row, "broker_id")?;
        info!(%broker, "forgot a broker whose heartbeat stopped");
    }
    sql::commit(tx).await
}

/// Adds a departed broker's counters to `sluice_counters`.
async fn fold_counters(tx: &Transaction<'_>, counters: &[(String, Counters)]) -> Result<()> {
    for (queue, c) in counters {
        let v = [c.enqueued, c.acked, c.nacked, c.expired, c.dead]
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        sql::execute(
            tx,
            "INSERT INTO sluice_counters (queue, enqueued, acked, nacked, expired, dead)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (queue) DO UPDATE SET enqueued = sluice_counters.enqueued + $2,
                 acked = sluice_counters.acked + $3, nacked = sluice_counters.nacked + $4,
                 expired = sluice_counters.expired + $5, dead = sluice_counters.dead + $6",
            &[queue, &v[0], &v[1], &v[2], &v[3], &v[4]],
        )
        .await?;
    }
    Ok(())
}

/// Leaves the registry at shutdown, folding this broker's counters in.
pub(super) async fn deregister(inner: &Inner) {
    let done = async {
        let mut client = sql::connection(&inner.pool).await?;
        let tx = sql::transaction(&mut client).await?;
        sql::execute(
            &tx,
            "DELETE FROM sluice_brokers WHERE broker_id = $1",
            &[&inner.broker_id],
        )
        .await?;
        fold_counters(&tx, &inner.counts.snapshot()).await?;
        sql::commit(tx).await
    };
    if let Err(e) = done.await {
        warn!(error = %e, "could not leave the broker registry; others forget this broker shortly");
    }
}

/// The Lease streams of every live broker: this one's as they are, the
/// others' as of their last heartbeat.
pub(super) async fn workers(inner: &Inner) -> Result<Vec<WorkerInfo>> {
    let client = sql::connection(&inner.pool).await?;
    let rows = sql::query(
        &client,
        "SELECT streams::text AS streams FROM sluice_brokers
             WHERE broker_id <> $1 AND heartbeat >= now() - $2::bigint * interval '1 second'",
        &[&inner.broker_id, &gone_after_secs()],
    )
    .await?;
    let mut workers = inner.streams.workers();
    for row in &rows {
        workers.extend(parse_streams(get(row, "streams")?));
    }
    Ok(workers)
}

/// [`BROKER_GONE_AFTER`] in whole seconds, as the statements take it.
fn gone_after_secs() -> i64 {
    i64::try_from(BROKER_GONE_AFTER.as_secs()).unwrap_or(i64::MAX)
}
