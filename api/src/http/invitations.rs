//! An account's invitations: invite one or many, list, get, update,
//! resend, revoke.

use std::collections::BTreeMap;

use admit_domain::access::{Access, Level, Permission, SiteAccess};
use admit_domain::ids::{AccountId, InvitationId};
use admit_domain::values::{EmailAddress, FeatureName, LinkLifetime, PersonName, RoleName};
use admit_ledger::on_db;
use admit_projections::NewInvitation;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, Principal};
use super::ApiContext;
use crate::commands::{InviteRequest, IssuedInvitation};
use crate::{Error, FieldError};

/// What an invitation grants, as sent by clients.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessBody {
    /// Roles (built-in `owner`, `admin`, `editor`, `viewer`, `auditor`, or custom).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Feature permissions: feature name to `view`, `edit` or `manage`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub features: Option<BTreeMap<FeatureName, Level>>,
    /// Sites: `"all"` or `{"only": {"site": "all" | {"only": ["source", ...]}}}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub sites: Option<SiteAccess>,
}

impl AccessBody {
    /// Whether any part was given (for PATCH).
    pub fn is_empty(&self) -> bool {
        self.roles.is_none() && self.features.is_none() && self.sites.is_none()
    }

    /// The domain access, starting from `base` for parts not given.
    pub fn to_access(&self, base: Access, errors: &mut Vec<FieldError>) -> Access {
        let mut access = base;
        if let Some(roles) = &self.roles {
            access.roles = roles
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match RoleName::parse(r) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        errors.push(field_error(&format!("roles/{i}"), &e));
                        None
                    }
                })
                .collect();
        }
        if let Some(f) = &self.features {
            access.features = f.clone();
        }
        if let Some(s) = &self.sites {
            access.sites = s.clone();
        }
        access
    }
}

/// Turns a domain validation error into a field error.
pub fn field_error(field: &str, e: &admit_domain::DomainError) -> FieldError {
    FieldError { field: field.to_string(), code: e.code().to_string(), message: e.to_string() }
}

/// The link lifetime a body asks for, in hours or in seconds (not both),
/// noting what is wrong in `errors`.
pub fn requested_lifetime(
    hours: Option<u32>,
    seconds: Option<u64>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<LinkLifetime> {
    let parsed = match (hours, seconds) {
        (None, None) => return None,
        (Some(h), None) => LinkLifetime::from_hours(u64::from(h)),
        (None, Some(s)) => LinkLifetime::from_seconds(s),
        (Some(_), Some(_)) => Err(admit_domain::DomainError::invalid(
            "expires_in_seconds",
            "conflicting_expiry",
            "give the lifetime in hours or in seconds, not both",
        )),
    };
    parsed.map_err(|e| errors.push(field_error(&format!("{prefix}{}", e.field().unwrap_or("expires_in")), &e))).ok()
}

/// Body of `POST .../invitations` (and one item of a bulk request).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    /// Invitee's email.
    pub email: String,
    /// Invitee's name.
    #[serde(default)]
    pub name: Option<String>,
    /// What accepting grants.
    #[serde(flatten)]
    pub access: AccessBody,
    /// Link lifetime in hours (1..=720; default: the account's).
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
    /// Link lifetime in seconds (1..=2592000), instead of `expires_in_hours`.
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
    /// Your own data for this invitation (a JSON object, at most 4 KiB).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Where to send the invitee after accepting (must be allowed by the account).
    #[serde(default)]
    pub redirect_url: Option<String>,
}

