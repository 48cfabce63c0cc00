//! One frame of `sluice top`, drawn from a [`TopState`] alone (no I/O):
//! a title line, a status line that shows the refresh error while the
//! broker cannot be reached, the queues (depth, rates, oldest ready age), the workers
//! (in-flight counts), the running jobs with their progress, the schedules
//! due soonest and the recent failures.
//!
//! [`render_text`] draws the same frame into ratatui's `TestBackend` and
//! returns its cells as plain lines: `--once` prints that, so scripts and
//! tests see exactly what the live view shows, without escape codes.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};

use super::state::TopState;
use crate::commands::stats::{QUEUE_COLUMNS, queue_cells};
use crate::error::CliError;
use crate::output::{age_text, ago_text, one_line};
use crate::view::progress_cell;
use sluice_proto::json::{state_name, system_time};
use sluice_proto::v1 as pb;

/// Most failures listed.
const MAX_FAILURES: usize = 10;

fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// Draws the whole frame.
pub fn draw(frame: &mut Frame<'_>, state: &TopState) {
    let (queues, workers, running, schedules, failures) = match &state.snapshot {
        Some(s) => (
            s.stats.queues.as_slice(),
            s.workers.as_slice(),
            s.running.as_slice(),
            s.schedules.as_slice(),
            s.stats.recent_failures.as_slice(),
        ),
        None => (&[][..], &[][..], &[][..], &[][..], &[][..]),
    };
    // A section is its title, its header and its rows (at least one line
    // for "none").
    let height =
        |rows: usize| Constraint::Length(u16::try_from(rows.max(1) + 2).unwrap_or(u16::MAX));
    // The status line sits under the title, so that a short frame ends
    // with its last failure and `--once` prints no run of blank lines.
    let [
        title,
        status,
        queues_area,
        workers_area,
        running_area,
        schedules_area,
        failures_area,
    ] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        height(queues.len()),
        height(workers.len()),
        height(running.len()),
        height(schedules.len()),
        Constraint::Min(3),
    ])
    .areas(frame.area());

    frame.render_widget(
        Paragraph::new(Line::styled(
            format!("sluice top  {}  (q to quit)", state.url),
            bold(),
        )),
        title,
    );
    draw_queues(frame, queues_area, queues);
    draw_workers(frame, workers_area, workers);
    draw_running(frame, running_area, running);
    draw_schedules(frame, schedules_area, schedules);
    draw_failures(frame, failures_area, failures);
    let (text, style) = match (&state.error, &state.snapshot) {
        (Some(e), _) => (format!("error: {e}"), Style::default().fg(Color::Red)),
        (None, Some(s)) => (
            format!(
                "updated {} ago",
                age_text(
                    SystemTime::now()
                        .duration_since(s.taken_at)
                        .unwrap_or_default()
                )
            ),
            Style::default(),
        ),
        (None, None) => ("connecting...".to_owned(), Style::default()),
    };
    frame.render_widget(Paragraph::new(Line::styled(text, style)), status);
}

