//! The config file (TOML): where Kafka is, which source group this
//! process belongs to, and how each topic's records become jobs. Read
//! and checked whole at startup; a mistake refuses to start, naming the
//! file, the line and the key.
//!
//! ```toml
//! [kafka]
//! brokers = ["kafka-1:9092", "kafka-2:9092"]
//! # tls = { ca_file = "ca.pem" }            # and cert_file, key_file for mTLS
//! # sasl = { mechanism = "SCRAM-SHA-512", username = "bridge", password_env = "KAFKA_PASSWORD" }
//!
//! [source]
//! group = "orders-bridge"      # the source group in Sluice; its members share the partitions
//! start = "earliest"           # earliest | latest | an RFC 3339 time: where a partition with no position starts
//!
//! [[topic]]
//! name = "orders"
//! queue = "orders"
//! job_type = "order.created"   # or: type_header = "event-type"
//! priority = 0
//! max_attempts = 5
//! timeout = "30s"
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[kafka]`.
    pub kafka: KafkaConfig,
    /// `[source]`.
    pub source: SourceConfig,
    /// `[[topic]]`, one per topic read.
    #[serde(rename = "topic")]
    pub topics: Vec<TopicConfig>,
}

/// `[kafka]`: the cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Spanned<Vec<String>>,
    /// The client id Kafka sees.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// TLS to Kafka; absent: plaintext.
    pub tls: Option<KafkaTls>,
    /// SASL to Kafka; absent: none.
    pub sasl: Option<Spanned<KafkaSasl>>,
}

fn default_client_id() -> String {
    "sluice-kafka".to_owned()
}

/// `[kafka.tls]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct KafkaTls {
    /// PEM file of the CAs to trust; absent: none but these (required).
    pub ca_file: PathBuf,
    /// PEM client certificate (mTLS), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// `[kafka.sasl]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: String,
    /// The user.
    pub username: String,
    /// The environment variable holding the password (never the file).
    pub password_env: String,
}

/// `[source]`: this process's group and how it reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The source group in Sluice.
    pub group: Spanned<String>,
    /// Where a partition with no position starts.
    #[serde(default = "default_start")]
    pub start: Spanned<String>,
    /// How long a claim lasts without renewal (`10s`).
    #[serde(default = "default_lease")]
    pub lease: Spanned<String>,
    /// Most records in one commit.
    #[serde(default = "default_batch_records")]
    pub batch_records: Spanned<usize>,
    /// Most bytes of record values in one commit.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: Spanned<usize>,
    /// Most bytes one fetch asks Kafka for.
    #[serde(default = "default_fetch_bytes")]
    pub fetch_bytes: Spanned<i32>,
    /// How long a fetch waits for records at the end of a partition.
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait: Spanned<String>,
}

fn default_start() -> Spanned<String> {
    Spanned::new(0..0, "earliest".to_owned())
}
fn default_lease() -> Spanned<String> {
    Spanned::new(0..0, "10s".to_owned())
}
fn default_batch_records() -> Spanned<usize> {
    Spanned::new(0..0, 2_000)
}
fn default_batch_bytes() -> Spanned<usize> {
    Spanned::new(0..0, 1 << 20)
}
fn default_fetch_bytes() -> Spanned<i32> {
    Spanned::new(0..0, 4 << 20)
}
fn default_fetch_wait() -> Spanned<String> {
    Spanned::new(0..0, "200ms".to_owned())
}

/// `[[topic]]`: one topic and its jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The Kafka topic.
    pub name: Spanned<String>,
    /// The Sluice queue its records go to.
    pub queue: Spanned<String>,
    /// The job type of every record; or `type_header`.
    pub job_type: Option<Spanned<String>>,
    /// The record header that names each record's job type.
    pub type_header: Option<Spanned<String>>,
    /// The jobs' priority.
    #[serde(default)]
    pub priority: i32,
    /// The jobs' attempts (absent: the broker's default).
    pub max_attempts: Option<Spanned<u32>>,
    /// Each attempt's run limit; absent: the broker's default.
    pub timeout: Option<Spanned<String>>,
}

