//! The HTTP surface. For now: health and readiness; the `/v1` routes of
//! DESIGN.md arrive with the issue "HTTP API for the whole lifecycle".

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::Admit;

/// The router of `admit serve`.
pub fn router(admit: Admit) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(admit)
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and every migration is applied.
async fn readyz(State(admit): State<Admit>) -> (StatusCode, Json<serde_json::Value>) {
    match admit.db.is_migrated().await {
        Ok(true) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "migrations pending" }))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unreachable", "detail": e.to_string() }))),
    }
}