impl InviteBody {
    /// Parses into a command, collecting every field error.
    pub fn parse(&self, prefix: &str) -> Result<InviteRequest, Error> {
        let mut errors = Vec::new();
        let email =
            EmailAddress::parse(&self.email).map_err(|e| errors.push(field_error(&format!("{prefix}email"), &e))).ok();
        let name = match self.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(n) => PersonName::parse(n).map_err(|e| errors.push(field_error(&format!("{prefix}name"), &e))).ok(),
            None => None,
        };
        let access = self.access.to_access(Access::default(), &mut errors);
        let expires_in = requested_lifetime(self.expires_in_hours, self.expires_in_seconds, prefix, &mut errors);
        match (email, errors.is_empty()) {
            (Some(email), true) => Ok(InviteRequest {
                email,
                name,
                access,
                expires_in,
                metadata: self.metadata.clone(),
                redirect_url: self.redirect_url.clone(),
            }),
            _ => Err(Error::Validation(errors)),
        }
    }
}

/// One delivery fact of an invitation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// `processed`, `delivered`, `opened`, `clicked`, `bounced` or `failed`.
    pub state: String,
    /// Server answer or failure reason.
    pub detail: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// An invitation as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    /// Its id.
    pub id: Uuid,
    /// Its account.
    pub account_id: Uuid,
    /// Invitee email (null once erased).
    pub email: Option<String>,
    /// Invitee name.
    pub name: Option<String>,
    /// `pending`, `accepted`, `declined`, `expired` or `revoked`.
    pub status: String,
    /// What accepting grants.
    #[schema(value_type = Object)]
    pub access: serde_json::Value,
    /// Who invited (`user:<id>`, `api_key:<id>`, `operator`).
    pub invited_by: String,
    /// `session`, `api_key`, `bulk`, `cli` or `operator`.
    pub channel: String,
    /// When it was sent.
    pub created_at: DateTime<Utc>,
    /// When the current link dies.
    pub expires_at: DateTime<Utc>,
    /// When it was used.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Who used it.
    pub accepted_by: Option<Uuid>,
    /// How often a new link was issued.
    pub resend_count: i64,
    /// Latest delivery state.
    pub delivery_state: Option<String>,
    /// When the delivery state last changed.
    pub delivery_updated_at: Option<DateTime<Utc>>,
    /// Times the tracking pixel was loaded (the first one moves the state).
    pub opens: i64,
    /// Times the link was visited (the first one moves the state).
    pub clicks: i64,
    /// When the invitee was last reminded of the link.
    pub reminded_at: Option<DateTime<Utc>>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// The inviter's own data.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// Where the invitee goes after accepting.
    pub redirect_url: Option<String>,
    /// Delivery history (on `GET` of one invitation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_history: Option<Vec<DeliveryView>>,
    /// The accept link: only in the answer that created or resent it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_url: Option<String>,
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    invitation_id: Uuid,
    account_id: Uuid,
    email: Option<String>,
    name: Option<String>,
    status: String,
    access: String,
    invited_by: String,
    channel: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    accepted_by: Option<Uuid>,
    resend_count: i64,
    delivery_state: Option<String>,
    delivery_updated_at: Option<DateTime<Utc>>,
    opens: i64,
    clicks: i64,
    reminded_at: Option<DateTime<Utc>>,
    revoke_reason: Option<String>,
    metadata: Option<String>,
    redirect_url: Option<String>,
}

const COLUMNS: &str = "invitation_id, account_id, email, name, status, access, invited_by, channel, created_at, \
     expires_at, accepted_at, accepted_by, resend_count, delivery_state, delivery_updated_at, opens, clicks, reminded_at, revoke_reason, metadata, redirect_url";

impl From<InvitationRow> for InvitationView {
    fn from(r: InvitationRow) -> InvitationView {
        InvitationView {
            id: r.invitation_id,
            account_id: r.account_id,
            email: r.email,
            name: r.name,
            status: r.status,
            access: serde_json::from_str(&r.access).unwrap_or_default(),
            invited_by: r.invited_by,
            channel: r.channel,
            created_at: r.created_at,
            expires_at: r.expires_at,
            accepted_at: r.accepted_at,
            accepted_by: r.accepted_by,
            resend_count: r.resend_count,
            delivery_state: r.delivery_state,
            delivery_updated_at: r.delivery_updated_at,
            opens: r.opens,
            clicks: r.clicks,
            reminded_at: r.reminded_at,
            revoke_reason: r.revoke_reason,
            metadata: r.metadata.and_then(|m| serde_json::from_str(&m).ok()),
            redirect_url: r.redirect_url,
            delivery_history: None,
            accept_url: None,
        }
    }
}