/// Where a partition with no position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its first record still kept.
    Earliest,
    /// Past its last record: only records produced from now on.
    Latest,
    /// Its first record with a timestamp at or after this (ms since the epoch).
    At(i64),
}

/// How a topic's records get their job type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobTypeFrom {
    /// This one.
    Fixed(String),
    /// The value of this record header.
    Header(String),
}

/// A topic, checked.
#[derive(Debug, Clone)]
pub struct Topic {
    /// The Kafka topic.
    pub name: String,
    /// The queue.
    pub queue: String,
    /// The job type.
    pub job_type: JobTypeFrom,
    /// Priority.
    pub priority: i32,
    /// Attempts (0: the broker's default).
    pub max_attempts: u32,
    /// Run limit.
    pub timeout: Option<Duration>,
}

/// The file, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Bootstrap brokers.
    pub brokers: Vec<String>,
    /// Client id.
    pub client_id: String,
    /// TLS to Kafka.
    pub tls: Option<KafkaTls>,
    /// SASL mechanism, user and password.
    pub sasl: Option<(String, String, String)>,
    /// The source group.
    pub group: String,
    /// Start of a partition with no position.
    pub start: Start,
    /// Claim duration.
    pub lease: Duration,
    /// Most records per commit.
    pub batch_records: usize,
    /// Most value bytes per commit.
    pub batch_bytes: usize,
    /// Most bytes per fetch.
    pub fetch_bytes: i32,
    /// Longest wait of a fetch.
    pub fetch_wait: Duration,
    /// The topics.
    pub topics: Vec<Topic>,
}

impl Checked {
    /// The topic named `name`.
    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }
}

/// Reads and checks the file at `path`; `env` gives environment variables.
///
/// # Errors
/// `FILE:LINE: what is wrong` for the first mistake.
pub fn load(path: &Path, env: impl Fn(&str) -> Option<String>) -> Result<Checked, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&text, env).map_err(|e| format!("{}:{e}", path.display()))
}

