//! The one error type of the ledger crate.

/// What can go wrong when reading or writing the log.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The stream was not at the expected version: someone else wrote first.
    /// Nothing of the append was written.
    #[error("stream {stream} is at version {actual}, expected {expected}")]
    Conflict {
        /// The stream that moved.
        stream: String,
        /// The version the caller expected.
        expected: String,
        /// The version found (0 when the stream does not exist).
        actual: i64,
    },
    /// Some but not all event ids of an append already exist: a retry that
    /// does not match the first attempt.
    #[error("append to {stream} repeats some event ids of another append")]
    PartialDuplicate {
        /// The stream appended to.
        stream: String,
    },
    /// The database URL names neither PostgreSQL nor SQLite.
    #[error("unsupported database url (expected postgres:// or sqlite://): {0}")]
    UnsupportedUrl(String),
    /// A stored row could not be decoded (corrupt metadata, bad cursor, ...).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl LedgerError {
    /// True when the error means "try the command again": a version
    /// conflict, or a serialization failure / deadlock reported by the
    /// database.
    pub fn is_retryable(&self) -> bool {
        match self {
            LedgerError::Conflict { .. } => true,
            LedgerError::Database(sqlx::Error::Database(e)) => {
                matches!(e.code().as_deref(), Some("40001") | Some("40P01")) || e.is_unique_violation()
            }
            _ => false,
        }
    }
}
