//! The schedule file of `sluice schedules create --file` and `apply`: TOML
//! with one `[[schedule]]` table per schedule, its keys the `create`
//! flags' names with underscores (`time_zone`, `catch_up`, ...; `type` for
//! the job type). A mistake is refused before anything is sent, naming
//! the file, the line of the schedule's table and the key:
//!
//! ```toml
//! [[schedule]]
//! name = "nightly-report"
//! cron = "0 3 * * *"            # or: every = "15m"
//! time_zone = "Europe/Berlin"   # default UTC
//! queue = "reports"             # default "default"
//! type = "report.build"
//! json = '{"full": true}'       # or: payload = "text"
//! headers = { team = "data" }
//! priority = 0
//! max_attempts = 5
//! timeout = "10m"
//! catch_up = "one"              # skip | one | all
//! overlap = "skip"              # allow | skip | cancel-previous
//! start_at = 2026-01-01T00:00:00Z
//! end_at = 2027-01-01T00:00:00Z
//! ```

use std::path::Path;

use sluice_proto::v1 as pb;
use toml::{Table, Value};

use super::schedules::{ScheduleFields, parse_catch_up, parse_overlap, parse_time};
use crate::error::CliError;

/// Every key a `[[schedule]]` table may hold.
const KEYS: [&str; 17] = [
    "name",
    "cron",
    "every",
    "time_zone",
    "queue",
    "type",
    "json",
    "payload",
    "headers",
    "priority",
    "key",
    "max_attempts",
    "timeout",
    "catch_up",
    "overlap",
    "start_at",
    "end_at",
];

/// The schedules of the file at `path`, in its order.
///
/// # Errors
/// [`CliError::Usage`] naming the file, line and key at fault.
pub fn read(path: &Path) -> Result<Vec<pb::Schedule>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Local(format!("reading {}: {e}", path.display())))?;
    parse(&text).map_err(|e| CliError::Usage(format!("{}:{e}", path.display())))
}

/// The schedules of `text`; an error starts with its line number.
pub fn parse(text: &str) -> Result<Vec<pb::Schedule>, String> {
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(1, |span| {
            text[..span.start.min(text.len())].lines().count().max(1)
        });
        format!("{line}: {}", e.message())
    })?;
    // The line of each `[[schedule]]` header, for the errors below.
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[schedule]]"))
        .map(|(i, _)| i + 1)
        .collect();
    if let Some(other) = table.keys().find(|k| *k != "schedule") {
        return Err(format!(
            "1: unknown table or key {other:?}: the file holds [[schedule]] tables"
        ));
    }
    let Some(Value::Array(schedules)) = table.get("schedule") else {
        return Err("1: no [[schedule]] table".to_owned());
    };
    let mut out = Vec::with_capacity(schedules.len());
    let mut names = std::collections::HashSet::new();
    for (i, entry) in schedules.iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(1);
        let Value::Table(entry) = entry else {
            return Err(format!("{line}: a schedule must be a table"));
        };
        let schedule = one(entry).map_err(|e| {
            let name = entry.get("name").and_then(Value::as_str).unwrap_or("?");
            format!("{line}: schedule {name:?}: {e}")
        })?;
        if !names.insert(schedule.name.clone()) {
            return Err(format!(
                "{line}: schedule {:?} is in the file twice",
                schedule.name
            ));
        }
        out.push(schedule);
    }
    Ok(out)
}