impl From<NewInvitation> for InvitationRow {
    fn from(n: NewInvitation) -> InvitationRow {
        InvitationRow {
            invitation_id: n.invitation_id,
            account_id: n.account_id,
            email: n.email,
            name: n.name,
            status: "pending".into(),
            access: n.access,
            invited_by: n.invited_by,
            channel: n.channel,
            created_at: n.created_at,
            expires_at: n.expires_at,
            accepted_at: None,
            accepted_by: None,
            resend_count: 0,
            delivery_state: None,
            delivery_updated_at: None,
            opens: 0,
            clicks: 0,
            reminded_at: None,
            revoke_reason: None,
            metadata: n.metadata,
            redirect_url: n.redirect_url,
        }
    }
}

/// Reads one invitation of `account` from the read model.
pub async fn load_view(ctx: &ApiContext, account: AccountId, id: Uuid) -> Result<InvitationView, Error> {
    let sql = format!("SELECT {COLUMNS} FROM invitations WHERE invitation_id = $1 AND account_id = $2");
    let row: Option<InvitationRow> =
        on_db!(&ctx.admit.db, p => sqlx::query_as(&sql).bind(id).bind(account.0).fetch_optional(p).await?);
    row.map(InvitationView::from).ok_or(Error::NotFound("invitation"))
}

fn with_link(ctx: &ApiContext, mut view: InvitationView, issued: &IssuedInvitation) -> InvitationView {
    view.accept_url = Some(ctx.accept_link(issued.token.as_str()));
    view
}

/// `POST /v1/accounts/{account}/invitations`: invite one person.
#[utoipa::path(post, path = "/v1/accounts/{account}/invitations", tag = "invitations", request_body = InviteBody,
    params(("account" = Uuid, Path)), security(("bearer" = [])),
    responses((status = 201, body = InvitationView), (status = 409, description = "seat_limit_reached, already_invited, already_member"), (status = 422, description = "validation_failed")))]
pub async fn invite(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<(StatusCode, Json<InvitationView>), Error> {
    let account = AccountId(account);
    // `invite` requires the permission again, of the locked account.
    let rctx = ctx.authorize_kept(&who, account, Permission::InvitationsCreate).await?;
    let req = body.parse("")?;
    let mut issued = match ctx.admit.invite(&rctx, account, req).await {
        Ok(issued) => issued,
        Err(e) => return Err(ctx.refusal(&who, account, Permission::InvitationsCreate, e).await),
    };
    // The row as the projector wrote it, without reading it back.
    let row = issued.created.take().ok_or_else(|| Error::Internal("a new invitation without its row".into()))?;
    let view = InvitationView::from(InvitationRow::from(row));
    Ok((StatusCode::CREATED, Json(with_link(&ctx, view, &issued))))
}

/// Query of the invitation and member lists.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this status (invitations: `pending`, `accepted`, `declined`,
    /// `expired`, `revoked`; members: `active`, `inactive`).
    pub status: Option<String>,
    /// Substring of the email or name.
    pub q: Option<String>,
    /// Page size (1..=100, default 50).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
}

/// A page of a list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// Encodes a keyset cursor (time, id) opaquely.
pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

