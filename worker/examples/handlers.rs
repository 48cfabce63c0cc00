//! A worker with Rust handlers, run with
//! `cargo run -p sluice-worker --example handlers` against a broker on
//! 127.0.0.1:50051. Enqueue `email` or `resize_image` jobs with a JSON
//! payload; both simulate work and stop early when the attempt is
//! cancelled (timeout, operator cancel, forced shutdown).

use std::time::Duration;

use sluice_worker::{Job, JobContext, JobError, JobResult, Worker};
use tokio_util::sync::CancellationToken;

/// "Sends" an email: fails for good on an empty payload (nothing to send),
/// retries when the simulated server is busy.
async fn email(job: Job, ctx: JobContext) -> JobResult {
    if job.payload.is_empty() {
        return Err(JobError::permanent("empty payload: no recipient"));
    }
    if job.headers.get("simulate").is_some_and(|v| v == "busy") {
        return Err(JobError::retry("smtp server busy").with_retry_after(Duration::from_secs(5)));
    }
    work(&ctx, Duration::from_millis(200)).await?;
    println!(
        "email {} sent (attempt {}/{})",
        job.id, job.attempt, job.max_attempts
    );
    Ok(())
}

/// "Resizes" an image in steps, extending its lease for a long run and
/// checking for cancellation between steps.
async fn resize_image(job: Job, ctx: JobContext) -> JobResult {
    for step in 1..=5 {
        work(&ctx, Duration::from_millis(300)).await?;
        println!("image {}: step {step}/5", job.id);
    }
    // A long job could ask for more time explicitly; heartbeats already do.
    ctx.extend_lease(Duration::from_secs(30)).await?;
    Ok(())
}

/// Simulated work that ends early, as an error, when the attempt is cancelled.
async fn work(ctx: &JobContext, how_long: Duration) -> JobResult {
    tokio::select! {
        () = ctx.cancelled() => Err(JobError::retry("cancelled")),
        () = tokio::time::sleep(how_long) => Ok(()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let broker = std::env::var("SLUICE_BROKER").unwrap_or_else(|_| "http://127.0.0.1:50051".into());
    let worker = Worker::builder(broker)
        .concurrency(4)
        .handler("email", email)
        .handler("resize_image", resize_image)
        .build()?;
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let summary = worker.run(shutdown).await?;
    println!("{summary:?}");
    Ok(())
}
