//! How a job record is laid out on disk: a protobuf message (prost, no
//! .proto file), so that fields can be added later and old files still read.
//! The payload is stored apart, once, and is not part of it.

use std::time::Duration;

use bytes::Bytes;
use prost::Message;

use sluice_queue::Timestamp;
use sluice_queue::{JobRecord, JobState, Progress};

#[derive(Clone, PartialEq, Message)]
struct StoredJob {
    #[prost(string, tag = "1")]
    queue: String,
    #[prost(string, tag = "2")]
    job_type: String,
    #[prost(message, repeated, tag = "3")]
    headers: Vec<StoredHeader>,
    #[prost(int32, tag = "4")]
    priority: i32,
    #[prost(uint32, tag = "5")]
    state: u32,
    #[prost(uint32, tag = "6")]
    attempt: u32,
    #[prost(uint32, tag = "7")]
    max_attempts: u32,
    #[prost(uint64, tag = "8")]
    timeout_ms: u64,
    #[prost(uint64, tag = "9")]
    created_at_us: u64,
    #[prost(uint64, tag = "10")]
    run_at_us: u64,
    #[prost(uint64, optional, tag = "11")]
    finished_at_us: Option<u64>,
    #[prost(string, optional, tag = "12")]
    last_error: Option<String>,
    #[prost(string, optional, tag = "13")]
    idempotency_key: Option<String>,
    #[prost(bool, tag = "14")]
    cancel_requested: bool,
    #[prost(message, optional, tag = "15")]
    progress: Option<StoredProgress>,
    #[prost(bytes = "bytes", optional, tag = "16")]
    result: Option<Bytes>,
    /// The flow-control key.
    #[prost(string, optional, tag = "17")]
    key: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct StoredProgress {
    #[prost(uint32, tag = "1")]
    percent: u32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(uint32, tag = "3")]
    attempt: u32,
    #[prost(uint64, tag = "4")]
    updated_at_us: u64,
}

#[derive(Clone, PartialEq, Message)]
struct StoredHeader {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// State numbers on disk; never reused.
const STATES: [(JobState, u32); 5] = [
    (JobState::Scheduled, 1),
    (JobState::Ready, 2),
    (JobState::Succeeded, 4),
    (JobState::Dead, 5),
    (JobState::Cancelled, 6),
];

/// The bytes of `record`, without its payload.
pub(super) fn encode(record: &JobRecord) -> Vec<u8> {
    let state = STATES
        .iter()
        .find(|(s, _)| *s == record.state)
        .map_or(2, |(_, n)| *n);
    StoredJob {
        queue: record.queue.clone(),
        job_type: record.job_type.clone(),
        headers: record
            .headers
            .iter()
            .map(|(key, value)| StoredHeader {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        priority: record.priority,
        state,
        attempt: record.attempt,
        max_attempts: record.max_attempts,
        timeout_ms: u64::try_from(record.timeout.as_millis()).unwrap_or(u64::MAX),
        created_at_us: record.created_at.as_micros(),
        run_at_us: record.run_at.as_micros(),
        finished_at_us: record.finished_at.map(Timestamp::as_micros),
        last_error: record.last_error.clone(),
        idempotency_key: record.idempotency_key.clone(),
        cancel_requested: record.cancel_requested,
        progress: record.progress.as_ref().map(|p| StoredProgress {
            percent: p.percent,
            message: p.message.clone(),
            attempt: p.attempt,
            updated_at_us: p.updated_at.as_micros(),
        }),
        result: record.result.clone(),
        key: record.key.clone(),
    }
    .encode_to_vec()
}

/// The record of job `seq` from its stored bytes and payload; `Err` says
/// what is wrong with them.
pub(super) fn decode(seq: u64, bytes: &[u8], payload: Bytes) -> Result<JobRecord, String> {
    let stored = StoredJob::decode(bytes).map_err(|e| e.to_string())?;
    let state = STATES
        .iter()
        .find(|(_, n)| *n == stored.state)
        .map(|(s, _)| *s)
        .ok_or_else(|| format!("unknown state number {}", stored.state))?;
    Ok(JobRecord {
        seq,
        queue: stored.queue,
        job_type: stored.job_type,
        payload,
        headers: stored
            .headers
            .into_iter()
            .map(|h| (h.key, h.value))
            .collect(),
        priority: stored.priority,
        state,
        attempt: stored.attempt,
        max_attempts: stored.max_attempts,
        timeout: Duration::from_millis(stored.timeout_ms),
        created_at: Timestamp::from_micros(stored.created_at_us),
        run_at: Timestamp::from_micros(stored.run_at_us),
        finished_at: stored.finished_at_us.map(Timestamp::from_micros),
        last_error: stored.last_error,
        idempotency_key: stored.idempotency_key,
        cancel_requested: stored.cancel_requested,
        progress: stored.progress.map(|p| {
            Box::new(Progress {
                percent: p.percent,
                message: p.message,
                attempt: p.attempt,
                updated_at: Timestamp::from_micros(p.updated_at_us),
            })
        }),
        result: stored.result,
        key: stored.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let record = JobRecord {
            seq: 42,
            queue: "emails".into(),
            job_type: "welcome".into(),
            payload: Bytes::from_static(b"{}"),
            headers: vec![("trace".into(), "abc".into())],
            priority: -3,
            state: JobState::Dead,
            attempt: 4,
            max_attempts: 4,
            timeout: Duration::from_secs(90),
            created_at: Timestamp::from_micros(1),
            run_at: Timestamp::from_micros(2),
            finished_at: Some(Timestamp::from_micros(3)),
            last_error: Some("smtp timeout".into()),
            idempotency_key: Some("user-7".into()),
            key: Some("tenant-3".into()),
            cancel_requested: true,
            progress: Some(Box::new(Progress {
                percent: 40,
                message: "{\"rows\": 400}".into(),
                attempt: 4,
                updated_at: Timestamp::from_micros(4),
            })),
            result: None,
        };
        let bytes = encode(&record);
        assert_eq!(
            decode(42, &bytes, record.payload.clone()),
            Ok(record.clone())
        );
        let record = JobRecord {
            state: JobState::Succeeded,
            result: Some(Bytes::from_static(b"\x00sent")),
            ..record
        };
        let bytes = encode(&record);
        assert_eq!(decode(42, &bytes, record.payload.clone()), Ok(record));
    }

    #[test]
    fn damaged_bytes_are_an_error() {
        assert!(decode(1, &[0xff, 0xff, 0xff], Bytes::new()).is_err());
        // A valid message with a state number no version wrote.
        let bad_state = StoredJob {
            state: 3,
            ..StoredJob::default()
        };
        let err = decode(1, &bad_state.encode_to_vec(), Bytes::new());
        assert!(err.is_err_and(|e| e.contains("state")));
    }
}