/// One `[[schedule]]` table.
fn one(entry: &Table) -> Result<pb::Schedule, String> {
    if let Some(unknown) = entry.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown key {unknown:?} (known: {})",
            KEYS.join(", ")
        ));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match entry.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // A TOML date-time, for start_at and end_at.
            Some(Value::Datetime(d)) => Ok(Some(d.to_string())),
            Some(other) => Err(format!(
                "{key}: expected a string, got {}",
                other.type_str()
            )),
        }
    };
    let number = |key: &str| -> Result<Option<i64>, String> {
        match entry.get(key) {
            None => Ok(None),
            Some(Value::Integer(n)) => Ok(Some(*n)),
            Some(other) => Err(format!(
                "{key}: expected an integer, got {}",
                other.type_str()
            )),
        }
    };
    let mut headers = Vec::new();
    match entry.get("headers") {
        None => {}
        Some(Value::Table(table)) => {
            for (name, value) in table {
                let Value::String(value) = value else {
                    return Err(format!("headers.{name}: expected a string"));
                };
                headers.push((name.clone(), value.clone()));
            }
        }
        Some(other) => {
            return Err(format!(
                "headers: expected a table, got {}",
                other.type_str()
            ));
        }
    }
    let fields = ScheduleFields {
        name: text("name")?.ok_or("name: missing")?,
        cron: text("cron")?,
        every: text("every")?
            .map(|e| humantime::parse_duration(&e).map_err(|err| format!("every: {err}")))
            .transpose()?,
        time_zone: text("time_zone")?,
        queue: text("queue")?,
        job_type: text("type")?.ok_or("type: missing (the job type)")?,
        json: text("json")?,
        payload: text("payload")?,
        headers,
        priority: number("priority")?
            .map(|p| i32::try_from(p).map_err(|_| format!("priority: {p} is out of range")))
            .transpose()?,
        key: text("key")?,
        max_attempts: number("max_attempts")?
            .map(|m| u32::try_from(m).map_err(|_| format!("max_attempts: {m} is out of range")))
            .transpose()?,
        timeout: text("timeout")?
            .map(|t| humantime::parse_duration(&t).map_err(|err| format!("timeout: {err}")))
            .transpose()?,
        catch_up: text("catch_up")?
            .map(|c| parse_catch_up(&c).map_err(|e| format!("catch_up: {e}")))
            .transpose()?,
        overlap: text("overlap")?
            .map(|o| parse_overlap(&o).map_err(|e| format!("overlap: {e}")))
            .transpose()?,
        start_at: text("start_at")?
            .map(|t| parse_time(&t).map_err(|e| format!("start_at: {e}")))
            .transpose()?,
        end_at: text("end_at")?
            .map(|t| parse_time(&t).map_err(|e| format!("end_at: {e}")))
            .transpose()?,
    };
    fields.into_schedule()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_of_two_schedules_reads_in_order() {
        let text = r#"
[[schedule]]
name = "nightly"
cron = "0 3 * * *"
time_zone = "Europe/Berlin"
queue = "reports"
type = "report"
json = '{"full": true}'
headers = { team = "data" }
catch_up = "one"
overlap = "skip"
start_at = 2026-01-01T00:00:00Z

[[schedule]]
name = "pulse"
every = "30s"
type = "ping"
"#;
        let schedules = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schedules.len(), 2);
        let nightly = &schedules[0];
        assert_eq!(nightly.cron, "0 3 * * *");
        assert_eq!(nightly.catch_up(), pb::CatchUp::One);
        assert_eq!(nightly.overlap(), pb::Overlap::Skip);
        assert_eq!(nightly.start_at.map(|t| t.seconds), Some(1_767_225_600));
        let job = nightly.job.as_ref().unwrap_or_else(|| panic!("no job"));
        assert_eq!(job.payload.as_ref(), br#"{"full": true}"#);
        assert_eq!(job.headers["team"], "data");
        assert_eq!(schedules[1].every.map(|d| d.seconds), Some(30));
    }

    #[test]
    fn mistakes_name_the_line_and_key() {
        let unknown = "\n[[schedule]]\nname = \"a\"\ncrn = \"* * * * *\"\ntype = \"t\"\n";
        let e = parse(unknown).unwrap_err();
        assert!(
            e.starts_with("2: schedule \"a\": unknown key \"crn\""),
            "{e}"
        );
        let second = "[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntype = \"t\"\n\n[[schedule]]\nname = \"b\"\nevery = 5\ntype = \"t\"\n";
        let e = parse(second).unwrap_err();
        assert!(
            e.starts_with("6: schedule \"b\": every: expected a string"),
            "{e}"
        );
        let syntax = "[[schedule]]\nname = \"a\nevery = \"1m\"\n";
        let e = parse(syntax).unwrap_err();
        assert!(e.starts_with("2: "), "{e}");
        let twice = "[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntype = \"t\"\n[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntype = \"t\"\n";
        assert!(parse(twice).unwrap_err().contains("twice"));
        let policy =
            "[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntype = \"t\"\ncatch_up = \"some\"\n";
        assert!(parse(policy).unwrap_err().contains("catch_up: "));
    }
}
