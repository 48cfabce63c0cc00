//! The source calls: Broker.ClaimPartitions, CommitPartition and
//! LeaveSourceGroup (producers), Admin.ListSourcePartitions (readers) and
//! SetSourcePositions (admins of every queue). What the rows mean and how
//! partitions are dealt is `crate::sources`; this desk validates, reads
//! the group's rows and writes them back on the revisions it read.
//!
//! A commit's records become jobs as Enqueue's would (`convert`); a
//! record the source marks invalid, or one Enqueue would refuse as
//! invalid, becomes a DEAD job with the reason instead (its payload kept
//! if it fits, its valid headers kept), so a bad record never blocks its
//! partition and never vanishes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sluice_limits::{
    MAX_BATCH, MAX_HEADERS, SOURCE_LEASE, SOURCE_LEASE_DEFAULT, check_header_value, check_name,
    check_source_group, check_stream_name,
};
use sluice_proto::v1 as pb;
use sluice_queue::NewJob;
use tracing::{info, warn};

use super::convert::{self, Limits};
use super::error::{RequestError, item_status};
use crate::auth::Grant;
use crate::backend::{Expect, Millis, RowWrite, SharedBackend, SourceCommit, SourceRow};
use crate::clock::{Clock, TokioClock};
use crate::schedules::now_millis;
use crate::schedules::record::timestamp_of;
use crate::sources::{Hold, RowKind, kind, member_key, partition_key, share};

type Result<T> = std::result::Result<T, RequestError>;

/// Reads and writes of one claim before it gives up on the rows another
/// writer kept changing (they are retried at the member's next claim).
const ATTEMPTS: usize = 8;

/// What the source calls need besides the backend.
#[derive(Clone)]
pub struct SourceDesk {
    shared: SharedBackend,
    clock: TokioClock,
    limits: Limits,
}

/// A partition a claim writes, and what the member holds if it lands.
struct Planned {
    key: String,
    held: Option<pb::HeldPartition>,
}

impl SourceDesk {
    /// The desk over `shared`, checking records as Enqueue does with `limits`.
    pub fn new(shared: SharedBackend, limits: Limits) -> Self {
        Self {
            shared,
            clock: TokioClock::new(),
            limits,
        }
    }

    fn now(&self) -> Millis {
        now_millis(&self.clock)
    }

