//! Claims: how this broker's Lease streams (`cluster::Streams`) get jobs
//! from the database. A claim takes up to a stream's credit of ready jobs
//! with one `FOR UPDATE SKIP LOCKED` statement, in the contract's order
//! (priority, then run_at, then enqueue order), skipping paused queues
//! and other job types: brokers never wait on each other's claims, a row
//! another broker is claiming is skipped. Queues with limits are left to
//! their own claim, one broker at a time (`flow.rs`). A stream that opens
//! adopts the leases its worker says it still holds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use sluice_queue::{ConsumerSpec, JobSnapshot};
use uuid::Uuid;

use super::columns::{self, Table, millis, select_list};
use super::sql::{self, get};
use super::{Inner, flow, leases};
use crate::backend::cluster::{ClaimStore, Closer, StreamId, Streams, Want};
use crate::backend::{BackendError, LeaseFeed, LeaseRef};

type Result<T> = std::result::Result<T, BackendError>;

/// Opens a stream: adopts the leases the worker says it still holds, then
/// lets the claimer fill it.
pub(super) async fn open(inner: &Arc<Inner>, spec: ConsumerSpec) -> Result<LeaseFeed> {
    let stream = inner.streams.next_id();
    let lease = spec.lease_duration.unwrap_or(inner.queue.lease_duration);
    let mut adopted = HashSet::new();
    if !spec.held_leases.is_empty() {
        let (jobs, leases): (Vec<Uuid>, Vec<Uuid>) = spec.held_leases.iter().copied().unzip();
        let client = sql::connection(&inner.pool).await?;
        let rows = sql::query(
            &client,
            "UPDATE sluice_jobs SET broker_id = $3, stream_id = $4
                 WHERE id IN (SELECT j.id FROM sluice_jobs j
                     JOIN unnest($1::uuid[], $2::uuid[]) AS h(id, lease_id)
                       ON j.id = h.id AND j.lease_id = h.lease_id
                     WHERE j.state = 'leased' AND j.worker_id = $5 LIMIT $6)
                 RETURNING id",
            &[
                &jobs,
                &leases,
                &inner.broker_id,
                &stream,
                &spec.worker_id,
                &i64::from(spec.max_in_flight),
            ],
        )
        .await?;
        for row in &rows {
            adopted.insert(get(row, "id")?);
        }
    }
    let jobs = inner.streams.open(stream, spec, lease, adopted);
    Ok(LeaseFeed {
        jobs,
        closer: Arc::new(Closer::new(inner, stream)),
    })
}

#[tonic::async_trait]
impl ClaimStore for Inner {
    fn streams(&self) -> &Streams {
        &self.streams
    }

