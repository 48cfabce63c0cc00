//! [`CliError`]: why a command failed, and the one mapping from a failure
//! to the process's exit status ([`CliError::exit_code`]) and its one-line
//! message. Commands return it; only `main` prints it and exits.
//!
//! Exit statuses: 0 success, 1 a refused request, an unreachable broker or
//! a local failure (a file, the terminal), 2 a usage error (clap's own
//! usage errors exit 2 too).

use std::fmt;

use tonic::Code;

/// Exit status of a refused request or any other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a usage error, as clap's own.
pub const EXIT_USAGE: u8 = 2;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// What was asked makes no sense: bad option values, a missing
    /// `--yes`, unusable connection settings.
    #[error("{0}")]
    Usage(String),
    /// No connection could be made to the broker.
    #[error("cannot reach the broker at {url}: {reason}")]
    Unreachable {
        /// The broker's URL as given.
        url: String,
        /// Why, in a few words (`connection refused`).
        reason: String,
    },
    /// The broker answered with an error status.
    #[error("{}: {message}", CodeName(*code))]
    Refused {
        /// The gRPC status code.
        code: Code,
        /// The broker's message.
        message: String,
    },
    /// Some of several requests (retry or cancel of many jobs) were
    /// refused; each was reported already.
    #[error("{failed} of {total} requests failed")]
    Partial {
        /// How many were refused.
        failed: usize,
        /// How many were made.
        total: usize,
    },
    /// Something on this side failed: a file, standard input, the terminal.
    #[error("{0}")]
    Local(String),
}

impl CliError {
    /// The process's exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Unreachable { .. }
            | Self::Refused { .. }
            | Self::Partial { .. }
            | Self::Local(_) => EXIT_FAILURE,
        }
    }

    /// A refusal from a gRPC status.
    pub fn from_status(status: &tonic::Status) -> Self {
        Self::Refused {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// A status code as the gRPC specification names it (`NOT_FOUND`), the form
/// operators find in documentation and logs.
#[derive(Debug, Clone, Copy)]
pub struct CodeName(pub Code);

impl fmt::Display for CodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(sluice_proto::json::code_name(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_code_as_grpc_does() {
        let err = CliError::from_status(&tonic::Status::not_found("job x not found"));
        assert_eq!(err.to_string(), "NOT_FOUND: job x not found");
        assert_eq!(err.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn usage_errors_exit_2_and_the_rest_1() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        let unreachable = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), EXIT_FAILURE);
        assert_eq!(
            unreachable.to_string(),
            "cannot reach the broker at http://127.0.0.1:1: connection refused"
        );
    }
}