/// Decodes a cursor made by [`encode_cursor`]; anything else is 400,
/// including times outside the years 1 to 9999 that no row carries (and
/// that PostgreSQL could not even be sent: a 503 instead of a 400).
pub fn decode_cursor(cursor: &str) -> Result<(DateTime<Utc>, Uuid), Error> {
    let bad = || Error::BadRequest { code: "invalid_cursor", detail: "the cursor is not one this API issued".into() };
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?).map_err(|_| bad())?;
    let (micros, id) = text.split_once('|').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?)
        .filter(|at| (1..=9999).contains(&at.year()))
        .ok_or_else(bad)?;
    Ok((at, id.parse().map_err(|_| bad())?))
}

/// Checks a page size (`limit`), defaulting to 50.
pub fn page_size(limit: Option<u32>) -> Result<i64, Error> {
    match limit {
        None => Ok(50),
        Some(n @ 1..=100) => Ok(i64::from(n)),
        Some(_) => Err(Error::BadRequest { code: "invalid_limit", detail: "limit must be between 1 and 100".into() }),
    }
}

/// Lowercases a search term and escapes LIKE wildcards.
pub fn like_pattern(q: &str) -> String {
    let escaped = q.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

const STATUSES: [&str; 5] = ["pending", "accepted", "declined", "expired", "revoked"];

/// `GET /v1/accounts/{account}/invitations`: list, filter, search, page.
#[utoipa::path(get, path = "/v1/accounts/{account}/invitations", tag = "invitations",
    params(("account" = Uuid, Path), ListQuery), security(("bearer" = [])), responses((status = 200, body = Page<InvitationView>)))]
pub async fn list(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<InvitationView>>, Error> {
    let account = AccountId(account);
    ctx.authorize(&who, account, Permission::InvitationsRead).await?;
    let limit = page_size(q.limit)?;
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::BadRequest {
                code: "invalid_status",
                detail: format!("status is one of {}", STATUSES.join(", ")),
            });
        }
    }
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let pattern = q.q.as_deref().filter(|s| !s.trim().is_empty()).map(like_pattern);
    // A search is planned for its own pattern on PostgreSQL. The best plan
    // depends on how many invitations match: a rare substring is found
    // through the trigram index, a common one by walking the account's
    // newest invitations until the page is full. A prepared statement may
    // switch to one generic plan, made without the pattern, after five
    // runs: in an account of 100,000 invitations the generic trigram plan
    // took 70 ms for a substring of every email and the generic walk 60 ms
    // for a rare one, against under 1 ms each planned for the pattern
    // (docs/performance.md, "Three kinds of search"). An unnamed statement
    // costs a second round trip and a plan, about 0.2 ms.
    let searched_on_postgres = pattern.is_some() && ctx.admit.db.backend() == admit_ledger::Backend::Postgres;
    let rows: Vec<InvitationRow> = on_db!(&ctx.admit.db, p => {
        let mut b = sqlx::QueryBuilder::new(format!("SELECT {COLUMNS} FROM invitations WHERE account_id = "));
        b.push_bind(account.0);
        if let Some(s) = &q.status {
            b.push(" AND status = ").push_bind(s.clone());
        }
        if let Some(p) = &pattern {
            b.push(" AND (email LIKE ").push_bind(p.clone()).push(" ESCAPE '\\' OR lower(name) LIKE ").push_bind(p.clone()).push(" ESCAPE '\\')");
        }
        if let Some((at, id)) = after {
            b.push(" AND (created_at < ").push_bind(at).push(" OR (created_at = ").push_bind(at).push(" AND invitation_id < ").push_bind(id).push("))");
        }
        b.push(" ORDER BY created_at DESC, invitation_id DESC LIMIT ").push_bind(limit + 1);
        b.build_query_as().persistent(!searched_on_postgres).fetch_all(p).await?
    });
    Ok(Json(page(rows.into_iter().map(InvitationView::from).collect(), limit, |v| encode_cursor(v.created_at, v.id))))
}

/// Cuts a `limit + 1` fetch into a page with its next cursor.
pub fn page<T>(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_cursor }
}

