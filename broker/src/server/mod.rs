//! Runs the broker on a listener: recovery from the data directory (if
//! any), the Broker and Admin services, gRPC health and reflection (v1 and
//! v1alpha), the scheduler task, and the drain.
//!
//! Drain, on `shutdown`: health turns NOT_SERVING, Enqueue and Lease are
//! refused with UNAVAILABLE, every Lease stream ends, each Work session
//! says `draining` and takes no more jobs, and the listener keeps serving
//! Ack/Nack/Extend/Release (over old and new connections, and on the open
//! Work sessions) until no job is leased or the drain timeout passes. Then
//! the EnqueueStream and Work streams end, and the server stops, bounded
//! by a deadline of its own because graceful HTTP/2 shutdown waits for
//! every open call, and the store writes what it holds and closes. A
//! failure of the broker (see [`crate::fatal`]) cancels `shutdown` itself:
//! the drain then ends at once and `run` returns an error.
//!
//! Connections come through [`crate::listener`], which admits them (the
//! connection caps, the first-byte and preface timeouts, the TLS
//! handshakes with the configuration current then, which SIGHUP may
//! replace) on both listeners. Every gRPC call passes the [`Gate`] before
//! its body is read: the credential and role for the Broker and Admin
//! services (and reflection with `--reflection admin`), a place among its
//! connection's receiving calls, and `--request-timeout`; the services
//! check the queues. Health is always open.
//!
//! Where jobs live is the [`crate::backend`] that `config.store` names;
//! health follows whether it can serve. `error.rs` holds [`ServerError`].

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::v1::admin_server::AdminServer;
use sluice_proto::v1::broker_server::BrokerServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::backend;
use crate::clock::TokioClock;
use crate::config::Config;
use crate::fatal::Fatal;
use crate::gate::{Gate, RECEIVING_PER_CONNECTION};
use crate::http;
use crate::listener::{self, Admission, ConnectionCaps};
use crate::metrics::{Metrics, RpcLatencyLayer};
use crate::schedules::{Firing, TickObserver};
use crate::service::convert::Limits;
use crate::service::rates::{self, Rates};
use crate::service::{AdminService, BrokerService, ScheduleDesk, SourceDesk};
use crate::tls::Protocol;

mod error;

pub use error::ServerError;

/// How long the server may take to close its connections after the drain.
/// A client that keeps an ended stream unread holds its connection open;
/// nothing is owed to it by then, so the wait is short.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// How often an idle connection is pinged, and how long the answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 flow-control windows, per stream and per connection.
const STREAM_WINDOW: u32 = 2 << 20;
const CONNECTION_WINDOW: u32 = 8 << 20;

/// What the drain left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Jobs still leased when the drain timeout passed.
    pub still_leased: usize,
    /// Jobs scheduled, ready or leased at exit: lost with a memory-only
    /// broker, kept in the data directory otherwise.
    pub unfinished: u64,
}

/// Where the broker serves: gRPC, and HTTP (`--http-addr`) if wanted.
#[derive(Debug)]
pub struct Listeners {
    /// The Broker, Admin, health and reflection services.
    pub grpc: TcpListener,
    /// `/metrics`, the dashboard and its API; with it, the broker keeps
    /// metrics.
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// gRPC only.
    fn from(grpc: TcpListener) -> Self {
        Self { grpc, http: None }
    }
}

