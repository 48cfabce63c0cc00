//! Flow control on Redis: a queue's limits set and read (`lua/limits.lua`,
//! `lua/flow_read.lua`), its keys and the figures of Stats. The claim of
//! a queue under flow control is `lua/claim.lua`'s, and the layout and
//! the rules (which follow the queue crate's to the letter) are in
//! `lua/lib.lua`. Every script runs atomically, so the limits hold across
//! brokers at every instant: a key's jobs in flight are counted by the
//! scripts that start and end leases (`kf`), the queue's by its leased
//! set, and an expired lease, an Ack through another broker or a dead
//! broker's leases (which expire) free their slots in the script that
//! ends them, which wakes every broker's claimer.

use std::collections::HashMap;

use sluice_queue::{Bucket, FlowStats, KeyStats, QueueLimits, Timestamp};

use super::Inner;
use super::scripts::{reply, scripts};
use crate::backend::BackendError;
use crate::limits_record;

type Result<T> = std::result::Result<T, BackendError>;

/// Sets (or, empty, clears) the limits of `queue`.
pub(super) async fn set(inner: &Inner, queue: String, limits: QueueLimits) -> Result<()> {
    let record = if limits.is_empty() {
        String::new()
    } else {
        limits_record::encode(&limits)
    };
    inner
        .call()
        .arg(&queue)
        .arg(record)
        .run(&inner.conn, &scripts().limits)
        .await?;
    inner.streams.wake();
    Ok(())
}

/// What `flow_read.lua` answers of a queue.
struct Read {
    limits: QueueLimits,
    now: Timestamp,
    bucket: Option<Bucket>,
    in_flight: u32,
    keys: Vec<KeyStats>,
    /// Its ready jobs without a key.
    keyless_ready: u64,
}

fn bucket(text: Option<String>) -> Option<Bucket> {
    let text = text?;
    let (tokens, at) = text.split_once(' ')?;
    Some(Bucket {
        tokens: tokens.parse().ok()?,
        at: Timestamp::from_micros(at.parse().ok()?),
    })
}

async fn read(inner: &Inner, queue: &str, with_keys: bool) -> Result<Read> {
    let answer = inner
        .call()
        .arg(queue)
        .arg(if with_keys { "1" } else { "0" })
        .run(&inner.conn, &scripts().flow_read)
        .await?;
    let answer = reply::items(&answer)?;
    let record = reply::string(reply::at(answer, 0)?)?;
    let limits = if record.is_empty() {
        QueueLimits::default()
    } else {
        limits_record::decode(&record).map_err(|e| {
            tracing::error!(error = %e, "queue limits in Redis are not what Sluice writes");
            BackendError::Internal
        })?
    };
    let now = Timestamp::from_micros(reply::int(reply::at(answer, 1)?)?);
    let mut keys = Vec::new();
    for row in reply::items(reply::at(answer, 4)?)? {
        let row = reply::items(row)?;
        let key = reply::string(reply::at(row, 0)?)?;
        let in_flight: u32 = reply::int(reply::at(row, 1)?)?;
        let held_until = reply::number::<u64>(reply::at(row, 3)?)?.map(Timestamp::from_micros);
        let b = bucket(reply::text(reply::at(row, 4)?)?.filter(|t| !t.is_empty()));
        keys.push(KeyStats {
            held_by: sluice_queue::key_hold(&limits, &key, in_flight, held_until, b.as_ref(), now)
                .map(|h| h.reason),
            key,
            in_flight,
            ready: reply::int(reply::at(row, 2)?)?,
            held_until: held_until.filter(|&t| t > now),
        });
    }
    Ok(Read {
        limits,
        now,
        bucket: bucket(reply::text(reply::at(answer, 2)?)?.filter(|t| !t.is_empty())),
        in_flight: reply::int(reply::at(answer, 3)?)?,
        keys,
        keyless_ready: reply::int(reply::at(answer, 5)?)?,
    })
}

/// The limits of `queue`.
pub(super) async fn get_limits(inner: &Inner, queue: &str) -> Result<QueueLimits> {
    Ok(read(inner, queue, false).await?.limits)
}

/// The keys of `queue` (counted while it is under flow control), most
/// jobs first.
pub(super) async fn keys(inner: &Inner, queue: &str, limit: usize) -> Result<Vec<KeyStats>> {
    Ok(sluice_queue::busiest_first(
        read(inner, queue, true).await?.keys,
        limit,
    ))
}

/// The flow figures of Stats for each queue under flow control.
pub(super) async fn stats(inner: &Inner) -> Result<HashMap<String, FlowStats>> {
    let limited = inner.call().run(&inner.conn, &scripts().limited).await?;
    let mut out = HashMap::new();
    for queue in reply::items(&limited)? {
        let queue = reply::string(queue)?;
        let read = read(inner, &queue, true).await?;
        let queue_hold =
            sluice_queue::queue_hold(&read.limits, read.in_flight, read.bucket.as_ref(), read.now)
                .map(|h| h.reason);
        out.insert(
            queue,
            FlowStats::of(read.limits, read.keys, queue_hold, read.keyless_ready),
        );
    }
    Ok(out)
}
