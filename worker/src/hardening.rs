//! What keeps a worker's secrets from the handlers it runs. Exec handlers
//! run as the worker's own user, so without this they could read the
//! worker's environment (`SLUICE_TOKEN`) from `/proc/PID/environ` or
//! attach to it with ptrace: [`hide_from_handlers`] makes the worker
//! non-dumpable, which turns both away for any process of the same user
//! that lacks `CAP_SYS_PTRACE` (root keeps it: run workers, and their
//! handlers, as an unprivileged user). The supervisor, for its part,
//! passes none of its own `SLUICE_SUPERVISOR_*` variables to the command.

use crate::error::WorkerError;

/// Makes this process non-dumpable (Linux's `PR_SET_DUMPABLE`): its
/// `/proc/PID/environ` and its memory are then closed to processes of its
/// own user, and it leaves no core dump. A no-op elsewhere.
///
/// # Errors
/// [`WorkerError::Hardening`] when Linux refuses.
pub fn hide_from_handlers() -> Result<(), WorkerError> {
    #[cfg(target_os = "linux")]
    nix::sys::prctl::set_dumpable(false).map_err(|e| WorkerError::Hardening {
        reason: format!("making the worker non-dumpable: {e}"),
    })?;
    Ok(())
}
