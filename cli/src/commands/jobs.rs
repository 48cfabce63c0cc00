//! `sluice jobs list|get|retry|cancel`. Retry and cancel take many ids and
//! go on past a refused one, reporting each refusal; `retry --all-dead`
//! pages through the queue's DEAD jobs (ListJobs) and retries each
//! (RetryJob): no RPC of its own.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::{CliError, CodeName};
use crate::output::{
    Format, Table, escape_controls, one_line, print, print_json, print_table, std_duration,
    timestamp_text,
};
use crate::view::{Payload, StateArg, job_json, progress_cell, sorted, state_name};

/// `sluice jobs ...`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Lists jobs in creation order, by queue and state.
    List {
        /// Only this queue (default: every queue).
        #[arg(long)]
        queue: Option<String>,
        /// Only jobs in this state (default: every state).
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// At most this many jobs.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Shows one job: payload, headers, attempts, last error, timestamps.
    Get {
        /// The job's id.
        id: String,
    },
    /// Puts DEAD or CANCELLED jobs back to READY, attempts reset.
    Retry(RetryArgs),
    /// Cancels jobs (a LEASED one once its worker hears of it).
    Cancel {
        /// The jobs' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// Which jobs `jobs retry` retries.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "all_dead"]))]
pub struct RetryArgs {
    /// The jobs' ids.
    ids: Vec<String>,
    /// Every DEAD job of --queue.
    #[arg(long, requires = "queue", conflicts_with = "ids")]
    all_dead: bool,
    /// The queue of --all-dead.
    #[arg(long)]
    queue: Option<String>,
}

/// Runs a `jobs` subcommand.
///
/// # Errors
/// The broker's refusal; [`CliError::Partial`] when some of many requests
/// were refused.
pub async fn run(
    conn: &mut Connection,
    command: JobsCommand,
    format: Format,
) -> Result<(), CliError> {
    match command {
        JobsCommand::List {
            queue,
            state,
            limit,
        } => {
            let state = state.map_or(pb::JobState::Unspecified, pb::JobState::from);
            let jobs = list(conn, queue.unwrap_or_default(), state, limit).await?;
            print_list(&jobs, format)
        }
        JobsCommand::Get { id } => {
            let job = conn
                .admin
                .get_job(pb::GetJobRequest { job_id: id })
                .await
                .map_err(|s| CliError::from_status(&s))?
                .into_inner();
            match format {
                Format::Json => print_json(&job_json(&job, true)),
                Format::Table => print(&job_text(&job)),
            }
        }
        JobsCommand::Retry(args) => {
            let (ids, queue) = if args.all_dead {
                let queue = args.queue.unwrap_or_default();
                let dead = list(conn, queue.clone(), pb::JobState::Dead, usize::MAX).await?;
                (dead.into_iter().map(|j| j.id).collect(), Some(queue))
            } else {
                (args.ids, None)
            };
            let mut outcome = Outcome::default();
            for id in ids {
                let result = conn
                    .admin
                    .retry_job(pb::RetryJobRequest { job_id: id.clone() })
                    .await;
                outcome.record(id, result.map(|_| Value::Null));
            }
            outcome.finish("retried", queue, format)
        }
        JobsCommand::Cancel { ids } => {
            let mut outcome = Outcome::default();
            for id in ids {
                let result = conn
                    .admin
                    .cancel_job(pb::CancelJobRequest { job_id: id.clone() })
                    .await;
                let state = result.map(|r| Value::from(state_name(r.into_inner().state())));
                outcome.record(id, state);
            }
            outcome.finish("cancelled", None, format)
        }
    }
}

/// Up to `limit` jobs of `queue` (empty: all) in `state`, reading pages
/// until the broker has no more.
async fn list(
    conn: &mut Connection,
    queue: String,
    state: pb::JobState,
    limit: usize,
) -> Result<Vec<pb::Job>, CliError> {
    let mut jobs = Vec::new();
    let mut page_token = String::new();
    while jobs.len() < limit {
        let page_size = u32::try_from(limit - jobs.len())
            .unwrap_or(u32::MAX)
            .min(sluice_limits::MAX_PAGE_SIZE);
        let page = conn
            .admin
            .list_jobs(pb::ListJobsRequest {
                queue: queue.clone(),
                state: state.into(),
                page_size,
                page_token,
            })
            .await
            .map_err(|s| CliError::from_status(&s))?
            .into_inner();
        jobs.extend(page.jobs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    jobs.truncate(limit);
    Ok(jobs)
}

fn print_list(jobs: &[pb::Job], format: Format) -> Result<(), CliError> {
    match format {
        Format::Json => print_json(&json!({
            "jobs": jobs.iter().map(|j| job_json(j, false)).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let mut table = Table::new(&[
                "ID",
                "QUEUE",
                "TYPE",
                "STATE",
                "ATTEMPT",
                "PROGRESS",
                "LAST ERROR",
            ]);
            for job in jobs {
                table.row(vec![
                    job.id.clone(),
                    one_line(&job.queue, 12),
                    one_line(&job.job_type, 12),
                    state_name(job.state()).to_owned(),
                    format!("{}/{}", job.attempt, job.max_attempts),
                    progress_cell(job, 20),
                    one_line(&job.last_error, 24),
                ]);
            }
            print_table(&table, "no jobs")
        }
    }
}

/// One job for a person: fields, headers, the payload, then the progress
/// message and the result if it has them.
fn job_text(job: &pb::Job) -> String {
    let payload = Payload::decode(&job.payload);
    let mut fields = Table::new(&["FIELD", "VALUE"]);
    let mut field = |name: &str, value: String| fields.row(vec![format!("{name}:"), value]);
    field("id", job.id.clone());
    field("queue", job.queue.clone());
    field("type", job.job_type.clone());
    if !job.key.is_empty() {
        field("key", escape_controls(&job.key, false));
    }
    field("state", state_name(job.state()).to_owned());
    field("priority", job.priority.to_string());
    field(
        "attempt",
        format!("{} of {}", job.attempt, job.max_attempts),
    );
    field(
        "timeout",
        std_duration(job.timeout.as_ref()).map_or_else(
            || "-".to_owned(),
            |d| humantime::format_duration(d).to_string(),
        ),
    );
    field("created at", timestamp_text(job.created_at.as_ref()));
    field("run at", timestamp_text(job.run_at.as_ref()));
    field("finished at", timestamp_text(job.finished_at.as_ref()));
    if !job.worker_id.is_empty() {
        field("worker", job.worker_id.clone());
        field(
            "lease expires",
            timestamp_text(job.lease_expires_at.as_ref()),
        );
    }
    if job.cancel_requested {
        field("cancel", "requested".to_owned());
    }
    field(
        "last error",
        if job.last_error.is_empty() {
            "-".to_owned()
        } else {
            one_line(&job.last_error, 200)
        },
    );
    field(
        "progress",
        match &job.progress {
            None => "-".to_owned(),
            Some(p) => format!(
                "{}% (attempt {}, {})",
                p.percent,
                p.attempt,
                timestamp_text(p.updated_at.as_ref())
            ),
        },
    );
    if job.headers.is_empty() {
        field("headers", "-".to_owned());
    }
    let rendered = fields.render();
    // The FIELD/VALUE header is for alignment only.
    let mut out: String = rendered.lines().skip(1).map(|l| format!("{l}\n")).collect();
    if !job.headers.is_empty() {
        out.push_str("headers:\n");
        for (name, value) in sorted(&job.headers) {
            let (name, value) = (escape_controls(name, false), escape_controls(value, false));
            out.push_str(&format!("  {name}: {value}\n"));
        }
    }
    out.push_str(&format!(
        "payload ({}, {} bytes):\n",
        payload.encoding(),
        job.payload.len()
    ));
    push_bytes(&mut out, &payload);
    if let Some(p) = job.progress.as_ref().filter(|p| !p.message.is_empty()) {
        out.push_str("progress message:\n");
        push_bytes(&mut out, &Payload::decode(p.message.as_bytes()));
    }
    if !job.result.is_empty() {
        let result = Payload::decode(&job.result);
        out.push_str(&format!(
            "result ({}, {} bytes):\n",
            result.encoding(),
            job.result.len()
        ));
        push_bytes(&mut out, &result);
    }
    out
}

/// Bytes a client sent (a payload, a result, a progress message), as text
/// on lines of their own: their lines stay, their escape sequences are
/// shown, not obeyed.
fn push_bytes(out: &mut String, bytes: &Payload) {
    let text = escape_controls(&bytes.to_text(), true);
    out.push_str(&text);
    if !text.ends_with('\n') {
        out.push('\n');
    }
}

/// What became of each of several requests.
#[derive(Default)]
struct Outcome {
    /// The ids that succeeded, with what the broker said (or null).
    done: Vec<(String, Value)>,
    /// The ids that were refused, with why.
    failed: Vec<(String, CliError)>,
}

impl Outcome {
    fn record(&mut self, id: String, result: Result<Value, tonic::Status>) {
        match result {
            Ok(value) => self.done.push((id, value)),
            Err(status) => self.failed.push((id, CliError::from_status(&status))),
        }
    }

    /// Prints the outcome; an error when anything was refused.
    fn finish(mut self, verb: &str, queue: Option<String>, format: Format) -> Result<(), CliError> {
        let total = self.done.len() + self.failed.len();
        if total == 1 && self.failed.len() == 1 {
            // One id: its refusal is the command's error, printed by main.
            let (_, err) = self.failed.remove(0);
            return Err(err);
        }
        match format {
            Format::Json => {
                let done: Vec<Value> = self
                    .done
                    .iter()
                    .map(|(id, state)| match state {
                        Value::Null => json!({"job_id": id}),
                        state => json!({"job_id": id, "state": state}),
                    })
                    .collect();
                let failed: Vec<Value> = self
                    .failed
                    .iter()
                    .map(|(id, err)| match err {
                        CliError::Refused { code, message } => json!({
                            "job_id": id,
                            "code": CodeName(*code).to_string(),
                            "message": message,
                        }),
                        other => {
                            json!({"job_id": id, "code": "UNKNOWN", "message": other.to_string()})
                        }
                    })
                    .collect();
                let mut doc = json!({ verb: done, "failed": failed });
                if let (Some(queue), Value::Object(map)) = (queue, &mut doc) {
                    map.insert("queue".into(), Value::String(queue));
                }
                print_json(&doc)?;
            }
            Format::Table => {
                for (id, err) in &self.failed {
                    eprintln!("sluice: {id}: {err}");
                }
                let mut text = String::new();
                for (id, state) in &self.done {
                    match state {
                        Value::String(state) => text.push_str(&format!("{id}  {state}\n")),
                        _ => text.push_str(&format!("{id}\n")),
                    }
                }
                let of_queue = queue.map(|q| format!(" in queue {q}")).unwrap_or_default();
                text.push_str(&format!(
                    "{verb} {} of {total} jobs{of_queue}\n",
                    self.done.len()
                ));
                print(&text)?;
            }
        }
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(CliError::Partial {
                failed: self.failed.len(),
                total,
            })
        }
    }
}
