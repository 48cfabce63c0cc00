//! Enqueue: the jobs of a call, one script per queue they name (run at
//! once), each adding its jobs atomically and answering each on its own:
//! added, a duplicate of the job holding its idempotency key, or refused
//! (the queue full, or too many queues). With `appendfsync always`, Redis
//! fsyncs once for every request it served in one turn of its loop, so
//! concurrent calls share a flush as on the other backends.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sluice_limits::MAX_NAMES;
use sluice_queue::{Enqueued, NewJob, QueueError};
use uuid::Uuid;

use super::Inner;
use super::scripts::{Call, reply, scripts};
use crate::backend::{BackendError, Batch};

/// One job's place in a call, its answer, and whether it is READY.
pub(super) type Answered = (usize, Result<Enqueued, QueueError>, bool);

/// Adds `jobs` (defaults from the queue's rules), answered each on its own.
///
/// # Errors
/// As Redis fails: the queues whose script did not run added nothing.
pub(super) async fn enqueue(
    inner: &Arc<Inner>,
    jobs: Vec<NewJob>,
) -> Result<Batch<Enqueued>, BackendError> {
    let count = jobs.len();
    let mut by_queue: BTreeMap<String, Vec<(usize, NewJob)>> = BTreeMap::new();
    for (i, job) in jobs.into_iter().enumerate() {
        by_queue
            .entry(job.queue.clone())
            .or_default()
            .push((i, job));
    }
    let mut answers: Vec<Option<Result<Enqueued, QueueError>>> = vec![None; count];
    let mut answered = Vec::with_capacity(by_queue.len());
    if by_queue.len() == 1 {
        for (queue, jobs) in by_queue {
            answered.push(enqueue_queue(inner, queue, jobs).await);
        }
    } else {
        // The queues' scripts at once: the connection pipelines them.
        let mut calls = tokio::task::JoinSet::new();
        for (queue, jobs) in by_queue {
            let inner = inner.clone();
            calls.spawn(async move { enqueue_queue(&inner, queue, jobs).await });
        }
        while let Some(done) = calls.join_next().await {
            answered.push(done.map_err(|_| reply::malformed("an enqueue task"))?);
        }
    }
    let mut ready = false;
    for queue in answered {
        for (i, answer, is_ready) in queue? {
            ready |= is_ready;
            answers[i] = Some(answer);
        }
    }
    if ready {
        inner.streams.wake();
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| reply::malformed("an answer per job")))
        .collect()
}

/// One queue's jobs: their places in the call, each answer, and whether
/// it is READY.
async fn enqueue_queue(
    inner: &Inner,
    queue: String,
    jobs: Vec<(usize, NewJob)>,
) -> Result<Vec<Answered>, BackendError> {
    let call = enqueue_call(inner, &queue, jobs.iter().map(|(_, job)| job));
    let answered = call.run(&inner.conn, &scripts().enqueue).await?;
    let places: Vec<usize> = jobs.into_iter().map(|(i, _)| i).collect();
    answers(inner, &queue, places, &answered)
}

/// The arguments of `enqueue.lua` for `jobs`, all of `queue`.
fn enqueue_call<'a>(inner: &Inner, queue: &str, jobs: impl Iterator<Item = &'a NewJob>) -> Call {
    enqueue_args(inner.call(), inner, queue, jobs)
}

/// `call` with `enqueue.lua`'s arguments for `jobs` of `queue` added
/// (after the call's own two).
pub(super) fn enqueue_args<'a>(
    call: Call,
    inner: &Inner,
    queue: &str,
    jobs: impl Iterator<Item = &'a NewJob>,
) -> Call {
    let config = &inner.queue;
    let limit = config
        .max_queue_size
        .map_or_else(String::new, |l| l.to_string());
    let mut call = call.arg(queue).arg(limit).arg(MAX_NAMES);
    for job in jobs {
        // Time-ordered to the millisecond, and otherwise 74 random bits.
        let id = Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext));
        let headers: HashMap<&str, &str> = job
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let timeout = job.timeout.unwrap_or(config.default_timeout);
        call = call
            .arg(id.to_string())
            .arg(&job.job_type)
            .arg(job.payload.as_ref())
            .arg(serde_json::to_string(&headers).unwrap_or_else(|_| "{}".into()))
            .arg(job.priority)
            .arg(job.max_attempts.unwrap_or(config.max_attempts))
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
            .arg(
                job.run_at
                    .map_or_else(String::new, |t| t.as_micros().to_string()),
            )
            .arg(job.idempotency_key.as_deref().unwrap_or(""))
            .arg(
                job.dead_letter
                    .as_deref()
                    .map_or_else(String::new, |reason| {
                        sluice_queue::truncate_error(reason.to_owned()).into()
                    }),
            )
            .arg(job.key.as_deref().unwrap_or(""));
    }
    call
}

/// What `enqueue.lua` answered for the jobs at `places` of a call: each
/// job's place, its answer, and whether it is READY.
pub(super) fn answers(
    inner: &Inner,
    queue: &str,
    places: Vec<usize>,
    answered: &redis::Value,
) -> Result<Vec<Answered>, BackendError> {
    let config = &inner.queue;
    let answered = reply::items(answered)?;
    if answered.len() != places.len() {
        return Err(reply::malformed("an answer per job"));
    }
    let mut out = Vec::with_capacity(places.len());
    for (i, answer) in places.into_iter().zip(answered) {
        let answer = reply::items(answer)?;
        let job_id = || -> Result<Uuid, BackendError> {
            reply::string(reply::at(answer, 1)?)?
                .parse()
                .map_err(|_| reply::malformed("a job id"))
        };
        let (result, ready) = match reply::string(reply::at(answer, 0)?)?.as_str() {
            "ok" => {
                inner.counts.add(queue, |c| c.enqueued += 1);
                let ready = reply::string(reply::at(answer, 2)?)? == "ready";
                let enqueued = Enqueued {
                    job_id: job_id()?,
                    duplicate: false,
                };
                (Ok(enqueued), ready)
            }
            "dup" => {
                let enqueued = Enqueued {
                    job_id: job_id()?,
                    duplicate: true,
                };
                (Ok(enqueued), false)
            }
            "full" => {
                let limit = config.max_queue_size.unwrap_or(0);
                let refused = sluice_queue::check_room(queue, limit, Some(limit))
                    .err()
                    .ok_or_else(|| reply::malformed("a full queue"))?;
                (Err(refused), false)
            }
            "queues" => (Err(QueueError::TooManyQueues { limit: MAX_NAMES }), false),
            _ => return Err(reply::malformed("an enqueue answer")),
        };
        out.push((i, result, ready));
    }
    Ok(out)
}
