//! A Kafka record as a job: the topic's queue, priority, attempts and run
//! limit; the job type fixed or from a header; the value as the payload;
//! the record's headers as the job's, with `kafka-topic`,
//! `kafka-partition`, `kafka-offset`, `kafka-timestamp` and the key
//! (`kafka-key`, or `kafka-key-base64` when it is not text) added. The
//! broker has no flow-control keys yet, so the key is a header.
//!
//! A record that cannot be mapped (no type header, a header that is not
//! UTF-8) is sent marked invalid with the reason: the broker keeps it as
//! a dead letter. Limits (payload size, header values) are the broker's
//! to check: it keeps a record that breaks one as a dead letter too.

use std::collections::HashMap;

use base64::Engine as _;
use chrono::SecondsFormat;
use rskafka::record::RecordAndOffset;
use sluice_proto::v1 as pb;

use crate::config::{JobTypeFrom, Topic};

/// The headers this source sets (a record's own of these names are replaced).
pub const TOPIC_HEADER: &str = "kafka-topic";
/// See [`TOPIC_HEADER`].
pub const PARTITION_HEADER: &str = "kafka-partition";
/// See [`TOPIC_HEADER`].
pub const OFFSET_HEADER: &str = "kafka-offset";
/// See [`TOPIC_HEADER`].
pub const TIMESTAMP_HEADER: &str = "kafka-timestamp";
/// See [`TOPIC_HEADER`]: the key, when it is UTF-8 text without control characters.
pub const KEY_HEADER: &str = "kafka-key";
/// See [`TOPIC_HEADER`]: the key in standard base64, otherwise.
pub const KEY_BASE64_HEADER: &str = "kafka-key-base64";

