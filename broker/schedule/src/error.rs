//! [`SpecError`]: why a schedule's timing is refused.

/// Why a schedule's definition is refused: the field and the reason.
///
/// `field` is one of `cron`, `every`, `time_zone`, `start_at`, `end_at`;
/// `reason` is lowercase and says what is wrong, e.g. `cron: minute field:
/// 61 is out of 0-59`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SpecError {
    /// The field of the timing at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    /// A refusal of `field` for `reason`.
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}
