//! Operator routes: opening accounts.

use admit_domain::template::{MailKind, MailTemplate};
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, PersonName};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle_compare::constant_time_eq;
use uuid::Uuid;

use super::extract::ApiJson;
use super::invitations::field_error;
use super::ApiContext;
use crate::commands::OpenAccount;
use crate::{Error, RequestContext};

mod subtle_compare {
    /// Compares two secrets in time that depends only on their lengths.
    pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// Body of `POST /v1/accounts`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccountBody {
    /// Account name.
    pub name: String,
    /// Customer number.
    pub customer_number: String,
    /// The first owner's email.
    pub owner_email: String,
    /// The first owner's name.
    #[serde(default)]
    pub owner_name: Option<String>,
    /// Seat limit (default 10).
    #[serde(default)]
    pub seats: Option<u32>,
}

/// An opened account.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpenedAccountView {
    /// The account.
    pub account_id: Uuid,
    /// The owner's invitation.
    pub owner_invitation_id: Uuid,
    /// The owner's accept link (also mailed once mail is configured).
    pub accept_url: String,
    /// When the link dies.
    pub expires_at: DateTime<Utc>,
}

/// `POST /v1/accounts`: the operator opens an account and invites its owner.
#[utoipa::path(post, path = "/v1/accounts", tag = "operator", request_body = OpenAccountBody, security(("bearer" = [])),
    responses((status = 201, body = OpenedAccountView), (status = 401), (status = 422)))]
pub async fn open_account(
    State(ctx): State<ApiContext>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<OpenAccountBody>,
) -> Result<(StatusCode, Json<OpenedAccountView>), Error> {
    let expected = ctx.config.operator_token.as_deref().ok_or(Error::Unauthenticated)?;
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        return Err(Error::Unauthenticated);
    }
    let mut errors = Vec::new();
    let name = AccountName::parse(&body.name).map_err(|e| errors.push(field_error("name", &e))).ok();
    let number =
        CustomerNumber::parse(&body.customer_number).map_err(|e| errors.push(field_error("customer_number", &e))).ok();
    let email = EmailAddress::parse(&body.owner_email).map_err(|e| errors.push(field_error("owner_email", &e))).ok();
    let owner_name = match body.owner_name.as_deref() {
        Some(n) => PersonName::parse(n).map_err(|e| errors.push(field_error("owner_name", &e))).ok(),
        None => None,
    };
    let (Some(name), Some(customer_number), Some(owner_email), true) = (name, number, email, errors.is_empty()) else {
        return Err(Error::Validation(errors));
    };
    let mut rctx = RequestContext::new(admit_domain::ids::Actor::Operator, admit_domain::invitation::Channel::Operator);
    rctx.request_id = None;
    let opened = ctx
        .admit
        .open_account(
            &rctx,
            OpenAccount { name, customer_number, seats: body.seats.unwrap_or(10), owner_email, owner_name },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(OpenedAccountView {
            account_id: opened.account_id.0,
            owner_invitation_id: opened.owner_invitation.invitation_id.0,
            accept_url: ctx.accept_link(opened.owner_invitation.token.as_str()),
            expires_at: opened.owner_invitation.expires_at,
        }),
    ))
}

/// An account and its settings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountView {
    /// Its id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Customer number.
    pub customer_number: String,
    /// `active` or `inactive`.
    pub status: String,
    /// Seat limit.
    pub seat_limit: u32,
    /// Default link lifetime in hours.
    pub invitation_lifetime_hours: u32,
    /// Invitations per inviter per rolling day.
    pub daily_invitation_quota: u32,
    /// Only these email domains may be invited (empty: any).
    pub allowed_email_domains: Vec<String>,
    /// URLs invitations may redirect to after acceptance.
    pub allowed_redirect_urls: Vec<String>,
    /// The account's own emails, by kind (`invitation`, `reminder`).
    #[schema(value_type = Object)]
    pub mail_templates: std::collections::BTreeMap<MailKind, MailTemplate>,
}

fn view(a: &admit_domain::account::Account) -> AccountView {
    AccountView {
        id: a.id.0,
        name: a.name.to_string(),
        customer_number: a.customer_number.to_string(),
        status: if a.active { "active" } else { "inactive" }.into(),
        seat_limit: a.settings.seat_limit,
        invitation_lifetime_hours: a.settings.invitation_lifetime_hours,
        daily_invitation_quota: a.settings.daily_invitation_quota,
        allowed_email_domains: a.settings.allowed_email_domains.iter().cloned().collect(),
        allowed_redirect_urls: a.settings.allowed_redirect_urls.iter().cloned().collect(),
        mail_templates: a.settings.mail_templates.clone(),
    }
}

