//! Enqueue with group commit: concurrent Enqueue and EnqueueBatch calls
//! queue up here, and one writer task inserts what has gathered (up to
//! [`MAX_GROUP`] jobs) with one statement in one transaction and one
//! commit, then answers each call. Under load, the calls that arrive
//! during a commit share the next one; alone, a call commits at once.
//!
//! The queues are capped as the embedded store caps its names
//! ([`MAX_QUEUES`] rows of `sluice_queues`): a group's jobs whose queue is
//! new and past the room left are refused (RESOURCE_EXHAUSTED). Each
//! broker remembers the queues it saw in the table ([`KnownQueues`]), so a
//! group of known queues costs no lookup; the sweep of empty queues
//! (`maintenance.rs`) clears that memory. Brokers adding new queues at the
//! same moment may each fill the room left.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::{Pool, Transaction};
use sluice_queue::{Enqueued, JobState, NewJob, QueueConfig, QueueError, check_room};
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::columns::{self, millis, system_time};
use super::leases::FINISH;
use super::notify::Notifier;
use super::sql::{self, get};
use crate::backend::{BackendError, Batch};

type Result<T> = std::result::Result<T, BackendError>;

/// Most jobs in one commit.
const MAX_GROUP: usize = 4096;

/// Writers committing at once: one commits while the next group gathers.
const WRITERS: usize = 2;

/// Calls waiting for a writer; past this, a call waits to queue up.
const WAITING_CALLS: usize = 4096;

/// The insert of a group: one row per job; a job due now is READY, one
/// due later SCHEDULED. A key already held by an unfinished job of its
/// queue inserts nothing (the unique index).
const INSERT: &str =
    "INSERT INTO sluice_jobs (id, queue, job_type, payload, headers, priority, state,
                 max_attempts, timeout_ms, idempotency_key, created_at, run_at, key)
             SELECT id, queue, job_type, payload, headers::jsonb, priority,
                 CASE WHEN run_at > now() THEN 'scheduled' ELSE 'ready' END,
                 max_attempts, timeout_ms, idem, now(), greatest(coalesce(run_at, now()), now()),
                 flow_key
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                 $6::int[], $7::int[], $8::bigint[], $9::timestamptz[], $10::text[],
                 $11::text[])
                 AS j(id, queue, job_type, payload, headers, priority, max_attempts,
                      timeout_ms, run_at, idem, flow_key)
             ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING id, state";

/// Most queues on PostgreSQL: the embedded store's cap on names.
pub const MAX_QUEUES: usize = sluice_limits::MAX_NAMES;

/// The queues this broker saw in `sluice_queues`.
#[derive(Debug, Default, Clone)]
pub struct KnownQueues(Arc<std::sync::Mutex<HashSet<String>>>);

impl KnownQueues {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets them all: the next groups look their queues up again.
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// One call's jobs and where to answer.
struct Pending {
    jobs: Vec<NewJob>,
    reply: oneshot::Sender<Result<Batch<Enqueued>>>,
}

/// The handle calls enqueue through.
pub struct Enqueuer {
    tx: mpsc::Sender<Pending>,
    /// The writers take turns gathering: whoever holds the receiver takes
    /// what is there, lets go, and commits.
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    pool: Pool,
    max_queue_size: Limit,
    /// Tells the other brokers of what a group added.
    notifier: Arc<Notifier>,
    /// Shared with the writers and the sweep.
    pub known: KnownQueues,
}

/// `--max-queue-size`, if set.
pub(super) type Limit = Option<u64>;

impl Enqueuer {
    /// An enqueuer on `pool`, whose writers [`Enqueuer::start`] starts.
    pub fn new(pool: Pool, max_queue_size: Limit, notifier: Arc<Notifier>) -> Self {
        let (tx, rx) = mpsc::channel(WAITING_CALLS);
        Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
            pool,
            max_queue_size,
            notifier,
            known: KnownQueues::default(),
        }
    }

    /// Starts the writers on `tasks`; they stop with `stop`, answering
    /// what is still queued as unavailable.
    pub fn start(&self, tasks: &TaskTracker, stop: CancellationToken) {
        for _ in 0..WRITERS {
            tasks.spawn(write_groups(
                self.pool.clone(),
                self.rx.clone(),
                self.max_queue_size,
                self.known.clone(),
                self.notifier.clone(),
                stop.clone(),
            ));
        }
    }

