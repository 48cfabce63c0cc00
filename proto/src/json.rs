//! The contract's messages as JSON documents, one function per message:
//! the `sluice` CLI's `--output json` and the broker's HTTP API
//! (`/api/v1/`) both print these, so the two cannot drift apart.
//!
//! The JSON field names are the proto field names (snake_case) and stay
//! stable; states are their names without the `JOB_STATE_` prefix
//! (`READY`), durations are seconds (numbers), timestamps RFC 3339 strings
//! with milliseconds, and an unset value is null. A payload is
//! `{"encoding": "json" | "text" | "base64", "value": ...}`.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::v1 as pb;

/// A state's name as the README and the proto write it, without the
/// `JOB_STATE_` prefix: `READY`, `DEAD`.
pub fn state_name(state: pb::JobState) -> &'static str {
    match state {
        pb::JobState::Unspecified => "UNSPECIFIED",
        pb::JobState::Scheduled => "SCHEDULED",
        pb::JobState::Ready => "READY",
        pb::JobState::Leased => "LEASED",
        pb::JobState::Succeeded => "SUCCEEDED",
        pb::JobState::Dead => "DEAD",
        pb::JobState::Cancelled => "CANCELLED",
    }
}

/// How a payload is best shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// It parses as JSON.
    Json(Value),
    /// UTF-8 text that is not JSON.
    Text(String),
    /// Anything else, as base64.
    Base64(String),
}

impl Payload {
    /// Decodes `bytes` for showing: JSON, else text, else base64.
    pub fn decode(bytes: &[u8]) -> Self {
        if !bytes.is_empty()
            && let Ok(value) = serde_json::from_slice::<Value>(bytes)
        {
            return Self::Json(value);
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Self::Text(text.to_owned()),
            Err(_) => Self::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)),
        }
    }

    /// `{"encoding": ..., "value": ...}`.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Json(value) => json!({"encoding": "json", "value": value}),
            Self::Text(text) => json!({"encoding": "text", "value": text}),
            Self::Base64(b64) => json!({"encoding": "base64", "value": b64}),
        }
    }

    /// For a person: pretty JSON, the text, or the base64.
    pub fn to_text(&self) -> String {
        match self {
            Self::Json(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
            Self::Text(text) => text.clone(),
            Self::Base64(b64) => b64.clone(),
        }
    }

    /// `json`, `text` or `base64`.
    pub fn encoding(&self) -> &'static str {
        match self {
            Self::Json(_) => "json",
            Self::Text(_) => "text",
            Self::Base64(_) => "base64",
        }
    }
}

/// A string that is empty when unset, as JSON null then.
fn non_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// A job as JSON; its payload and result only when `with_payload` (`jobs
/// get`), their sizes always (`payload_bytes`, `result_bytes`). The result
/// is shown as a payload is.
pub fn job_json(job: &pb::Job, with_payload: bool) -> Value {
    let headers: Map<String, Value> = sorted(&job.headers)
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut value = json!({
        "id": job.id,
        "queue": job.queue,
        "job_type": job.job_type,
        "key": non_empty(&job.key),
        "state": state_name(job.state()),
        "priority": job.priority,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "timeout": seconds_json(std_duration(job.timeout.as_ref())),
        "created_at": timestamp_json(job.created_at.as_ref()),
        "run_at": timestamp_json(job.run_at.as_ref()),
        "finished_at": timestamp_json(job.finished_at.as_ref()),
        "lease_expires_at": timestamp_json(job.lease_expires_at.as_ref()),
        "worker_id": non_empty(&job.worker_id),
        "last_error": non_empty(&job.last_error),
        "cancel_requested": job.cancel_requested,
        "headers": headers,
        "payload_bytes": job.payload.len(),
        "progress": job.progress.as_ref().map_or(Value::Null, progress_json),
        "result_bytes": job.result.len(),
    });
    if with_payload && let Value::Object(map) = &mut value {
        map.insert("payload".into(), Payload::decode(&job.payload).to_json());
        let result = if job.result.is_empty() {
            Value::Null
        } else {
            Payload::decode(&job.result).to_json()
        };
        map.insert("result".into(), result);
    }
    value
}

/// A job's progress: `{"percent", "message", "attempt", "updated_at"}`.
pub fn progress_json(p: &pb::JobProgress) -> Value {
    json!({
        "percent": p.percent,
        "message": p.message,
        "attempt": p.attempt,
        "updated_at": timestamp_json(p.updated_at.as_ref()),
    })
}

/// Headers in name order (the map's own order is random).
pub fn sorted(headers: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut list: Vec<_> = headers.iter().collect();
    list.sort();
    list
}

