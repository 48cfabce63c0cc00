//! Fuzz of request decoding, validation and the state machine behind it:
//! bytes (arbitrary, or a shaped request with a byte flipped) are decoded
//! as each request message with prost, validated by the service's
//! `convert` functions, and when valid applied to a `Queue`, as the RPCs
//! do. Nothing may panic; what the queue answers must be one of the
//! refusals its rules allow; and after each step Stats agrees with a
//! recount of ListJobs and no consumer holds more than its limit.
//!
//! Under a second in the normal suite (256 cases); `scripts/fuzz` runs it
//! with `PROPTEST_CASES` and a random `PROPTEST_RNG_SEED` for longer.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed, TestCaseError, TestRunner};
use prost::Message;
use sluice_broker::service::convert::{self, Limits};
use sluice_broker::service::outbound;
use sluice_proto::v1 as pb;
use sluice_queue::{
    Delivery, Failure, JobFilter, JobSnapshot, JobState, Queue, QueueConfig, QueueError, Timestamp,
};
use uuid::Uuid;

const LIMITS: Limits = Limits { max_payload: 1024 };

/// Which request message the bytes are decoded as.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Enqueue,
    Lease,
    Ack,
    Nack,
    Extend,
    Release,
    Purge,
    ListJobs,
}

const KINDS: [Kind; 8] = [
    Kind::Enqueue,
    Kind::Lease,
    Kind::Ack,
    Kind::Nack,
    Kind::Extend,
    Kind::Release,
    Kind::Purge,
    Kind::ListJobs,
];

/// One step: bytes for a message of `kind`.
#[derive(Debug, Clone)]
enum Step {
    /// Arbitrary bytes.
    Raw(usize, Vec<u8>),
    /// A shaped request (fields near and past their limits, ids of real
    /// leases), encoded, with one byte optionally replaced.
    Shaped {
        kind: usize,
        text: usize,
        number: i64,
        slot: usize,
        flip: Option<(usize, u8)>,
    },
    /// Moves the clock on by this many milliseconds and expires.
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..KINDS.len(), proptest::collection::vec(any::<u8>(), 0..96))
            .prop_map(|(k, b)| Step::Raw(k, b)),
        6 => (0..KINDS.len(), 0..TEXTS.len(), any::<i64>(), any::<usize>(),
              proptest::option::of((any::<usize>(), any::<u8>())))
            .prop_map(|(kind, text, number, slot, flip)| Step::Shaped { kind, text, number, slot, flip }),
        1 => (0u64..120_000).prop_map(Step::Advance),
    ]
}

/// Names and strings at and past the limits.
const TEXTS: [&str; 8] = [
    "",
    "default",
    "mail",
    "bad queue!",
    "t\u{7}",
    "é",
    "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789",
    "k",
];

/// A number near an interesting edge, from any `i64`.
fn edge(n: i64) -> i64 {
    match n.rem_euclid(8) {
        0 => 0,
        1 => 1,
        2 => -1,
        3 => 86_400,
        4 => 86_401,
        5 => 10_000,
        6 => 10_001,
        _ => n,
    }
}

fn duration(n: i64) -> Option<prost_types::Duration> {
    (n % 3 != 0).then(|| prost_types::Duration {
        seconds: edge(n),
        // Mostly whole seconds: a malformed nanos field is one case, not most.
        nanos: if n & (1 << 50) == 0 {
            0
        } else {
            (n >> 40) as i32
        },
    })
}

