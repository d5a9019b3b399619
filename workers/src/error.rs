//! The one error type of the workers crate.

/// What can stop a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The log or its tables failed.
    #[error(transparent)]
    Ledger(#[from] admit_ledger::LedgerError),
    /// Decoding events failed.
    #[error(transparent)]
    Projection(#[from] admit_projections::ProjectionError),
    /// A command failed.
    #[error(transparent)]
    App(#[from] admit_api::Error),
    /// A worker table query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Mail configuration is wrong.
    #[error("mail configuration: {0}")]
    MailConfig(String),
    /// The Kafka broker refused or did not acknowledge.
    #[error("kafka: {0}")]
    Kafka(String),
}
