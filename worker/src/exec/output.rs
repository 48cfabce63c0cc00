//! What an exec command writes: the tail of its standard error, which
//! becomes the error of a failed attempt, and its report channel, its
//! descriptor 3, on which it may write lines of two forms:
//!
//! - `progress PERCENT [MESSAGE]`: the job's progress (PERCENT 0 to 100;
//!   MESSAGE, a short text or a JSON document, cut to
//!   [`MAX_PROGRESS_MESSAGE_BYTES`]), reported to the broker at once. One
//!   report is in flight at a time: lines that come meanwhile are folded
//!   into the latest, so a command that writes thousands costs a few calls.
//! - `result TEXT`: the result the Ack carries if the command exits 0; the
//!   last such line wins. TEXT over [`MAX_RESULT_BYTES`] fails the attempt
//!   for good, as [`JobContext::set_result`] does.
//!
//! Any other line is logged and ignored. One task reads both pipes, and
//! the progress reporter starts with the first progress line: a command
//! that reports nothing costs nothing more than its standard error did.

use bytes::Bytes;
use sluice_limits::{MAX_PROGRESS_MESSAGE_BYTES, MAX_PROGRESS_PERCENT, MAX_RESULT_BYTES};
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::STDERR_TAIL;
use crate::handler::{JobContext, JobError};

/// The longest line kept: a result at its limit and its keyword.
const MAX_LINE: usize = MAX_RESULT_BYTES + "result ".len();

/// One line of the report channel, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Progress { percent: u32, message: String },
    Result(Bytes),
}

/// What the command wrote, once both pipes closed.
pub(super) struct Output {
    /// The last [`STDERR_TAIL`] bytes of its standard error.
    pub tail: Vec<u8>,
    /// The last result line, if any; a permanent [`JobError`] for one over
    /// [`MAX_RESULT_BYTES`].
    pub result: Result<Option<Bytes>, JobError>,
    /// The progress reporter, if a progress line came: done once the
    /// last report was answered.
    pub reporter: Option<tokio::task::JoinHandle<()>>,
}

/// Reads `stderr` and `reports` until the command and its group closed
/// both, reporting progress through `ctx` as it comes; the reporter goes
/// on with the last report, for the caller to wait for.
pub(super) async fn read(
    mut stderr: pipe::Receiver,
    mut reports: pipe::Receiver,
    ctx: JobContext,
    job_id: String,
) -> Output {
    let mut tail = Vec::new();
    let mut lines = Lines::default();
    let mut progress = Progress::Idle(ctx);
    let (mut stderr_open, mut reports_open) = (true, true);
    let (mut stderr_buf, mut reports_buf) = ([0u8; 8192], [0u8; 8192]);
    while stderr_open || reports_open {
        tokio::select! {
            read = stderr.read(&mut stderr_buf), if stderr_open => match read {
                Ok(n @ 1..) => {
                    tail.extend_from_slice(&stderr_buf[..n]);
                    if tail.len() > STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                _ => stderr_open = false,
            },
            read = reports.read(&mut reports_buf), if reports_open => match read {
                Ok(n @ 1..) => {
                    for piece in reports_buf[..n].split_inclusive(|&b| b == b'\n') {
                        match piece.strip_suffix(b"\n") {
                            Some(bytes) => {
                                lines.extend(bytes);
                                lines.end(&mut progress, &job_id);
                            }
                            None => lines.extend(piece),
                        }
                    }
                }
                _ => reports_open = false,
            },
        }
    }
    // A last line without its newline counts too.
    if !lines.line.is_empty() {
        lines.end(&mut progress, &job_id);
    }
    let reporter = match progress {
        Progress::Idle(_) => None,
        // The sender's drop lets the reporter end after its last report.
        Progress::Started { reporter, .. } => Some(reporter),
    };
    let result = match lines.result {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text)),
        Some(Err(())) => Err(JobError::permanent(format!(
            "a result line on descriptor 3 is over the limit of {MAX_RESULT_BYTES} bytes"
        ))),
    };
    Output {
        tail,
        result,
        reporter,
    }
}

/// The job's progress reporter: started by the first progress line.
enum Progress {
    Idle(JobContext),
    Started {
        latest: watch::Sender<Option<(u32, String)>>,
        reporter: tokio::task::JoinHandle<()>,
    },
}