/// The bytes of a shaped request.
fn shaped(kind: Kind, text: &str, n: i64, lease: Option<(Uuid, Uuid)>) -> Vec<u8> {
    let (job_id, lease_id) = lease.map_or_else(
        || (text.to_owned(), text.to_owned()),
        |(j, l)| (j.to_string(), l.to_string()),
    );
    match kind {
        Kind::Enqueue => pb::EnqueueRequest {
            key: String::new(),
            queue: if n % 5 == 0 {
                String::new()
            } else {
                text.into()
            },
            job_type: text.into(),
            payload: vec![0; (n.rem_euclid(1100)) as usize].into(),
            headers: HashMap::from([(
                text.to_owned(),
                "v".repeat((n >> 12).rem_euclid(4200) as usize),
            )]),
            priority: n as i32,
            max_attempts: (edge(n >> 8).unsigned_abs() % 10_002) as u32,
            timeout: duration(n),
            run_at: (n % 4 == 1).then(|| prost_types::Timestamp {
                seconds: 1_000 + edge(n >> 3),
                nanos: 0,
            }),
            idempotency_key: if n % 2 == 0 {
                text.into()
            } else {
                String::new()
            },
        }
        .encode_to_vec(),
        Kind::Lease => pb::LeaseRequest {
            worker_id: if n % 4 == 0 { "w".into() } else { text.into() },
            queues: vec![text.into(); (n.rem_euclid(3)) as usize],
            job_types: vec![],
            max_in_flight: edge(n >> 4) as u32,
            lease_duration: duration(n),
            held_leases: lease
                .map(|_| pb::HeldLease { job_id, lease_id })
                .into_iter()
                .collect(),
        }
        .encode_to_vec(),
        Kind::Ack => pb::AckRequest {
            job_id,
            lease_id,
            ..Default::default()
        }
        .encode_to_vec(),
        Kind::Nack => pb::NackRequest {
            key_delay: None,
            job_id,
            lease_id,
            error: text.into(),
            retry_after: duration(n),
            dead: n % 7 == 0,
        }
        .encode_to_vec(),
        Kind::Extend => pb::ExtendRequest {
            job_id,
            lease_id,
            extend_by: duration(n),
        }
        .encode_to_vec(),
        Kind::Release => pb::ReleaseRequest {
            key_delay: None,
            job_id,
            lease_id,
            delay: duration(n),
        }
        .encode_to_vec(),
        Kind::Purge => pb::PurgeQueueRequest {
            queue: text.into(),
            state: (n % 9) as i32,
        }
        .encode_to_vec(),
        Kind::ListJobs => pb::ListJobsRequest {
            queue: text.into(),
            state: (n % 9) as i32,
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

struct Run {
    queue: Queue,
    now: Timestamp,
    leases: Vec<(Uuid, Uuid)>,
    deliveries: Vec<Delivery>,
}

/// A resolution either worked or was refused for a lease that is not
/// current (or a job the queue does not know): nothing else.
fn resolution<T: std::fmt::Debug>(r: Result<T, QueueError>) -> Result<(), String> {
    match r {
        Ok(_) | Err(QueueError::StaleLease { .. } | QueueError::UnknownJob { .. }) => Ok(()),
        Err(e) => Err(format!("refused with {e:?}")),
    }
}

/// Decodes `bytes` as `kind`, validates it, and applies it when valid.
fn apply(run: &mut Run, kind: Kind, bytes: &[u8]) -> Result<(), String> {
    DECODED.fetch_add(1, Ordering::Relaxed);
    let (q, now) = (&mut run.queue, run.now);
    let ids = |job_id: &str, lease_id: &str| {
        Some((
            convert::uuid(job_id, "job_id").ok()?,
            convert::uuid(lease_id, "lease_id").ok()?,
        ))
    };
    match kind {
        Kind::Enqueue => {
            let Ok(req) = pb::EnqueueRequest::decode(bytes) else {
                return Ok(());
            };
            let Ok(job) = convert::new_job(req, LIMITS, now) else {
                return Ok(());
            };
            APPLIED.fetch_add(1, Ordering::Relaxed);
            match q.enqueue(job, now) {
                Ok(e) => {
                    let state = q.job(e.job_id).map_err(|e| e.to_string())?.state;
                    if !e.duplicate
                        && !matches!(
                            state,
                            JobState::Ready | JobState::Scheduled | JobState::Leased
                        )
                    {
                        return Err(format!("a new job is {state}"));
                    }
                }
                Err(QueueError::QueueFull { .. } | QueueError::TooManyNames { .. }) => {}
                Err(e) => return Err(format!("enqueue refused with {e:?}")),
            }
        }
        Kind::Lease => {
            let Ok(req) = pb::LeaseRequest::decode(bytes) else {
                return Ok(());
            };
            let Ok(spec) = convert::consumer_spec(req) else {
                return Ok(());
            };
            APPLIED.fetch_add(1, Ordering::Relaxed);
            let consumer = q.open_consumer(spec, now);
            // Every other Lease closes its stream again, as a worker that left.
            if bytes.len().is_multiple_of(2) {
                q.close_consumer(consumer);
            }
        }
        Kind::Ack => {
            let Ok(req) = pb::AckRequest::decode(bytes) else {
                return Ok(());
            };
            if let Some((j, l)) = ids(&req.job_id, &req.lease_id) {
                APPLIED.fetch_add(1, Ordering::Relaxed);
                resolution(q.ack(j, l, now))?;
            }
        }
        Kind::Nack => {
            let Ok(req) = pb::NackRequest::decode(bytes) else {
                return Ok(());
            };
            let Ok(retry_after) =
                convert::duration_in(req.retry_after, "retry_after", Duration::ZERO)
            else {
                return Ok(());
            };
            if let Some((j, l)) = ids(&req.job_id, &req.lease_id) {
                APPLIED.fetch_add(1, Ordering::Relaxed);
                let failure = Failure {
                    error: req.error,
                    retry_after,
                    dead: req.dead,
                    key_delay: Duration::ZERO,
                };
                resolution(q.nack(j, l, failure, now))?;
            }
        }
        Kind::Extend => {
            let Ok(req) = pb::ExtendRequest::decode(bytes) else {
                return Ok(());
            };
            let Ok(by) = convert::duration_in(req.extend_by, "extend_by", Duration::ZERO) else {
                return Ok(());
            };
            if let Some((j, l)) = ids(&req.job_id, &req.lease_id) {
                APPLIED.fetch_add(1, Ordering::Relaxed);
                resolution(q.extend(j, l, by, now))?;
            }
        }
        Kind::Release => {
            let Ok(req) = pb::ReleaseRequest::decode(bytes) else {
                return Ok(());
            };
            let Ok(delay) = convert::duration_in(req.delay, "delay", Duration::ZERO) else {
                return Ok(());
            };
            if let Some((j, l)) = ids(&req.job_id, &req.lease_id) {
                APPLIED.fetch_add(1, Ordering::Relaxed);
                resolution(q.release(j, l, delay.unwrap_or_default(), now))?;
            }
        }
        Kind::Purge => {
            let Ok(req) = pb::PurgeQueueRequest::decode(bytes) else {
                return Ok(());
            };
            let (Ok(name), Ok(Some(state))) = (
                convert::queue_name(req.queue, "queue"),
                convert::state_filter(req.state, "state"),
            ) else {
                return Ok(());
            };
            APPLIED.fetch_add(1, Ordering::Relaxed);
            let until = q.horizon();
            let mut after = None;
            loop {
                match q.purge_step(&name, state, after, until, now) {
                    Ok((_, Some(next))) => after = Some(next),
                    Ok((_, None))
                    | Err(QueueError::PurgeLeased | QueueError::UnknownQueue { .. }) => break,
                    Err(e) => return Err(format!("purge refused with {e:?}")),
                }
            }
        }
        Kind::ListJobs => {
            let Ok(req) = pb::ListJobsRequest::decode(bytes) else {
                return Ok(());
            };
            let (Ok(queue), Ok(state)) = (
                convert::queue_name(req.queue, "queue"),
                convert::state_filter(req.state, "state"),
            ) else {
                return Ok(());
            };
            APPLIED.fetch_add(1, Ordering::Relaxed);
            let filter = JobFilter {
                queue: Some(queue),
                state,
                ..Default::default()
            };
            for job in q.list(&filter, None, 1000).jobs {
                let _ = outbound::job_to_pb(JobSnapshot::from(job)).encode_to_vec();
            }
        }
    }
    settle(run)
}

/// Takes what the last step leased, as the service does after every
/// operation (a delivery left undrained could see its lease end first).
fn settle(run: &mut Run) -> Result<(), String> {
    let mut out = Vec::new();
    run.queue.drain_deliveries(&mut out);
    for d in out {
        let job = run.queue.delivered_job(d);
        let lease = job.lease.ok_or("a delivered job has no lease")?;
        if job.attempt > job.max_attempts {
            return Err(format!(
                "delivered attempt {} of {}",
                job.attempt, job.max_attempts
            ));
        }
        let _ = outbound::leased_job_to_pb(JobSnapshot::from(job)).encode_to_vec();
        run.leases.push((job.id, lease.id));
        run.deliveries.push(d);
    }
    Ok(())
}

/// What the public reads must agree on after every step.
fn check(q: &Queue) -> Result<(), String> {
    let all = q.list(&JobFilter::default(), None, usize::MAX).jobs;
    let mut recount: HashMap<&str, [u64; 6]> = HashMap::new();
    for job in &all {
        recount.entry(job.queue).or_default()[job.state.index()] += 1;
        if job.attempt > job.max_attempts || job.lease.is_some() != (job.state == JobState::Leased)
        {
            return Err(format!("job {job:?}"));
        }
    }
    for stats in q.stats(Timestamp::from_micros(0)) {
        let mine = recount.remove(stats.queue.as_str()).unwrap_or_default();
        if stats.counts != mine {
            return Err(format!(
                "Stats of {} {:?}, recount {mine:?}",
                stats.queue, stats.counts
            ));
        }
    }
    if !recount.is_empty() {
        return Err(format!("queues without Stats: {recount:?}"));
    }
    for w in q.workers() {
        if w.in_flight > w.max_in_flight {
            return Err(format!("worker {w:?} over its limit"));
        }
    }
    let leased = all.iter().filter(|j| j.state == JobState::Leased).count();
    if leased > 0 && q.next_deadline().is_none() {
        return Err("leased jobs and no deadline".into());
    }
    Ok(())
}

/// 256 cases unless `PROPTEST_CASES` says otherwise; a fixed seed unless
/// `PROPTEST_RNG_SEED` gives one.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0xF022);
    }
    config
}

/// Inputs decoded, and of them those valid enough to reach the queue.
static DECODED: AtomicU64 = AtomicU64::new(0);
static APPLIED: AtomicU64 = AtomicU64::new(0);

/// One case: a fresh queue and a sequence of steps.
fn case(seed: u64, steps: &[Step]) -> Result<(), TestCaseError> {
    let config = QueueConfig {
        max_queue_size: Some(16),
        max_retained: 8,
        ..QueueConfig::default()
    };
    let mut run = Run {
        queue: Queue::new(config, seed),
        now: Timestamp::from_micros(1_000_000_000_000),
        leases: Vec::new(),
        deliveries: Vec::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let result = match step {
            Step::Raw(kind, bytes) => apply(&mut run, KINDS[*kind], bytes),
            Step::Shaped {
                kind,
                text,
                number,
                slot,
                flip,
            } => {
                let lease = (!run.leases.is_empty() && slot % 4 != 0)
                    .then(|| run.leases[slot % run.leases.len()]);
                let mut bytes = shaped(KINDS[*kind], TEXTS[*text], *number, lease);
                if let Some((at, byte)) = flip
                    && !bytes.is_empty()
                {
                    let at = at % bytes.len();
                    bytes[at] = *byte;
                }
                apply(&mut run, KINDS[*kind], &bytes)
            }
            Step::Advance(ms) => {
                run.now = run.now.saturating_add(Duration::from_millis(*ms));
                run.queue.expire(run.now);
                settle(&mut run)
                    .map(|()| {
                        if let Some(&d) = run.deliveries.last() {
                            run.queue.return_undelivered(d, run.now);
                        }
                    })
                    .and_then(|()| settle(&mut run))
            }
        };
        if let Err(e) = result.and_then(|()| check(&run.queue)) {
            prop_assert!(false, "step {i} ({step:?}): {e}");
        }
    }
    Ok(())
}

#[test]
fn decoded_requests_never_panic_and_keep_the_queue_consistent() {
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let strategy = (any::<u64>(), proptest::collection::vec(step(), 1..64));
    let result = runner.run(&strategy, |(seed, steps)| case(seed, &steps));
    // The fuzz script reads this line.
    println!(
        "decode fuzz: {cases} cases, {} inputs decoded, {} valid and applied to the queue, {}",
        DECODED.load(Ordering::Relaxed),
        APPLIED.load(Ordering::Relaxed),
        if result.is_ok() {
            "no failure"
        } else {
            "FAILED"
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
