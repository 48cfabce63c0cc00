//! `sluice schedules create|get|list|delete|pause|resume|trigger|apply`.
//! `create` takes one schedule from flags or any number from a file
//! (`--file`, see `schedule_file.rs`); `apply` makes the broker's list
//! match a file (each schedule created or replaced, and with `--prune`
//! the others deleted), idempotently, so the file can live in version
//! control. `create` and `get` print the next five fire times.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use humantime::Duration as Human;
use serde_json::{Value, json};
use sluice_proto::json::{catch_up_name, overlap_name, schedule_json, state_name};
use sluice_proto::v1 as pb;

use super::schedule_file;
use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{Format, Table, print, print_json, print_table, timestamp_text};

/// `sluice schedules ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Creates a schedule from flags, or the schedules of --file.
    Create(Box<CreateArgs>),
    /// Shows a schedule, its next five fire times and its recent runs.
    Get {
        /// The schedule.
        name: String,
    },
    /// Lists the schedules.
    List,
    /// Deletes a schedule (its jobs stay).
    Delete {
        /// The schedule.
        name: String,
    },
    /// Stops a schedule firing.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Fires a paused schedule again, from its next tick on.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Enqueues one run of a schedule now; prints the job's id.
    Trigger {
        /// The schedule.
        name: String,
    },
    /// Makes the broker's schedules match a file: each created or
    /// replaced (unchanged if the same); with --prune, the others deleted.
    Apply {
        /// The schedule file (TOML).
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        /// Delete the schedules the file does not name.
        #[arg(long)]
        prune: bool,
    },
}

/// Flags of `sluice schedules create`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("timing").multiple(false))]
#[command(group = clap::ArgGroup::new("body").multiple(false))]
pub struct CreateArgs {
    /// The schedule's name (not with --file).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    name: Option<String>,
    /// Cron expression: five fields, or six with seconds first, or
    /// @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long, value_name = "EXPR", group = "timing")]
    cron: Option<String>,
    /// A fixed interval instead (`30s`, `15m`, `1h`).
    #[arg(long, value_name = "DURATION", group = "timing")]
    every: Option<Human>,
    /// IANA time zone of the cron expression (default UTC).
    #[arg(long = "tz", value_name = "ZONE")]
    time_zone: Option<String>,
    /// The queue of the jobs.
    #[arg(long)]
    queue: Option<String>,
    /// The job type of the jobs.
    #[arg(long = "type", value_name = "TYPE", required_unless_present = "file")]
    job_type: Option<String>,
    /// The payload: this JSON text (checked to be JSON).
    #[arg(long, value_name = "DOC", group = "body")]
    json: Option<String>,
    /// The payload: this text.
    #[arg(long, value_name = "TEXT", group = "body")]
    payload: Option<String>,
    /// A header, NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Higher runs first.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// The flow-control key of each tick's job.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Attempts before a job is DEAD (default: the broker's).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Per-attempt run limit (default: the broker's).
    #[arg(long)]
    timeout: Option<Human>,
    /// Ticks missed while no broker ran: skip them, fire the latest one,
    /// or all (at most 100).
    #[arg(long, value_name = "skip|one|all", value_parser = parse_catch_up)]
    catch_up: Option<pb::CatchUp>,
    /// A tick while the previous tick's job is unfinished: enqueue anyway,
    /// skip it, or cancel the previous job.
    #[arg(long, value_name = "allow|skip|cancel-previous", value_parser = parse_overlap)]
    overlap: Option<pb::Overlap>,
    /// No tick before this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    start_at: Option<SystemTime>,
    /// No tick after this time (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_time)]
    end_at: Option<SystemTime>,
    /// Replace a schedule of the same name instead of refusing.
    #[arg(long)]
    upsert: bool,
    /// Create the schedules of this file (TOML) instead of one from flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["cron", "every", "job_type"])]
    file: Option<PathBuf>,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

/// `skip`, `one` or `all`.
pub fn parse_catch_up(s: &str) -> Result<pb::CatchUp, String> {
    [pb::CatchUp::Skip, pb::CatchUp::One, pb::CatchUp::All]
        .into_iter()
        .find(|p| catch_up_name(*p) == s)
        .ok_or_else(|| format!("{s:?} is not skip, one or all"))
}

/// `allow`, `skip` or `cancel-previous`.
pub fn parse_overlap(s: &str) -> Result<pb::Overlap, String> {
    [
        pb::Overlap::Allow,
        pb::Overlap::Skip,
        pb::Overlap::CancelPrevious,
    ]
    .into_iter()
    .find(|p| overlap_name(*p) == s)
    .ok_or_else(|| format!("{s:?} is not allow, skip or cancel-previous"))
}

/// An RFC 3339 time.
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2030-01-02T03:04:05Z)"))
}