/// One queue's row of Stats as JSON.
pub fn queue_stats_json(q: &pb::QueueStats) -> Value {
    json!({
        "queue": q.queue,
        "paused": q.paused,
        "scheduled": q.scheduled,
        "ready": q.ready,
        "leased": q.leased,
        "succeeded": q.succeeded,
        "dead": q.dead,
        "cancelled": q.cancelled,
        "enqueued_total": q.enqueued_total,
        "acked_total": q.acked_total,
        "nacked_total": q.nacked_total,
        "expired_total": q.expired_total,
        "dead_total": q.dead_total,
        "oldest_ready_age": seconds_json(std_duration(q.oldest_ready_age.as_ref())),
        "enqueued_per_second": q.enqueued_per_second,
        "acked_per_second": q.acked_per_second,
        "failed_per_second": q.failed_per_second,
        "limits": q.limits.as_ref().map_or(Value::Null, limits_json),
        "held": q.held.as_ref().map_or(Value::Null, held_json),
        "top_keys": q.top_keys.iter().map(key_json).collect::<Vec<_>>(),
    })
}

fn rate_json(rate: Option<&pb::RateLimit>) -> Value {
    rate.map_or(
        Value::Null,
        |r| json!({"per_second": r.per_second, "burst": r.burst}),
    )
}

/// A queue's flow-control limits as JSON: 0 and null are no limit.
pub fn limits_json(l: &pb::QueueLimits) -> Value {
    json!({
        "queue": l.queue,
        "max_in_flight": l.max_in_flight,
        "rate": rate_json(l.rate.as_ref()),
        "key_max_in_flight": l.key_max_in_flight,
        "key_rate": rate_json(l.key_rate.as_ref()),
        "overrides": l.overrides.iter().map(|o| json!({
            "key": o.key,
            "max_in_flight": o.max_in_flight,
            "rate": rate_json(o.rate.as_ref()),
            "weight": o.weight.max(1),
        })).collect::<Vec<_>>(),
    })
}

/// READY jobs held back by limits, by reason, as JSON.
pub fn held_json(h: &pb::HeldJobs) -> Value {
    json!({
        "key_limit": h.key_limit,
        "queue_limit": h.queue_limit,
        "rate": h.rate,
        "key_delay": h.key_delay,
    })
}

/// One key of a queue as JSON.
pub fn key_json(k: &pb::KeyInfo) -> Value {
    json!({
        "key": k.key,
        "in_flight": k.in_flight,
        "ready": k.ready,
        "held_by": non_empty(&k.held_by),
        "held_until": timestamp_json(k.held_until.as_ref()),
    })
}

/// One failed attempt as JSON.
pub fn failure_json(f: &pb::FailedAttempt) -> Value {
    json!({
        "job_id": f.job_id,
        "queue": f.queue,
        "job_type": f.job_type,
        "attempt": f.attempt,
        "error": f.error,
        "failed_at": timestamp_json(f.failed_at.as_ref()),
        "dead": f.dead,
        "worker_id": non_empty(&f.worker_id),
    })
}

/// The Stats document: every queue's row and the latest failures.
pub fn stats_json(stats: &pb::StatsResponse) -> Value {
    json!({
        "queues": stats.queues.iter().map(queue_stats_json).collect::<Vec<_>>(),
        "recent_failures": stats.recent_failures.iter().map(failure_json).collect::<Vec<_>>(),
    })
}

/// The ListWorkers document.
pub fn workers_json(workers: &[pb::WorkerInfo]) -> Value {
    json!({"workers": workers.iter().map(worker_json).collect::<Vec<_>>()})
}

/// One connected worker (Lease stream) as JSON.
pub fn worker_json(w: &pb::WorkerInfo) -> Value {
    json!({
        "worker_id": w.worker_id,
        "queues": w.queues,
        "job_types": w.job_types,
        "in_flight": w.in_flight,
        "max_in_flight": w.max_in_flight,
        "connected_since": timestamp_json(w.connected_since.as_ref()),
    })
}

/// A source group's partitions and live members as JSON (the Kafka
/// source's claims and positions).
pub fn source_group_json(group: &str, listed: &pb::ListSourcePartitionsResponse) -> Value {
    json!({
        "group": group,
        "members": listed.members,
        "partitions": listed.partitions.iter().map(|p| json!({
            "stream": p.stream,
            "partition": p.partition,
            "holder": non_empty(&p.holder),
            "epoch": p.epoch,
            "position": p.position,
            "held_until": timestamp_json(p.held_until.as_ref()),
        })).collect::<Vec<_>>(),
    })
}

/// The state named `name` (`dead` or `DEAD`, with or without the
/// `JOB_STATE_` prefix); `None` for an unknown name or `UNSPECIFIED`.
pub fn state_from_name(name: &str) -> Option<pb::JobState> {
    let upper = name.to_ascii_uppercase();
    let short = upper.strip_prefix("JOB_STATE_").unwrap_or(&upper);
    match pb::JobState::from_str_name(&format!("JOB_STATE_{short}"))? {
        pb::JobState::Unspecified => None,
        state => Some(state),
    }
}

/// A status code as the gRPC specification names it (`NOT_FOUND`), the form
/// operators find in documentation and logs.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A state's name, or null when UNSPECIFIED (the job is unknown or gone).
fn known_state(state: pb::JobState) -> Value {
    match state {
        pb::JobState::Unspecified => Value::Null,
        state => Value::String(state_name(state).to_owned()),
    }
}