/// Serves on `listeners` until `shutdown` is cancelled, then drains.
///
/// # Errors
/// [`ServerError`] when reflection cannot be built or the server fails.
pub async fn run(
    listeners: impl Into<Listeners>,
    config: Config,
    shutdown: CancellationToken,
) -> Result<DrainReport, ServerError> {
    let Listeners {
        grpc: listener,
        http,
    } = listeners.into();
    let fatal = Fatal::new(shutdown.clone());
    let shared = backend::open(&config.store, &config.queue, &fatal).await?;
    let tasks = TaskTracker::new();
    let stop_serving = CancellationToken::new();
    let rates = Arc::new(Rates::default());
    // Room for the largest payload plus the largest valid rest of an
    // Enqueue (64 headers of up to 4 KiB, names, key): a bigger message is
    // refused by gRPC itself with OUT_OF_RANGE.
    let max_message = config.max_payload.saturating_add(512 * 1024);
    let limits = Limits {
        max_payload: config.max_payload,
    };
    let schedule_wake = Arc::new(Notify::new());
    let admin = AdminService::new(
        shared.clone(),
        config.auth.clone(),
        rates.clone(),
        ScheduleDesk::new(shared.clone(), limits, schedule_wake.clone()),
        SourceDesk::new(shared.clone(), limits),
    );
    let caps = ConnectionCaps::new(config.max_connections, config.max_connections_per_ip);
    let admission = |protocol| Admission {
        caps: caps.clone(),
        tls: config.tls.clone(),
        protocol,
        receiving_per_connection: RECEIVING_PER_CONNECTION,
    };
    let mut tick_metrics: Option<Arc<dyn TickObserver>> = None;
    let rpc_metrics = match http {
        Some(http) => {
            let (metrics, rpc, ticks) = Metrics::new(&shared, config.queue.max_memory);
            tick_metrics = Some(ticks);
            let stop = stop_serving.clone();
            let addr = http.local_addr()?;
            let incoming = listener::accept(http, admission(Protocol::Http), &tasks, stop.clone());
            let site = http::Site {
                addr,
                tls: config.tls.is_some(),
                auth: config.auth.clone(),
                allowed_hosts: http::hosts::AllowedHosts::new(config.http_allowed_hosts.clone()),
            };
            tasks.spawn(http::serve(incoming, site, metrics, admin.clone(), stop));
            Some(rpc)
        }
        None => None,
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    let stop_health = CancellationToken::new();
    let mut serving_status = shared.serving();
    let status = status_of(*serving_status.borrow_and_update());
    set_health(&health, status).await;
    let health_follower = tokio::spawn(follow_backend(
        health.clone(),
        serving_status,
        stop_health.clone(),
    ));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // Ends the EnqueueStream and Work streams once the drain is over.
    let end_streams = CancellationToken::new();
    let broker = BrokerServer::new(BrokerService::new(
        shared.clone(),
        limits,
        config.auth.clone(),
        (
            config.max_lease_streams,
            config.max_lease_streams_per_credential,
        ),
        tasks.clone(),
        end_streams.clone(),
    ))
    .max_decoding_message_size(max_message);
    let admin = AdminServer::new(admin).max_decoding_message_size(sluice_limits::MAX_ADMIN_MESSAGE);

    let stop_scheduler = CancellationToken::new();
    shared.spawn_tasks(&tasks, stop_scheduler.clone());
    tasks.spawn(rates::sample(shared.clone(), rates, stop_scheduler.clone()));
    // Stopped when the drain begins: a draining broker enqueues nothing.
    let stop_firing = CancellationToken::new();
    let firing = Firing {
        backend: shared.clone(),
        clock: TokioClock::new(),
        wake: schedule_wake,
        observer: tick_metrics,
    };
    tasks.spawn(firing.run(stop_firing.clone()));

    let gate = Gate {
        auth: config.auth.clone(),
        reflection: config.reflection,
        request_timeout: config.request_timeout,
    };
    let router = Server::builder()
        .layer(RpcLatencyLayer::new(rpc_metrics))
        .layer(gate)
        // A worker whose host vanished leaves a half-open connection; pings
        // find it so that its Lease stream closes and stops taking jobs.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        // h2's default windows are 64 KiB: a busy Lease stream or a
        // pipelining producer would wait on WINDOW_UPDATEs.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_max_header_list_size(Some(config.max_header_list_size))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(broker)
        .add_service(admin);
    let stopped = stop_serving.clone().cancelled_owned();
    let incoming = listener::accept(
        listener,
        admission(Protocol::Grpc),
        &tasks,
        stop_serving.clone(),
    );
    let mut serving = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
    info!(
        tls = config.tls.is_some(),
        mtls = config.tls.as_ref().is_some_and(|t| t.mutual()),
        auth = config.auth.is_enabled(),
        "broker serving"
    );

    tokio::select! {
        biased;
        () = shutdown.cancelled() => {}
        result = &mut serving => {
            stop_health.cancel();
            stop_firing.cancel();
            stop_scheduler.cancel();
            stop_serving.cancel();
            tasks.close();
            // The HTTP listener stops within its own close timeout.
            let _ = tokio::time::timeout(STOP_TIMEOUT * 2, tasks.wait()).await;
            return Err(match result {
                Ok(Ok(())) => ServerError::StoppedEarly,
                Ok(Err(e)) => ServerError::Transport(e),
                Err(e) => ServerError::Task(e),
            });
        }
    }

    stop_health.cancel();
    // Joined first, so that it cannot set SERVING after this.
    let _ = health_follower.await;
    set_health(&health, ServingStatus::NotServing).await;
    stop_firing.cancel();
    shared.begin_drain();
    // A failed broker resolves nothing any more: stop at once.
    let drain_deadline = match shared.failure() {
        Some(_) => tokio::time::Instant::now(),
        None => {
            info!(drain_timeout = %humantime::format_duration(config.drain_timeout), "draining: no new work, waiting for leased jobs");
            tokio::time::Instant::now() + config.drain_timeout
        }
    };
    let still_leased = shared.leases_resolved(drain_deadline).await;
    let (unfinished, durable) = shared.unfinished().await;
    if still_leased > 0 {
        warn!(still_leased, "drain ended with jobs still leased");
    }
    if unfinished > 0 && !durable {
        warn!(
            unfinished,
            "memory-only broker: unfinished jobs are lost with this process"
        );
    }

    end_streams.cancel();
    stop_serving.cancel();
    if tokio::time::timeout(STOP_TIMEOUT, &mut serving)
        .await
        .is_err()
    {
        info!("closing connections that are still open after the drain");
        serving.abort();
    }
    stop_scheduler.cancel();
    tasks.close();
    tasks.wait().await;
    shared.close().await;
    if let Some(why) = shared.failure() {
        return Err(ServerError::Failed(why));
    }
    info!(still_leased, unfinished, "broker stopped");
    Ok(DrainReport {
        still_leased,
        unfinished,
    })
}

/// Keeps health SERVING while the backend can serve, NOT_SERVING while it
/// cannot (its database unreachable, say), until `stop`.
async fn follow_backend(
    health: tonic_health::server::HealthReporter,
    mut serving: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            changed = serving.changed() => if changed.is_err() { return },
        }
        let status = status_of(*serving.borrow_and_update());
        set_health(&health, status).await;
    }
}

fn status_of(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

/// Sets the overall status ("") and `sluice.v1.Broker`'s alike.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <BrokerServer<BrokerService> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
