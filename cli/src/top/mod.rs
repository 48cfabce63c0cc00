//! `sluice top`: a live full-screen view of the broker, refreshed every
//! `--interval` until q, Esc or Ctrl-C; `--once` prints one frame as plain
//! text and exits.
//!
//! - [`state`]: what is shown, and how a failed refresh keeps the screen.
//! - [`draw`]: one frame from the state, and its plain-text rendering.
//! - [`terminal`]: the guard that gives the terminal back on every exit.
//!
//! The loop is synchronous: it blocks on each refresh (bounded by the
//! interval, at least a second) on the runtime, then draws, then waits for
//! keys until the next refresh is due.

pub mod draw;
pub mod state;
pub mod terminal;

use std::time::{Duration, Instant};

use clap::Args;
use humantime::Duration as Human;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use tokio::runtime::Runtime;

use crate::connect::Connection;
use crate::error::CliError;
use crate::output::print;
use state::{TopState, fetch};
use terminal::TerminalGuard;

/// The size of the `--once` frame.
const ONCE_WIDTH: u16 = 100;
/// See [`ONCE_WIDTH`].
const ONCE_HEIGHT: u16 = 40;

/// Flags of `sluice top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one frame as plain text and exit (for scripts).
    #[arg(long)]
    once: bool,
    /// Time between refreshes.
    #[arg(long, default_value = "1s")]
    interval: Human,
}

/// Runs `top` against `conn`.
///
/// # Errors
/// With `--once`, a failed fetch; live, a terminal that cannot be set up.
pub fn run(
    runtime: &Runtime,
    mut conn: Connection,
    url: String,
    args: &TopArgs,
) -> Result<(), CliError> {
    let mut state = TopState::new(url);
    let interval = Duration::from(args.interval).max(Duration::from_millis(100));
    if args.once {
        state.update(Ok(runtime.block_on(fetch(&mut conn))?));
        return print(&draw::render_text(&state, ONCE_WIDTH, ONCE_HEIGHT)?);
    }
    let guard = TerminalGuard::enter()?;
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))
        .map_err(|e| CliError::Local(format!("the terminal: {e}")))?;
    let fetch_limit = interval.max(Duration::from_secs(1));
    loop {
        let next = Instant::now() + interval;
        let result = runtime.block_on(async {
            tokio::time::timeout(fetch_limit, fetch(&mut conn))
                .await
                .unwrap_or_else(|_| {
                    Err(CliError::Local(format!(
                        "the broker did not answer within {}",
                        humantime::format_duration(fetch_limit)
                    )))
                })
        });
        state.update(result);
        terminal
            .draw(|frame| draw::draw(frame, &state))
            .map_err(|e| CliError::Local(format!("the terminal: {e}")))?;
        if wait_for_quit(next)? {
            break;
        }
    }
    drop(terminal);
    drop(guard);
    Ok(())
}

/// Reads keys until `deadline`; true when one asks to quit.
fn wait_for_quit(deadline: Instant) -> Result<bool, CliError> {
    let terminal_error = |e: std::io::Error| CliError::Local(format!("the terminal: {e}"));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        if !event::poll(left).map_err(terminal_error)? {
            return Ok(false);
        }
        if let Event::Key(key) = event::read().map_err(terminal_error)?
            && key.kind == KeyEventKind::Press
        {
            let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                && matches!(key.code, KeyCode::Char('c'));
            if ctrl_c || matches!(key.code, KeyCode::Char('q' | 'Q') | KeyCode::Esc) {
                return Ok(true);
            }
        }
    }
}
