//! The one error type of the projections crate.

/// What can go wrong while projecting or decoding events.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The log could not be read or written.
    #[error(transparent)]
    Ledger(#[from] admit_ledger::LedgerError),
    /// A read-model query failed.
    #[error("read model: {0}")]
    Database(#[from] sqlx::Error),
    /// A read-model statement on SQLite's direct binding failed (rebuilds).
    #[error("read model (SQLite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A read-model row holds what its column cannot (damaged by hand).
    #[error("corrupt read model: {0}")]
    Corrupt(String),
    /// A stored event could not be decoded.
    #[error("event {event_id}: {reason}")]
    Decode {
        /// The event that failed.
        event_id: uuid::Uuid,
        /// Why.
        reason: String,
    },
}
