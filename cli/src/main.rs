//! `sluice`: the operator's command line for a Sluice broker. Enqueue
//! jobs, read stats and workers, list, show, retry and cancel jobs, pause,
//! resume and purge queues, keep schedules, watch it all live with `top`.
//!
//! This file owns the flags (clap) and the exit status: every failure is
//! a [`CliError`], printed here as one `sluice: ...` line and turned into
//! 1 (refused, unreachable, local failure) or 2 (usage), the one mapping.
//!
//! - [`connect`]: the worker's connection options, and the connection.
//! - [`commands`]: one module per subcommand group.
//! - [`output`]: tables, JSON, formatting; [`view`]: the messages as shown.
//! - [`top`]: the live view. [`trace`]: W3C trace context checks.

mod commands;
mod connect;
mod error;
mod output;
mod top;
mod trace;
mod view;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;

use commands::enqueue::EnqueueArgs;
use commands::jobs::JobsCommand;
use commands::queue::QueueCommand;
use commands::schedules::ScheduleCommand;
use commands::sources::SourcesCommand;
use connect::ConnectArgs;
use error::CliError;
use output::Format;
use top::TopArgs;

/// The Sluice command line: operate a Sluice broker over gRPC.
#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about,
    after_help = "The token sent to the broker as `authorization: Bearer TOKEN` is read from \
                  the SLUICE_TOKEN environment variable, or from --token-file; not both.\n\
                  Exit status: 0 success, 1 a refused request or an unreachable broker, \
                  2 a usage error."
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Output format: aligned columns for people, or JSON for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueues a job; prints its id.
    Enqueue(Box<EnqueueArgs>),
    /// Enqueues many jobs, one JSON object per line of FILE or standard
    /// input, over one stream; prints each job's line and id.
    EnqueueLines(commands::enqueue_lines::EnqueueLinesArgs),
    /// Per queue: jobs ready, scheduled, leased, dead; paused; oldest
    /// ready age; rates over the last minute. Then the latest failures.
    Stats,
    /// The connected workers: their queues, jobs in flight, since when.
    Workers,
    /// Lists, shows, retries and cancels jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Pauses, resumes and purges queues; shows and sets their limits.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// A queue's busiest keys: jobs in flight and ready, and what holds them.
    Keys(commands::limits::KeysArgs),
    /// Creates, shows, lists, pauses, resumes, triggers, deletes and
    /// applies schedules (periodic jobs).
    #[command(subcommand)]
    Schedules(ScheduleCommand),
    /// Lists a source group's partitions (the Kafka source's claims and
    /// positions) and sets one's position.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// A live view of queues, workers and failures (q to quit).
    Top(TopArgs),
    /// Prints a shell completion script (e.g. `sluice completions bash`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let format = cli.output;
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, "sluice", &mut script);
        return output::print(&String::from_utf8_lossy(&script));
    }
    // Arguments that need no broker are checked before connecting.
    let enqueue = match &cli.command {
        Command::Enqueue(args) => Some(commands::enqueue::prepare(args)?),
        _ => None,
    };
    let lines = match &cli.command {
        Command::EnqueueLines(args) => Some(commands::enqueue_lines::prepare(args)?),
        _ => None,
    };
    let (command, schedules) = match cli.command {
        Command::Schedules(command) => (None, Some(commands::schedules::prepare(command)?)),
        command => (Some(command), None),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("starting the runtime: {e}")))?;
    let mut conn = runtime.block_on(connect::connect(&cli.connect))?;
    if let Some(prepared) = schedules {
        return runtime.block_on(commands::schedules::run(&mut conn, prepared, format));
    }
    match command {
        None => Ok(()),
        Some(Command::Top(args)) => top::run(&runtime, conn, cli.connect.broker, &args),
        Some(command) => runtime.block_on(async move {
            match command {
                Command::Enqueue(_) => match enqueue {
                    Some(request) => commands::enqueue::run(&mut conn, request, format).await,
                    None => Ok(()),
                },
                Command::EnqueueLines(_) => match lines {
                    Some(lines) => commands::enqueue_lines::run(&mut conn, lines, format).await,
                    None => Ok(()),
                },
                Command::Stats => commands::stats::stats(&mut conn, format).await,
                Command::Workers => commands::stats::workers(&mut conn, format).await,
                Command::Jobs(jobs) => commands::jobs::run(&mut conn, jobs, format).await,
                Command::Queue(queue) => commands::queue::run(&mut conn, queue, format).await,
                Command::Keys(args) => commands::limits::keys(&mut conn, args, format).await,
                Command::Sources(sources) => {
                    commands::sources::run(&mut conn, sources, format).await
                }
                Command::Top(_) | Command::Completions { .. } | Command::Schedules(_) => Ok(()),
            }
        }),
    }
}