/// Checks `text`; an error starts with its line number.
///
/// # Errors
/// `LINE: what is wrong`.
pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Checked, String> {
    let line_of = |span: std::ops::Range<usize>| -> usize {
        text.get(..span.start)
            .map_or(1, |before| before.matches('\n').count() + 1)
    };
    let at = |span: std::ops::Range<usize>, what: String| format!("{}: {what}", line_of(span));
    let config: Config = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, line_of);
        format!("{line}: {}", e.message())
    })?;
    let brokers = config.kafka.brokers.get_ref().clone();
    if brokers.is_empty() {
        return Err(at(
            config.kafka.brokers.span(),
            "kafka.brokers: name at least one host:port".into(),
        ));
    }
    let sasl = match &config.kafka.sasl {
        None => None,
        Some(sasl) => {
            let s = sasl.get_ref();
            if !["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&s.mechanism.as_str()) {
                return Err(at(
                    sasl.span(),
                    format!(
                        "kafka.sasl.mechanism: {:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                        s.mechanism
                    ),
                ));
            }
            let password = env(&s.password_env).ok_or_else(|| {
                at(
                    sasl.span(),
                    format!(
                        "kafka.sasl.password_env: the environment variable {} is not set",
                        s.password_env
                    ),
                )
            })?;
            Some((s.mechanism.clone(), s.username.clone(), password))
        }
    };
    if let Some(tls) = &config.kafka.tls
        && tls.cert_file.is_some() != tls.key_file.is_some()
    {
        return Err("1: kafka.tls: cert_file and key_file go together".to_owned());
    }
    let source = &config.source;
    sluice_limits::check_source_group(source.group.get_ref())
        .map_err(|e| at(source.group.span(), format!("source.group: {e}")))?;
    let start = parse_start(source.start.get_ref())
        .map_err(|e| at(source.start.span(), format!("source.start: {e}")))?;
    let lease = duration(&source.lease, "source.lease", &at)?;
    if !sluice_limits::SOURCE_LEASE.contains(&lease) {
        return Err(at(
            source.lease.span(),
            "source.lease: must be 1s to 10m".into(),
        ));
    }
    let batch_records = *source.batch_records.get_ref();
    if !(1..=sluice_limits::MAX_BATCH).contains(&batch_records) {
        return Err(at(
            source.batch_records.span(),
            format!(
                "source.batch_records: must be 1 to {}",
                sluice_limits::MAX_BATCH
            ),
        ));
    }
    let batch_bytes = *source.batch_bytes.get_ref();
    if !(1024..=64 << 20).contains(&batch_bytes) {
        return Err(at(
            source.batch_bytes.span(),
            "source.batch_bytes: must be 1 KiB to 64 MiB".into(),
        ));
    }
    let fetch_bytes = *source.fetch_bytes.get_ref();
    if !(1024..=256 << 20).contains(&fetch_bytes) {
        return Err(at(
            source.fetch_bytes.span(),
            "source.fetch_bytes: must be 1 KiB to 256 MiB".into(),
        ));
    }
    let fetch_wait = duration(&source.fetch_wait, "source.fetch_wait", &at)?;
    if fetch_wait > Duration::from_secs(30) {
        return Err(at(
            source.fetch_wait.span(),
            "source.fetch_wait: must be at most 30s".into(),
        ));
    }
    if config.topics.is_empty() {
        return Err("1: no [[topic]] table: name at least one topic to read".to_owned());
    }
    let mut names = HashSet::new();
    let mut topics = Vec::with_capacity(config.topics.len());
    for topic in &config.topics {
        let name = topic.name.get_ref();
        sluice_limits::check_stream_name(name)
            .map_err(|e| at(topic.name.span(), format!("topic.name: {e}")))?;
        if !names.insert(name.clone()) {
            return Err(at(
                topic.name.span(),
                format!("topic {name:?} is in the file twice"),
            ));
        }
        sluice_limits::check_queue_name(topic.queue.get_ref())
            .map_err(|e| at(topic.queue.span(), format!("topic {name:?}: queue: {e}")))?;
        let job_type = match (&topic.job_type, &topic.type_header) {
            (Some(fixed), None) => {
                sluice_limits::check_name(fixed.get_ref())
                    .map_err(|e| at(fixed.span(), format!("topic {name:?}: job_type {e}")))?;
                JobTypeFrom::Fixed(fixed.get_ref().clone())
            }
            (None, Some(header)) => {
                sluice_limits::check_name(header.get_ref())
                    .map_err(|e| at(header.span(), format!("topic {name:?}: type_header {e}")))?;
                JobTypeFrom::Header(header.get_ref().clone())
            }
            _ => {
                return Err(at(
                    topic.name.span(),
                    format!("topic {name:?}: give job_type or type_header (one of them)"),
                ));
            }
        };
        let max_attempts = topic.max_attempts.as_ref().map_or(0, |m| *m.get_ref());
        if let Some(m) = &topic.max_attempts
            && !(1..=sluice_limits::MAX_ATTEMPTS).contains(&max_attempts)
        {
            return Err(at(
                m.span(),
                format!(
                    "topic {name:?}: max_attempts must be 1 to {}",
                    sluice_limits::MAX_ATTEMPTS
                ),
            ));
        }
        let timeout = match &topic.timeout {
            None => None,
            Some(t) => {
                let d = duration(t, "timeout", &at)?;
                sluice_limits::check_run_limit(d)
                    .map_err(|e| at(t.span(), format!("topic {name:?}: timeout {e}")))?;
                Some(d)
            }
        };
        topics.push(Topic {
            name: name.clone(),
            queue: topic.queue.get_ref().clone(),
            job_type,
            priority: topic.priority,
            max_attempts,
            timeout,
        });
    }
    Ok(Checked {
        brokers,
        client_id: config.kafka.client_id,
        tls: config.kafka.tls,
        sasl,
        group: source.group.get_ref().clone(),
        start,
        lease,
        batch_records,
        batch_bytes,
        fetch_bytes,
        fetch_wait,
        topics,
    })
}

