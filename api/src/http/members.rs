//! An account's members: list, get, change access, deactivate, reactivate, remove.

use admit_domain::access::{Access, Permission};
use admit_domain::ids::{AccountId, UserId};
use admit_ledger::on_db;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::invitations::{decode_cursor, encode_cursor, like_pattern, page, page_size, AccessBody, Page};
use super::ApiContext;
use crate::Error;

/// A member as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct MemberView {
    /// The user.
    pub user_id: Uuid,
    /// Their email (null once erased).
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// `active` or `inactive`.
    pub status: String,
    /// Roles, space-separated in storage; a list here.
    #[sqlx(skip)]
    pub roles: Vec<String>,
    /// Everything held.
    #[sqlx(rename = "access")]
    #[schema(value_type = Object)]
    #[serde(serialize_with = "as_json")]
    pub access: String,
    /// No rights at all yet.
    #[serde(serialize_with = "as_bool")]
    #[schema(value_type = bool)]
    pub restricted: i64,
    /// When they joined.
    pub joined_at: DateTime<Utc>,
    /// Their last sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
}

fn as_json<S: serde::Serializer>(s: &str, ser: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(&serde_json::from_str::<serde_json::Value>(s).unwrap_or_default(), ser)
}

fn as_bool<S: serde::Serializer>(n: &i64, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_bool(*n != 0)
}

impl MemberView {
    fn with_roles(mut self) -> MemberView {
        let access: Access = serde_json::from_str(&self.access).unwrap_or_default();
        self.roles = access.roles.iter().map(|r| r.to_string()).collect();
        self
    }
}

const SELECT: &str =
    "SELECT m.user_id, u.email, u.name, m.status, m.access, m.restricted, m.joined_at, u.last_login_at \
     FROM members m LEFT JOIN users u ON u.user_id = m.user_id WHERE m.account_id = ";

/// The member list takes the same query as the invitation list (`status`
/// is `active` or `inactive` here).
pub use super::invitations::ListQuery;

/// `GET /v1/accounts/{account}/members`.
#[utoipa::path(get, path = "/v1/accounts/{account}/members", tag = "members", params(("account" = Uuid, Path), ListQuery),
    security(("bearer" = [])), responses((status = 200, body = Page<MemberView>)))]
pub async fn list(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<MemberView>>, Error> {
    ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    let limit = page_size(q.limit)?;
    if let Some(s) = &q.status {
        if s != "active" && s != "inactive" {
            return Err(Error::BadRequest { code: "invalid_status", detail: "status is active or inactive".into() });
        }
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let pattern = q.q.as_deref().filter(|s| !s.trim().is_empty()).map(like_pattern);
    let rows: Vec<MemberView> = on_db!(&ctx.admit.db, p => {
        let mut b = sqlx::QueryBuilder::new(SELECT);
        b.push_bind(account);
        if let Some(s) = &q.status {
            b.push(" AND m.status = ").push_bind(s.clone());
        }
        if let Some(p) = &pattern {
            b.push(" AND (u.email LIKE ").push_bind(p.clone()).push(" ESCAPE '\\' OR lower(u.name) LIKE ").push_bind(p.clone()).push(" ESCAPE '\\')");
        }
        if let Some((at, id)) = after {
            b.push(" AND (m.joined_at > ").push_bind(at).push(" OR (m.joined_at = ").push_bind(at).push(" AND m.user_id > ").push_bind(id).push("))");
        }
        b.push(" ORDER BY m.joined_at, m.user_id LIMIT ").push_bind(limit + 1);
        b.build_query_as().fetch_all(p).await?
    });
    let rows = rows.into_iter().map(MemberView::with_roles).collect();
    Ok(Json(page(rows, limit, |m| encode_cursor(m.joined_at, m.user_id))))
}

async fn load(ctx: &ApiContext, account: Uuid, user: Uuid) -> Result<MemberView, Error> {
    let sql = format!("{SELECT}$1 AND m.user_id = $2");
    let row: Option<MemberView> =
        on_db!(&ctx.admit.db, p => sqlx::query_as(&sql).bind(account).bind(user).fetch_optional(p).await?);
    row.map(MemberView::with_roles).ok_or(Error::NotFound("member"))
}

/// `GET /v1/accounts/{account}/members/{user}`.
#[utoipa::path(get, path = "/v1/accounts/{account}/members/{user}", tag = "members", params(("account" = Uuid, Path), ("user" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = MemberView), (status = 404)))]
pub async fn get_one(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, user)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<MemberView>, Error> {
    ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    Ok(Json(load(&ctx, account, user).await?))
}

/// `PATCH /v1/accounts/{account}/members/{user}`: roles, features, sites.
#[utoipa::path(patch, path = "/v1/accounts/{account}/members/{user}", tag = "members", request_body = AccessBody,
    params(("account" = Uuid, Path), ("user" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = MemberView)))]
pub async fn patch(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, user)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<AccessBody>,
) -> Result<Json<MemberView>, Error> {
    let (snapshot, rctx) = ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    let current = snapshot.members.get(&UserId(user)).ok_or(Error::NotFound("member"))?;
    let mut errors = Vec::new();
    let access = body.to_access(current.access.clone(), &mut errors);
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    ctx.admit.change_member_access(&rctx, AccountId(account), UserId(user), access).await?;
    Ok(Json(load(&ctx, account, user).await?))
}

/// `POST /v1/accounts/{account}/members/{user}/deactivate` (revokes the invitations they sent).
#[utoipa::path(post, path = "/v1/accounts/{account}/members/{user}/deactivate", tag = "members",
    params(("account" = Uuid, Path), ("user" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = MemberView)))]
pub async fn deactivate(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, user)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<MemberView>, Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    ctx.admit.deactivate_member(&rctx, AccountId(account), UserId(user)).await?;
    Ok(Json(load(&ctx, account, user).await?))
}

/// `POST /v1/accounts/{account}/members/{user}/reactivate`.
#[utoipa::path(post, path = "/v1/accounts/{account}/members/{user}/reactivate", tag = "members",
    params(("account" = Uuid, Path), ("user" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = MemberView)))]
pub async fn reactivate(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, user)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<MemberView>, Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    ctx.admit.reactivate_member(&rctx, AccountId(account), UserId(user)).await?;
    Ok(Json(load(&ctx, account, user).await?))
}

/// `DELETE /v1/accounts/{account}/members/{user}`: remove (revokes the invitations they sent).
#[utoipa::path(delete, path = "/v1/accounts/{account}/members/{user}", tag = "members",
    params(("account" = Uuid, Path), ("user" = Uuid, Path)), security(("bearer" = [])), responses((status = 204), (status = 404)))]
pub async fn remove(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, user)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::MembersRead).await?;
    ctx.admit.remove_member(&rctx, AccountId(account), UserId(user)).await?;
    Ok(StatusCode::NO_CONTENT)
}
