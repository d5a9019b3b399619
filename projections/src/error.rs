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
    /// A stored event could not be decoded.
    #[error("event {event_id}: {reason}")]
    Decode {
        /// The event that failed.
        event_id: uuid::Uuid,
        /// Why.
        reason: String,
    },
}
