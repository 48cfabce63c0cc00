//! `sluice sources list|set`: a source group's partitions (the Kafka
//! source's claims: holder, epoch, position) and, for an admin of every
//! queue, setting one partition's position by offset (`sluice-kafka
//! reset` does the same from a time, asking Kafka).

use clap::Subcommand;
use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{Format, Table, print, print_json, print_table, timestamp_text};
use crate::view::source_group_json;

/// `sluice sources ...`.
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// The group's partitions (holder, epoch, position) and live members.
    List {
        /// The source group.
        group: String,
    },
    /// Moves one partition of the group to an offset (or to none: its next
    /// holder picks its start again); its holder is fenced and reads from
    /// there at its next claim. Records already enqueued stay: moving back
    /// enqueues them again.
    Set {
        /// The source group.
        group: String,
        /// The stream (Kafka topic).
        #[arg(long)]
        stream: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// The offset of the next record to enqueue, or `none`.
        #[arg(long)]
        to: String,
    },
}

/// Runs a `sources` subcommand.
///
/// # Errors
/// The broker's refusal; [`CliError::Usage`] for a `--to` that is neither
/// an offset nor `none`.
pub async fn run(
    conn: &mut Connection,
    command: SourcesCommand,
    format: Format,
) -> Result<(), CliError> {
    let (group, partitions) = match command {
        SourcesCommand::List { group } => {
            let listed = conn
                .admin
                .list_source_partitions(pb::ListSourcePartitionsRequest {
                    group: group.clone(),
                })
                .await
                .map_err(|s| CliError::from_status(&s))?
                .into_inner();
            if format == Format::Json {
                return print_json(&source_group_json(&group, &listed));
            }
            print(&format!("members: {}\n", listed.members.join(", ")))?;
            (group, listed.partitions)
        }
        SourcesCommand::Set {
            group,
            stream,
            partition,
            to,
        } => {
            let position = match to.as_str() {
                "none" => None,
                offset => Some(offset.parse::<i64>().map_err(|_| {
                    CliError::Usage(format!("--to {to:?}: an offset (0 or more) or none"))
                })?),
            };
            let set = conn
                .admin
                .set_source_positions(pb::SetSourcePositionsRequest {
                    group: group.clone(),
                    positions: vec![pb::SourcePosition {
                        stream,
                        partition,
                        position,
                    }],
                })
                .await
                .map_err(|s| CliError::from_status(&s))?
                .into_inner();
            let listed = pb::ListSourcePartitionsResponse {
                partitions: set.partitions,
                members: Vec::new(),
            };
            if format == Format::Json {
                return print_json(&source_group_json(&group, &listed));
            }
            (group, listed.partitions)
        }
    };
    let mut table = Table::new(&[
        "STREAM",
        "PARTITION",
        "HOLDER",
        "EPOCH",
        "POSITION",
        "HELD UNTIL",
    ]);
    for p in &partitions {
        table.row(vec![
            p.stream.clone(),
            p.partition.to_string(),
            if p.holder.is_empty() {
                "-".to_owned()
            } else {
                p.holder.clone()
            },
            p.epoch.to_string(),
            p.position
                .map_or_else(|| "-".to_owned(), |at| at.to_string()),
            timestamp_text(p.held_until.as_ref()),
        ]);
    }
    print_table(&table, &format!("source group {group:?} has no partition"))
}
