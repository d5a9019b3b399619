//! Invitee routes, reached through the emailed link's token: preview,
//! accept, decline. Opening a link changes nothing; only these POSTs act.
//! Links that are not valid count against the client address (see
//! `attempts::LinkThrottle`).

use std::net::SocketAddr;

use admit_domain::ids::{Actor, InvitationId, UserId};
use admit_domain::values::PersonName;
use admit_ledger::on_db;
use axum::extract::{ConnectInfo, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiQuery, MaybeSignedIn};
use super::invitations::field_error;
use super::ApiContext;
use crate::Error;

/// Query of the preview.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// The link token.
    pub token: String,
}

/// What an invitee sees before accepting.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// The invitation.
    pub invitation_id: Uuid,
    /// Account name.
    pub account_name: String,
    /// Customer number.
    pub customer_number: String,
    /// Who invited (name, when known).
    pub inviter_name: Option<String>,
    /// Roles granted.
    pub roles: Vec<String>,
    /// Email invited.
    pub email: Option<String>,
    /// When the link dies.
    pub expires_at: DateTime<Utc>,
    /// Whether a user with this email exists (then: sign in and accept).
    pub user_exists: bool,
}

/// `GET /v1/invitations/preview?token=`: public; who invites whom to what, until when.
#[utoipa::path(get, path = "/v1/invitations/preview", tag = "invitee", params(PreviewQuery),
    responses((status = 200, body = Preview), (status = 404, description = "invalid_token"), (status = 410, description = "invitation_expired, invitation_revoked"), (status = 429, description = "too_many_attempts: too many links that are not valid from this address")))]
pub async fn preview(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Preview>, Error> {
    let inv = ctx.link_throttle.guard(addr.ip(), ctx.admit.invitation_for_token(&q.token)).await?;
    inv.require_live(ctx.admit.now())?;
    // Visiting the link is a `clicked` fact (the first moves the state); it accepts
    // and consumes nothing.
    ctx.admit.record_tracking(inv.id, admit_domain::invitation::DeliveryState::Clicked).await?;
    let account = ctx.admit.account_snapshot(inv.account_id).await?;
    let inviter_name = match inv.invited_by {
        Actor::User(u) => user_name(&ctx, u).await?,
        _ => None,
    };
    let user_exists = match inv.personal.email() {
        Some(email) => {
            let hash = ctx.admit.secrets.lookup.email_hash(email.as_str());
            let n: i64 = on_db!(&ctx.admit.db, p => sqlx::query_scalar(
                "SELECT COUNT(*) FROM reservations WHERE kind = 'user_email' AND scope = '' AND key = $1",
            )
            .bind(hash)
            .fetch_one(p)
            .await?);
            n > 0
        }
        None => false,
    };
    Ok(Json(Preview {
        invitation_id: inv.id.0,
        account_name: account.name.to_string(),
        customer_number: account.customer_number.to_string(),
        inviter_name,
        roles: inv.access.roles.iter().map(|r| r.to_string()).collect(),
        email: inv.personal.email().map(|e| e.to_string()),
        expires_at: inv.expires_at,
        user_exists,
    }))
}

async fn user_name(ctx: &ApiContext, user: UserId) -> Result<Option<String>, Error> {
    let name: Option<Option<String>> = on_db!(&ctx.admit.db, p => sqlx::query_scalar(
        "SELECT name FROM users WHERE user_id = $1",
    )
    .bind(user.0)
    .fetch_optional(p)
    .await?);
    Ok(name.flatten())
}

/// Body of `POST /v1/invitations/accept`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptBody {
    /// The link token.
    pub token: String,
    /// New users: your name.
    #[serde(default)]
    pub name: Option<String>,
    /// New users: your password (see the password policy).
    #[serde(default)]
    pub password: Option<String>,
}

/// An accepted invitation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The account joined.
    pub account_id: Uuid,
    /// The member.
    pub user_id: Uuid,
    /// Where to go now.
    pub redirect_url: Option<String>,
    /// New users: a session, so they are signed in at once.
    pub session_token: Option<String>,
}

