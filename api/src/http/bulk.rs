//! Bulk invitations over HTTP: `POST /v1/accounts/{account}/invitations/bulk`
//! with a JSON list or a CSV file, and the CSV template.
//!
//! CSV format (README "Bulk invitations"): a header row naming the columns
//! `email` (required), `name`, `roles` (several separated by `;`) and
//! `expires_in` (`48` or `48h` hours, `2d` days, `90m` minutes, `3600s`
//! seconds), in any order and any
//! case; `,` or `;` between fields (detected from the header); fields may be
//! quoted (`"..."`, quotes doubled inside); UTF-8 with or without a
//! byte-order mark; LF or CRLF; blank lines ignored.

use admit_domain::access::{Access, Permission};
use admit_domain::ids::AccountId;
use admit_domain::invitation::Channel;
use admit_domain::values::{EmailAddress, LinkLifetime, PersonName, RoleName};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::csv;
use super::extract::{ApiPath, ApiQuery, Principal};
use super::invitations::{field_error, InviteBody};
use super::ApiContext;
use crate::commands::{BulkOptions, InviteRequest};
use crate::{Error, FieldError};

/// Most rows one bulk request may carry.
pub const MAX_BULK_ROWS: usize = 10_000;

/// Query of `POST .../invitations/bulk`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BulkQuery {
    /// Check every row, write nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Write nothing unless every row succeeds.
    #[serde(default)]
    pub all_or_nothing: bool,
}

/// Body of a JSON bulk request (a bare JSON array of the items is accepted too).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkBody {
    /// One invitation per row (at most 10,000).
    pub items: Vec<InviteBody>,
}

/// Outcome of one bulk row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkRow {
    /// Row number, from 1 (CSV: data rows, the header not counted).
    pub row: usize,
    /// CSV only: the line of the file the row starts on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The row's email as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `ok` or the error's code (`invalid_email`, `duplicate_in_file`,
    /// `already_member`, `already_invited`, `unknown_role`,
    /// `seat_limit_reached`, `daily_quota_exceeded`, ...).
    pub code: String,
    /// Error explanation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The invitation made (not on dry runs or when nothing was written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation_id: Option<Uuid>,
}

/// Outcome of a bulk request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResponse {
    /// Rows that succeeded (or would, on a dry run).
    pub ok: usize,
    /// Rows refused.
    pub failed: usize,
    /// Whether anything was written.
    pub written: bool,
    /// One result per row.
    pub rows: Vec<BulkRow>,
}

/// A row as read from the request, before the ledger judged it.
pub(super) struct ParsedRow {
    /// CSV only: the line of the file the row starts on.
    pub(super) line: Option<usize>,
    /// The row's email as given.
    pub(super) email: Option<String>,
    /// The invitation the row asks for, or why it cannot be one.
    pub(super) request: Result<InviteRequest, Error>,
}

/// `POST /v1/accounts/{account}/invitations/bulk`: invite many, from a JSON
/// list (`application/json`) or a CSV file (`text/csv`). Every row gets a
/// result; valid rows are invited unless `dry_run`, or `all_or_nothing` and
/// some row failed.
#[utoipa::path(post, path = "/v1/accounts/{account}/invitations/bulk", tag = "invitations",
    request_body(content((BulkBody = "application/json"), (String = "text/csv")),
        description = "A JSON object {items: [...]} (or a bare array), or a CSV file with a header row: email, name, roles (separated by ';'), expires_in"),
    params(("account" = Uuid, Path), BulkQuery), security(("bearer" = [])),
    responses((status = 200, body = BulkResponse), (status = 400, description = "malformed_csv, malformed_json, invalid_body (the detail names the line)"),
        (status = 413, description = "too_many_rows, payload_too_large"), (status = 415, description = "unsupported_media_type")))]
