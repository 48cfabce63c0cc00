//! The subcommands, one file per group: each defines its flags (clap) and
//! runs against a [`crate::connect::Connection`], printing through
//! [`crate::output`] and returning a [`crate::error::CliError`].

pub mod enqueue;
pub mod enqueue_lines;
pub mod jobs;
pub mod limits;
pub mod queue;
pub mod schedule_file;
pub mod schedules;
pub mod sources;
pub mod stats;
