//! How results are printed: [`Format`] (`--output table|json`), the plain
//! aligned [`Table`] of the human view, JSON printing, and the small
//! formatters both views share (timestamps as RFC 3339, durations in
//! seconds for JSON and as `1m05s` for people, rates).
//!
//! Tables have a header row and columns separated by two spaces, no box
//! drawing, so that `grep`, `awk` and an 80-column terminal all read them.
//! Only this module and the commands' `print` steps write to stdout.
//!
//! What a table shows comes from clients of the broker (payloads, header
//! values, errors a handler wrote): its control characters are shown
//! escaped ([`escape_controls`]), never sent to the terminal, where an
//! escape sequence could rewrite the screen or the window title. JSON
//! output escapes them by its own rules.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;
use serde_json::Value;

use crate::error::CliError;

pub use sluice_proto::json::{std_duration, system_time};

/// The output format, `--output` / `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header row, for people.
    #[default]
    Table,
    /// One JSON document, for scripts (stable snake_case field names).
    Json,
}

/// A table of text cells with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column names.
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The aligned text, one line per row after the header, each ending
    /// in a newline; trailing spaces trimmed.
    pub fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .map(|cell| escape_controls(cell, false))
                    .collect()
            })
            .collect();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                line.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` with its control characters written out (`\x1b`, `\u{9b}`), so
/// that bytes from clients reach the terminal as data, never as commands;
/// with `keep_lines`, newlines and tabs stay as they are (a payload's
/// lines).
pub fn escape_controls(text: &str, keep_lines: bool) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' | '\t' if keep_lines => out.push(c),
            c if c.is_control() && u32::from(c) < 0x80 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// Writes `text` to stdout as is.
///
/// # Errors
/// [`CliError::Local`] when stdout cannot be written (a closed pipe).
pub fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Local(format!("writing to standard output: {e}")))
}

/// Writes `value` to stdout as pretty JSON and a newline.
///
/// # Errors
/// As [`print`].
pub fn print_json(value: &Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Local(format!("encoding JSON: {e}")))?;
    print(&format!("{text}\n"))
}

/// Prints `table`, or `empty` (a one-line message) when it has no rows.
///
/// # Errors
/// As [`print`].
pub fn print_table(table: &Table, empty: &str) -> Result<(), CliError> {
    if table.is_empty() {
        print(&format!("{empty}\n"))
    } else {
        print(&table.render())
    }
}

/// A timestamp as RFC 3339 (UTC, seconds) for a table, or `-`.
pub fn timestamp_text(ts: Option<&prost_types::Timestamp>) -> String {
    system_time(ts).map_or_else(
        || "-".to_owned(),
        |t| humantime::format_rfc3339_seconds(t).to_string(),
    )
}

/// A duration for people: `850ms`, `42s`, `3m05s`, `2h07m`, `3d04h`.
pub fn age_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86400, secs % 86400 / 3600),
    }
}

/// How long ago `ts` was, for people, or `-`.
pub fn ago_text(ts: Option<&prost_types::Timestamp>) -> String {
    system_time(ts)
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default())
        .map_or_else(|| "-".to_owned(), age_text)
}

/// A rate per second for a table: `0`, `0.25`, `12.5`, `1200`.
pub fn rate_text(rate: f64) -> String {
    if rate == 0.0 {
        "0".to_owned()
    } else if rate < 10.0 {
        format!("{rate:.2}")
    } else if rate < 100.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// `text` on one line and at most `max` characters, ending in `…` when cut.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.chars().count() <= max {
        return flat.to_owned();
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(escape_controls("plain", false), "plain");
        assert_eq!(
            escape_controls("\x1b]0;pwned\x07 a\tb\nc\u{9b}", false),
            "\\x1b]0;pwned\\x07 a\\x09b\\x0ac\\u{9b}"
        );
        assert_eq!(escape_controls("a\tb\nc\x1b[2J", true), "a\tb\nc\\x1b[2J");
        let mut table = Table::new(&["NAME"]);
        table.row(vec!["\x1b[31mred".into()]);
        assert_eq!(table.render(), "NAME\n\\x1b[31mred\n");
    }

    #[test]
    fn a_table_aligns_its_columns_under_the_header() {
        let mut table = Table::new(&["QUEUE", "READY"]);
        table.row(vec!["default".into(), "3".into()]);
        table.row(vec!["mail".into(), "12".into()]);
        assert_eq!(table.render(), "QUEUE    READY\ndefault  3\nmail     12\n");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age_text(Duration::from_millis(850)), "850ms");
        assert_eq!(age_text(Duration::from_secs(42)), "42s");
        assert_eq!(age_text(Duration::from_secs(185)), "3m05s");
        assert_eq!(age_text(Duration::from_secs(7620)), "2h07m");
        assert_eq!(age_text(Duration::from_secs(3 * 86400 + 4 * 3600)), "3d04h");
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
    }
}