/// `GET /v1/accounts/{account}/invitations/{id}`: one, with delivery history.
#[utoipa::path(get, path = "/v1/accounts/{account}/invitations/{id}", tag = "invitations",
    params(("account" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = InvitationView), (status = 404)))]
pub async fn get_one(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<Json<InvitationView>, Error> {
    let account = AccountId(account);
    ctx.authorize(&who, account, Permission::InvitationsRead).await?;
    let mut view = load_view(&ctx, account, id).await?;
    let history: Vec<(String, Option<String>, DateTime<Utc>)> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT state, detail, recorded_at FROM invitation_deliveries WHERE invitation_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(p)
    .await?);
    view.delivery_history =
        Some(history.into_iter().map(|(state, detail, at)| DeliveryView { state, detail, at }).collect());
    Ok(Json(view))
}

/// Body of `PATCH .../invitations/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    /// New grant (parts not given stay).
    #[serde(flatten)]
    pub access: AccessBody,
    /// New lifetime in hours, counted from now.
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
    /// New lifetime in seconds, counted from now (instead of hours).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// `PATCH /v1/accounts/{account}/invitations/{id}`: change a pending invitation.
#[utoipa::path(patch, path = "/v1/accounts/{account}/invitations/{id}", tag = "invitations", request_body = UpdateBody,
    params(("account" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = InvitationView)))]
pub async fn update(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, id)): ApiPath<(Uuid, Uuid)>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Json<InvitationView>, Error> {
    let account = AccountId(account);
    let (_, rctx) = ctx.authorize(&who, account, Permission::InvitationsRead).await?;
    let current = load_view(&ctx, account, id).await?;
    let mut errors = Vec::new();
    let access = if body.access.is_empty() {
        None
    } else {
        let base: Access = serde_json::from_value(current.access).unwrap_or_default();
        Some(body.access.to_access(base, &mut errors))
    };
    let expires_in = requested_lifetime(body.expires_in_hours, body.expires_in_seconds, "", &mut errors);
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    ctx.admit.update_invitation(&rctx, account, InvitationId(id), access, expires_in).await?;
    Ok(Json(load_view(&ctx, account, id).await?))
}

/// Body of `POST .../resend`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendBody {
    /// Also mail a copy to yourself.
    #[serde(default)]
    pub send_copy_to_me: bool,
}

/// `POST /v1/accounts/{account}/invitations/{id}/resend`: a new link; the old one dies.
#[utoipa::path(post, path = "/v1/accounts/{account}/invitations/{id}/resend", tag = "invitations", request_body = ResendBody,
    params(("account" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 200, body = InvitationView)))]
pub async fn resend(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, id)): ApiPath<(Uuid, Uuid)>,
    body: axum::body::Bytes,
) -> Result<Json<InvitationView>, Error> {
    let account = AccountId(account);
    let (_, rctx) = ctx.authorize(&who, account, Permission::InvitationsRead).await?;
    // The body is optional: an empty one means "no copy to me".
    let copy = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        serde_json::from_slice::<ResendBody>(&body)
            .map_err(|e| Error::BadRequest { code: "invalid_body", detail: e.to_string() })?
            .send_copy_to_me
    };
    let issued = ctx.admit.resend(&rctx, account, InvitationId(id), copy).await?;
    let view = load_view(&ctx, account, id).await?;
    Ok(Json(with_link(&ctx, view, &issued)))
}

/// `DELETE /v1/accounts/{account}/invitations/{id}`: revoke.
#[utoipa::path(delete, path = "/v1/accounts/{account}/invitations/{id}", tag = "invitations",
    params(("account" = Uuid, Path), ("id" = Uuid, Path)), security(("bearer" = [])), responses((status = 204), (status = 404)))]
pub async fn revoke(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath((account, id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, Error> {
    let account = AccountId(account);
    let (_, rctx) = ctx.authorize(&who, account, Permission::InvitationsRead).await?;
    ctx.admit.revoke(&rctx, account, InvitationId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