fn duration(
    value: &Spanned<String>,
    key: &str,
    at: &impl Fn(std::ops::Range<usize>, String) -> String,
) -> Result<Duration, String> {
    humantime::parse_duration(value.get_ref()).map_err(|e| {
        at(
            value.span(),
            format!(
                "{key}: {:?} is not a duration ({e}), e.g. 10s",
                value.get_ref()
            ),
        )
    })
}

/// `earliest`, `latest` or an RFC 3339 time.
///
/// # Errors
/// Why it is none of those.
pub fn parse_start(value: &str) -> Result<Start, String> {
    match value {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        time => chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| Start::At(t.timestamp_millis()))
            .map_err(|_| {
                format!(
                    "{time:?} is not earliest, latest or an RFC 3339 time (2026-12-01T00:00:00Z)"
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[kafka]
brokers = ["127.0.0.1:9092"]

[source]
group = "orders-bridge"
start = "2026-12-01T00:00:00Z"

[[topic]]
name = "orders"
queue = "orders"
job_type = "order.created"
max_attempts = 5
timeout = "30s"

[[topic]]
name = "events"
queue = "events"
type_header = "event-type"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_good_file_is_read_with_its_defaults() {
        let c = parse(GOOD, no_env).unwrap();
        assert_eq!(c.group, "orders-bridge");
        assert_eq!(c.start, Start::At(1_796_083_200_000));
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.topics.len(), 2);
        assert_eq!(c.topics[0].timeout, Some(Duration::from_secs(30)));
        assert_eq!(
            c.topics[1].job_type,
            JobTypeFrom::Header("event-type".into())
        );
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        let cases: [(&str, &str, &str); 7] = [
            (
                "queue = \"orders\"",
                "queue = \"no spaces\"",
                "11: topic \"orders\": queue:",
            ),
            (
                "job_type = \"order.created\"",
                "",
                "10: topic \"orders\": give job_type or type_header",
            ),
            (
                "start = \"2026-12-01T00:00:00Z\"",
                "start = \"yesterday\"",
                "7: source.start:",
            ),
            (
                "timeout = \"30s\"",
                "timeout = \"30 parsecs\"",
                "14: timeout:",
            ),
            (
                "max_attempts = 5",
                "max_attemps = 5",
                "13: unknown field `max_attemps`",
            ),
            (
                "group = \"orders-bridge\"",
                "group = \"\"",
                "6: source.group:",
            ),
            (
                "name = \"events\"",
                "name = \"orders\"",
                "17: topic \"orders\" is in the file twice",
            ),
        ];
        for (from, to, expected) in cases {
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text, no_env).unwrap_err();
            assert!(err.starts_with(expected), "{to:?}: {err}");
        }
    }

    #[test]
    fn a_sasl_password_comes_from_the_environment() {
        let text = GOOD.replace(
            "brokers = [\"127.0.0.1:9092\"]",
            "brokers = [\"127.0.0.1:9092\"]\nsasl = { mechanism = \"SCRAM-SHA-256\", username = \"u\", password_env = \"PW\" }",
        );
        assert!(parse(&text, no_env).unwrap_err().contains("PW is not set"));
        let c = parse(&text, |k| (k == "PW").then(|| "secret".to_owned())).unwrap();
        assert_eq!(
            c.sasl,
            Some(("SCRAM-SHA-256".into(), "u".into(), "secret".into()))
        );
        let bad = text.replace("SCRAM-SHA-256", "GSSAPI");
        assert!(
            parse(&bad, no_env)
                .unwrap_err()
                .contains("kafka.sasl.mechanism")
        );
    }
}
