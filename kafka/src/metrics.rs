//! The source's Prometheus metrics and its HTTP listener (`--http-addr`):
//! `GET /metrics` (OpenMetrics text) and `GET /healthz` (200 while the
//! source holds its place in the group, 503 before its first claim and
//! once claims fail for longer than a claim lasts).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_worker::metrics::{OPENMETRICS_CONTENT_TYPE, openmetrics_text};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A topic (and its queue).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The Kafka topic.
    pub topic: String,
    /// The Sluice queue.
    pub queue: String,
}

/// A partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// The Kafka topic.
    pub topic: String,
    /// Its partition.
    pub partition: String,
}

/// Why a partition paused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PauseLabels {
    /// The Kafka topic.
    pub topic: String,
    /// `full` (the queue or the broker's memory), `unavailable` (the broker
    /// or Kafka), or `error`.
    pub reason: String,
}

/// Every metric of the source.
#[derive(Debug, Default, Clone)]
pub struct SourceMetrics {
    /// Records read from Kafka.
    pub records_read: Family<TopicLabels, Counter>,
    /// Records that became runnable jobs.
    pub jobs_enqueued: Family<TopicLabels, Counter>,
    /// Records kept as dead letters.
    pub dead_letters: Family<TopicLabels, Counter>,
    /// Commits made.
    pub commits: Family<TopicLabels, Counter>,
    /// Records Kafka deleted before they were read (skipped, with a warning).
    pub deleted_unread: Family<TopicLabels, Counter>,
    /// Records behind the high watermark, per partition held.
    pub lag: Family<PartitionLabels, Gauge>,
    /// Pauses of a partition.
    pub pauses: Family<PauseLabels, Counter>,
    /// Partitions this source holds.
    pub partitions_held: Gauge,
    /// Live members of the group, as the last claim saw.
    pub members: Gauge,
    /// When the last claim succeeded (ms since the epoch); 0 before.
    pub last_claim_ms: Arc<AtomicI64>,
}

impl SourceMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "records_read",
            "Records read from Kafka",
            m.records_read.clone(),
        );
        registry.register(
            "jobs_enqueued",
            "Records enqueued as runnable jobs",
            m.jobs_enqueued.clone(),
        );
        registry.register(
            "dead_letters",
            "Records kept as DEAD jobs (they could not be jobs)",
            m.dead_letters.clone(),
        );
        registry.register(
            "commits",
            "Commits of records and positions",
            m.commits.clone(),
        );
        registry.register(
            "lag_records",
            "Records of a held partition not enqueued yet",
            m.lag.clone(),
        );
        registry.register(
            "pauses",
            "Times a partition paused (broker full or unavailable)",
            m.pauses.clone(),
        );
        registry.register(
            "partitions_held",
            "Partitions this source holds",
            m.partitions_held.clone(),
        );
        registry.register(
            "group_members",
            "Live members of the source group",
            m.members.clone(),
        );
        m
    }

    /// Counts a pause of `topic` for `reason`.
    pub fn paused(&self, topic: &str, reason: &str) {
        self.pauses
            .get_or_create(&PauseLabels {
                topic: topic.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    metrics: SourceMetrics,
    healthy_for_ms: i64,
    stop: CancellationToken,
) {
    let registry = Arc::new(registry);
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
                        openmetrics_text(&registry),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let last = metrics.last_claim_ms.load(Ordering::Relaxed);
                let now = chrono::Utc::now().timestamp_millis();
                async move {
                    if last > 0 && now - last <= healthy_for_ms {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not in its source group\n")
                    }
                }
            }),
        );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        warn!(error = %e, "the metrics listener failed; the source goes on");
    }
}