    /// Inserts `jobs` (defaults from `config`), answered each on its own.
    ///
    /// # Errors
    /// As the database fails: nothing of this call was committed.
    pub async fn enqueue(
        &self,
        jobs: Vec<NewJob>,
        config: &QueueConfig,
    ) -> Result<Batch<Enqueued>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let jobs = jobs
            .into_iter()
            .map(|mut job| {
                with_defaults(&mut job, config);
                job
            })
            .collect();
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { jobs, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Gathers calls and commits them, until `stop`.
async fn write_groups(
    pool: Pool,
    rx: Arc<Mutex<mpsc::Receiver<Pending>>>,
    max_queue_size: Limit,
    known: KnownQueues,
    notifier: Arc<Notifier>,
    stop: CancellationToken,
) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => None,
                first = rx.recv() => first,
            };
            let Some(first) = first else {
                // Stopping: the server has answered its last call; what
                // is queued still hears why it was not written.
                while let Ok(pending) = rx.try_recv() {
                    let _ = pending.reply.send(Err(stopped()));
                }
                return;
            };
            let mut jobs = first.jobs.len();
            let mut group = vec![first];
            while jobs < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => {
                        jobs += next.jobs.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let all: Vec<&NewJob> = group.iter().flat_map(|p| p.jobs.iter()).collect();
        match insert(&pool, &all, max_queue_size, &known, &notifier).await {
            Ok(mut answers) => {
                for pending in group {
                    let rest = answers.split_off(pending.jobs.len());
                    let _ = pending.reply.send(Ok(answers));
                    answers = rest;
                }
            }
            Err(e) => {
                for pending in group {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One statement for all of `jobs`, in one transaction with the wake-up;
/// with `--max-queue-size`, the jobs past a queue's room are refused, and
/// those of new queues past [`MAX_QUEUES`].
async fn insert(
    pool: &Pool,
    jobs: &[&NewJob],
    max_queue_size: Limit,
    known: &KnownQueues,
    notifier: &Notifier,
) -> Result<Batch<Enqueued>> {
    let mut client = sql::connection(pool).await?;
    let tx = sql::transaction(&mut client).await?;
    let (answers, added, queues) = insert_within(&tx, jobs, max_queue_size, known).await?;
    sql::commit(tx).await?;
    after_commit(notifier, known, added, queues);
    Ok(answers)
}

/// What a committed insert tells: the other brokers of what it `added`,
/// and this one of its `queues`.
pub(super) fn after_commit(
    notifier: &Notifier,
    known: &KnownQueues,
    added: Added,
    queues: Vec<String>,
) {
    for state in added {
        notifier.job_now(state);
    }
    known.lock().extend(queues);
}

/// [`insert`]'s statements in `tx`, uncommitted: each job's answer, the
/// states added, and the queues named.
pub(super) async fn insert_within(
    tx: &Transaction<'_>,
    jobs: &[&NewJob],
    max_queue_size: Limit,
    known: &KnownQueues,
) -> Result<(Batch<Enqueued>, Added, Vec<String>)> {
    let mut refused = match max_queue_size {
        None => jobs.iter().map(|_| None).collect(),
        Some(limit) => over_limit(tx, jobs, limit).await?,
    };
    let past_cap = past_queue_cap(tx, jobs, known).await?;
    if !past_cap.is_empty() {
        for (job, refusal) in jobs.iter().zip(&mut refused) {
            if refusal.is_none() && past_cap.contains(job.queue.as_str()) {
                *refusal = Some(QueueError::TooManyQueues { limit: MAX_QUEUES });
            }
        }
    }
    let admitted: Vec<&NewJob> = jobs
        .iter()
        .zip(&refused)
        .filter(|(_, r)| r.is_none())
        .map(|(j, _)| *j)
        .collect();
    let mut queues: Vec<&str> = admitted.iter().map(|j| j.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    // Sent together (tokio-postgres pipelines what is polled at once): the
    // rows and the queues' names for Stats.
    let remember: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&queues];
    let ((inserted, added), _) = tokio::try_join!(
        insert_admitted(tx, &admitted),
        sql::execute(
            tx,
            "INSERT INTO sluice_queues (queue) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
            &remember,
        ),
    )?;
    let mut inserted = inserted.into_iter();
    let answers: Batch<Enqueued> = refused
        .into_iter()
        .map(|r| match r {
            Some(e) => Err(e),
            None => inserted
                .next()
                .unwrap_or_else(|| unreachable!("one answer per admitted job")),
        })
        .collect();
    bury_dead_letters(tx, jobs, &answers).await?;
    let queues = queues.iter().map(|q| (*q).to_owned()).collect();
    Ok((answers, added, queues))
}

/// Moves the dead letters among `jobs` (inserted as runnable, in the
/// same transaction) to the finished jobs, DEAD with their reason: the
/// statement a Nack to DEAD runs.
async fn bury_dead_letters(
    tx: &Transaction<'_>,
    jobs: &[&NewJob],
    answers: &Batch<Enqueued>,
) -> Result<()> {
    for (job, answer) in jobs.iter().zip(answers) {
        if let (Some(reason), Ok(enqueued)) = (&job.dead_letter, answer) {
            let reason = sluice_queue::truncate_error(reason.clone()).to_string();
            sql::execute(tx, FINISH, &[&enqueued.job_id, &"dead", &reason]).await?;
        }
    }
    Ok(())
}

/// For each job, the refusal if its queue has no room for it: the
/// queue's unfinished jobs plus those admitted before it in this group.
/// Brokers enqueueing at once may each admit up to the limit.
async fn over_limit(
    tx: &Transaction<'_>,
    jobs: &[&NewJob],
    limit: u64,
) -> Result<Vec<Option<QueueError>>> {
    let mut queues: Vec<&str> = jobs.iter().map(|j| j.queue.as_str()).collect();
    queues.sort_unstable();
    queues.dedup();
    let rows = sql::query(
        tx,
        "SELECT queue, count(*) AS n FROM sluice_jobs WHERE queue = ANY($1) GROUP BY queue",
        &[&queues],
    )
    .await?;
    let mut held: HashMap<String, u64> = rows
        .iter()
        .map(|r| {
            Ok((
                get(r, "queue")?,
                u64::try_from(get::<i64>(r, "n")?).unwrap_or(0),
            ))
        })
        .collect::<Result<_>>()?;
    Ok(jobs
        .iter()
        .map(|job| {
            if job.dead_letter.is_some() {
                return None;
            }
            let count = held.entry(job.queue.clone()).or_default();
            let refused = check_room(&job.queue, *count, Some(limit)).err();
            if refused.is_none() {
                *count += 1;
            }
            refused
        })
        .collect())
}

/// The new queues of `jobs` that do not fit under [`MAX_QUEUES`]: those
/// past the room the table has left, in name order.
async fn past_queue_cap(
    tx: &Transaction<'_>,
    jobs: &[&NewJob],
    known: &KnownQueues,
) -> Result<HashSet<String>> {
    let mut unknown: Vec<&str> = {
        let known = known.lock();
        jobs.iter()
            .map(|j| j.queue.as_str())
            .filter(|q| !known.contains(*q))
            .collect()
    };
    if unknown.is_empty() {
        return Ok(HashSet::new());
    }
    unknown.sort_unstable();
    unknown.dedup();
    let present: HashSet<String> = sql::query(
        tx,
        "SELECT queue FROM sluice_queues WHERE queue = ANY($1)",
        &[&unknown],
    )
    .await?
    .iter()
    .map(|row| get(row, "queue"))
    .collect::<Result<_>>()?;
    let new: Vec<&str> = unknown
        .into_iter()
        .filter(|q| !present.contains(*q))
        .collect();
    known.lock().extend(present);
    if new.is_empty() {
        return Ok(HashSet::new());
    }
    let count: i64 = get(
        &sql::query_one(tx, "SELECT count(*) AS n FROM sluice_queues", &[]).await?,
        "n",
    )?;
    let room = MAX_QUEUES.saturating_sub(usize::try_from(count).unwrap_or(usize::MAX));
    Ok(new.iter().skip(room).map(|q| (*q).to_owned()).collect())
}

/// The states the jobs a group added are in (READY, SCHEDULED).
pub(super) type Added = HashSet<JobState>;

/// Inserts the admitted jobs with one statement.
async fn insert_admitted(
    tx: &Transaction<'_>,
    jobs: &[&NewJob],
) -> Result<(Batch<Enqueued>, Added)> {
    if jobs.is_empty() {
        return Ok((Vec::new(), Added::new()));
    }
    let mut ids = Vec::with_capacity(jobs.len());
    let (mut queues, mut types, mut payloads, mut headers) = (vec![], vec![], vec![], vec![]);
    let (mut priorities, mut attempts, mut timeouts, mut run_ats, mut keys) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut flow_keys = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Time-ordered to the millisecond (the key index grows at its right
        // edge), and otherwise 74 bits from the operating system's
        // generator: no counter, unlike `now_v7`, whose ids of one
        // millisecond follow each other.
        ids.push(Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext)));
        queues.push(job.queue.as_str());
        types.push(job.job_type.as_str());
        payloads.push(job.payload.as_ref());
        let map: HashMap<&str, &str> = job
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        headers.push(serde_json::to_string(&map).unwrap_or_else(|_| "{}".into()));
        priorities.push(job.priority);
        attempts.push(i32::try_from(job.max_attempts.unwrap_or(1)).unwrap_or(i32::MAX));
        timeouts.push(job.timeout.map_or(0, millis));
        run_ats.push(job.run_at.map(system_time));
        // A dead letter holds no key (see NewJob::dead_letter).
        keys.push(
            job.idempotency_key
                .as_deref()
                .filter(|_| job.dead_letter.is_none()),
        );
        flow_keys.push(job.key.as_deref());
    }
    let inserted = sql::query(
        tx,
        INSERT,
        &[
            &ids,
            &queues,
            &types,
            &payloads,
            &headers,
            &priorities,
            &attempts,
            &timeouts,
            &run_ats,
            &keys,
            &flow_keys,
        ],
    )
    .await?;
    let added: Added = inserted.iter().map(columns::state).collect::<Result<_>>()?;
    let mut answers: Batch<Enqueued> = Vec::with_capacity(jobs.len());
    if inserted.len() == jobs.len() {
        answers.extend(ids.iter().map(|&job_id| {
            Ok(Enqueued {
                job_id,
                duplicate: false,
            })
        }));
    } else {
        // Duplicates: the job holding each key answers for it.
        let inserted: HashSet<Uuid> = inserted
            .iter()
            .map(|row| get(row, "id"))
            .collect::<Result<_>>()?;
        let held = sql::query(
            tx,
            "SELECT j.queue, j.idempotency_key, j.id FROM sluice_jobs j
             JOIN unnest($1::text[], $2::text[]) AS k(queue, key)
               ON j.queue = k.queue AND j.idempotency_key = k.key",
            &[&queues, &keys],
        )
        .await?;
        let held: HashMap<(String, String), Uuid> = held
            .iter()
            .map(|row| {
                Ok((
                    (get(row, "queue")?, get(row, "idempotency_key")?),
                    get(row, "id")?,
                ))
            })
            .collect::<Result<_>>()?;
        for (i, id) in ids.iter().enumerate() {
            if inserted.contains(id) {
                answers.push(Ok(Enqueued {
                    job_id: *id,
                    duplicate: false,
                }));
                continue;
            }
            let key = (queues[i].to_owned(), keys[i].unwrap_or_default().to_owned());
            // The holder may have finished since the insert: then there is
            // nothing to point at, and the job is simply not added twice.
            let job_id = held.get(&key).copied().unwrap_or(*id);
            answers.push(Ok(Enqueued {
                job_id,
                duplicate: true,
            }));
        }
    }
    Ok((answers, added))
}

/// The queue's defaults for what `job` leaves unset.
pub(super) fn with_defaults(job: &mut NewJob, config: &QueueConfig) {
    job.max_attempts.get_or_insert(config.max_attempts);
    job.timeout.get_or_insert(config.default_timeout);
}

fn stopped() -> BackendError {
    BackendError::Unavailable("the enqueue writers stopped")
}
