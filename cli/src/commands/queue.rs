//! `sluice queue pause|resume|purge|limits` (limits: `limits.rs`). Purge deletes jobs for good, so it
//! asks first on a terminal (`Purge N DEAD jobs of queue Q? [y/N]`) and,
//! without a terminal to ask on, refuses unless `--yes` says so.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::Subcommand;
use serde_json::json;
use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{Format, print, print_json};
use crate::view::{StateArg, state_name};

/// `sluice queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Stops handing out the queue's jobs (Enqueue still works).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Hands out the queue's jobs again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Deletes the queue's jobs in one state (LEASED jobs are never purged).
    Purge {
        /// The queue.
        queue: String,
        /// The state whose jobs are deleted.
        #[arg(long, value_enum)]
        state: StateArg,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Prints the queue's flow-control limits, or changes them with flags.
    Limits(super::limits::LimitsArgs),
}

/// Runs a `queue` subcommand.
///
/// # Errors
/// The broker's refusal; [`CliError::Usage`] for a purge without `--yes`
/// and without a terminal.
pub async fn run(
    conn: &mut Connection,
    command: QueueCommand,
    format: Format,
) -> Result<(), CliError> {
    match command {
        QueueCommand::Limits(args) => super::limits::run(conn, args, format).await,
        QueueCommand::Pause { queue } => {
            conn.admin
                .pause_queue(pb::PauseQueueRequest {
                    queue: queue.clone(),
                })
                .await
                .map_err(|s| CliError::from_status(&s))?;
            done(&queue, true, format)
        }
        QueueCommand::Resume { queue } => {
            conn.admin
                .resume_queue(pb::ResumeQueueRequest {
                    queue: queue.clone(),
                })
                .await
                .map_err(|s| CliError::from_status(&s))?;
            done(&queue, false, format)
        }
        QueueCommand::Purge { queue, state, yes } => {
            let state = pb::JobState::from(state);
            if !yes && !confirm(conn, &queue, state).await? {
                eprintln!("sluice: nothing purged");
                return Ok(());
            }
            let purged = conn
                .admin
                .purge_queue(pb::PurgeQueueRequest {
                    queue: queue.clone(),
                    state: state.into(),
                })
                .await
                .map_err(|s| CliError::from_status(&s))?
                .into_inner()
                .purged;
            match format {
                Format::Json => print_json(&json!({
                    "queue": queue,
                    "state": state_name(state),
                    "purged": purged,
                })),
                Format::Table => print(&format!(
                    "purged {purged} {} jobs of queue {queue}\n",
                    state_name(state)
                )),
            }
        }
    }
}

fn done(queue: &str, paused: bool, format: Format) -> Result<(), CliError> {
    match format {
        Format::Json => print_json(&json!({"queue": queue, "paused": paused})),
        Format::Table => print(&format!(
            "queue {queue} {}\n",
            if paused { "paused" } else { "resumed" }
        )),
    }
}

/// Asks on the terminal whether to purge, telling how many jobs the queue
/// holds in `state` now; refuses when standard input is not a terminal.
async fn confirm(
    conn: &mut Connection,
    queue: &str,
    state: pb::JobState,
) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "queue purge deletes jobs for good: pass --yes to purge without a terminal to confirm on"
                .into(),
        ));
    }
    let stats = conn.stats().await?;
    let count = stats
        .queues
        .iter()
        .find(|q| q.queue == queue)
        .map_or(0, |q| match state {
            pb::JobState::Scheduled => q.scheduled,
            pb::JobState::Ready => q.ready,
            pb::JobState::Leased => q.leased,
            pb::JobState::Succeeded => q.succeeded,
            pb::JobState::Dead => q.dead,
            pb::JobState::Cancelled => q.cancelled,
            pb::JobState::Unspecified => 0,
        });
    let mut stderr = std::io::stderr();
    let _ = write!(
        stderr,
        "Purge {count} {} jobs of queue {queue}? [y/N] ",
        state_name(state)
    );
    let _ = stderr.flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::Local(format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