/// One schedule's definition, from flags or from a file.
#[derive(Debug, Default)]
pub struct ScheduleFields {
    pub name: String,
    pub cron: Option<String>,
    pub every: Option<Duration>,
    pub time_zone: Option<String>,
    pub queue: Option<String>,
    pub job_type: String,
    pub json: Option<String>,
    pub payload: Option<String>,
    pub headers: Vec<(String, String)>,
    pub priority: Option<i32>,
    pub key: Option<String>,
    pub max_attempts: Option<u32>,
    pub timeout: Option<Duration>,
    pub catch_up: Option<pb::CatchUp>,
    pub overlap: Option<pb::Overlap>,
    pub start_at: Option<SystemTime>,
    pub end_at: Option<SystemTime>,
}

impl ScheduleFields {
    /// The contract's schedule; the broker checks the rest (the
    /// expression, the zone, the names), naming the field.
    ///
    /// # Errors
    /// Both `json` and `payload`, or `json` that is not JSON.
    pub fn into_schedule(self) -> Result<pb::Schedule, String> {
        let payload = match (self.json, self.payload) {
            (Some(_), Some(_)) => return Err("give json or payload, not both".into()),
            (Some(json), None) => {
                serde_json::from_str::<Value>(&json)
                    .map_err(|e| format!("json is not JSON: {e}"))?;
                json.into_bytes()
            }
            (None, Some(text)) => text.into_bytes(),
            (None, None) => Vec::new(),
        };
        Ok(pb::Schedule {
            name: self.name,
            cron: self.cron.unwrap_or_default(),
            every: self.every.map(sluice_proto::duration_to_pb),
            time_zone: self.time_zone.unwrap_or_default(),
            job: Some(pb::JobTemplate {
                queue: self.queue.unwrap_or_default(),
                job_type: self.job_type,
                payload: payload.into(),
                headers: self.headers.into_iter().collect(),
                priority: self.priority.unwrap_or(0),
                max_attempts: self.max_attempts.unwrap_or(0),
                timeout: self.timeout.map(sluice_proto::duration_to_pb),
                key: self.key.unwrap_or_default(),
            }),
            catch_up: self.catch_up.unwrap_or(pb::CatchUp::Skip).into(),
            overlap: self.overlap.unwrap_or(pb::Overlap::Allow).into(),
            start_at: self.start_at.map(prost_types::Timestamp::from),
            end_at: self.end_at.map(prost_types::Timestamp::from),
            ..Default::default()
        })
    }
}

impl CreateArgs {
    /// The schedules to create: the file's, or the one of the flags.
    fn schedules(self) -> Result<Vec<pb::Schedule>, CliError> {
        if let Some(file) = &self.file {
            return schedule_file::read(file);
        }
        let fields = ScheduleFields {
            name: self.name.unwrap_or_default(),
            cron: self.cron,
            every: self.every.map(Into::into),
            time_zone: self.time_zone,
            queue: self.queue,
            job_type: self.job_type.unwrap_or_default(),
            json: self.json,
            payload: self.payload,
            headers: self.headers,
            priority: self.priority,
            key: self.key,
            max_attempts: self.max_attempts,
            timeout: self.timeout.map(Into::into),
            catch_up: self.catch_up,
            overlap: self.overlap,
            start_at: self.start_at,
            end_at: self.end_at,
        };
        Ok(vec![fields.into_schedule().map_err(CliError::Usage)?])
    }
}

/// Checks what needs no broker: the flags or file of `create` and
/// `apply`, read before connecting.
///
/// # Errors
/// [`CliError::Usage`] for a bad flag or file.
pub fn prepare(command: ScheduleCommand) -> Result<Prepared, CliError> {
    Ok(match command {
        ScheduleCommand::Create(args) => {
            let upsert = args.upsert;
            Prepared::Create(args.schedules()?, upsert)
        }
        ScheduleCommand::Apply { file, prune } => {
            Prepared::Apply(schedule_file::read(&file)?, prune)
        }
        other => Prepared::Other(other),
    })
}

