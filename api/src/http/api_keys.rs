//! Per-account API keys for automation: created with a chosen set of
//! permissions (never more than the creator holds), shown once, stored as
//! a hash, usable as bearer, revocable.

use std::collections::BTreeSet;

use admit_domain::access::Permission;
use admit_domain::ids::{AccountId, ApiKeyId};
use admit_ledger::on_db;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, Principal};
use super::ApiContext;
use crate::Error;

/// Body of `POST .../api-keys`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// A label for people.
    pub name: String,
    /// What the key may do.
    #[schema(value_type = Vec<String>)]
    pub permissions: BTreeSet<Permission>,
}

/// An API key (the secret only in the answer that created it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// Its id.
    pub id: Uuid,
    /// Its label.
    pub name: String,
    /// What it may do.
    #[schema(value_type = Vec<String>)]
    pub permissions: serde_json::Value,
    /// Who created it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The bearer secret: shown once, at creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Keys of an account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// Newest first.
    pub items: Vec<KeyView>,
}

type KeyRow = (Uuid, String, String, String, DateTime<Utc>, Option<DateTime<Utc>>);

async fn rows(ctx: &ApiContext, account: Uuid, key: Option<Uuid>) -> Result<Vec<KeyView>, Error> {
    let rows: Vec<KeyRow> = on_db!(&ctx.admit.db, p => {
        let mut b = sqlx::QueryBuilder::new(
            "SELECT key_id, name, permissions, created_by, created_at, revoked_at FROM api_keys WHERE account_id = ",
        );
        b.push_bind(account);
        if let Some(k) = key {
            b.push(" AND key_id = ").push_bind(k);
        }
        b.push(" ORDER BY created_at DESC, key_id DESC");
        b.build_query_as().fetch_all(p).await?
    });
    Ok(rows
        .into_iter()
        .map(|(id, name, permissions, created_by, created_at, revoked_at)| KeyView {
            id,
            name,
            permissions: serde_json::from_str(&permissions).unwrap_or_default(),
            created_by,
            created_at,
            revoked_at,
            secret: None,
        })
        .collect())
}

/// `GET /v1/accounts/{account}/api-keys`.
#[utoipa::path(get, path = "/v1/accounts/{account}/api-keys", tag = "api keys", params(("account" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = KeyList)))]
pub async fn list(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
) -> Result<Json<KeyList>, Error> {
    ctx.authorize(&who, AccountId(account), Permission::AccountManage).await?;
    Ok(Json(KeyList { items: rows(&ctx, account, None).await? }))
}

/// `POST /v1/accounts/{account}/api-keys`: the answer carries the secret, once.
#[utoipa::path(post, path = "/v1/accounts/{account}/api-keys", tag = "api keys", request_body = CreateKeyBody,
    params(("account" = Uuid, Path)), security(("bearer" = [])), responses((status = 201, body = KeyView)))]
pub async fn create(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeyView>), Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::AccountRead).await?;
    let (key, secret) = ctx.admit.create_api_key(&rctx, AccountId(account), body.name, body.permissions).await?;
    let mut view = rows(&ctx, account, Some(key.0)).await?.pop().ok_or(Error::NotFound("api key"))?;
    view.secret = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /v1/accounts/{account}/api-keys/{key}`: revoke.
#[utoipa::path(delete, path = "/v1/accounts/{account}/api-keys/{key}", tag = "api keys",
    params(("account" = Uuid, Path), ("key" = Uuid, Path)), security(("bearer" = [])), responses((status = 204), (status = 404)))]
pub async fn revoke(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, key)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::AccountRead).await?;
    ctx.admit.revoke_api_key(&rctx, AccountId(account), ApiKeyId(key)).await?;
    Ok(StatusCode::NO_CONTENT)
}