    async fn ready(&self, queues: &[String], most: u64) -> Result<u64> {
        let client = sql::connection(&self.pool).await?;
        let row = sql::query_one(
            &client,
            "SELECT count(*) AS n FROM (SELECT 1 FROM sluice_jobs
                 WHERE state = 'ready' AND queue = ANY($1) LIMIT $2) r",
            &[&queues, &i64::try_from(most).unwrap_or(i64::MAX)],
        )
        .await?;
        Ok(u64::try_from(get::<i64>(&row, "n")?).unwrap_or(0))
    }

    async fn claim(&self, want: &Want) -> Result<Vec<JobSnapshot>> {
        // Every queue of the stream has limits, as far as this broker
        // knows: only their claims (one that finds its limits gone says
        // so, and the next claim is the plain one again).
        if want.queues.iter().all(|q| flow::has_limits(self, q)) {
            let mut jobs = Vec::new();
            for queue in &want.queues {
                let credit = want
                    .credit
                    .saturating_sub(u32::try_from(jobs.len()).unwrap_or(u32::MAX));
                if credit == 0 {
                    break;
                }
                jobs.extend(flow::claim(self, want, queue, credit).await?);
            }
            return Ok(jobs);
        }
        let job_types: Option<&Vec<String>> =
            (!want.job_types.is_empty()).then_some(&want.job_types);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
            &want.queues,
            &job_types,
            &i64::from(want.credit),
            &want.worker_id,
            &self.broker_id,
            &want.stream,
            &millis(want.lease),
        ];
        let mut client = sql::connection(&self.pool).await?;
        // A claim is committed without waiting for the WAL flush: nothing is
        // acknowledged to a client by it. If PostgreSQL crashes before the
        // flush, the job is READY again and runs again (at least once, as
        // after an expired lease); every Ack, Nack and Enqueue waits.
        let tx = sql::transaction(&mut client).await?;
        let queues: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&want.queues];
        // Sent together: tokio-postgres pipelines the requests polled at once.
        let (_, rows, limited) = tokio::try_join!(
            sql::execute(
                &tx,
                "SELECT set_config('synchronous_commit', 'off', true)",
                &[]
            ),
            sql::query(&tx, claim_sql(), &params),
            sql::query(
                &tx,
                "SELECT queue FROM sluice_limits WHERE queue = ANY($1)",
                &queues
            ),
        )?;
        sql::commit(tx).await?;
        drop(client);
        let limited: HashSet<String> = limited
            .iter()
            .map(|row| get(row, "queue"))
            .collect::<Result<_>>()?;
        flow::note_limited(self, &want.queues, &limited);
        let mut jobs = rows
            .iter()
            .map(|row| Ok((columns::seq(row)?, columns::job(row)?)))
            .collect::<Result<Vec<_>>>()?;
        // The UPDATE returns rows in no order: send them in the claim order.
        jobs.sort_by(|(seq_a, a), (seq_b, b)| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_at.cmp(&b.run_at))
                .then(seq_a.cmp(seq_b))
        });
        let mut jobs: Vec<JobSnapshot> = jobs.into_iter().map(|(_, job)| job).collect();
        // The queues with limits, each by its own claim (`flow.rs`), in
        // the stream's order of queues.
        for queue in want.queues.iter().filter(|q| limited.contains(*q)) {
            let credit = want
                .credit
                .saturating_sub(u32::try_from(jobs.len()).unwrap_or(u32::MAX));
            if credit == 0 {
                break;
            }
            jobs.extend(flow::claim(self, want, queue, credit).await?);
        }
        Ok(jobs)
    }

    async fn held(&self) -> Result<HashMap<StreamId, HashSet<Uuid>>> {
        let client = sql::connection(&self.pool).await?;
        let rows = sql::query(
            &client,
            "SELECT stream_id, id FROM sluice_jobs
                 WHERE broker_id = $1 AND state = 'leased' AND stream_id IS NOT NULL",
            &[&self.broker_id],
        )
        .await?;
        let mut held: HashMap<StreamId, HashSet<Uuid>> = HashMap::new();
        for row in &rows {
            held.entry(get(row, "stream_id")?)
                .or_default()
                .insert(get(row, "id")?);
        }
        Ok(held)
    }

    async fn give_back(&self, leases: Vec<LeaseRef>) -> Result<()> {
        leases::give_back_unsent(self, leases).await
    }
}

/// The claim statement: see the module doc.
fn claim_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            // Per queue (not paused), the first ready jobs straight
            // off the claim index; then the first of those over all.
            // Each is found again by its row address (ctid), which its lock
            // keeps valid, not through the key index.
            "WITH picked AS (
                     SELECT j.tid FROM (
                         SELECT unnest($1::text[]) AS queue
                         EXCEPT SELECT queue FROM sluice_paused
                         EXCEPT SELECT queue FROM sluice_limits
                     ) q CROSS JOIN LATERAL (
                         SELECT ctid AS tid, priority, run_at, seq FROM sluice_jobs
                         WHERE state = 'ready' AND queue = q.queue
                           AND ($2::text[] IS NULL OR job_type = ANY($2))
                         ORDER BY priority DESC, run_at, seq
                         LIMIT $3
                         FOR UPDATE SKIP LOCKED
                     ) j
                     ORDER BY j.priority DESC, j.run_at, j.seq
                     LIMIT $3
                 )
                 {}",
            lease_picked()
        )
    })
}

/// The UPDATE that leases the rows of a `picked` CTE (their `tid`s) to a
/// stream, returning them: `$4` the worker, `$5` this broker, `$6` the
/// stream, `$7` the lease in ms. Both claims (this one and `flow.rs`'s)
/// end with it.
pub(super) fn lease_picked() -> String {
    format!(
        "UPDATE sluice_jobs j SET state = 'leased', attempt = attempt + 1,
             lease_id = gen_random_uuid(), worker_id = $4, broker_id = $5,
             stream_id = $6, leased_at = now(), lease_ms = $7::bigint,
             lease_expires_at = now() + $7::bigint * interval '1 millisecond'
         FROM picked WHERE j.ctid = picked.tid
         RETURNING {}",
        select_list(Table::Unfinished, Some("j"))
    )
}