/// A subcommand with its flags and files read.
#[derive(Debug)]
pub enum Prepared {
    /// Schedules to create, and whether to replace existing ones.
    Create(Vec<pb::Schedule>, bool),
    /// A file's schedules to apply, and whether to prune.
    Apply(Vec<pb::Schedule>, bool),
    /// The rest.
    Other(ScheduleCommand),
}

/// Runs a `schedules` subcommand.
///
/// # Errors
/// The broker's refusal.
pub async fn run(conn: &mut Connection, command: Prepared, format: Format) -> Result<(), CliError> {
    let refused = |s: tonic::Status| CliError::from_status(&s);
    match command {
        Prepared::Create(schedules, upsert) => {
            let mut created = Vec::new();
            for schedule in schedules {
                let name = schedule.name.clone();
                let answer = conn
                    .admin
                    .create_schedule(pb::CreateScheduleRequest {
                        schedule: Some(schedule),
                        upsert,
                    })
                    .await
                    .map_err(|s| with_name(&name, &s))?
                    .into_inner();
                created.push(answer);
            }
            match format {
                Format::Json if created.len() == 1 => print_json(&schedule_json(&created[0])),
                Format::Json => {
                    print_json(&Value::Array(created.iter().map(schedule_json).collect()))
                }
                Format::Table => print(&created.iter().map(detail).collect::<Vec<_>>().join("\n")),
            }
        }
        Prepared::Apply(schedules, prune) => apply(conn, schedules, prune, format).await,
        Prepared::Other(command) => match command {
            ScheduleCommand::Get { name } => {
                let schedule = conn
                    .admin
                    .get_schedule(pb::GetScheduleRequest { name })
                    .await
                    .map_err(refused)?
                    .into_inner();
                match format {
                    Format::Json => print_json(&schedule_json(&schedule)),
                    Format::Table => print(&detail(&schedule)),
                }
            }
            ScheduleCommand::List => {
                let schedules = list(conn).await?;
                match format {
                    Format::Json => {
                        print_json(&Value::Array(schedules.iter().map(schedule_json).collect()))
                    }
                    Format::Table => {
                        let mut table = Table::new(&[
                            "NAME", "TIMING", "ZONE", "QUEUE", "NEXT", "LAST", "LAST JOB", "PAUSED",
                        ]);
                        for s in &schedules {
                            table.row(vec![
                                s.name.clone(),
                                timing(s),
                                zone(s).to_owned(),
                                s.job.as_ref().map(|j| j.queue.clone()).unwrap_or_default(),
                                timestamp_text(s.next_fire_at.as_ref()),
                                timestamp_text(s.last_fired_at.as_ref()),
                                last_state(s),
                                if s.paused { "yes" } else { "no" }.to_owned(),
                            ]);
                        }
                        print_table(&table, "no schedules")
                    }
                }
            }
            ScheduleCommand::Delete { name } => {
                conn.admin
                    .delete_schedule(pb::DeleteScheduleRequest { name: name.clone() })
                    .await
                    .map_err(refused)?;
                match format {
                    Format::Json => print_json(&json!({"name": name, "deleted": true})),
                    Format::Table => print(&format!("schedule {name} deleted\n")),
                }
            }
            ScheduleCommand::Pause { name } => {
                let s = conn
                    .admin
                    .pause_schedule(pb::PauseScheduleRequest { name })
                    .await
                    .map_err(refused)?
                    .into_inner();
                paused(&s, format)
            }
            ScheduleCommand::Resume { name } => {
                let s = conn
                    .admin
                    .resume_schedule(pb::ResumeScheduleRequest { name })
                    .await
                    .map_err(refused)?
                    .into_inner();
                paused(&s, format)
            }
            ScheduleCommand::Trigger { name } => {
                let job_id = conn
                    .admin
                    .trigger_schedule(pb::TriggerScheduleRequest { name: name.clone() })
                    .await
                    .map_err(refused)?
                    .into_inner()
                    .job_id;
                match format {
                    Format::Json => print_json(&json!({"name": name, "job_id": job_id})),
                    Format::Table => print(&format!("{job_id}\n")),
                }
            }
            ScheduleCommand::Create(_) | ScheduleCommand::Apply { .. } => Ok(()),
        },
    }
}

async fn list(conn: &mut Connection) -> Result<Vec<pb::Schedule>, CliError> {
    Ok(conn
        .admin
        .list_schedules(pb::ListSchedulesRequest::default())
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner()
        .schedules)
}

