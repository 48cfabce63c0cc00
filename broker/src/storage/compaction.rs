//! Giving the space of finished jobs back to the disk: redb reuses free
//! pages on its own, but only compaction shrinks the file. It runs once the
//! writer has been idle for [`IDLE`] after [`COMPACT_AFTER_REMOVALS`]
//! removals, and on close; compacting at every idle instant stalled commits.

use redb::Database;
use tracing::{debug, warn};

/// Jobs removed before the writer, once idle for [`IDLE`], compacts the file.
pub(super) const COMPACT_AFTER_REMOVALS: usize = 100_000;
/// How long the writer waits for a batch before it counts as idle.
pub(super) const IDLE: std::time::Duration = std::time::Duration::from_millis(500);

/// Moves live pages to the front of the file and truncates it.
pub(super) fn compact(db: &mut Database) {
    let started = std::time::Instant::now();
    loop {
        match db.compact() {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // Only space is lost: the data is intact.
                warn!(error = %e, "compacting the data directory failed");
                break;
            }
        }
    }
    debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "data directory compacted"
    );
}
