//! Recovery: the queue to serve, rebuilt from the data directory (its
//! records stream into a [`Restorer`], never all in memory at once), or
//! empty and memory-only without one.

use rand::TryRngCore as _;
use sluice_queue::{IdSecret, Queue, QueueConfig, Restorer, Secrets};
use tracing::{info, warn};

use std::path::Path;

use super::schedules::ScheduleTable;
use super::sources::{self, SourceTable};
use crate::backend::OpenError;
use crate::clock::{Clock, TokioClock};
use crate::fatal::Fatal;
use crate::storage::Store;

/// The queue to serve: rebuilt from the data directory, or empty and
/// memory-only without one.
pub(super) async fn open_queue(
    config: &QueueConfig,
    data_dir: Option<&Path>,
    clock: &TokioClock,
    fatal: &Fatal,
) -> Result<(Queue, Option<Store>, ScheduleTable, SourceTable), OpenError> {
    let secrets = os_secrets()?;
    let Some(dir) = data_dir.map(Path::to_path_buf) else {
        warn!("memory-only (no --data-dir): jobs do not survive a restart of the broker");
        return Ok((
            Queue::new(config.clone(), secrets),
            None,
            ScheduleTable::default(),
            SourceTable::new(),
        ));
    };
    let started = std::time::Instant::now();
    let fatal = fatal.clone();
    let mut restorer = Restorer::new(config.clone(), secrets, clock.now());
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut recovered = 0u64;
            let opened = Store::open(&dir, secrets.ids, fatal, |job| {
                recovered += 1;
                restorer.add(job)
            });
            opened.map(|(store, meta)| (store, meta, restorer, recovered))
        })
        .await?
    };
    let (store, mut meta, restorer, recovered) = opened?;
    let schedules =
        ScheduleTable::restore(std::mem::take(&mut meta.schedules)).map_err(OpenError::Records)?;
    let sources =
        sources::restore(std::mem::take(&mut meta.sources)).map_err(OpenError::Records)?;
    let queue = restorer.finish(meta).map_err(OpenError::Restore)?;
    info!(
        data_dir = %dir.display(),
        recovered_jobs = recovered,
        unfinished = queue.unfinished_count(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered the data directory"
    );
    Ok((queue, Some(store), schedules, sources))
}

/// The queue's secrets, from the operating system's generator: the seed of
/// its lease ids and jitter, and for a new store the secret of its job ids.
fn os_secrets() -> Result<Secrets, OpenError> {
    let mut os = rand::rngs::OsRng;
    let mut secrets = Secrets {
        seed: [0; 32],
        ids: IdSecret {
            instance: [0; 8],
            key: [0; 16],
        },
    };
    os.try_fill_bytes(&mut secrets.seed)
        .and_then(|()| os.try_fill_bytes(&mut secrets.ids.instance))
        .and_then(|()| os.try_fill_bytes(&mut secrets.ids.key))
        .map_err(|e| OpenError::Random(e.to_string()))?;
    Ok(secrets)
}
