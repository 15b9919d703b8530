//! Errors of setting up a sink: what is read when the gateway starts, so that a bad path fails
//! at start and not at the first connection.

use std::path::{Path, PathBuf};

use crate::journal::JournalError;

/// Errors of a sink's setup.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A TLS file could not be used.
    #[error("failed to set up TLS from {path}: {message}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A secret (password, token, credentials) file could not be read.
    #[error("failed to read uplink secret file {path}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Reads a one-line secret, without its line ending.
pub(crate) fn read_secret(path: &Path) -> Result<String, SinkError> {
    std::fs::read_to_string(path)
        .map(|secret| secret.trim_end_matches(['\r', '\n']).to_owned())
        .map_err(|source| SinkError::SecretFile {
            path: path.to_path_buf(),
            source,
        })
}
