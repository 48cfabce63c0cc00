//! The terminal `sluice top` borrows: raw mode, the alternate screen and a
//! hidden cursor while it runs, all given back by [`TerminalGuard`] when
//! it drops (a normal exit, q, Esc, Ctrl-C, an error) and by a panic hook
//! when the program panics, so a shell is never left in raw mode.

use std::io::Write as _;

use ratatui::crossterm::cursor::{Hide, Show};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

use crate::error::CliError;

/// Holds the terminal in full-screen mode; restores it on drop.
pub struct TerminalGuard {
    _private: (),
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen, hides the cursor, and
    /// installs a panic hook that restores the terminal before the panic
    /// message is printed.
    ///
    /// # Errors
    /// [`CliError::Local`] when standard output is not a terminal that
    /// allows it.
    pub fn enter() -> Result<Self, CliError> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
        enable_raw_mode().map_err(|e| CliError::Local(format!("the terminal: {e}")))?;
        // From here on the guard exists, so a failure below restores too.
        let guard = Self { _private: () };
        execute!(std::io::stdout(), EnterAlternateScreen, Hide)
            .map_err(|e| CliError::Local(format!("the terminal: {e}")))?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Gives the terminal back: leaves the alternate screen, shows the cursor,
/// ends raw mode. Best effort: there is nowhere left to report a failure.
fn restore() {
    let mut stdout = std::io::stdout();
    let _ = execute!(stdout, LeaveAlternateScreen, Show);
    let _ = stdout.flush();
    let _ = disable_raw_mode();
}
