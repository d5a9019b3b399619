//! Errors as RFC 9457 problem+json, with a stable `code` and, for
//! validation, per-field `errors`.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::{Error, FieldError};

/// The body of every error answer (RFC 9457 problem+json); the OpenAPI
/// document describes each operation's 4xx and 503 answers with it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `https://admit.dev/problems/{code}`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// The reason phrase of the status.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// Stable code to branch on, e.g. `validation_failed`, `not_found`.
    pub code: String,
    /// What went wrong, for people.
    pub detail: String,
    /// `validation_failed`: each invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// `confirmation_required`: pending invitations the change would touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_invitations: Option<u64>,
    /// `confirmation_required`: members the change would touch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affected_members: Option<u64>,
}

/// The HTTP status for a domain refusal code.
fn status_for_code(code: &str) -> StatusCode {
    match code {
        "forbidden" | "exceeds_own_rights" | "email_mismatch" | "inviter_lacks_rights" | "built_in_role" => {
            StatusCode::FORBIDDEN
        }
        "invalid_token" | "member_not_found" | "role_not_found" => StatusCode::NOT_FOUND,
        "unknown_role" => StatusCode::UNPROCESSABLE_ENTITY,
        "invitation_expired" | "invitation_revoked" | "invitation_declined" => StatusCode::GONE,
        "daily_quota_exceeded" => StatusCode::TOO_MANY_REQUESTS,
        "invalid_credentials" => StatusCode::UNAUTHORIZED,
        _ => StatusCode::CONFLICT,
    }
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::Domain(admit_domain::DomainError::Invalid { .. }) | Error::Validation(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::Domain(e) => status_for_code(e.code()),
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidCredentials | Error::Unauthenticated => StatusCode::UNAUTHORIZED,
            Error::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            Error::ConfirmationRequired { .. } | Error::Contention => StatusCode::CONFLICT,
            Error::BadRequest { code: "payload_too_large" | "too_many_rows", .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadRequest { code: "unsupported_media_type", .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::Ledger(_) | Error::Projection(_) | Error::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = match &self {
            Error::Contention => "version_conflict",
            other => other.code(),
        };
        let detail = match &self {
            // Never leak database internals to clients; log them instead.
            Error::Ledger(_) | Error::Projection(_) | Error::Database(_) | Error::Internal(_) => {
                tracing::error!(error = %self, "request failed");
                "the service is temporarily unavailable; try again".to_string()
            }
            other => other.to_string(),
        };
        let mut body = Problem {
            problem_type: format!("https://admit.dev/problems/{code}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            code: code.to_string(),
            detail,
            errors: None,
            affected_invitations: None,
            affected_members: None,
        };
        match self {
            Error::Validation(errors) => body.errors = Some(errors),
            Error::Domain(admit_domain::DomainError::Invalid { field, code, reason }) => {
                body.code = "validation_failed".into();
                body.errors = Some(vec![FieldError { field: field.into(), code: code.into(), message: reason }]);
            }
            Error::ConfirmationRequired { affected_invitations, affected_members } => {
                body.affected_invitations = Some(affected_invitations);
                body.affected_members = Some(affected_members);
            }
            _ => {}
        }
        let mut response = (status, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
        response
    }
}