    /// ClaimPartitions, for `grant`.
    pub async fn claim(
        &self,
        grant: &Grant,
        req: pb::ClaimPartitionsRequest,
    ) -> Result<pb::ClaimPartitionsResponse> {
        let group = scoped_group(grant, &req.group)?;
        let member = member_id(&req.member_id)?;
        if req.partitions.len() > MAX_BATCH {
            return Err(RequestError::invalid(
                "partitions",
                format!("{} is over the limit of {MAX_BATCH}", req.partitions.len()),
            ));
        }
        let mut partitions = req
            .partitions
            .iter()
            .map(|p| checked_partition(&p.stream, p.partition, "partitions"))
            .collect::<Result<Vec<_>>>()?;
        partitions.sort();
        partitions.dedup();
        let lease = lease_duration(req.lease_duration)?;
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        // Keys whose write did not land yet (another writer came first).
        let mut pending: Option<HashSet<String>> = None;
        let mut held = Vec::new();
        let mut members = 1;
        for _ in 0..ATTEMPTS {
            let now = self.now();
            let until = now.saturating_add(lease_ms);
            let rows = self.shared.source_rows(group).await?;
            let live = live_members(&rows, Some(member), now);
            members = live.len();
            let dealt: HashSet<&(String, i32)> =
                share(&partitions, &live, member).into_iter().collect();
            let by_key: HashMap<&str, &SourceRow> =
                rows.iter().map(|r| (r.key.as_str(), r)).collect();
            let mut planned: Vec<Planned> = Vec::new();
            let mut writes: Vec<RowWrite> = Vec::new();
            let wanted = |key: &str| pending.as_ref().is_none_or(|p| p.contains(key));
            // This member's own row, and the rows of members gone.
            let me = member_key(member);
            if wanted(&me) {
                let hold = Hold {
                    until,
                    holder: String::new(),
                };
                writes.push(put(&me, by_key.get(me.as_str()).copied(), None, hold));
                planned.push(Planned {
                    key: me,
                    held: None,
                });
            }
            for row in &rows {
                if let Some(RowKind::Member(m)) = kind(&row.key)
                    && m != member
                    && Hold::decode(&row.body).until <= now
                    && pending.is_none()
                {
                    writes.push(delete(row));
                    planned.push(Planned {
                        key: row.key.clone(),
                        held: None,
                    });
                }
            }
            // The partitions asked for, and those it holds but no longer reads.
            let asked: HashSet<String> = partitions
                .iter()
                .map(|(s, p)| partition_key(s, *p))
                .collect();
            for (stream, partition) in &partitions {
                let key = partition_key(stream, *partition);
                if !wanted(&key) {
                    continue;
                }
                let row = by_key.get(key.as_str()).copied();
                let hold = row.map(|r| Hold::decode(&r.body)).unwrap_or_default();
                let mine = hold.holder == member;
                if dealt.contains(&(stream.clone(), *partition)) {
                    if !mine && hold.held_at(now) {
                        continue;
                    }
                    let epoch = match row {
                        None => 1,
                        Some(r) if mine => r.epoch,
                        Some(r) => r.epoch + 1,
                    };
                    let taken = Hold {
                        until,
                        holder: member.to_owned(),
                    };
                    writes.push(put(&key, row, Some(epoch), taken));
                    planned.push(Planned {
                        key,
                        held: Some(pb::HeldPartition {
                            stream: stream.clone(),
                            partition: *partition,
                            epoch,
                            position: row.and_then(|r| r.position),
                        }),
                    });
                } else if mine {
                    writes.push(put(&key, row, None, Hold::default()));
                    planned.push(Planned { key, held: None });
                }
            }
            for row in &rows {
                if matches!(kind(&row.key), Some(RowKind::Partition(..)))
                    && !asked.contains(&row.key)
                    && Hold::decode(&row.body).holder == member
                    && wanted(&row.key)
                {
                    writes.push(put(&row.key, Some(row), None, Hold::default()));
                    planned.push(Planned {
                        key: row.key.clone(),
                        held: None,
                    });
                }
            }
            let written = if writes.is_empty() {
                Vec::new()
            } else {
                self.shared.put_source_rows(group, writes).await?
            };
            let mut missed = HashSet::new();
            for (plan, landed) in planned.into_iter().zip(written) {
                if landed {
                    held.extend(plan.held);
                } else {
                    missed.insert(plan.key);
                }
            }
            if missed.is_empty() {
                break;
            }
            pending = Some(missed);
        }
        held.sort_by(|a, b| (&a.stream, a.partition).cmp(&(&b.stream, b.partition)));
        Ok(pb::ClaimPartitionsResponse {
            held,
            members: u32::try_from(members).unwrap_or(u32::MAX),
        })
    }