/// `apply`: each schedule of the file created, replaced or left as it
/// is; with `prune`, the broker's others deleted.
async fn apply(
    conn: &mut Connection,
    schedules: Vec<pb::Schedule>,
    prune: bool,
    format: Format,
) -> Result<(), CliError> {
    let before = list(conn).await?;
    let mut outcome: Vec<(String, &'static str)> = Vec::new();
    let named: std::collections::HashSet<String> =
        schedules.iter().map(|s| s.name.clone()).collect();
    for schedule in schedules {
        let name = schedule.name.clone();
        let old = before.iter().find(|s| s.name == name);
        let answer = conn
            .admin
            .create_schedule(pb::CreateScheduleRequest {
                schedule: Some(schedule),
                upsert: true,
            })
            .await
            .map_err(|s| with_name(&name, &s))?
            .into_inner();
        let what = match old {
            None => "created",
            Some(old) if old.updated_at == answer.updated_at => "unchanged",
            Some(_) => "updated",
        };
        outcome.push((name, what));
    }
    if prune {
        for old in before.iter().filter(|s| !named.contains(&s.name)) {
            conn.admin
                .delete_schedule(pb::DeleteScheduleRequest {
                    name: old.name.clone(),
                })
                .await
                .map_err(|s| with_name(&old.name, &s))?;
            outcome.push((old.name.clone(), "deleted"));
        }
    }
    match format {
        Format::Json => print_json(&Value::Array(
            outcome
                .iter()
                .map(|(name, what)| json!({"name": name, "result": what}))
                .collect(),
        )),
        Format::Table => {
            let mut table = Table::new(&["NAME", "RESULT"]);
            for (name, what) in outcome {
                table.row(vec![name, what.to_owned()]);
            }
            print_table(&table, "nothing to apply")
        }
    }
}

/// A refusal about schedule `name`, saying which.
fn with_name(name: &str, status: &tonic::Status) -> CliError {
    let mut status = status.clone();
    let message = format!("schedule {name:?}: {}", status.message());
    status = tonic::Status::new(status.code(), message);
    CliError::from_status(&status)
}

fn paused(s: &pb::Schedule, format: Format) -> Result<(), CliError> {
    match format {
        Format::Json => print_json(&json!({"name": s.name, "paused": s.paused})),
        Format::Table => print(&format!(
            "schedule {} {}\n",
            s.name,
            if s.paused { "paused" } else { "resumed" }
        )),
    }
}

fn timing(s: &pb::Schedule) -> String {
    if s.cron.is_empty() {
        let every = s
            .every
            .and_then(|d| Duration::try_from(d).ok())
            .unwrap_or_default();
        format!("every {}", humantime::format_duration(every))
    } else {
        s.cron.clone()
    }
}

fn zone(s: &pb::Schedule) -> &str {
    if s.time_zone.is_empty() {
        "UTC"
    } else {
        &s.time_zone
    }
}

fn last_state(s: &pb::Schedule) -> String {
    match s.last_job_state() {
        pb::JobState::Unspecified => "-".to_owned(),
        state => state_name(state).to_owned(),
    }
}

/// A schedule for people: its fields, next fire times and recent runs.
fn detail(s: &pb::Schedule) -> String {
    let job = s.job.clone().unwrap_or_default();
    let mut out = format!(
        "name:          {}\ntiming:        {} ({})\nzone:          {}\njob:           {} in queue {}\n\
         catch-up:      {}\noverlap:       {}\npaused:        {}\nlast fired:    {}\nlast job:      {}\n",
        s.name,
        timing(s),
        s.description,
        zone(s),
        job.job_type,
        job.queue,
        catch_up_name(s.catch_up()),
        overlap_name(s.overlap()),
        if s.paused { "yes" } else { "no" },
        timestamp_text(s.last_fired_at.as_ref()),
        if s.last_job_id.is_empty() {
            "-".to_owned()
        } else {
            format!("{} {}", s.last_job_id, last_state(s))
        },
    );
    out.push_str("next fire times:\n");
    if s.upcoming.is_empty() {
        out.push_str("  -\n");
    }
    for t in &s.upcoming {
        out.push_str(&format!("  {}\n", timestamp_text(Some(t))));
    }
    if !s.recent_runs.is_empty() {
        out.push_str("recent runs:\n");
        for run in &s.recent_runs {
            let state = match run.state() {
                pb::JobState::Unspecified => "-",
                state => state_name(state),
            };
            out.push_str(&format!(
                "  {}  {}  {}{}\n",
                timestamp_text(run.scheduled_for.as_ref()),
                run.job_id,
                state,
                if run.triggered { "  (triggered)" } else { "" }
            ));
        }
    }
    out
}
