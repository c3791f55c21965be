//! Typed errors of the LSM engine.

use crate::fs::FsError;

/// Everything the engine can fail with. Corrupt input is always reported
/// here, never returned as data and never a panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("file error: {0}")]
    Fs(#[from] FsError),
    #[error("corruption in {file} at offset {offset}: {what}")]
    Corruption { file: String, offset: u64, what: String },
    /// The engine stopped accepting writes after a write or sync error
    /// (fail-stop); reopen it to recover from what is durable.
    #[error("engine stopped accepting writes: {0}")]
    Stopped(String),
    #[error("condition failed: {0}")]
    ConditionFailed(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{what} exceeds its limit of {limit}")]
    LimitExceeded { what: &'static str, limit: u64 },
}

impl Error {
    pub(crate) fn corrupt(file: &str, offset: u64, what: impl Into<String>) -> Error {
        Error::Corruption { file: file.to_string(), offset, what: what.into() }
    }

    /// Whether the error reports detected corruption of stored bytes.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