/// The job of `record` of `topic`'s `partition`. A record of more than
/// `max_bytes` (value, key and headers) is sent with only its `kafka-*`
/// coordinates, marked invalid: no commit could carry it.
pub fn record_to_job(
    topic: &Topic,
    partition: i32,
    record: RecordAndOffset,
    max_bytes: usize,
) -> pb::SourceRecord {
    let RecordAndOffset { mut record, offset } = record;
    let mut invalid = String::new();
    let size = record.approximate_size();
    if size > max_bytes {
        invalid = format!(
            "the record is {size} bytes, over the {max_bytes} one commit carries (source.batch_bytes): fetch it from Kafka by its offset"
        );
        record.value = None;
    }
    let mut headers = HashMap::with_capacity(record.headers.len() + 5);
    for (name, value) in record.headers {
        match String::from_utf8(value) {
            Ok(value) => {
                headers.insert(name, value);
            }
            Err(_) if invalid.is_empty() => {
                invalid = format!("record header {name:?} is not UTF-8")
            }
            Err(_) => {}
        }
    }
    let job_type = match &topic.job_type {
        JobTypeFrom::Fixed(job_type) => job_type.clone(),
        JobTypeFrom::Header(name) => match headers.get(name) {
            Some(value) => value.clone(),
            None => {
                if invalid.is_empty() {
                    invalid = format!("record header {name:?} (the job type) is missing");
                }
                String::new()
            }
        },
    };
    headers.retain(|name, _| !name.starts_with("kafka-"));
    headers.insert(TOPIC_HEADER.to_owned(), topic.name.clone());
    headers.insert(PARTITION_HEADER.to_owned(), partition.to_string());
    headers.insert(OFFSET_HEADER.to_owned(), offset.to_string());
    headers.insert(
        TIMESTAMP_HEADER.to_owned(),
        record
            .timestamp
            .to_rfc3339_opts(SecondsFormat::Millis, true),
    );
    if let Some(key) = record.key {
        match String::from_utf8(key) {
            Ok(text) if !text.chars().any(char::is_control) => {
                headers.insert(KEY_HEADER.to_owned(), text);
            }
            Ok(text) => {
                headers.insert(
                    KEY_BASE64_HEADER.to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(text),
                );
            }
            Err(e) => {
                headers.insert(
                    KEY_BASE64_HEADER.to_owned(),
                    base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
                );
            }
        }
    }
    if size > max_bytes {
        // Only its coordinates, so that no commit is too large for it.
        headers.retain(|name, _| {
            [
                TOPIC_HEADER,
                PARTITION_HEADER,
                OFFSET_HEADER,
                TIMESTAMP_HEADER,
            ]
            .contains(&name.as_str())
        });
    }
    pb::SourceRecord {
        job: Some(pb::EnqueueRequest {
            queue: topic.queue.clone(),
            job_type,
            payload: record.value.unwrap_or_default().into(),
            headers,
            priority: topic.priority,
            max_attempts: topic.max_attempts,
            timeout: topic
                .timeout
                .and_then(|d| prost_types::Duration::try_from(d).ok()),
            ..Default::default()
        }),
        offset,
        invalid,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use chrono::TimeZone;
    use rskafka::record::Record;

    use super::*;

    fn topic(job_type: JobTypeFrom) -> Topic {
        Topic {
            name: "orders".into(),
            queue: "order-jobs".into(),
            job_type,
            priority: 3,
            max_attempts: 5,
            timeout: Some(Duration::from_secs(30)),
        }
    }

    fn record(key: Option<&[u8]>, headers: &[(&str, &[u8])]) -> RecordAndOffset {
        RecordAndOffset {
            record: Record {
                key: key.map(<[u8]>::to_vec),
                value: Some(b"{\"id\":1}".to_vec()),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                    .collect::<BTreeMap<_, _>>(),
                timestamp: chrono::Utc.timestamp_millis_opt(1_765_000_000_123).unwrap(),
            },
            offset: 42,
        }
    }

    #[test]
    fn a_record_becomes_a_job_with_its_coordinates() {
        let r = record(
            Some(b"customer-7"),
            &[("trace", b"abc"), ("kafka-offset", b"spoofed")],
        );
        let mapped = record_to_job(
            &topic(JobTypeFrom::Fixed("order.created".into())),
            3,
            r,
            1 << 20,
        );
        assert_eq!(mapped.offset, 42);
        assert!(mapped.invalid.is_empty());
        let job = mapped.job.unwrap();
        assert_eq!(
            (job.queue.as_str(), job.job_type.as_str()),
            ("order-jobs", "order.created")
        );
        assert_eq!(&job.payload[..], b"{\"id\":1}");
        assert_eq!((job.priority, job.max_attempts), (3, 5));
        assert_eq!(job.timeout.unwrap().seconds, 30);
        let h = &job.headers;
        assert_eq!(h["trace"], "abc");
        assert_eq!(h["kafka-topic"], "orders");
        assert_eq!(h["kafka-partition"], "3");
        assert_eq!(h["kafka-offset"], "42");
        assert_eq!(h["kafka-timestamp"], "2025-12-06T05:46:40.123Z");
        assert_eq!(h["kafka-key"], "customer-7");
    }

    #[test]
    fn the_type_header_and_odd_keys_and_headers() {
        let by_header = topic(JobTypeFrom::Header("type".into()));
        let typed = record_to_job(
            &by_header,
            0,
            record(Some(&[0xff, 0]), &[("type", b"refund")]),
            1 << 20,
        );
        let job = typed.job.unwrap();
        assert_eq!(job.job_type, "refund");
        assert_eq!(job.headers["kafka-key-base64"], "/wA=");
        assert!(!job.headers.contains_key("kafka-key"));
        let untyped = record_to_job(&by_header, 0, record(None, &[]), 1 << 20);
        assert_eq!(
            untyped.invalid,
            "record header \"type\" (the job type) is missing"
        );
        let binary = record_to_job(
            &by_header,
            0,
            record(None, &[("type", b"x"), ("blob", &[0xc3])]),
            1 << 20,
        );
        assert_eq!(binary.invalid, "record header \"blob\" is not UTF-8");
        let big = record_to_job(&by_header, 0, record(Some(b"k"), &[("type", b"x")]), 8);
        assert!(
            big.invalid
                .starts_with("the record is 14 bytes, over the 8"),
            "{}",
            big.invalid
        );
        let job = big.job.unwrap();
        assert!(job.payload.is_empty());
        let mut names: Vec<&str> = job.headers.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "kafka-offset",
                "kafka-partition",
                "kafka-timestamp",
                "kafka-topic"
            ]
        );
    }
}