pub async fn bulk(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<BulkQuery>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<BulkResponse>, Error> {
    let body = body.map_err(|r| match r.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Error::BadRequest { code: "payload_too_large", detail: "the body is larger than allowed (2 MiB)".into() }
        }
        _ => Error::BadRequest { code: "invalid_body", detail: r.body_text() },
    })?;
    let account = AccountId(account);
    let (_, mut rctx) = ctx.authorize(&who, account, Permission::InvitationsBulk).await?;
    rctx.channel = Channel::Bulk;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let rows = match essence.as_str() {
        "application/json" => json_rows(&body)?,
        "text/csv" | "application/csv" | "text/plain" => csv_rows(&body)?,
        _ => {
            return Err(Error::BadRequest {
                code: "unsupported_media_type",
                detail: "send application/json or text/csv".into(),
            })
        }
    };
    let meta: Vec<(Option<usize>, Option<String>)> = rows.iter().map(|r| (r.line, r.email.clone())).collect();
    let requests = rows.into_iter().map(|r| r.request).collect();
    let options = BulkOptions { dry_run: q.dry_run, all_or_nothing: q.all_or_nothing };
    let outcome = ctx.admit.invite_many(&rctx, account, requests, options).await?;
    let failed = outcome.failed();
    let written = outcome.written;
    let rows: Vec<BulkRow> = outcome
        .rows
        .into_iter()
        .zip(meta)
        .enumerate()
        .map(|(i, (r, (line, email)))| match r {
            Ok(issued) => BulkRow {
                row: i + 1,
                line,
                email,
                code: "ok".into(),
                message: None,
                invitation_id: written.then_some(issued.invitation_id.0),
            },
            Err(e) => {
                let (code, message) = match &e {
                    Error::Validation(errors) => errors
                        .first()
                        .map(|f| (f.code.clone(), format!("{}: {}", f.field, f.message)))
                        .unwrap_or_else(|| ("validation_failed".into(), e.to_string())),
                    Error::Domain(admit_domain::DomainError::Invalid { field, code, reason }) => {
                        (code.to_string(), format!("{field}: {reason}"))
                    }
                    other => (other.code().to_string(), other.to_string()),
                };
                BulkRow { row: i + 1, line, email, code, message: Some(message), invitation_id: None }
            }
        })
        .collect();
    Ok(Json(BulkResponse { ok: rows.len() - failed, failed, written, rows }))
}

fn too_many_rows() -> Error {
    Error::BadRequest {
        code: "too_many_rows",
        detail: format!("at most {MAX_BULK_ROWS} rows per request; split the file"),
    }
}

fn json_rows(body: &[u8]) -> Result<Vec<ParsedRow>, Error> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::BadRequest { code: "malformed_json", detail: e.to_string() })?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(mut o) if o.len() == 1 && o.contains_key("items") => match o.remove("items") {
            Some(serde_json::Value::Array(items)) => items,
            _ => return Err(Error::BadRequest { code: "invalid_body", detail: "items must be a list".into() }),
        },
        _ => {
            return Err(Error::BadRequest {
                code: "invalid_body",
                detail: "send {\"items\": [...]} or a JSON list of invitations".into(),
            })
        }
    };
    if items.len() > MAX_BULK_ROWS {
        return Err(too_many_rows());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let body: InviteBody = serde_json::from_value(item)
                .map_err(|e| Error::BadRequest { code: "invalid_body", detail: format!("items/{i}: {e}") })?;
            Ok(ParsedRow {
                line: None,
                email: Some(body.email.trim().to_string()),
                request: body.parse(&format!("items/{i}/")),
            })
        })
        .collect()
}

/// The columns a CSV file may have.
const COLUMNS: [&str; 4] = ["email", "name", "roles", "expires_in"];

fn malformed(detail: String) -> Error {
    Error::BadRequest { code: "malformed_csv", detail }
}

/// Reads a CSV upload into rows: the whole file refused with
/// `malformed_csv` (naming the line) or `too_many_rows`, else one row per
/// record, each a request or its field errors.
pub(super) fn csv_rows(body: &[u8]) -> Result<Vec<ParsedRow>, Error> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count() + 1;
        malformed(format!("line {line}: the file is not UTF-8 text (save it as CSV UTF-8)"))
    })?;
    let (_, records) =
        csv::read(text, MAX_BULK_ROWS + 1).map_err(|e| malformed(e.to_string()))?.ok_or_else(too_many_rows)?;
    let mut records = records.into_iter();
    let header = records.next().ok_or_else(|| {
        malformed("line 1: the file is empty; start with the header row email,name,roles,expires_in".into())
    })?;
    let mut index = [None; 4];
    for (i, name) in header.fields.iter().enumerate() {
        let name = name.trim().to_ascii_lowercase();
        let Some(col) = COLUMNS.iter().position(|c| *c == name) else {
            return Err(malformed(format!(
                "line {}: unknown column {name:?} in the header (columns: {})",
                header.line,
                COLUMNS.join(", ")
            )));
        };
        if index[col].replace(i).is_some() {
            return Err(malformed(format!("line {}: column {name:?} appears twice", header.line)));
        }
    }
    let Some(email_at) = index[0] else {
        return Err(malformed(format!("line {}: the header has no email column", header.line)));
    };
    let records: Vec<_> = records.collect();
    if records.len() > MAX_BULK_ROWS {
        return Err(too_many_rows());
    }
    let width = header.fields.len();
    records
        .into_iter()
        .map(|r| {
            if r.fields.len() != width {
                return Err(malformed(format!(
                    "line {}: {} fields, but the header has {width} (quote fields that contain the separator)",
                    r.line,
                    r.fields.len()
                )));
            }
            let cell = |col: usize| index[col].map(|i| r.fields[i].trim()).unwrap_or("");
            let email = r.fields[email_at].trim().to_string();
            Ok(ParsedRow {
                line: Some(r.line),
                request: csv_request(&email, cell(1), cell(2), cell(3)),
                email: Some(email),
            })
        })
        .collect()
}

