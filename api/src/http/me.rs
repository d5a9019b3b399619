//! The signed-in user: who they are, their accounts, and leaving one.

use admit_domain::ids::AccountId;
use admit_ledger::on_db;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, SignedIn};
use super::ApiContext;
use crate::Error;

/// One account the user belongs to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Membership {
    /// The account.
    pub account_id: Uuid,
    /// Its name.
    pub account_name: String,
    /// Its customer number.
    pub customer_number: String,
    /// `active` or `inactive`.
    pub status: String,
    /// Roles held.
    pub roles: Vec<String>,
    /// Everything held.
    #[schema(value_type = Object)]
    pub access: serde_json::Value,
    /// No rights at all yet: an admin must grant some.
    pub restricted: bool,
}

/// The signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// Their id.
    pub user_id: Uuid,
    /// Their email.
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// Last sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
    /// True when no active membership grants any right.
    pub restricted: bool,
    /// Their accounts.
    pub memberships: Vec<Membership>,
}

/// `GET /v1/me`: the user, their memberships and the restricted flag.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])), responses((status = 200, body = Me), (status = 401)))]
pub async fn me(State(ctx): State<ApiContext>, who: SignedIn) -> Result<Json<Me>, Error> {
    type UserRow = (Option<String>, Option<String>, Option<DateTime<Utc>>);
    let user: Option<UserRow> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT email, name, last_login_at FROM users WHERE user_id = $1",
    )
    .bind(who.user_id.0)
    .fetch_optional(p)
    .await?);
    let (email, name, last_login_at) = user.ok_or(Error::Unauthenticated)?;
    let rows: Vec<(Uuid, String, String, String, String, i64)> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT m.account_id, a.name, a.customer_number, m.status, m.access, m.restricted \
         FROM members m JOIN accounts a ON a.account_id = m.account_id WHERE m.user_id = $1 ORDER BY a.name",
    )
    .bind(who.user_id.0)
    .fetch_all(p)
    .await?);
    let memberships: Vec<Membership> = rows
        .into_iter()
        .map(|(account_id, account_name, customer_number, status, access, restricted)| {
            let access: serde_json::Value = serde_json::from_str(&access).unwrap_or_default();
            let roles = access["roles"]
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            Membership { account_id, account_name, customer_number, status, roles, access, restricted: restricted != 0 }
        })
        .collect();
    let restricted = !memberships.iter().any(|m| m.status == "active" && !m.restricted);
    Ok(Json(Me { user_id: who.user_id.0, email, name, last_login_at, restricted, memberships }))
}

/// Query of the two-step cancel.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CancelQuery {
    /// The confirmation token from the first call.
    pub confirmation: Option<String>,
}

/// First step's answer: repeat the call with this token to cancel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CancelConfirmation {
    /// Pass as `?confirmation=` to the same route.
    pub confirmation: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// How long a cancel confirmation stays valid.
const CONFIRMATION_MINUTES: i64 = 15;

fn confirmation_mac(ctx: &ApiContext, user: Uuid, account: Uuid, expires: i64) -> String {
    ctx.admit.secrets.lookup.email_hash(&format!("cancel-membership:{user}:{account}:{expires}"))
}

/// `DELETE /v1/me/memberships/{account}`: leave an account, in two steps.
/// The first call answers 202 with a confirmation token; the second call,
/// with `?confirmation=`, cancels and answers 204.
#[utoipa::path(delete, path = "/v1/me/memberships/{account}", tag = "me", params(("account" = Uuid, Path), CancelQuery),
    security(("bearer" = [])), responses((status = 202, body = CancelConfirmation), (status = 204), (status = 404)))]
pub async fn cancel_membership(
    State(ctx): State<ApiContext>,
    who: SignedIn,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<CancelQuery>,
) -> Result<Response, Error> {
    let snapshot = ctx.admit.account_snapshot(AccountId(account)).await.map_err(|_| Error::NotFound("membership"))?;
    if !snapshot.members.contains_key(&who.user_id) {
        return Err(Error::NotFound("membership"));
    }
    match q.confirmation {
        None => {
            let expires_at = Utc::now() + chrono::Duration::minutes(CONFIRMATION_MINUTES);
            let ts = expires_at.timestamp();
            let mac = confirmation_mac(&ctx, who.user_id.0, account, ts);
            Ok((StatusCode::ACCEPTED, Json(CancelConfirmation { confirmation: format!("{ts}.{mac}"), expires_at }))
                .into_response())
        }
        Some(token) => {
            let bad = || Error::BadRequest {
                code: "invalid_confirmation",
                detail: "the confirmation is wrong or expired".into(),
            };
            let (ts, mac) = token.split_once('.').ok_or_else(bad)?;
            let ts: i64 = ts.parse().map_err(|_| bad())?;
            let expected = confirmation_mac(&ctx, who.user_id.0, account, ts);
            let same = expected.len() == mac.len()
                && expected.bytes().zip(mac.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
            if !same || ts < Utc::now().timestamp() {
                return Err(bad());
            }
            ctx.admit.cancel_membership(who.user_id, AccountId(account)).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}
