//! The one error type of the domain crate.
//!
//! Every variant carries a stable, snake_case `code` that the API turns into
//! the `code` of a problem+json body, so clients can branch on it.

/// Why a value could not be parsed or a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A value at the edge (email, name, role name, token, ...) is malformed.
    #[error("{field}: {reason}")]
    Invalid {
        /// Which input field was wrong (`email`, `name`, `password`, ...).
        field: &'static str,
        /// Stable machine-readable code, e.g. `invalid_email`.
        code: &'static str,
        /// Human-readable explanation.
        reason: String,
    },
    /// A command broke a rule of the product (seat limit, quota, ...).
    #[error("{reason}")]
    Refused {
        /// Stable machine-readable code, e.g. `seat_limit_reached`.
        code: &'static str,
        /// Human-readable explanation.
        reason: String,
    },
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &'static str, code: &'static str, reason: impl Into<String>) -> Self {
        DomainError::Invalid { field, code, reason: reason.into() }
    }

    /// Shorthand for [`DomainError::Refused`].
    pub fn refused(code: &'static str, reason: impl Into<String>) -> Self {
        DomainError::Refused { code, reason: reason.into() }
    }

    /// The input field an invalid value came from (None for refusals).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            DomainError::Invalid { field, .. } => Some(field),
            DomainError::Refused { .. } => None,
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid { code, .. } | DomainError::Refused { code, .. } => code,
        }
    }
}
