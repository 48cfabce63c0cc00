//! Inbound translation: `sluice.v1` requests to the queue's types, with
//! the validation of every field a client sends. A refused field is named
//! in the error; nothing reaches the backend unvalidated. The way back
//! (jobs and figures to messages) is `outbound.rs`.

use std::time::Duration;

use prost_types::{Duration as PbDuration, Timestamp as PbTimestamp};
use sluice_proto::v1 as pb;
use uuid::Uuid;

use super::error::RequestError;
use crate::backend::ProgressReport;
use crate::clock::Timestamp;
use sluice_limits::{
    DEFAULT_QUEUE, MAX_ATTEMPTS, MAX_DURATION, MAX_HEADERS, MAX_IDEMPOTENCY_KEY_LEN, MAX_IN_FLIGHT,
    MAX_LEASE_FILTERS, MAX_PROGRESS_MESSAGE_BYTES, MAX_PROGRESS_PERCENT, MAX_RESULT_BYTES,
    MAX_SCHEDULE_AHEAD, MIN_RUN_LIMIT,
};
use sluice_queue::{ConsumerSpec, Headers, JobState, NewJob};

/// Limits set by flags rather than by the contract.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload, in bytes.
    pub max_payload: usize,
}

type Result<T> = std::result::Result<T, RequestError>;