/// `GET /v1/accounts/{account}`: the account and its settings.
#[utoipa::path(get, path = "/v1/accounts/{account}", tag = "accounts", params(("account" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = AccountView), (status = 404)))]
pub async fn get_account(
    State(ctx): State<ApiContext>,
    who: super::extract::Principal,
    super::extract::ApiPath(account): super::extract::ApiPath<Uuid>,
) -> Result<Json<AccountView>, Error> {
    let (a, _) = ctx
        .authorize(&who, admit_domain::ids::AccountId(account), admit_domain::access::Permission::AccountRead)
        .await?;
    Ok(Json(view(&a)))
}

/// Body of `PATCH /v1/accounts/{account}` (parts not given stay).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    /// Default link lifetime in hours (1..=720).
    pub invitation_lifetime_hours: Option<u32>,
    /// Invitations per inviter per rolling day.
    pub daily_invitation_quota: Option<u32>,
    /// Only these email domains may be invited (empty: any).
    pub allowed_email_domains: Option<Vec<String>>,
    /// URLs invitations may redirect to (absolute http(s) URLs).
    pub allowed_redirect_urls: Option<Vec<String>>,
    /// The account's own emails by kind (`invitation`, `reminder`); a kind
    /// set to null goes back to Admit's email. Placeholders:
    /// `{{account_name}}`, `{{customer_number}}`, `{{inviter}}`,
    /// `{{invitee_name}}`, `{{roles}}`, `{{expires_at}}`, `{{accept_url}}`
    /// (required).
    #[schema(value_type = Option<Object>)]
    pub mail_templates: Option<std::collections::BTreeMap<MailKind, Option<TemplateBody>>>,
}

/// One email template: subject and text body, optionally an HTML body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// One-line subject.
    pub subject: String,
    /// Plain-text body; must contain `{{accept_url}}`.
    pub text: String,
    /// HTML body (values are escaped); without it the text is sent as HTML paragraphs.
    #[serde(default)]
    pub html: Option<String>,
}

/// `PATCH /v1/accounts/{account}`: change settings (`account.manage`).
#[utoipa::path(patch, path = "/v1/accounts/{account}", tag = "accounts", request_body = SettingsBody, params(("account" = Uuid, Path)),
    security(("bearer" = [])), responses((status = 200, body = AccountView), (status = 403), (status = 422)))]
pub async fn change_settings(
    State(ctx): State<ApiContext>,
    who: super::extract::Principal,
    super::extract::ApiPath(account): super::extract::ApiPath<Uuid>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> Result<Json<AccountView>, Error> {
    let id = admit_domain::ids::AccountId(account);
    let (a, rctx) = ctx.authorize(&who, id, admit_domain::access::Permission::AccountRead).await?;
    let mut settings = a.settings.clone();
    if let Some(h) = body.invitation_lifetime_hours {
        settings.invitation_lifetime_hours = h;
    }
    if let Some(q) = body.daily_invitation_quota {
        settings.daily_invitation_quota = q;
    }
    if let Some(domains) = &body.allowed_email_domains {
        settings = settings.with_allowed_email_domains(domains.iter().map(String::as_str))?;
    }
    if let Some(urls) = body.allowed_redirect_urls {
        if let Some(bad) = urls.iter().find(|u| {
            !(u.starts_with("https://") || u.starts_with("http://"))
                || u.chars().any(|c| c.is_whitespace() || c.is_control())
        }) {
            return Err(Error::Validation(vec![crate::FieldError {
                field: "allowed_redirect_urls".into(),
                code: "invalid_url".into(),
                message: format!("`{bad}` is not an absolute http(s) URL"),
            }]));
        }
        settings.allowed_redirect_urls = urls.into_iter().collect();
    }
    for (kind, template) in body.mail_templates.into_iter().flatten() {
        match template {
            None => {
                settings.mail_templates.remove(&kind);
            }
            Some(t) => {
                let parsed = MailTemplate::parse(&t.subject, &t.text, t.html.as_deref()).map_err(|e| {
                    let field = format!(
                        "mail_templates.{}.{}",
                        serde_json::to_value(kind).unwrap_or_default().as_str().unwrap_or(""),
                        e.field().unwrap_or("")
                    );
                    Error::Validation(vec![field_error(&field, &e)])
                })?;
                settings.mail_templates.insert(kind, parsed);
            }
        }
    }
    ctx.admit.change_settings(&rctx, id, settings).await?;
    Ok(Json(view(&ctx.admit.account_snapshot(id).await?)))
}
