//! The Kafka side: a client (TLS and SASL as the config says), the
//! partitions of the configured topics, and where a partition starts
//! (earliest, latest, or the first record at or after a time).

use std::sync::Arc;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials, SaslConfig};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Checked, KafkaTls, Start};

/// How long the client retries a request before the error comes back to
/// us (it retries with backoff up to then).
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// The wait of the fetches that only look (bounds, a time's offset). Not
/// 0: a server may answer a fetch that must not wait with no partition at
/// all (Tansu does), which the client takes as a broken answer.
pub const SHORTEST_FETCH_WAIT_MS: i32 = 10;

/// A client of the configured cluster.
///
/// # Errors
/// Unreadable TLS files, or no broker reachable.
pub async fn connect(config: &Checked) -> anyhow::Result<Client> {
    let mut builder = ClientBuilder::new(config.brokers.clone())
        .client_id(config.client_id.clone())
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
            deadline: Some(REQUEST_DEADLINE),
        });
    if let Some(tls) = &config.tls {
        builder = builder.tls_config(tls_config(tls)?);
    }
    if let Some((mechanism, user, password)) = &config.sasl {
        let credentials = Credentials::new(user.clone(), password.clone());
        builder = builder.sasl_config(match mechanism.as_str() {
            "PLAIN" => SaslConfig::Plain(credentials),
            "SCRAM-SHA-256" => SaslConfig::ScramSha256(credentials),
            _ => SaslConfig::ScramSha512(credentials),
        });
    }
    builder
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("connecting to Kafka at {}: {e}", config.brokers.join(",")))
}

fn tls_config(tls: &KafkaTls) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let unreadable = |path: &std::path::Path, e: &dyn std::fmt::Display| {
        anyhow::anyhow!("kafka.tls: {}: {e}", path.display())
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&tls.ca_file).map_err(|e| unreadable(&tls.ca_file, &e))?
    {
        let cert = cert.map_err(|e| unreadable(&tls.ca_file, &e))?;
        roots.add(cert).map_err(|e| unreadable(&tls.ca_file, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("kafka.tls: {e}"))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| unreadable(cert, &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(cert, &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unreadable(key, &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| anyhow::anyhow!("kafka.tls: the client certificate: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every partition of the configured topics, sorted.
///
/// # Errors
/// A topic the cluster does not have, or Kafka unreachable.
pub async fn partitions(client: &Client, config: &Checked) -> anyhow::Result<Vec<(String, i32)>> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| anyhow::anyhow!("listing Kafka's topics: {e}"))?;
    let mut out = Vec::new();
    for topic in &config.topics {
        let found = topics
            .iter()
            .find(|t| t.name == topic.name)
            .ok_or_else(|| {
                anyhow::anyhow!("Kafka has no topic {:?} (create it first)", topic.name)
            })?;
        out.extend(found.partitions.iter().map(|p| (topic.name.clone(), *p)));
    }
    out.sort();
    Ok(out)
}

/// A client of one partition.
///
/// # Errors
/// Kafka unreachable.
pub async fn partition(
    client: &Client,
    topic: &str,
    partition: i32,
) -> anyhow::Result<PartitionClient> {
    client
        .partition_client(topic, partition, UnknownTopicHandling::Error)
        .await
        .map_err(|e| anyhow::anyhow!("partition {partition} of {topic:?}: {e}"))
}

/// The partition's first offset kept and its high watermark (past the
/// last record). The watermark is read from a fetch: some servers'
/// ListOffsets answer the last batch's start for `latest`.
///
/// # Errors
/// Kafka unreachable.
pub async fn bounds(pc: &PartitionClient) -> anyhow::Result<(i64, i64)> {
    let earliest = pc
        .get_offset(OffsetAt::Earliest)
        .await
        .map_err(|e| anyhow::anyhow!("the earliest offset: {e}"))?;
    let (_, high) = pc
        .fetch_records(earliest, 1..1024, SHORTEST_FETCH_WAIT_MS)
        .await
        .map_err(|e| anyhow::anyhow!("the high watermark: {e}"))?;
    Ok((earliest, high))
}

/// Where `start` is in the partition.
///
/// # Errors
/// Kafka unreachable.
pub async fn start_offset(
    pc: &PartitionClient,
    start: Start,
    fetch_bytes: i32,
) -> anyhow::Result<i64> {
    let (earliest, high) = bounds(pc).await?;
    Ok(match start {
        Start::Earliest => earliest,
        Start::Latest => high,
        Start::At(ms) => offset_for_time(pc, ms, earliest, high, fetch_bytes).await?,
    })
}

/// The first record at or after `ms` (its timestamp), or `high` if none:
/// from the server's time index, then forward over the records from
/// there. The index only shortens the scan (it may answer early or, on
/// some servers, by append time), so the answer is the records' own.
async fn offset_for_time(
    pc: &PartitionClient,
    ms: i64,
    earliest: i64,
    high: i64,
    fetch_bytes: i32,
) -> anyhow::Result<i64> {
    let at = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    let hint = pc
        .get_offset(OffsetAt::Timestamp(at))
        .await
        .unwrap_or(earliest);
    let mut offset = if (earliest..high).contains(&hint) {
        hint
    } else {
        earliest
    };
    // A hint whose record before is of that time already is late (an
    // index by append time): scan from the start instead.
    if offset > earliest {
        let before = offset - 1;
        let (records, _) = pc
            .fetch_records(before, 1..fetch_bytes, SHORTEST_FETCH_WAIT_MS)
            .await
            .map_err(|e| anyhow::anyhow!("reading from offset {before}: {e}"))?;
        if records
            .first()
            .is_some_and(|r| r.offset < offset && r.record.timestamp.timestamp_millis() >= ms)
        {
            offset = earliest;
        }
    }
    while offset < high {
        let (records, _) = pc
            .fetch_records(offset, 1..fetch_bytes, SHORTEST_FETCH_WAIT_MS)
            .await
            .map_err(|e| anyhow::anyhow!("reading from offset {offset}: {e}"))?;
        let Some(last) = records.last() else {
            break;
        };
        if let Some(found) = records
            .iter()
            .find(|r| r.record.timestamp.timestamp_millis() >= ms)
        {
            return Ok(found.offset);
        }
        offset = last.offset + 1;
    }
    Ok(high)
}