/// Refuses `len` bytes of `field` past `max`, saying both.
fn check_bytes(field: &'static str, len: usize, max: usize) -> Result<()> {
    if len > max {
        return Err(RequestError::invalid(
            field,
            format!("{len} bytes is over the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// A validated Ack's result: at most [`MAX_RESULT_BYTES`]; empty is none.
pub fn ack_result(result: bytes::Bytes) -> Result<Option<bytes::Bytes>> {
    check_bytes("result", result.len(), MAX_RESULT_BYTES)?;
    Ok((!result.is_empty()).then_some(result))
}

/// A validated Progress report.
pub fn progress_report(percent: u32, message: String) -> Result<ProgressReport> {
    if percent > MAX_PROGRESS_PERCENT {
        return Err(RequestError::invalid(
            "percent",
            format!("{percent} is over {MAX_PROGRESS_PERCENT}"),
        ));
    }
    check_bytes("message", message.len(), MAX_PROGRESS_MESSAGE_BYTES)?;
    // Text a store keeps as text (PostgreSQL's refuses NUL): one rule for
    // every backend.
    if message.contains('\0') {
        return Err(RequestError::invalid("message", "holds a NUL byte"));
    }
    Ok(ProgressReport { percent, message })
}

/// A validated Enqueue.
pub fn new_job(req: pb::EnqueueRequest, limits: Limits, now: Timestamp) -> Result<NewJob> {
    let queue = queue_name(req.queue, "queue")?;
    let job_type = name(req.job_type, "job_type")?;
    if req.payload.len() > limits.max_payload {
        return Err(RequestError::invalid(
            "payload",
            format!(
                "{} bytes is over the limit of {} bytes (--max-payload)",
                req.payload.len(),
                limits.max_payload
            ),
        ));
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(RequestError::invalid(
            "headers",
            format!(
                "{} headers is over the limit of {MAX_HEADERS}",
                req.headers.len()
            ),
        ));
    }
    let mut headers: Headers = Vec::with_capacity(req.headers.len());
    for (key, value) in req.headers {
        let key = name(key, "headers")?;
        if let Err(reason) = sluice_limits::check_header_value(&value) {
            return Err(RequestError::invalid(
                "headers",
                format!("the value of {key:?} {reason}"),
            ));
        }
        headers.push((key, value));
    }
    headers.sort();
    let run_at = match req.run_at {
        None => None,
        Some(t) => {
            let t = timestamp_from_pb(t, "run_at")?;
            if t > now.saturating_add(MAX_SCHEDULE_AHEAD) {
                return Err(RequestError::invalid("run_at", "is more than a year ahead"));
            }
            Some(t)
        }
    };
    if req.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(RequestError::invalid(
            "idempotency_key",
            format!("is over {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
        ));
    }
    let key = match req.key {
        key if key.is_empty() => None,
        key => {
            sluice_limits::check_job_key(&key).map_err(|r| RequestError::invalid("key", r))?;
            Some(key)
        }
    };
    Ok(NewJob {
        queue,
        job_type,
        // A decoded payload is a view into the whole request buffer (8 KiB
        // or more): keeping that view alive for the job's life would keep
        // the buffer too. An exact copy costs less than the memory it frees.
        payload: bytes::Bytes::copy_from_slice(&req.payload),
        headers,
        priority: req.priority,
        max_attempts: match req.max_attempts {
            0 => None,
            n if n <= MAX_ATTEMPTS => Some(n),
            n => {
                return Err(RequestError::invalid(
                    "max_attempts",
                    format!("{n} is over the limit of {MAX_ATTEMPTS}"),
                ));
            }
        },
        timeout: duration_in(req.timeout, "timeout", MIN_RUN_LIMIT)?,
        run_at,
        idempotency_key: (!req.idempotency_key.is_empty()).then_some(req.idempotency_key),
        key,
        dead_letter: None,
    })
}

/// A validated Lease.
pub fn consumer_spec(req: pb::LeaseRequest) -> Result<ConsumerSpec> {
    let worker_id = name(req.worker_id, "worker_id")?;
    sluice_limits::check_max_in_flight(req.max_in_flight.into())
        .map_err(|reason| RequestError::invalid("max_in_flight", reason))?;
    if req.queues.len() > MAX_LEASE_FILTERS {
        return Err(RequestError::invalid(
            "queues",
            format!("at most {MAX_LEASE_FILTERS} queues"),
        ));
    }
    if req.job_types.len() > MAX_LEASE_FILTERS {
        return Err(RequestError::invalid(
            "job_types",
            format!("at most {MAX_LEASE_FILTERS} job types"),
        ));
    }
    let mut queues = req
        .queues
        .into_iter()
        .map(|q| queue_name(q, "queues"))
        .collect::<Result<Vec<_>>>()?;
    if queues.is_empty() {
        queues.push(DEFAULT_QUEUE.to_owned());
    }
    queues.sort();
    queues.dedup();
    let mut job_types = req
        .job_types
        .into_iter()
        .map(|t| name(t, "job_types"))
        .collect::<Result<Vec<_>>>()?;
    job_types.sort();
    job_types.dedup();
    if req.held_leases.len() > MAX_IN_FLIGHT as usize {
        return Err(RequestError::invalid(
            "held_leases",
            format!("at most {MAX_IN_FLIGHT}"),
        ));
    }
    let held_leases = req
        .held_leases
        .iter()
        .map(|h| {
            Ok((
                uuid(&h.job_id, "held_leases")?,
                uuid(&h.lease_id, "held_leases")?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ConsumerSpec {
        worker_id,
        queues,
        job_types,
        max_in_flight: req.max_in_flight,
        lease_duration: duration_in(req.lease_duration, "lease_duration", MIN_RUN_LIMIT)?,
        held_leases,
    })
}

/// A queue name: empty means [`DEFAULT_QUEUE`]; else as [`sluice_limits::check_queue_name`].
pub fn queue_name(queue: String, field: &'static str) -> Result<String> {
    if queue.is_empty() {
        return Ok(DEFAULT_QUEUE.to_owned());
    }
    sluice_limits::check_queue_name(&queue)
        .map_err(|reason| RequestError::invalid(field, reason))?;
    Ok(queue)
}

/// A required name (job type, worker id, header name), as [`sluice_limits::check_name`].
fn name(value: String, field: &'static str) -> Result<String> {
    sluice_limits::check_name(&value).map_err(|reason| RequestError::invalid(field, reason))?;
    Ok(value)
}

/// A job id or lease id.
pub fn uuid(value: &str, field: &'static str) -> Result<Uuid> {
    Uuid::parse_str(value).map_err(|_| {
        // Quoted whole, a long value would make a message too large for the
        // status header and the client would see a protocol error instead.
        let shown: String = value.chars().take(64).collect();
        let more = if shown.len() < value.len() { "..." } else { "" };
        RequestError::invalid(field, format!("{shown:?}{more} is not a UUID"))
    })
}

/// An optional duration from `min` to [`MAX_DURATION`].
pub fn duration_in(
    value: Option<PbDuration>,
    field: &'static str,
    min: Duration,
) -> Result<Option<Duration>> {
    let Some(d) = value else {
        return Ok(None);
    };
    let d = Duration::try_from(d)
        .map_err(|_| RequestError::invalid(field, "is negative or malformed"))?;
    if d < min || d > MAX_DURATION {
        return Err(RequestError::invalid(
            field,
            format!(
                "{} is out of range {} to {}",
                fmt(d),
                fmt(min),
                fmt(MAX_DURATION)
            ),
        ));
    }
    Ok(Some(d))
}

fn fmt(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// A job state filter: UNSPECIFIED means any.
pub fn state_filter(value: i32, field: &'static str) -> Result<Option<JobState>> {
    match pb::JobState::try_from(value) {
        Ok(pb::JobState::Unspecified) => Ok(None),
        Ok(pb::JobState::Scheduled) => Ok(Some(JobState::Scheduled)),
        Ok(pb::JobState::Ready) => Ok(Some(JobState::Ready)),
        Ok(pb::JobState::Leased) => Ok(Some(JobState::Leased)),
        Ok(pb::JobState::Succeeded) => Ok(Some(JobState::Succeeded)),
        Ok(pb::JobState::Dead) => Ok(Some(JobState::Dead)),
        Ok(pb::JobState::Cancelled) => Ok(Some(JobState::Cancelled)),
        Err(_) => Err(RequestError::invalid(
            field,
            format!("{value} is not a JobState"),
        )),
    }
}

fn timestamp_from_pb(t: PbTimestamp, field: &'static str) -> Result<Timestamp> {
    let invalid = || RequestError::invalid(field, "is before 1970 or malformed");
    let secs = u64::try_from(t.seconds).map_err(|_| invalid())?;
    let nanos = u64::try_from(t.nanos)
        .ok()
        .filter(|&n| n < 1_000_000_000)
        .ok_or_else(invalid)?;
    let micros = secs
        .checked_mul(1_000_000)
        .and_then(|m| m.checked_add(nanos / 1000))
        .ok_or_else(invalid)?;
    Ok(Timestamp::from_micros(micros))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_payload: 16 };

    fn enqueue(f: impl FnOnce(&mut pb::EnqueueRequest)) -> Result<NewJob> {
        let mut req = pb::EnqueueRequest {
            job_type: "email".into(),
            ..Default::default()
        };
        f(&mut req);
        new_job(req, LIMITS, Timestamp::from_micros(0))
    }

    fn field_of(r: Result<impl std::fmt::Debug>) -> &'static str {
        match r {
            Err(RequestError::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn empty_queue_means_default() {
        assert_eq!(enqueue(|_| {}).unwrap().queue, DEFAULT_QUEUE);
    }

    #[test]
    fn bad_enqueue_fields_are_named() {
        assert_eq!(field_of(enqueue(|r| r.job_type.clear())), "job_type");
        assert_eq!(
            field_of(enqueue(|r| r.max_attempts = 10_001)),
            "max_attempts"
        );
        assert_eq!(
            field_of(enqueue(|r| r.job_type = "x".repeat(129))),
            "job_type"
        );
        assert_eq!(field_of(enqueue(|r| r.queue = "a b".into())), "queue");
        assert_eq!(field_of(enqueue(|r| r.queue = "q".repeat(129))), "queue");
        assert_eq!(
            field_of(enqueue(|r| r.payload = vec![0; 17].into())),
            "payload"
        );
        assert_eq!(
            field_of(enqueue(|r| r.timeout = Some(PbDuration {
                seconds: 0,
                nanos: 5
            }))),
            "timeout"
        );
        assert_eq!(
            field_of(enqueue(|r| r.timeout = Some(PbDuration {
                seconds: 86_401,
                nanos: 0
            }))),
            "timeout"
        );
        assert_eq!(
            field_of(enqueue(|r| r.timeout = Some(PbDuration {
                seconds: -1,
                nanos: 0
            }))),
            "timeout"
        );
        let year_and_a_half = 548 * 24 * 3600;
        assert_eq!(
            field_of(enqueue(|r| r.run_at = Some(PbTimestamp {
                seconds: year_and_a_half,
                nanos: 0
            }))),
            "run_at"
        );
        assert_eq!(
            field_of(enqueue(|r| {
                r.headers.insert(String::new(), "v".into());
            })),
            "headers"
        );
        for value in ["a\0b", "\x1b[31mred", "line\nbreak", "\u{9b}"] {
            let refused = enqueue(|r| {
                r.headers.insert("trace".into(), value.into());
            })
            .unwrap_err()
            .to_string();
            assert!(
                refused.starts_with("headers: the value of \"trace\" has the control character"),
                "{refused}"
            );
        }
        let tab = enqueue(|r| {
            r.headers.insert("list".into(), "a\tb".into());
        });
        assert!(tab.is_ok(), "a tab is allowed");
    }

    #[test]
    fn duration_bounds_are_inclusive() {
        let one_sec = Some(PbDuration {
            seconds: 1,
            nanos: 0,
        });
        assert_eq!(
            enqueue(|r| r.timeout = one_sec).unwrap().timeout,
            Some(Duration::from_secs(1))
        );
        let day = Some(PbDuration {
            seconds: 86_400,
            nanos: 0,
        });
        assert_eq!(
            duration_in(day, "x", Duration::ZERO).unwrap(),
            Some(MAX_DURATION)
        );
        assert_eq!(
            duration_in(Some(PbDuration::default()), "x", Duration::ZERO).unwrap(),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn lease_request_is_validated_and_defaults_to_default_queue() {
        let req = |max_in_flight| pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight,
            ..Default::default()
        };
        assert_eq!(consumer_spec(req(1)).unwrap().queues, [DEFAULT_QUEUE]);
        assert_eq!(field_of(consumer_spec(req(0))), "max_in_flight");
        assert_eq!(
            field_of(consumer_spec(req(MAX_IN_FLIGHT + 1))),
            "max_in_flight"
        );
        assert_eq!(
            field_of(consumer_spec(pb::LeaseRequest {
                worker_id: String::new(),
                ..req(1)
            })),
            "worker_id"
        );
    }

    #[test]
    fn too_many_lease_filters_name_their_own_field() {
        let names = |n: usize| (0..n).map(|i| format!("n{i}")).collect::<Vec<_>>();
        let req = |queues, job_types| pb::LeaseRequest {
            worker_id: "w".into(),
            max_in_flight: 1,
            queues,
            job_types,
            ..Default::default()
        };
        let at_limit = consumer_spec(req(names(MAX_LEASE_FILTERS), names(MAX_LEASE_FILTERS)));
        assert_eq!(at_limit.unwrap().job_types.len(), MAX_LEASE_FILTERS);
        let too_many_types = consumer_spec(req(vec![], names(MAX_LEASE_FILTERS + 1)));
        assert_eq!(
            too_many_types.unwrap_err().to_string(),
            format!("job_types: at most {MAX_LEASE_FILTERS} job types")
        );
        let too_many_queues = consumer_spec(req(names(MAX_LEASE_FILTERS + 1), vec![]));
        assert_eq!(
            too_many_queues.unwrap_err().to_string(),
            format!("queues: at most {MAX_LEASE_FILTERS} queues")
        );
    }

    #[test]
    fn a_long_malformed_id_is_quoted_short() {
        let long = "x".repeat(20_000);
        let Err(RequestError::InvalidArgument { field, reason }) = uuid(&long, "job_id") else {
            panic!("a malformed id must be refused");
        };
        assert_eq!(field, "job_id");
        assert!(reason.len() < 100, "{reason}");
        assert!(reason.ends_with("... is not a UUID"), "{reason}");
    }

    #[test]
    fn state_filter_refuses_unknown_numbers() {
        assert_eq!(state_filter(0, "state").unwrap(), None);
        assert_eq!(state_filter(5, "state").unwrap(), Some(JobState::Dead));
        assert_eq!(field_of(state_filter(42, "state")), "state");
    }
}
