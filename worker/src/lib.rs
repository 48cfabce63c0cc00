//! Sluice's worker library: lease jobs from a Sluice broker and run them
//! with handlers registered by job type.
//!
//! ```no_run
//! use sluice_worker::{Worker, Job, JobContext, JobResult};
//!
//! async fn send_email(job: Job, ctx: JobContext) -> JobResult {
//!     tokio::select! {
//!         () = ctx.cancelled() => Err(sluice_worker::JobError::retry("cancelled")),
//!         () = tokio::time::sleep(std::time::Duration::from_millis(100)) => Ok(()),
//!     }
//! }
//!
//! # async fn run() -> Result<(), sluice_worker::WorkerError> {
//! let worker = Worker::builder("http://127.0.0.1:50051")
//!     .concurrency(8)
//!     .handler("email", send_email)
//!     .build()?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let summary = worker.run(shutdown).await?;
//! # Ok(()) }
//! ```
//!
//! - [`handler`]: the [`Handler`] trait, [`Job`], [`JobContext`], [`JobError`].
//! - [`runner`]: the [`Worker`]: lease stream, concurrency, drain.
//! - `job_task`: one attempt: timeout, heartbeats, panic capture, reporting.
//! - [`client`]: the boundary with the broker: the [`client::Link`] trait
//!   that the runner and job tasks call, the worker's own types that cross
//!   it, the one [`BrokerError`], and [`client::BrokerLink`], its gRPC
//!   implementation and the only code that sees protobuf or tonic types.
//! - [`defaults`]: the default of every setting.
//! - [`metrics`]: [`metrics::WorkerMetrics`], Prometheus counters of what
//!   the worker does, served by the binary's `--http-addr`.
//! - [`timing`]: the graces and retry bounds that depend on each other
//!   (stop, kill, release, exit), with their relations checked at compile time.
//! - [`exec`] and [`supervisor`]: running a program per job, as the
//!   `sluice-worker` binary does; [`hardening`]: keeping the worker's
//!   secrets from the programs it runs.

mod backoff;
pub mod client;
pub mod defaults;
pub mod error;
pub mod exec;
pub mod handler;
pub mod hardening;
mod job_task;
pub mod metrics;
pub mod runner;
mod summary;
pub mod supervisor;
pub mod timing;

pub use client::{BrokerError, BrokerErrorKind};
pub use error::WorkerError;
pub use handler::{Handler, Job, JobContext, JobError, JobResult};
pub use runner::{Worker, WorkerBuilder};
pub use summary::Summary;
