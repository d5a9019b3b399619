//! The one error type of the application layer.

use admit_domain::DomainError;

/// One invalid field of a request.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field (JSON pointer-ish name, e.g. `email` or `items/3/email`).
    pub field: String,
    /// Stable code, e.g. `invalid_email`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Why a command or query failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The domain refused the command or a value was malformed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The thing does not exist, or the caller may not know it exists.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Email or password wrong (never says which).
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// Concurrent writers kept winning; the command was not applied.
    #[error("too much contention, try again")]
    Contention,
    /// The log failed.
    #[error(transparent)]
    Ledger(#[from] admit_ledger::LedgerError),
    /// The read models failed.
    #[error(transparent)]
    Projection(#[from] admit_projections::ProjectionError),
    /// A direct query failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The request itself is malformed (bad JSON, unknown field, bad cursor...).
    #[error("{detail}")]
    BadRequest {
        /// Stable code, e.g. `malformed_json`.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// Several fields are invalid at once (`validation_failed`).
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// No credentials, or credentials that are not (or no longer) valid.
    #[error("authentication required")]
    Unauthenticated,
    /// Too many failed attempts from this address or for this email.
    #[error("too many attempts, try again later")]
    TooManyAttempts,
    /// A change that affects others needs `confirm=true`; the counts say how many.
    #[error("this affects {affected_invitations} pending invitations and {affected_members} members; repeat with confirm=true")]
    ConfirmationRequired {
        /// Pending invitations that would change.
        affected_invitations: u64,
        /// Members who would change.
        affected_members: u64,
    },
    /// Something that should not happen (a bug or a broken invariant).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of the error, for problem+json bodies and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Domain(e) => e.code(),
            Error::NotFound(_) => "not_found",
            Error::InvalidCredentials => "invalid_credentials",
            Error::Contention => "contention",
            Error::Ledger(_) | Error::Projection(_) | Error::Database(_) => "database_unavailable",
            Error::Internal(_) => "internal",
            Error::BadRequest { code, .. } => code,
            Error::Validation(_) => "validation_failed",
            Error::Unauthenticated => "unauthenticated",
            Error::TooManyAttempts => "too_many_attempts",
            Error::ConfirmationRequired { .. } => "confirmation_required",
        }
    }

    /// True when running the command again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Ledger(e) => e.is_retryable(),
            Error::Projection(admit_projections::ProjectionError::Ledger(e)) => e.is_retryable(),
            Error::Database(sqlx::Error::Database(e))
            | Error::Projection(admit_projections::ProjectionError::Database(sqlx::Error::Database(e))) => {
                matches!(e.code().as_deref(), Some("40001") | Some("40P01")) || e.is_unique_violation()
            }
            _ => false,
        }
    }
}
