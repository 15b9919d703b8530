use std::path::PathBuf;

/// Errors of the journal layer.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The data directory could not be created or used.
    #[error("failed to prepare data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A SQLite operation failed.
    #[error("failed to {action} journal at {path}")]
    Sqlite {
        /// What was being attempted, e.g. "open" or "commit to".
        action: &'static str,
        /// The journal file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A corrupt journal could not be moved aside.
    #[error("failed to move corrupt journal {path} aside")]
    MoveAside {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal was written by a later release.
    #[error(
        "journal at {path} has schema version {version}, newer than this release understands: \
         upgrade edge-gateway, or move the journal aside"
    )]
    TooNew {
        /// The journal file.
        path: PathBuf,
        /// Its schema version.
        version: i64,
    },
    /// The journal's writer thread has stopped.
    #[error("journal writer has stopped")]
    WriterStopped,
    /// The journal does not exist (for read-only tools).
    #[error("no journal at {0}")]
    Missing(PathBuf),
}

impl JournalError {
    /// Whether the underlying SQLite error says the file is not a valid database.
    pub(crate) fn is_corruption(&self) -> bool {
        match self {
            Self::Sqlite { source, .. } => is_corruption(source),
            _ => false,
        }
    }
}

pub(crate) fn is_corruption(error: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}