/// `POST /v1/invitations/accept`: a new user sends token, name and
/// password; an existing user sends the token with their bearer session.
#[utoipa::path(post, path = "/v1/invitations/accept", tag = "invitee", request_body = AcceptBody,
    responses((status = 200, body = Accepted), (status = 403, description = "email_mismatch"), (status = 409, description = "invitation_used, email_taken"), (status = 410, description = "invitation_expired"), (status = 429, description = "too_many_attempts")))]
pub async fn accept(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    MaybeSignedIn(who): MaybeSignedIn,
    ApiJson(body): ApiJson<AcceptBody>,
) -> Result<Json<Accepted>, Error> {
    let inv = ctx.link_throttle.guard(addr.ip(), ctx.admit.invitation_for_token(&body.token)).await?;
    let redirect_url = inv.redirect_url.clone().or_else(|| ctx.config.app_url.clone());
    match who {
        Some(who) => {
            let account = ctx.admit.accept_as_user(who.user_id, &body.token).await?;
            Ok(Json(Accepted { account_id: account.0, user_id: who.user_id.0, redirect_url, session_token: None }))
        }
        None => {
            let mut errors = Vec::new();
            let name = match body.name.as_deref() {
                Some(n) => PersonName::parse(n).map_err(|e| errors.push(field_error("name", &e))).ok(),
                None => {
                    errors.push(crate::FieldError {
                        field: "name".into(),
                        code: "required".into(),
                        message: "your name is required".into(),
                    });
                    None
                }
            };
            let Some(password) = body.password.as_deref() else {
                errors.push(crate::FieldError {
                    field: "password".into(),
                    code: "required".into(),
                    message: "a password is required".into(),
                });
                return Err(Error::Validation(errors));
            };
            let Some(name) = name else {
                return Err(Error::Validation(errors));
            };
            let user = ctx.admit.accept_as_new_user(&body.token, name, password).await.map_err(|e| match e {
                Error::Domain(d @ admit_domain::DomainError::Invalid { field: "password", .. }) => {
                    Error::Validation(vec![field_error("password", &d)])
                }
                other => other,
            })?;
            let (token, _) = ctx.sessions.create(&ctx.admit.db, user).await?;
            Ok(Json(Accepted {
                account_id: inv.account_id.0,
                user_id: user.0,
                redirect_url,
                session_token: Some(token),
            }))
        }
    }
}

/// Body of `POST /v1/invitations/decline`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeclineBody {
    /// The link token.
    pub token: String,
}

/// A declined invitation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Declined {
    /// The invitation.
    pub invitation_id: Uuid,
    /// Always `declined`.
    pub status: String,
}

/// `POST /v1/invitations/decline`: the invitee says no.
#[utoipa::path(post, path = "/v1/invitations/decline", tag = "invitee", request_body = DeclineBody,
    responses((status = 200, body = Declined), (status = 404), (status = 410), (status = 429, description = "too_many_attempts")))]
pub async fn decline(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<DeclineBody>,
) -> Result<Json<Declined>, Error> {
    let InvitationId(id) = ctx.link_throttle.guard(addr.ip(), ctx.admit.decline(&body.token)).await?;
    Ok(Json(Declined { invitation_id: id, status: "declined".into() }))
}

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Query of the tracking pixel.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PixelQuery {
    /// The signature from the email.
    pub sig: Option<String>,
}

/// `GET /v1/invitations/{id}/pixel.gif?sig=`: the tracking pixel of the
/// invitation email; records `opened` (the first moves the state). Always answers the
/// same image, so it tells nothing about invitations.
#[utoipa::path(get, path = "/v1/invitations/{id}/pixel.gif", tag = "invitee", params(("id" = Uuid, Path), PixelQuery),
    responses((status = 200, description = "a 1x1 GIF", content_type = "image/gif")))]
pub async fn pixel(
    State(ctx): State<ApiContext>,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<PixelQuery>,
) -> impl axum::response::IntoResponse {
    if let (Ok(id), Some(sig)) = (id.parse::<Uuid>(), q.sig) {
        let expected = ctx.admit.pixel_signature(InvitationId(id));
        let same =
            expected.len() == sig.len() && expected.bytes().zip(sig.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if same {
            if let Err(e) =
                ctx.admit.record_tracking(InvitationId(id), admit_domain::invitation::DeliveryState::Opened).await
            {
                tracing::warn!(error = %e, "could not record an open");
            }
        }
    }
    ([("content-type", "image/gif"), ("cache-control", "no-store")], PIXEL)
}