impl Progress {
    fn report(&mut self, percent: u32, message: String, job_id: &str) {
        match self {
            Progress::Started { latest, .. } => {
                latest.send_replace(Some((percent, message)));
            }
            Progress::Idle(ctx) => {
                let (latest, receiver) = watch::channel(Some((percent, message)));
                let reporter =
                    tokio::spawn(report_progress(receiver, ctx.clone(), job_id.to_owned()));
                *self = Progress::Started { latest, reporter };
            }
        }
    }
}

/// The line being read and the last result line.
#[derive(Default)]
struct Lines {
    /// The line so far: at most its first [`MAX_LINE`] bytes.
    line: Vec<u8>,
    /// It is longer than [`MAX_LINE`].
    too_long: bool,
    /// The last result line; `Err` when it was too long.
    result: Option<Result<Bytes, ()>>,
}

impl Lines {
    fn extend(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_LINE {
            self.too_long = true;
            let room = MAX_LINE - self.line.len();
            self.line.extend_from_slice(&bytes[..room]);
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// The line is whole: acts on it.
    fn end(&mut self, progress: &mut Progress, job_id: &str) {
        let line = std::mem::take(&mut self.line);
        let too_long = std::mem::take(&mut self.too_long);
        match parse(&line) {
            Some(Line::Result(_)) if too_long => self.result = Some(Err(())),
            Some(Line::Result(text)) => self.result = Some(Ok(text)),
            Some(Line::Progress { percent, message }) => {
                progress.report(percent, message, job_id);
            }
            // Its bytes are not logged: a mistyped result line is data.
            None => warn!(
                job_id,
                bytes = line.len(),
                "descriptor 3 takes `progress PERCENT [MESSAGE]` or `result TEXT`; line ignored"
            ),
        }
    }
}

/// Reports the latest progress until the reader is done.
async fn report_progress(
    mut latest: watch::Receiver<Option<(u32, String)>>,
    ctx: JobContext,
    job_id: String,
) {
    // The first report is in the channel's initial value.
    latest.mark_changed();
    while latest.changed().await.is_ok() {
        let Some((percent, message)) = latest.borrow_and_update().clone() else {
            continue;
        };
        if let Err(e) = ctx.progress(percent, message).await {
            debug!(job_id, error = %e, "a progress report was not taken");
        }
    }
}

/// A line's meaning; `None` if it has none.
fn parse(line: &[u8]) -> Option<Line> {
    if let Some(text) = line.strip_prefix(b"result ") {
        return Some(Line::Result(Bytes::copy_from_slice(text)));
    }
    let rest = std::str::from_utf8(line.strip_prefix(b"progress ")?).ok()?;
    let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let percent: u32 = percent.parse().ok()?;
    if percent > MAX_PROGRESS_PERCENT {
        return None;
    }
    let mut end = message.len().min(MAX_PROGRESS_MESSAGE_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    Some(Line::Progress {
        percent,
        message: message[..end].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_as_progress_or_result() {
        let progress = |percent, message: &str| {
            Some(Line::Progress {
                percent,
                message: message.into(),
            })
        };
        assert_eq!(parse(b"progress 40"), progress(40, ""));
        assert_eq!(
            parse(b"progress 100 400 of 400 rows"),
            progress(100, "400 of 400 rows")
        );
        assert_eq!(
            parse(br#"progress 5 {"rows": 5}"#),
            progress(5, r#"{"rows": 5}"#)
        );
        assert_eq!(parse(b"progress 101"), None);
        assert_eq!(parse(b"progress -1"), None);
        assert_eq!(parse(b"progress"), None);
        assert_eq!(parse(b"40"), None);
        assert_eq!(
            parse(b"result {\"sent\": 3}"),
            Some(Line::Result(Bytes::from_static(b"{\"sent\": 3}")))
        );
        assert_eq!(
            parse(b"result \xff\x00"),
            Some(Line::Result(Bytes::from_static(b"\xff\x00")))
        );
        let long = format!("progress 1 {}", "é".repeat(MAX_PROGRESS_MESSAGE_BYTES));
        let Some(Line::Progress { message, .. }) = parse(long.as_bytes()) else {
            panic!("not progress");
        };
        assert!(message.len() <= MAX_PROGRESS_MESSAGE_BYTES && message.len() > 1000);
    }
}
