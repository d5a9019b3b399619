//! An account's roles: the built-ins and custom ones.

use std::collections::BTreeSet;

use admit_domain::access::{built_in_permissions, Permission};
use admit_domain::ids::AccountId;
use admit_domain::values::RoleName;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::invitations::field_error;
use super::ApiContext;
use crate::Error;

/// A role and what it allows.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleView {
    /// Its name.
    pub name: String,
    /// Built-in roles cannot be changed.
    pub built_in: bool,
    /// Its permissions.
    #[schema(value_type = Vec<String>)]
    pub permissions: BTreeSet<Permission>,
}

/// Every role of the account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleList {
    /// Built-ins first, then custom roles by name.
    pub items: Vec<RoleView>,
}

/// `GET /v1/accounts/{account}/roles`.
#[utoipa::path(get, path = "/v1/accounts/{account}/roles", tag = "roles", params(("account" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = RoleList)))]
pub async fn list(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
) -> Result<Json<RoleList>, Error> {
    let (snapshot, _) = ctx.authorize(&who, AccountId(account), Permission::AccountRead).await?;
    let mut items: Vec<RoleView> = RoleName::BUILT_IN
        .iter()
        .filter_map(|n| RoleName::parse(n).ok())
        .map(|r| RoleView {
            name: r.to_string(),
            built_in: true,
            permissions: built_in_permissions(&r).unwrap_or_default(),
        })
        .collect();
    items.extend(snapshot.roles.custom.iter().map(|(r, p)| RoleView {
        name: r.to_string(),
        built_in: false,
        permissions: p.clone(),
    }));
    Ok(Json(RoleList { items }))
}

/// Body of `POST .../roles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    /// Name: lower-case letters, digits, `-`, `_`.
    pub name: String,
    /// Permissions, e.g. `invitations.create`.
    #[schema(value_type = Vec<String>)]
    pub permissions: BTreeSet<Permission>,
}

fn role_name(s: &str) -> Result<RoleName, Error> {
    RoleName::parse(s).map_err(|e| Error::Validation(vec![field_error("name", &e)]))
}

/// `POST /v1/accounts/{account}/roles`: define a custom role.
#[utoipa::path(post, path = "/v1/accounts/{account}/roles", tag = "roles", request_body = RoleBody, params(("account" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 201, body = RoleView), (status = 409, description = "role_exists")))]
pub async fn create(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<(StatusCode, Json<RoleView>), Error> {
    let (_, rctx) = ctx.authorize(&who, AccountId(account), Permission::AccountRead).await?;
    let name = role_name(&body.name)?;
    ctx.admit.define_role(&rctx, AccountId(account), name.clone(), body.permissions.clone()).await?;
    Ok((StatusCode::CREATED, Json(RoleView { name: name.to_string(), built_in: false, permissions: body.permissions })))
}

/// Query of role changes.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConfirmQuery {
    /// Apply although pending invitations or members carry the role.
    #[serde(default)]
    pub confirm: bool,
}

/// Body of `PATCH .../roles/{role}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolePatch {
    /// The role's new permissions.
    #[schema(value_type = Vec<String>)]
    pub permissions: BTreeSet<Permission>,
}

async fn confirm_usage(ctx: &ApiContext, account: AccountId, role: &RoleName, confirm: bool) -> Result<(), Error> {
    let (affected_invitations, affected_members) = ctx.admit.role_usage(account, role).await?;
    if !confirm && (affected_invitations > 0 || affected_members > 0) {
        return Err(Error::ConfirmationRequired { affected_invitations, affected_members });
    }
    Ok(())
}

/// `PATCH /v1/accounts/{account}/roles/{role}`: change a custom role. When
/// invitations or members carry it, answers 409 `confirmation_required`
/// with their counts unless `confirm=true`.
#[utoipa::path(patch, path = "/v1/accounts/{account}/roles/{role}", tag = "roles", request_body = RolePatch,
    params(("account" = Uuid, Path), ("role" = String, Path), ConfirmQuery), security(("bearer" = [])),
    responses((status = 200, body = RoleView), (status = 409, description = "confirmation_required with affected counts")))]
pub async fn patch(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, role)): ApiPath<(Uuid, String)>,
    ApiQuery(q): ApiQuery<ConfirmQuery>,
    ApiJson(body): ApiJson<RolePatch>,
) -> Result<Json<RoleView>, Error> {
    let account = AccountId(account);
    let (_, rctx) = ctx.authorize(&who, account, Permission::AccountRead).await?;
    let name = RoleName::parse(&role).map_err(|_| Error::NotFound("role"))?;
    confirm_usage(&ctx, account, &name, q.confirm).await?;
    ctx.admit.change_role(&rctx, account, name.clone(), body.permissions.clone()).await?;
    Ok(Json(RoleView { name: name.to_string(), built_in: false, permissions: body.permissions }))
}

/// `DELETE /v1/accounts/{account}/roles/{role}`: delete a custom role; it
/// is taken from members and pending invitations. Confirmation as for PATCH.
#[utoipa::path(delete, path = "/v1/accounts/{account}/roles/{role}", tag = "roles",
    params(("account" = Uuid, Path), ("role" = String, Path), ConfirmQuery), security(("bearer" = [])),
    responses((status = 204), (status = 409, description = "confirmation_required with affected counts")))]
pub async fn delete(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, role)): ApiPath<(Uuid, String)>,
    ApiQuery(q): ApiQuery<ConfirmQuery>,
) -> Result<StatusCode, Error> {
    let account = AccountId(account);
    let (_, rctx) = ctx.authorize(&who, account, Permission::AccountRead).await?;
    let name = RoleName::parse(&role).map_err(|_| Error::NotFound("role"))?;
    confirm_usage(&ctx, account, &name, q.confirm).await?;
    ctx.admit.delete_role(&rctx, account, name).await?;
    Ok(StatusCode::NO_CONTENT)
}