/// A CSV row as an invitation request, collecting every field error.
fn csv_request(email: &str, name: &str, roles: &str, expires_in: &str) -> Result<InviteRequest, Error> {
    let mut errors: Vec<FieldError> = Vec::new();
    let email = EmailAddress::parse(email).map_err(|e| errors.push(field_error("email", &e))).ok();
    let name = if name.is_empty() {
        None
    } else {
        PersonName::parse(name).map_err(|e| errors.push(field_error("name", &e))).ok()
    };
    let mut access = Access::default();
    for r in roles.split(';').map(str::trim).filter(|r| !r.is_empty()) {
        match RoleName::parse(r) {
            Ok(r) => {
                access.roles.insert(r);
            }
            Err(e) => errors.push(field_error("roles", &e)),
        }
    }
    let expires_in = match parse_lifetime(expires_in) {
        Ok(None) => None,
        Ok(Some(seconds)) => {
            LinkLifetime::from_seconds(seconds).map_err(|e| errors.push(field_error("expires_in", &e))).ok()
        }
        Err(()) => {
            errors.push(FieldError {
                field: "expires_in".into(),
                code: "invalid_expires_in".into(),
                message: "a whole number of hours (48 or 48h), days (2d), minutes (90m) or seconds (3600s)".into(),
            });
            None
        }
    };
    match email {
        Some(email) if errors.is_empty() => {
            Ok(InviteRequest { email, name, access, expires_in, metadata: None, redirect_url: None })
        }
        _ => Err(Error::Validation(errors)),
    }
}

/// The `expires_in` cell in seconds: `""` → default; `48` or `48h` → 48
/// hours; `2d` → 2 days; `90m` → 90 minutes; `3600s` → 3600 seconds.
fn parse_lifetime(s: &str) -> Result<Option<u64>, ()> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return Ok(None);
    }
    let (digits, factor) = match s.char_indices().last() {
        Some((i, 'd')) => (&s[..i], 86_400),
        Some((i, 'h')) => (&s[..i], 3_600),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 's')) => (&s[..i], 1),
        _ => (s.as_str(), 3_600),
    };
    let n: u64 = digits.trim().parse().map_err(|_| ())?;
    n.checked_mul(factor).map(Some).ok_or(())
}

/// The template: the header and two example rows.
pub const TEMPLATE: &str = "email,name,roles,expires_in\r\n\
jane.doe@example.com,Jane Doe,editor,48h\r\n\
max.mustermann@example.com,Max Mustermann,editor;viewer,\r\n";

/// `GET /v1/accounts/{account}/invitations/bulk/template.csv`: the CSV
/// template for bulk invitations.
#[utoipa::path(get, path = "/v1/accounts/{account}/invitations/bulk/template.csv", tag = "invitations",
    params(("account" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 200, description = "the template", content_type = "text/csv"), (status = 403), (status = 404)))]
pub async fn template(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
) -> Result<impl IntoResponse, Error> {
    ctx.authorize(&who, AccountId(account), Permission::InvitationsBulk).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"invitations-template.csv\""),
        ],
        TEMPLATE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_in_hours_days_minutes_or_seconds() {
        assert_eq!(parse_lifetime(""), Ok(None));
        assert_eq!(parse_lifetime("48"), Ok(Some(48 * 3600)));
        assert_eq!(parse_lifetime("48h"), Ok(Some(48 * 3600)));
        assert_eq!(parse_lifetime("2D"), Ok(Some(48 * 3600)));
        assert_eq!(parse_lifetime("90m"), Ok(Some(5400)));
        assert_eq!(parse_lifetime("3600s"), Ok(Some(3600)));
        assert_eq!(parse_lifetime("soon"), Err(()));
        assert_eq!(parse_lifetime("-1"), Err(()));
        assert_eq!(parse_lifetime("h"), Err(()));
    }
}
