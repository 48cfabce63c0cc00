//! `sluice enqueue-lines [FILE]`: many jobs, one JSON object per line of a
//! file or of standard input, sent over one EnqueueStream: a result per
//! job, each after its job is durable, at the stream's pace (no call per
//! job). Every line is read and checked before connecting: a line that is
//! not a job refuses the whole input, naming it, and nothing is sent.
//!
//! A line's fields are `sluice enqueue`'s flags: `type` (required),
//! `queue`, `json` (the payload, any JSON value) or `payload` (the payload
//! as text), `priority`, `key` (the flow-control key), `idempotency_key`,
//! `headers` (an object of strings), `delay` (`10s`, `5m`), `max_attempts`,
//! `timeout`. Blank lines are skipped; a job is named by its line number.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use serde_json::{Map, Value, json};
use sluice_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::Connection;
use crate::error::{CliError, CodeName};
use crate::output::{Format, print, print_json};

/// Flags of `sluice enqueue-lines`.
#[derive(Debug, Args)]
pub struct EnqueueLinesArgs {
    /// The jobs, one JSON object per line; `-` or none: standard input.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The fields a line may have.
const FIELDS: [&str; 11] = [
    "type",
    "queue",
    "json",
    "payload",
    "priority",
    "key",
    "idempotency_key",
    "headers",
    "delay",
    "max_attempts",
    "timeout",
];

/// The jobs of the input, each with its line number.
pub struct Lines(Vec<(u64, pb::EnqueueRequest)>);

/// Reads and checks every line, before connecting.
///
/// # Errors
/// [`CliError::Usage`] naming the first line that is not a job;
/// [`CliError::Local`] when the input cannot be read.
pub fn prepare(args: &EnqueueLinesArgs) -> Result<Lines, CliError> {
    let text = match args.file.as_deref() {
        None => read_stdin()?,
        Some(path) if path.as_os_str() == "-" => read_stdin()?,
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::Local(format!("reading {}: {e}", path.display())))?,
    };
    let mut jobs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let job = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not JSON: {e}"))
            .and_then(|value| parse_job(&value))
            .map_err(|why| CliError::Usage(format!("line {number}: {why}")))?;
        jobs.push((number, job));
    }
    Ok(Lines(jobs))
}

fn read_stdin() -> Result<String, CliError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::Local(format!("reading standard input: {e}")))?;
    Ok(text)
}

/// One line's job; the broker checks the values as it checks Enqueue's.
fn parse_job(value: &Value) -> Result<pb::EnqueueRequest, String> {
    let Value::Object(fields) = value else {
        return Err("a job is a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?} (a job has {})",
            FIELDS.join(", ")
        ));
    }
    let job_type = text(fields, "type")?.ok_or("\"type\" is required")?;
    let payload = match (fields.get("json"), text(fields, "payload")?) {
        (Some(_), Some(_)) => return Err("give \"json\" or \"payload\", not both".into()),
        (Some(json), None) => json.to_string().into_bytes(),
        (None, Some(payload)) => payload.into_bytes(),
        (None, None) => Vec::new(),
    };
    let priority = match fields.get("priority") {
        None => 0,
        Some(p) => p
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or("\"priority\" is a whole number")?,
    };
    let max_attempts = match fields.get("max_attempts") {
        None => 0,
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("\"max_attempts\" is a whole number of 0 or more")?,
    };
    let mut headers = HashMap::new();
    match fields.get("headers") {
        None => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let value = value
                    .as_str()
                    .ok_or_else(|| format!("header {name:?} is not a string"))?;
                headers.insert(name.clone(), value.to_owned());
            }
        }
        Some(_) => return Err("\"headers\" is an object of strings".into()),
    }
    let delay = duration(fields, "delay")?;
    Ok(pb::EnqueueRequest {
        queue: text(fields, "queue")?.unwrap_or_default(),
        job_type,
        payload: payload.into(),
        headers,
        priority,
        max_attempts,
        timeout: duration(fields, "timeout")?.map(sluice_proto::duration_to_pb),
        run_at: delay.map(|d| prost_types::Timestamp::from(SystemTime::now() + d)),
        idempotency_key: text(fields, "idempotency_key")?.unwrap_or_default(),
        key: text(fields, "key")?.unwrap_or_default(),
    })
}

fn text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{name:?} is a string")),
    }
}

fn duration(fields: &Map<String, Value>, name: &str) -> Result<Option<Duration>, String> {
    text(fields, name)?
        .map(|s| humantime::parse_duration(&s).map_err(|e| format!("{name:?}: {e} (e.g. \"10s\")")))
        .transpose()
}

/// Sends the jobs over one EnqueueStream and reports each: in a table, a
/// line per job enqueued (`LINE  JOB_ID`, `duplicate` when the key matched
/// a job) and each refusal on standard error; in JSON, `enqueued` and
/// `failed`.
///
/// # Errors
/// [`CliError::Partial`] when some jobs were refused; the broker's
/// status when it refused or ended the stream.
pub async fn run(conn: &mut Connection, lines: Lines, format: Format) -> Result<(), CliError> {
    let Lines(jobs) = lines;
    let total = jobs.len();
    let (tx, rx) = tokio::sync::mpsc::channel(sluice_limits::STREAM_WINDOW);
    let mut results = conn
        .broker
        .enqueue_stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    // Closing the sending side (when all are sent) ends the stream once
    // every job is answered.
    tokio::spawn(async move {
        for (line, job) in jobs {
            let request = pb::EnqueueStreamRequest {
                seq: line,
                job: Some(job),
            };
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    let (mut enqueued, mut failed) = (Vec::new(), Vec::new());
    let ended = loop {
        match results.message().await {
            Ok(Some(response)) => {
                for r in response.results {
                    if r.code == 0 {
                        enqueued.push(
                            json!({"line": r.seq, "job_id": r.job_id, "duplicate": r.duplicate}),
                        );
                    } else {
                        let code = CodeName(tonic::Code::from(r.code)).to_string();
                        failed.push(json!({"line": r.seq, "code": code, "message": r.message}));
                    }
                }
            }
            Ok(None) => break None,
            Err(status) => break Some(status),
        }
    };
    report(&enqueued, &failed, total, format)?;
    if let Some(status) = ended {
        return Err(CliError::from_status(&status));
    }
    let answered = enqueued.len() + failed.len();
    if answered < total || !failed.is_empty() {
        return Err(CliError::Partial {
            failed: total - enqueued.len(),
            total,
        });
    }
    Ok(())
}

fn report(
    enqueued: &[Value],
    failed: &[Value],
    total: usize,
    format: Format,
) -> Result<(), CliError> {
    match format {
        Format::Json => print_json(&json!({"enqueued": enqueued, "failed": failed})),
        Format::Table => {
            for f in failed {
                eprintln!(
                    "sluice: line {}: {}: {}",
                    f["line"],
                    f["code"].as_str().unwrap_or("?"),
                    f["message"].as_str().unwrap_or("")
                );
            }
            let mut text = String::new();
            for e in enqueued {
                let duplicate = if e["duplicate"] == true {
                    "  duplicate"
                } else {
                    ""
                };
                text.push_str(&format!(
                    "{}  {}{duplicate}\n",
                    e["line"],
                    e["job_id"].as_str().unwrap_or("")
                ));
            }
            text.push_str(&format!("enqueued {} of {total} jobs\n", enqueued.len()));
            print(&text)
        }
    }
}
