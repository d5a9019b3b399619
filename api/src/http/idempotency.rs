//! `Idempotency-Key` on POST: a retried request gets the first answer.
//!
//! The key is scoped to the caller's credentials, method and path, so two
//! callers cannot see each other's answers. A retry with a different body
//! is refused (`idempotency_key_reused`); a retry while the first request
//! is still running is refused (`idempotency_in_progress`). Answers of 5xx
//! are not kept, so a failed request can be retried for real.

use admit_ledger::on_db;
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::sessions::secret_hash;
use super::{ApiContext, BODY_LIMIT};
use crate::Error;

/// Largest response body kept for replay.
const MAX_KEPT: usize = 1024 * 1024;

/// Middleware: replays the stored answer of a repeated POST with the same
/// `Idempotency-Key`, or runs the request and stores its answer.
pub async fn replay_or_record(State(ctx): State<ApiContext>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string) else {
        return next.run(req).await;
    };
    if key.is_empty() || key.len() > 255 {
        return Error::BadRequest {
            code: "invalid_idempotency_key",
            detail: "Idempotency-Key must be 1 to 255 characters".into(),
        }
        .into_response();
    }
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let key_hash = secret_hash(&format!("{auth}\n{}\n{}\n{key}", req.method(), req.uri().path()));
    let (parts, body) = req.into_parts();
    let bytes = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return Error::BadRequest { code: "payload_too_large", detail: "the body is larger than allowed".into() }
                .into_response()
        }
    };
    let request_hash = secret_hash(&String::from_utf8_lossy(&bytes));
    match claim(&ctx, &key_hash, &request_hash).await {
        Ok(Claim::Replay(status, body)) => {
            let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), body).into_response();
            let content_type =
                if (200..300).contains(&status) { "application/json" } else { "application/problem+json" };
            resp.headers_mut().insert("content-type", HeaderValue::from_static(content_type));
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return resp;
        }
        Ok(Claim::Mismatch) => {
            return Error::BadRequest {
                code: "idempotency_key_reused",
                detail: "this Idempotency-Key was used with a different request".into(),
            }
            .into_response()
        }
        Ok(Claim::InProgress) => {
            let mut r = Error::BadRequest {
                code: "idempotency_in_progress",
                detail: "the first request with this key is still running".into(),
            }
            .into_response();
            *r.status_mut() = StatusCode::CONFLICT;
            return r;
        }
        Ok(Claim::Fresh) => {}
        Err(e) => return e.into_response(),
    }
    let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = response.status();
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, MAX_KEPT).await.unwrap_or_default();
    let kept = if status.is_server_error() {
        forget(&ctx, &key_hash).await
    } else {
        keep(&ctx, &key_hash, status.as_u16(), &body).await
    };
    if let Err(e) = kept {
        tracing::warn!(error = %e, "could not store the idempotent answer");
    }
    Response::from_parts(parts, Body::from(body))
}

enum Claim {
    Fresh,
    Replay(u16, Vec<u8>),
    Mismatch,
    InProgress,
}

async fn claim(ctx: &ApiContext, key_hash: &str, request_hash: &str) -> Result<Claim, Error> {
    let inserted = admit_ledger::on_db_write!(&ctx.admit.db, p => sqlx::query(
        "INSERT INTO idempotency_keys (key_hash, request_hash, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_hash) DO NOTHING",
    )
    .bind(key_hash)
    .bind(request_hash)
    .bind(Utc::now())
    .execute(p)
    .await?
    .rows_affected());
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let row: Option<(String, Option<i32>, Option<Vec<u8>>)> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE key_hash = $1",
    )
    .bind(key_hash)
    .fetch_optional(p)
    .await?);
    Ok(match row {
        None => Claim::InProgress,
        Some((h, _, _)) if h != request_hash => Claim::Mismatch,
        Some((_, Some(status), body)) => Claim::Replay(status as u16, body.unwrap_or_default()),
        Some((_, None, _)) => Claim::InProgress,
    })
}

async fn keep(ctx: &ApiContext, key_hash: &str, status: u16, body: &[u8]) -> Result<(), Error> {
    admit_ledger::on_db_write!(&ctx.admit.db, p => sqlx::query("UPDATE idempotency_keys SET status = $1, body = $2 WHERE key_hash = $3")
        .bind(i32::from(status))
        .bind(body.to_vec())
        .bind(key_hash)
        .execute(p)
        .await
        .map(|_| ())?);
    Ok(())
}

async fn forget(ctx: &ApiContext, key_hash: &str) -> Result<(), Error> {
    admit_ledger::on_db_write!(&ctx.admit.db, p => sqlx::query("DELETE FROM idempotency_keys WHERE key_hash = $1").bind(key_hash).execute(p).await.map(|_| ())?);
    Ok(())
}
