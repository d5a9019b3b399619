//! Auditors: an account's raw events, paged by position.

use admit_domain::access::Permission;
use admit_domain::ids::AccountId;
use admit_ledger::RecordedEvent;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, Principal};
use super::invitations::page_size;
use super::ApiContext;
use crate::Error;

/// Query of the event list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this stream (e.g. `invitation-<id>`).
    pub stream: Option<String>,
    /// Only this event type (e.g. `InvitationSent`).
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Page size (1..=100, default 50).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
}

/// One event as stored, with its payload decoded (personal data opened,
/// or `erased`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    /// Global position.
    pub position: i64,
    /// Event id.
    pub event_id: Uuid,
    /// Stream.
    pub stream_id: String,
    /// Version in the stream.
    pub stream_version: i64,
    /// Type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version.
    pub schema_version: i32,
    /// Payload.
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
    /// Actor, correlation, causation, request id.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// When recorded.
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 chained to the stream's previous event, hex.
    pub hash: String,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// The events, by position.
    pub items: Vec<EventView>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// The cursor of the event list: the position of the last event shown.
pub fn encode_position_cursor(position: i64) -> String {
    format!("p{position}")
}

/// Decodes a cursor made by [`encode_position_cursor`]; anything else is
/// 400 `invalid_cursor`.
pub fn decode_position_cursor(cursor: &str) -> Result<i64, Error> {
    cursor.strip_prefix('p').and_then(|n| n.parse().ok()).filter(|n: &i64| *n >= 0).ok_or_else(|| Error::BadRequest {
        code: "invalid_cursor",
        detail: "the cursor is not one this API issued".into(),
    })
}

/// `GET /v1/accounts/{account}/events`: raw events (auditors and owners).
#[utoipa::path(get, path = "/v1/accounts/{account}/events", tag = "audit", params(("account" = Uuid, Path), EventsQuery),
    security(("bearer" = [])), responses((status = 200, body = EventPage)))]
pub async fn events(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, Error> {
    ctx.authorize(&who, AccountId(account), Permission::AuditRead).await?;
    let limit = page_size(q.limit)?;
    let after = q.cursor.as_deref().map(decode_position_cursor).transpose()?.unwrap_or(0);
    let events = ctx
        .admit
        .account_events(AccountId(account), after, limit + 1, q.stream.as_deref(), q.event_type.as_deref())
        .await?;
    let decoded = admit_projections::Codec::decode_all(&ctx.admit.db, &events).await?;
    let mut items: Vec<EventView> = events
        .iter()
        .zip(decoded)
        .map(|(e, d): (&RecordedEvent, _)| EventView {
            position: e.position,
            event_id: e.event_id,
            stream_id: e.stream_id.clone(),
            stream_version: e.stream_version,
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            data: d.event.payload(),
            metadata: serde_json::from_str(&e.metadata_text).unwrap_or_default(),
            recorded_at: e.recorded_at,
            hash: e.hash.iter().map(|b| format!("{b:02x}")).collect(),
        })
        .collect();
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|e| encode_position_cursor(e.position))
    } else {
        None
    };
    Ok(Json(EventPage { items, next_cursor }))
}