/// A catch-up policy as files, flags and documents write it.
pub fn catch_up_name(policy: pb::CatchUp) -> &'static str {
    match policy {
        pb::CatchUp::Unspecified | pb::CatchUp::Skip => "skip",
        pb::CatchUp::One => "one",
        pb::CatchUp::All => "all",
    }
}

/// An overlap policy as files, flags and documents write it.
pub fn overlap_name(policy: pb::Overlap) -> &'static str {
    match policy {
        pb::Overlap::Unspecified | pb::Overlap::Allow => "allow",
        pb::Overlap::Skip => "skip",
        pb::Overlap::CancelPrevious => "cancel-previous",
    }
}

/// A schedule as JSON: its definition (`job` the template, its payload
/// decoded as a job's), its state, the next fire times and recent runs.
pub fn schedule_json(s: &pb::Schedule) -> Value {
    let job = s.job.clone().unwrap_or_default();
    let headers: Map<String, Value> = sorted(&job.headers)
        .into_iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let timestamps = |list: &[prost_types::Timestamp]| -> Vec<Value> {
        list.iter().map(|t| timestamp_json(Some(t))).collect()
    };
    let runs: Vec<Value> = s
        .recent_runs
        .iter()
        .map(|r| {
            json!({
                "scheduled_for": timestamp_json(r.scheduled_for.as_ref()),
                "job_id": r.job_id,
                "triggered": r.triggered,
                "state": known_state(r.state()),
            })
        })
        .collect();
    json!({
        "name": s.name,
        "cron": non_empty(&s.cron),
        "every": seconds_json(std_duration(s.every.as_ref())),
        "time_zone": if s.time_zone.is_empty() { "UTC" } else { s.time_zone.as_str() },
        "description": s.description,
        "job": {
            "queue": job.queue,
            "job_type": job.job_type,
            "payload": Payload::decode(&job.payload).to_json(),
            "headers": headers,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "timeout": seconds_json(std_duration(job.timeout.as_ref())),
        },
        "catch_up": catch_up_name(s.catch_up()),
        "overlap": overlap_name(s.overlap()),
        "start_at": timestamp_json(s.start_at.as_ref()),
        "end_at": timestamp_json(s.end_at.as_ref()),
        "paused": s.paused,
        "next_fire_at": timestamp_json(s.next_fire_at.as_ref()),
        "last_fired_at": timestamp_json(s.last_fired_at.as_ref()),
        "last_job_id": non_empty(&s.last_job_id),
        "last_job_state": known_state(s.last_job_state()),
        "created_at": timestamp_json(s.created_at.as_ref()),
        "updated_at": timestamp_json(s.updated_at.as_ref()),
        "upcoming": timestamps(&s.upcoming),
        "recent_runs": runs,
    })
}

/// A refusal as JSON: `{"code": "NOT_FOUND", "message": "..."}`.
pub fn status_json(status: &tonic::Status) -> Value {
    json!({"code": code_name(status.code()), "message": status.message()})
}

/// A protobuf timestamp as a [`SystemTime`], `None` when unset or out of range.
pub fn system_time(ts: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    ts.and_then(|ts| SystemTime::try_from(*ts).ok())
}

/// A timestamp as RFC 3339 (UTC, millisecond precision), or JSON null.
pub fn timestamp_json(ts: Option<&prost_types::Timestamp>) -> Value {
    system_time(ts).map_or(Value::Null, |t| {
        Value::String(humantime::format_rfc3339_millis(t).to_string())
    })
}

/// A protobuf duration as a [`Duration`], `None` when unset or negative.
pub fn std_duration(d: Option<&prost_types::Duration>) -> Option<Duration> {
    d.and_then(|d| Duration::try_from(*d).ok())
}

/// A duration in seconds (a JSON number, fractions kept), or null.
pub fn seconds_json(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::from(d.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_decode_as_json_then_text_then_base64() {
        assert_eq!(
            Payload::decode(br#"{"a": 1}"#).to_json(),
            json!({"encoding": "json", "value": {"a": 1}})
        );
        assert_eq!(
            Payload::decode(b"hello").to_json(),
            json!({"encoding": "text", "value": "hello"})
        );
        assert_eq!(
            Payload::decode(&[0xff, 0x00]).to_json(),
            json!({"encoding": "base64", "value": "/wA="})
        );
        assert_eq!(Payload::decode(b"").encoding(), "text");
    }

    #[test]
    fn states_are_read_by_their_names() {
        assert_eq!(state_from_name("dead"), Some(pb::JobState::Dead));
        assert_eq!(state_from_name("READY"), Some(pb::JobState::Ready));
        assert_eq!(
            state_from_name("JOB_STATE_LEASED"),
            Some(pb::JobState::Leased)
        );
        assert_eq!(state_from_name("unspecified"), None);
        assert_eq!(state_from_name("done"), None);
        for state in [pb::JobState::Scheduled, pb::JobState::Cancelled] {
            assert_eq!(state_from_name(state_name(state)), Some(state));
        }
    }
}
