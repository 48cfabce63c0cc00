//! Recovery: the queue to serve, rebuilt from the data directory (its
//! records stream into a [`Restorer`], never all in memory at once), or
//! empty and memory-only without one.

use sluice_queue::{Queue, Restorer};
use tracing::{info, warn};

use std::path::Path;

use crate::clock::{Clock, TokioClock};
use crate::config::Config;
use crate::fatal::Fatal;
use crate::server::ServerError;
use crate::storage::Store;

/// The queue to serve: rebuilt from the data directory, or empty and
/// memory-only without one.
pub(super) async fn open_queue(
    config: &Config,
    data_dir: Option<&Path>,
    clock: &TokioClock,
    fatal: &Fatal,
) -> Result<(Queue, Option<Store>), ServerError> {
    let Some(dir) = data_dir.map(Path::to_path_buf) else {
        warn!("memory-only (no --data-dir): jobs do not survive a restart of the broker");
        return Ok((Queue::new(config.queue.clone(), rand::random()), None));
    };
    let started = std::time::Instant::now();
    let fatal = fatal.clone();
    let mut restorer = Restorer::new(config.queue.clone(), rand::random(), clock.now());
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut recovered = 0u64;
            let opened = Store::open(&dir, rand::random(), fatal, |job| {
                recovered += 1;
                restorer.add(job)
            });
            opened.map(|(store, meta)| (store, meta, restorer, recovered))
        })
        .await?
    };
    let (store, meta, restorer, recovered) = opened?;
    let queue = restorer.finish(meta).map_err(ServerError::Restore)?;
    info!(
        data_dir = %dir.display(),
        recovered_jobs = recovered,
        unfinished = queue.unfinished_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the data directory"
    );
    Ok((queue, Some(store)))
}
