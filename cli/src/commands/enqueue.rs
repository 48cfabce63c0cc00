//! `sluice enqueue`: one job from flags, its payload from `--json`,
//! `--payload-file` or standard input (`-`), with the W3C trace context of
//! `--traceparent`/`--tracestate` or the `TRACEPARENT`/`TRACESTATE`
//! environment variables as headers. Prints the job's id.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use humantime::Duration as Human;
use serde_json::json;
use sluice_proto::v1 as pb;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::{Format, print, print_json};
use crate::trace::{TRACEPARENT, TRACESTATE, parse_traceparent, parse_tracestate};

/// Flags of `sluice enqueue`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("payload").multiple(false))]
pub struct EnqueueArgs {
    /// The queue.
    #[arg(long, default_value = sluice_limits::DEFAULT_QUEUE)]
    queue: String,
    /// The job type (which handler runs it).
    #[arg(long = "type", value_name = "TYPE")]
    job_type: String,
    /// The payload: this JSON text (checked to be JSON).
    #[arg(long, value_name = "JSON", group = "payload")]
    json: Option<String>,
    /// The payload: the bytes of this file.
    #[arg(long, value_name = "FILE", group = "payload")]
    payload_file: Option<PathBuf>,
    /// `-`: the payload is standard input.
    #[arg(value_name = "-", group = "payload", value_parser = only_dash)]
    stdin: Option<String>,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Due after this delay (`10s`, `5m`) instead of now.
    #[arg(long, conflicts_with = "run_at")]
    delay: Option<Human>,
    /// Due at this time (RFC 3339, e.g. 2030-01-02T03:04:05Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    run_at: Option<SystemTime>,
    /// Attempts before the job is DEAD (default: the broker's --max-attempts).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Per-attempt run limit (default: the broker's --default-timeout).
    #[arg(long)]
    timeout: Option<Human>,
    /// The flow-control key (a customer, a tenant): the queue's per-key
    /// limits and fair dispatch count jobs by it.
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Idempotency key: a second enqueue with the same key and queue
    /// returns the first job's id.
    #[arg(long, value_name = "K")]
    idempotency_key: Option<String>,
    /// A header, NAME=VALUE; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// W3C traceparent header of the job (checked).
    #[arg(long, env = "TRACEPARENT", value_parser = parse_traceparent)]
    traceparent: Option<String>,
    /// W3C tracestate header of the job; needs a traceparent.
    #[arg(long, env = "TRACESTATE", value_parser = parse_tracestate)]
    tracestate: Option<String>,
}

fn only_dash(s: &str) -> Result<String, String> {
    if s == "-" {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unexpected argument {s:?}: give the payload with --json, --payload-file, or - for standard input"
        ))
    }
}

fn parse_rfc3339(s: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{e} (expected RFC 3339, e.g. 2030-01-02T03:04:05Z)"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

impl EnqueueArgs {
    /// The payload's bytes.
    fn payload(&self) -> Result<Vec<u8>, CliError> {
        if let Some(text) = &self.json {
            serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| CliError::Usage(format!("--json is not JSON: {e}")))?;
            return Ok(text.clone().into_bytes());
        }
        if let Some(file) = &self.payload_file {
            return std::fs::read(file)
                .map_err(|e| CliError::Local(format!("reading {}: {e}", file.display())));
        }
        if self.stdin.is_some() {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| CliError::Local(format!("reading standard input: {e}")))?;
            return Ok(bytes);
        }
        Ok(Vec::new())
    }

    /// The headers: `--header`s, then the trace context.
    fn headers(&self) -> Result<HashMap<String, String>, CliError> {
        let mut headers = HashMap::new();
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case(TRACEPARENT) || name.eq_ignore_ascii_case(TRACESTATE) {
                return Err(CliError::Usage(format!(
                    "--header {name}=...: give the trace context with --traceparent and \
                     --tracestate (or TRACEPARENT and TRACESTATE), which are checked"
                )));
            }
            headers.insert(name.clone(), value.clone());
        }
        match (&self.traceparent, &self.tracestate) {
            (None, Some(_)) => {
                return Err(CliError::Usage(
                    "a tracestate needs a traceparent (--traceparent or TRACEPARENT)".into(),
                ));
            }
            (Some(parent), state) => {
                headers.insert(TRACEPARENT.to_owned(), parent.clone());
                if let Some(state) = state {
                    headers.insert(TRACESTATE.to_owned(), state.clone());
                }
            }
            (None, None) => {}
        }
        Ok(headers)
    }

    /// The Enqueue request.
    fn request(&self) -> Result<pb::EnqueueRequest, CliError> {
        let run_at = match (self.delay, self.run_at) {
            (Some(delay), _) => Some(SystemTime::now() + Duration::from(delay)),
            (None, at) => at,
        };
        Ok(pb::EnqueueRequest {
            queue: self.queue.clone(),
            job_type: self.job_type.clone(),
            payload: self.payload()?.into(),
            headers: self.headers()?,
            priority: self.priority,
            max_attempts: self.max_attempts.unwrap_or(0),
            timeout: self.timeout.map(|t| sluice_proto::duration_to_pb(t.into())),
            run_at: run_at.map(prost_types::Timestamp::from),
            idempotency_key: self.idempotency_key.clone().unwrap_or_default(),
            key: self.key.clone().unwrap_or_default(),
        })
    }
}

/// Checks the arguments that need no broker (payload, headers), before
/// connecting, so that a usage error never waits on the network.
///
/// # Errors
/// [`CliError::Usage`] or [`CliError::Local`] (an unreadable file).
pub fn prepare(args: &EnqueueArgs) -> Result<pb::EnqueueRequest, CliError> {
    args.request()
}

/// Enqueues `request`; prints the job id (JSON: `job_id`, `duplicate`).
///
/// # Errors
/// The broker's refusal.
pub async fn run(
    conn: &mut Connection,
    request: pb::EnqueueRequest,
    format: Format,
) -> Result<(), CliError> {
    let answer = conn
        .broker
        .enqueue(request)
        .await
        .map_err(|s| CliError::from_status(&s))?
        .into_inner();
    match format {
        Format::Json => print_json(&json!({
            "job_id": answer.job_id,
            "duplicate": answer.duplicate,
        })),
        Format::Table => {
            if answer.duplicate {
                eprintln!("sluice: a job with this idempotency key exists; its id:");
            }
            print(&format!("{}\n", answer.job_id))
        }
    }
}