/// A titled table, or the title and `empty` when there are no rows.
fn section(
    frame: &mut Frame<'_>,
    area: Rect,
    title: &str,
    header: &[&'static str],
    widths: &[Constraint],
    rows: Vec<Row<'static>>,
    empty: &str,
) {
    let block = Block::new().title(Line::styled(title.to_owned(), bold()));
    if rows.is_empty() {
        frame.render_widget(Paragraph::new(format!("  {empty}")).block(block), area);
        return;
    }
    let table = Table::new(rows, widths.to_vec())
        .header(Row::new(header.to_vec()).style(bold()))
        .block(block)
        .column_spacing(2);
    frame.render_widget(table, area);
}

fn draw_queues(frame: &mut Frame<'_>, area: Rect, queues: &[sluice_proto::v1::QueueStats]) {
    let rows = queues.iter().map(|q| Row::new(queue_cells(q))).collect();
    let narrow = Constraint::Length(6);
    section(
        frame,
        area,
        "Queues",
        &QUEUE_COLUMNS,
        &[
            Constraint::Min(12),
            narrow,
            narrow,
            narrow,
            narrow,
            narrow,
            Constraint::Length(7),
            narrow,
            narrow,
            narrow,
        ],
        rows,
        "no queues yet",
    );
}

fn draw_workers(frame: &mut Frame<'_>, area: Rect, workers: &[sluice_proto::v1::WorkerInfo]) {
    let rows = workers
        .iter()
        .map(|w| {
            Row::new(vec![
                w.worker_id.clone(),
                w.queues.join(","),
                format!("{}/{}", w.in_flight, w.max_in_flight),
                ago_text(w.connected_since.as_ref()),
            ])
        })
        .collect();
    section(
        frame,
        area,
        "Workers",
        &["WORKER", "QUEUES", "IN FLIGHT", "CONNECTED"],
        &[
            Constraint::Min(20),
            Constraint::Length(24),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
        rows,
        "no workers connected",
    );
}

fn draw_running(frame: &mut Frame<'_>, area: Rect, jobs: &[pb::Job]) {
    let rows = jobs
        .iter()
        .map(|j| {
            Row::new(vec![
                j.id.clone(),
                j.queue.clone(),
                j.job_type.clone(),
                format!("{}/{}", j.attempt, j.max_attempts),
                progress_cell(j, 40),
                j.worker_id.clone(),
            ])
        })
        .collect();
    section(
        frame,
        area,
        "Running jobs",
        &["JOB", "QUEUE", "TYPE", "ATTEMPT", "PROGRESS", "WORKER"],
        // The whole id (36) fits a 100-column terminal with the rest.
        &[
            Constraint::Length(36),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Min(12),
            Constraint::Length(12),
        ],
        rows,
        "no jobs running",
    );
}

fn draw_schedules(frame: &mut Frame<'_>, area: Rect, schedules: &[pb::Schedule]) {
    let now = SystemTime::now();
    let rows = schedules
        .iter()
        .map(|s| {
            let due_in = system_time(s.next_fire_at.as_ref()).map_or_else(
                || "-".to_owned(),
                |t| age_text(t.duration_since(now).unwrap_or_default()),
            );
            let job = s.job.as_ref();
            let last = match (s.last_job_id.is_empty(), s.last_job_state()) {
                (true, _) => "-",
                (false, pb::JobState::Unspecified) => "gone",
                (false, state) => state_name(state),
            };
            Row::new(vec![
                due_in,
                s.name.clone(),
                job.map(|j| j.queue.clone()).unwrap_or_default(),
                s.description.clone(),
                last.to_owned(),
            ])
        })
        .collect();
    section(
        frame,
        area,
        "Schedules due soon",
        &["DUE IN", "SCHEDULE", "QUEUE", "WHEN", "LAST JOB"],
        &[
            Constraint::Length(6),
            Constraint::Length(20),
            Constraint::Length(12),
            Constraint::Min(24),
            Constraint::Length(9),
        ],
        rows,
        "no schedules due",
    );
}

fn draw_failures(frame: &mut Frame<'_>, area: Rect, failures: &[sluice_proto::v1::FailedAttempt]) {
    let rows = failures
        .iter()
        .take(MAX_FAILURES)
        .map(|f| {
            Row::new(vec![
                ago_text(f.failed_at.as_ref()),
                f.queue.clone(),
                f.job_type.clone(),
                f.attempt.to_string(),
                if f.dead { "yes" } else { "no" }.to_owned(),
                one_line(&f.error, 60),
            ])
        })
        .collect();
    section(
        frame,
        area,
        "Recent failures",
        &["AGO", "QUEUE", "TYPE", "ATTEMPT", "DEAD", "ERROR"],
        &[
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(7),
            Constraint::Length(4),
            Constraint::Min(20),
        ],
        rows,
        "no failures",
    );
}

/// The frame for `state` at `width` x `height`, as plain text lines
/// (trailing spaces trimmed).
///
/// # Errors
/// [`CliError::Local`] if drawing fails (it cannot on a test backend).
pub fn render_text(state: &TopState, width: u16, height: u16) -> Result<String, CliError> {
    let mut terminal = Terminal::new(TestBackend::new(width, height))
        .map_err(|e| CliError::Local(format!("drawing: {e}")))?;
    terminal
        .draw(|frame| draw(frame, state))
        .map_err(|e| CliError::Local(format!("drawing: {e}")))?;
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .filter_map(|x| buffer.cell((x, y)).map(|c| c.symbol().to_owned()))
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    // Blank lines at the bottom say nothing.
    let trimmed = out.trim_end_matches('\n').to_owned();
    Ok(trimmed + "\n")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::top::state::Snapshot;

    #[test]
    fn a_frame_shows_queues_workers_failures_and_the_error() {
        let mut state = TopState::new("http://127.0.0.1:1".into());
        state.update(Ok(Snapshot {
            stats: pb::StatsResponse {
                queues: vec![pb::QueueStats {
                    queue: "mail".into(),
                    ready: 7,
                    dead: 2,
                    ..Default::default()
                }],
                recent_failures: vec![pb::FailedAttempt {
                    queue: "mail".into(),
                    job_type: "send".into(),
                    attempt: 3,
                    error: "smtp down".into(),
                    dead: true,
                    ..Default::default()
                }],
            },
            workers: vec![pb::WorkerInfo {
                worker_id: "w-1".into(),
                queues: vec!["mail".into()],
                in_flight: 1,
                max_in_flight: 4,
                ..Default::default()
            }],
            running: vec![pb::Job {
                id: "0193a8f0-run-0000-0000-000000000000".into(),
                queue: "imports".into(),
                job_type: "csv".into(),
                attempt: 1,
                max_attempts: 5,
                worker_id: "w-1".into(),
                progress: Some(pb::JobProgress {
                    percent: 40,
                    message: "400 of 1000 rows".into(),
                    attempt: 1,
                    updated_at: None,
                }),
                ..Default::default()
            }],
            schedules: vec![pb::Schedule {
                name: "nightly".into(),
                description: "every day at 03:00 (Europe/Berlin)".into(),
                next_fire_at: Some((SystemTime::now() + Duration::from_secs(125)).into()),
                last_job_id: "0192".into(),
                last_job_state: pb::JobState::Succeeded.into(),
                job: Some(pb::JobTemplate {
                    queue: "reports".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            taken_at: SystemTime::now(),
        }));
        state.update(Err(CliError::Local("the broker is gone".into())));
        let text = render_text(&state, 100, 34).unwrap();
        assert!(text.contains("mail"), "{text}");
        assert!(text.contains("READY"), "{text}");
        assert!(text.contains("w-1"), "{text}");
        assert!(text.contains("1/4"), "{text}");
        assert!(text.contains("smtp down"), "{text}");
        let running = text
            .lines()
            .find(|l| l.contains("0193a8f0-run-0000-0000-000000000000"))
            .unwrap_or_default();
        for part in ["imports", "csv", "1/5", "40% 400 of 1000", "w-1"] {
            assert!(running.contains(part), "{part}: {text}");
        }
        let schedule = text
            .lines()
            .find(|l| l.contains("nightly"))
            .unwrap_or_default();
        for part in [
            "2m0",
            "reports",
            "every day at 03:00 (Europe/Berlin)",
            "SUCCEEDED",
        ] {
            assert!(schedule.contains(part), "{part}: {text}");
        }
        assert!(text.contains("error: the broker is gone"), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
    }
}
