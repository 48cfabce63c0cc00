//! `sluice stats` (per queue: counts by state, oldest ready age, rates over
//! the last minute; the latest failures) and `sluice workers` (the open
//! Lease streams).

use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{
    Format, Table, age_text, ago_text, one_line, print, print_json, print_table, rate_text,
    std_duration,
};
use crate::view::{stats_json, workers_json};

/// The columns of a queue's row, in `sluice stats` and `sluice top`.
pub const QUEUE_COLUMNS: [&str; 10] = [
    "QUEUE", "READY", "SCHED", "LEASED", "DEAD", "PAUSED", "OLDEST", "ENQ/S", "ACK/S", "FAIL/S",
];

/// The cells of `q`'s row, under [`QUEUE_COLUMNS`].
pub fn queue_cells(q: &pb::QueueStats) -> Vec<String> {
    vec![
        q.queue.clone(),
        q.ready.to_string(),
        q.scheduled.to_string(),
        q.leased.to_string(),
        q.dead.to_string(),
        if q.paused { "yes" } else { "no" }.to_owned(),
        std_duration(q.oldest_ready_age.as_ref()).map_or_else(|| "-".to_owned(), age_text),
        rate_text(q.enqueued_per_second),
        rate_text(q.acked_per_second),
        rate_text(q.failed_per_second),
    ]
}

/// The Stats table of `queues`: one row per queue, readable at 80 columns.
pub fn queues_table(queues: &[pb::QueueStats]) -> Table {
    let mut table = Table::new(&QUEUE_COLUMNS);
    for q in queues {
        table.row(queue_cells(q));
    }
    table
}

/// The latest failed attempts, at most `limit`, newest first.
pub fn failures_table(failures: &[pb::FailedAttempt], limit: usize) -> Table {
    let mut table = Table::new(&["AGO", "QUEUE", "TYPE", "ATTEMPT", "DEAD", "ERROR"]);
    for f in failures.iter().take(limit) {
        table.row(vec![
            ago_text(f.failed_at.as_ref()),
            f.queue.clone(),
            f.job_type.clone(),
            f.attempt.to_string(),
            if f.dead { "yes" } else { "no" }.to_owned(),
            one_line(&f.error, 40),
        ]);
    }
    table
}

/// The workers table.
pub fn workers_table(workers: &[pb::WorkerInfo]) -> Table {
    let mut table = Table::new(&["WORKER", "QUEUES", "TYPES", "IN FLIGHT", "CONNECTED"]);
    for w in workers {
        let types = if w.job_types.is_empty() {
            "*".to_owned()
        } else {
            w.job_types.join(",")
        };
        table.row(vec![
            w.worker_id.clone(),
            one_line(&w.queues.join(","), 24),
            one_line(&types, 20),
            format!("{}/{}", w.in_flight, w.max_in_flight),
            format!("{} ago", ago_text(w.connected_since.as_ref())),
        ]);
    }
    table
}

/// Prints the broker's Stats.
///
/// # Errors
/// The broker's refusal.
pub async fn stats(conn: &mut Connection, format: Format) -> Result<(), CliError> {
    let stats = conn.stats().await?;
    match format {
        Format::Json => print_json(&stats_json(&stats)),
        Format::Table => {
            print_table(&queues_table(&stats.queues), "no queues yet")?;
            if !stats.recent_failures.is_empty() {
                print("\nrecent failures:\n")?;
                print(&failures_table(&stats.recent_failures, 5).render())?;
            }
            Ok(())
        }
    }
}

/// Prints the connected workers.
///
/// # Errors
/// The broker's refusal.
pub async fn workers(conn: &mut Connection, format: Format) -> Result<(), CliError> {
    let workers = conn.workers().await?;
    match format {
        Format::Json => print_json(&workers_json(&workers)),
        Format::Table => print_table(&workers_table(&workers), "no workers connected"),
    }
}