    /// CommitPartition: checked for `grant` on its records' queue.
    pub async fn commit(
        &self,
        grant: &Grant,
        req: pb::CommitPartitionRequest,
    ) -> Result<pb::CommitPartitionResponse> {
        let group = scoped_group(grant, &req.group)?.to_owned();
        member_id(&req.member_id)?;
        let (stream, partition) = checked_partition(&req.stream, req.partition, "stream")?;
        if req.records.len() > MAX_BATCH {
            return Err(RequestError::invalid(
                "records",
                format!("{} is over the limit of {MAX_BATCH}", req.records.len()),
            ));
        }
        if req.from_position.is_some_and(|p| p < 0) {
            return Err(RequestError::invalid("from_position", "is 0 or more"));
        }
        let mut last = req.from_position.map_or(-1, |p| p - 1);
        let mut queue: Option<String> = None;
        let now = self.clock.now();
        let mut jobs = Vec::with_capacity(req.records.len());
        for record in req.records {
            if record.offset <= last || record.offset < 0 {
                return Err(RequestError::invalid(
                    "records",
                    format!(
                        "offset {} is not past the one before it (or from_position)",
                        record.offset
                    ),
                ));
            }
            last = record.offset;
            let job = record.job.unwrap_or_default();
            let named = convert::queue_name(job.queue.clone(), "records.job.queue")?;
            match &queue {
                None => {
                    grant.check_queue(&named)?;
                    queue = Some(named);
                }
                Some(q) if *q != named => {
                    return Err(RequestError::invalid(
                        "records.job.queue",
                        format!("{named:?} differs from {q:?}: a commit's records go to one queue"),
                    ));
                }
                Some(_) => {}
            }
            let new = if record.invalid.is_empty() {
                convert::new_job(job.clone(), self.limits, now)
                    .unwrap_or_else(|err| self.dead_letter(job, err.to_string()))
            } else {
                self.dead_letter(job, record.invalid)
            };
            jobs.push((new, record.offset));
        }
        if req.to_position <= last || req.from_position.is_some_and(|f| req.to_position < f) {
            return Err(RequestError::invalid(
                "to_position",
                "must be past the last record's offset and at least from_position",
            ));
        }
        // The job type of each dead letter, for its log line.
        let dead: Vec<Option<String>> = jobs
            .iter()
            .map(|(j, _)| j.dead_letter.is_some().then(|| j.job_type.clone()))
            .collect();
        let commit = SourceCommit {
            key: partition_key(&stream, partition),
            epoch: req.epoch,
            from: req.from_position,
            jobs,
            to: req.to_position,
        };
        let Some(committed) = self.shared.commit_source(&group, commit).await? else {
            return Err(RequestError::PartitionMoved {
                group,
                stream,
                partition,
            });
        };
        let mut dead_lettered = 0;
        let results = committed
            .answers
            .into_iter()
            .zip(dead)
            .map(|(answer, dead)| match answer {
                Ok(e) => {
                    if let Some(job_type) = dead {
                        dead_lettered += 1;
                        warn!(job_id = %e.job_id, job_type, queue = queue.as_deref().unwrap_or_default(), attempt = 0, source_group = %group, stream = %stream, partition, "a source record is kept as a dead letter");
                    }
                    pb::EnqueueResult {
                        job_id: e.job_id.to_string(),
                        duplicate: e.duplicate,
                        ..Default::default()
                    }
                }
                Err(err) => {
                    let (code, message) = item_status(Err(RequestError::from(err)));
                    pb::EnqueueResult {
                        code,
                        message,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(pb::CommitPartitionResponse {
            results,
            position: committed.position,
            dead_lettered,
        })
    }

    /// The DEAD job a record becomes when it cannot be a runnable one:
    /// what Enqueue would accept of it is kept (the payload if it fits,
    /// the headers that are valid), with `reason` as its last error.
    fn dead_letter(&self, job: pb::EnqueueRequest, reason: String) -> NewJob {
        let mut headers: Vec<(String, String)> = job
            .headers
            .into_iter()
            .filter(|(k, v)| check_name(k).is_ok() && check_header_value(v).is_ok())
            .take(MAX_HEADERS)
            .collect();
        headers.sort();
        NewJob {
            queue: job.queue,
            job_type: if check_name(&job.job_type).is_ok() {
                job.job_type
            } else {
                INVALID_JOB_TYPE.to_owned()
            },
            payload: if job.payload.len() <= self.limits.max_payload {
                bytes::Bytes::copy_from_slice(&job.payload)
            } else {
                bytes::Bytes::new()
            },
            headers,
            dead_letter: Some(reason),
            ..NewJob::default()
        }
    }

    /// LeaveSourceGroup, for `grant`.
    pub async fn leave(
        &self,
        grant: &Grant,
        req: pb::LeaveSourceGroupRequest,
    ) -> Result<pb::LeaveSourceGroupResponse> {
        let group = scoped_group(grant, &req.group)?;
        let member = member_id(&req.member_id)?;
        let rows = self.shared.source_rows(group).await?;
        let mut writes = Vec::new();
        let mut released = 0;
        for row in &rows {
            match kind(&row.key) {
                Some(RowKind::Member(m)) if m == member => writes.push(delete(row)),
                Some(RowKind::Partition(..)) if Hold::decode(&row.body).holder == member => {
                    released += 1;
                    writes.push(put(&row.key, Some(row), None, Hold::default()));
                }
                _ => {}
            }
        }
        if !writes.is_empty() {
            self.shared.put_source_rows(group, writes).await?;
        }
        info!(source_group = %group, member_id = %member, released, "a source member left");
        Ok(pb::LeaveSourceGroupResponse { released })
    }

    /// ListSourcePartitions.
    pub async fn list(
        &self,
        req: pb::ListSourcePartitionsRequest,
    ) -> Result<pb::ListSourcePartitionsResponse> {
        let group = group_name(&req.group)?;
        let rows = self.shared.source_rows(group).await?;
        let now = self.now();
        Ok(pb::ListSourcePartitionsResponse {
            partitions: rows.iter().filter_map(partition_state).collect(),
            members: live_members(&rows, None, now),
        })
    }

    /// SetSourcePositions: a credential of every queue only.
    pub async fn set_positions(
        &self,
        grant: &Grant,
        req: pb::SetSourcePositionsRequest,
    ) -> Result<pb::SetSourcePositionsResponse> {
        if !grant.every_queue() {
            return Err(RequestError::NeedsEveryQueue {
                what: "SetSourcePositions",
            });
        }
        let group = group_name(&req.group)?;
        if req.positions.len() > MAX_BATCH {
            return Err(RequestError::invalid(
                "positions",
                format!("{} is over the limit of {MAX_BATCH}", req.positions.len()),
            ));
        }
        let mut wanted: HashMap<String, Option<i64>> = HashMap::new();
        for p in &req.positions {
            let (stream, partition) = checked_partition(&p.stream, p.partition, "positions")?;
            if p.position.is_some_and(|at| at < 0) {
                return Err(RequestError::invalid(
                    "positions",
                    "a position is 0 or more",
                ));
            }
            wanted.insert(partition_key(&stream, partition), p.position);
        }
        // Each partition is set once: a retry writes only those another
        // writer changed between the read and the write (writing one that
        // landed again would move it back over records committed since).
        let mut set: Vec<SourceRow> = Vec::new();
        for _ in 0..ATTEMPTS {
            let rows = self.shared.source_rows(group).await?;
            let by_key: HashMap<&str, &SourceRow> =
                rows.iter().map(|r| (r.key.as_str(), r)).collect();
            let mut written_rows = Vec::new();
            let writes: Vec<RowWrite> = wanted
                .iter()
                .map(|(key, position)| {
                    let row = by_key.get(key.as_str()).copied();
                    // A new epoch fences whoever holds it; the hold ends now.
                    let next = SourceRow {
                        key: key.clone(),
                        revision: row.map_or(1, |r| r.revision + 1),
                        epoch: row.map_or(1, |r| r.epoch + 1),
                        position: *position,
                        body: Hold::default().encode(),
                    };
                    written_rows.push(next.clone());
                    RowWrite {
                        expect: row.map_or(Expect::Absent, |r| Expect::Revision(r.revision)),
                        row: next,
                        delete: false,
                        set_position: true,
                    }
                })
                .collect();
            let written = self.shared.put_source_rows(group, writes).await?;
            for (row, landed) in written_rows.into_iter().zip(written) {
                if landed {
                    wanted.remove(&row.key);
                    set.push(row);
                }
            }
            if wanted.is_empty() {
                info!(source_group = %group, partitions = set.len(), "source positions set");
                set.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(pb::SetSourcePositionsResponse {
                    partitions: set.iter().filter_map(partition_state).collect(),
                });
            }
        }
        warn!(source_group = %group, set = set.len(), left = wanted.len(), "setting source positions gave up on partitions others kept changing");
        Err(RequestError::SourceBusy {
            group: group.to_owned(),
        })
    }
}

/// The job type of a dead letter whose own is not valid.
pub const INVALID_JOB_TYPE: &str = "sluice.invalid-record";

/// The group's live members at `now` (by their rows), with `me` (the
/// member claiming) whatever its row says, sorted.
fn live_members(rows: &[SourceRow], me: Option<&str>, now: Millis) -> Vec<String> {
    let mut live: Vec<String> = rows
        .iter()
        .filter_map(|row| match kind(&row.key) {
            Some(RowKind::Member(m)) if Hold::decode(&row.body).until > now => Some(m.to_owned()),
            _ => None,
        })
        .collect();
    live.extend(me.map(str::to_owned));
    live.sort();
    live.dedup();
    live
}

/// A put of `key` over `row` (absent: a new row) with `hold`; the epoch
/// kept unless given.
fn put(key: &str, row: Option<&SourceRow>, epoch: Option<u64>, hold: Hold) -> RowWrite {
    RowWrite {
        row: SourceRow {
            key: key.to_owned(),
            revision: row.map_or(1, |r| r.revision + 1),
            epoch: epoch.or(row.map(|r| r.epoch)).unwrap_or(0),
            position: row.and_then(|r| r.position),
            body: hold.encode(),
        },
        expect: row.map_or(Expect::Absent, |r| Expect::Revision(r.revision)),
        delete: false,
        set_position: false,
    }
}

fn delete(row: &SourceRow) -> RowWrite {
    RowWrite {
        row: row.clone(),
        expect: Expect::Revision(row.revision),
        delete: true,
        set_position: false,
    }
}

fn partition_state(row: &SourceRow) -> Option<pb::SourcePartitionState> {
    let Some(RowKind::Partition(stream, partition)) = kind(&row.key) else {
        return None;
    };
    let hold = Hold::decode(&row.body);
    Some(pb::SourcePartitionState {
        stream: stream.to_owned(),
        partition,
        held_until: (!hold.holder.is_empty()).then(|| timestamp_of(hold.until)),
        holder: hold.holder,
        epoch: row.epoch,
        position: row.position,
    })
}

fn group_name(group: &str) -> Result<&str> {
    check_source_group(group).map_err(|reason| RequestError::invalid("group", reason))?;
    Ok(group)
}

/// A valid group that `grant` covers: a credential scoped to queues covers
/// the groups its queue patterns match (`orders.*` covers the group
/// `orders.bridge`), so one tenant cannot join or leave another's group.
fn scoped_group<'a>(grant: &Grant, group: &'a str) -> Result<&'a str> {
    let group = group_name(group)?;
    if !grant.allows(group) {
        return Err(RequestError::GroupOutOfScope {
            group: group.to_owned(),
        });
    }
    Ok(group)
}

fn member_id(member: &str) -> Result<&str> {
    check_name(member).map_err(|reason| RequestError::invalid("member_id", reason))?;
    Ok(member)
}

fn checked_partition(stream: &str, partition: i32, field: &'static str) -> Result<(String, i32)> {
    check_stream_name(stream).map_err(|reason| RequestError::invalid(field, reason))?;
    if partition < 0 {
        return Err(RequestError::invalid(
            field,
            format!("partition {partition} is negative"),
        ));
    }
    Ok((stream.to_owned(), partition))
}

fn lease_duration(value: Option<prost_types::Duration>) -> Result<Duration> {
    let Some(d) = value else {
        return Ok(SOURCE_LEASE_DEFAULT);
    };
    let d = Duration::try_from(d)
        .ok()
        .filter(|d| SOURCE_LEASE.contains(d))
        .ok_or_else(|| RequestError::invalid("lease_duration", "must be 1s to 10m"))?;
    Ok(d)
}
