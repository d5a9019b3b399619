//! The invitee's web flow: `GET /invite/{token}` shows the accept page and
//! `POST /invite/{token}` acts on its forms. Server-rendered HTML without
//! JavaScript, labelled for screen readers and readable on a phone.
//!
//! - Opening the page changes nothing but the invitation's `clicked`
//!   tracking (mail scanners open links first); only a form submission acts.
//! - Forms carry a CSRF token: a random nonce in an HttpOnly, SameSite=Strict
//!   cookie scoped to `/invite/`, and in the form the HMAC (server key) of
//!   the link token and that nonce. A POST without the cookie, or whose
//!   field does not match it for this link, is refused and nothing happens.
//! - Visitors who sign in or register here get a session cookie
//!   (`admit_session`, HttpOnly, SameSite=Lax); a visitor signed in as
//!   another email than the invited one is told so and offered to switch.
//! - Every page sends a strict Content-Security-Policy (no scripts; styles by
//!   per-response nonce; `frame-ancestors 'none'`), `Referrer-Policy:
//!   no-referrer` (the token is in the URL) and `Cache-Control: no-store`.

use std::net::IpAddr;

use admit_domain::ids::{Actor, UserId};
use admit_domain::invitation::{DeliveryState, Invitation};
use admit_domain::values::{EmailAddress, PersonName};
use admit_domain::DomainError;
use admit_ledger::on_db;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;

use super::ApiContext;
use crate::Error;

/// Cookie holding the CSRF nonce of the accept page's forms.
pub const CSRF_COOKIE: &str = "admit_csrf";
/// Cookie holding a session started on the accept page.
pub const SESSION_COOKIE: &str = "admit_session";

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn secure(ctx: &ApiContext) -> &'static str {
    if ctx.config.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

/// The CSRF field value for `token` and the cookie's `nonce`.
fn csrf_field(ctx: &ApiContext, token: &str, nonce: &str) -> String {
    ctx.admit.secrets.lookup.email_hash(&format!("admit-accept-page-csrf:{token}:{nonce}"))
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A page under construction: its status, title, body and extra headers.
struct Page {
    status: StatusCode,
    title: String,
    body: String,
    cookies: Vec<String>,
}

impl Page {
    fn new(status: StatusCode, title: impl Into<String>, body: String) -> Page {
        Page { status, title: title.into(), body, cookies: Vec::new() }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let nonce = random_b64(16);
        let html = format!(
            r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · Admit</title>
<style nonce="{nonce}">
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2330;line-height:1.5}}
main{{max-width:34rem;margin:0 auto;padding:1.5rem 1rem 3rem}}
.card{{background:#fff;border-radius:.75rem;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12)}}
h1{{font-size:1.5rem;line-height:1.25;margin:0 0 1rem}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0 0 1.25rem}}
dt{{font-weight:600}} dd{{margin:0;overflow-wrap:anywhere}}
label{{display:block;font-weight:600;margin:1rem 0 .25rem}}
input[type=text],input[type=password],input[type=email]{{box-sizing:border-box;width:100%;font-size:1rem;padding:.65rem;border:1px solid #8a93a6;border-radius:.4rem}}
input[aria-invalid=true]{{border-color:#b3261e;border-width:2px}}
.hint{{color:#4a5365;font-size:.9rem;margin:.25rem 0 0}}
.error{{color:#b3261e;font-weight:600;margin:.25rem 0 0}}
.notice{{background:#fff4e5;border-left:4px solid #b35c00;padding:.75rem 1rem;margin:0 0 1rem}}
button{{font-size:1rem;padding:.7rem 1.2rem;border-radius:.4rem;border:0;background:#1f5fd1;color:#fff;margin-top:1.25rem;cursor:pointer;min-height:44px}}
button.secondary{{background:#e7e9ee;color:#1d2330}}
a.button{{display:inline-block;padding:.7rem 1.2rem;border-radius:.4rem;background:#1f5fd1;color:#fff;text-decoration:none}}
:focus-visible{{outline:3px solid #f0b400;outline-offset:2px}}
</style>
</head>
<body>
<main>
<div class="card">
{body}
</div>
</main>
</body>
</html>
"#,
            title = esc(&self.title),
            body = self.body,
        );
        let mut response = (self.status, html).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        let csp = format!(
            "default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for c in self.cookies {
            if let Ok(v) = HeaderValue::from_str(&c) {
                h.append(header::SET_COOKIE, v);
            }
        }
        response
    }
}

/// Where a link stands, as the page shows it.
enum LinkState {
    /// Pending and within its deadline.
    Live(Box<Invitation>),
    /// Past its deadline (or expired by the worker).
    Expired,
    /// Already accepted.
    Used,
    /// Withdrawn by an admin.
    Revoked,
    /// The invitee said no.
    Declined,
    /// Not a link Admit issued, or replaced by a newer one.
    Invalid,
}

/// What the link stands for. Links that are not valid count against the
/// visitor's address (the link throttle); a blocked address learns nothing
/// about any link (`too_many_attempts`).
async fn inspect(ctx: &ApiContext, address: IpAddr, token: &str) -> Result<LinkState, Error> {
    ctx.link_throttle.check(address)?;
    let state = link_state(ctx, token).await?;
    if matches!(state, LinkState::Invalid) {
        ctx.link_throttle.fail(address);
    }
    Ok(state)
}

async fn link_state(ctx: &ApiContext, token: &str) -> Result<LinkState, Error> {
    let inv = match ctx.admit.invitation_for_token(token).await {
        Ok(inv) => inv,
        Err(Error::Domain(_)) | Err(Error::NotFound(_)) => return Ok(LinkState::Invalid),
        Err(e) => return Err(e),
    };
    Ok(match inv.require_live(ctx.admit.now()) {
        Ok(()) => LinkState::Live(Box::new(inv)),
        Err(e) => match e.code() {
            "invitation_expired" => LinkState::Expired,
            "invitation_used" => LinkState::Used,
            "invitation_revoked" => LinkState::Revoked,
            "invitation_declined" => LinkState::Declined,
            _ => LinkState::Invalid,
        },
    })
}

fn dead_page(state: &LinkState, ctx: &ApiContext, token: &str, csrf: &str) -> Page {
    match state {
        LinkState::Used => Page::new(
            StatusCode::CONFLICT,
            "Invitation already used",
            format!(
                "<h1>This invitation was already used</h1>\
                 <p>Each invitation link works once, and this one has been accepted. If that was you, simply sign in.</p>{}",
                app_link(ctx, None)
            ),
        ),
        LinkState::Revoked => Page::new(
            StatusCode::GONE,
            "Invitation withdrawn",
            "<h1>This invitation was withdrawn</h1>\
             <p>The account's administrators revoked it, so it can no longer be accepted. \
             If you think this is a mistake, ask the person who invited you to send a new invitation.</p>"
                .into(),
        ),
        LinkState::Declined => Page::new(
            StatusCode::GONE,
            "Invitation declined",
            "<h1>This invitation was declined</h1>\
             <p>It can no longer be accepted. If you changed your mind, ask the person who invited you for a new invitation.</p>"
                .into(),
        ),
        LinkState::Invalid => Page::new(
            StatusCode::NOT_FOUND,
            "Invalid invitation link",
            "<h1>This invitation link is not valid</h1>\
             <p>Check that you opened the whole link from the email. If the invitation was sent again, only the newest link works: \
             look for the latest email, or ask the person who invited you to send a new one.</p>"
                .into(),
        ),
        LinkState::Expired => Page::new(
            StatusCode::GONE,
            "Invitation expired",
            format!(
                "<h1>This invitation has expired</h1>\
                 <p>Invitation links only work for a limited time, and this one has run out. \
                 You can ask the person who invited you for a new invitation: they will get an email.</p>\
                 <form method=\"post\" action=\"/invite/{token}\">{hidden}\
                 <input type=\"hidden\" name=\"action\" value=\"request_renewal\">\
                 <button type=\"submit\">Request a new invitation</button></form>",
                token = esc(token),
                hidden = csrf_input(csrf),
            ),
        ),
        LinkState::Live(_) => Page::new(StatusCode::OK, "", String::new()),
    }
}

fn csrf_input(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf))
}

fn app_link(ctx: &ApiContext, redirect: Option<&str>) -> String {
    match redirect.map(str::to_string).or_else(|| ctx.config.app_url.clone()) {
        Some(url) => format!("<p><a class=\"button\" href=\"{}\">Continue to the application</a></p>", esc(&url)),
        None => "<p>You can close this page now.</p>".into(),
    }
}

/// What the page shows about a live invitation.
struct Summary {
    account_name: String,
    customer_number: String,
    inviter: String,
    roles: Vec<String>,
    email: String,
    invited_name: Option<String>,
    expires_at: chrono::DateTime<chrono::Utc>,
    user_exists: bool,
}

async fn user_row(ctx: &ApiContext, user: uuid::Uuid) -> Result<Option<(Option<String>, Option<String>)>, Error> {
    Ok(on_db!(&ctx.admit.db, p => sqlx::query_as("SELECT name, email FROM users WHERE user_id = $1")
        .bind(user)
        .fetch_optional(p)
        .await?))
}

async fn summarise(ctx: &ApiContext, inv: &Invitation) -> Result<Summary, Error> {
    let account = ctx.admit.account_snapshot(inv.account_id).await?;
    let inviter = match inv.invited_by {
        Actor::User(u) => match user_row(ctx, u.0).await? {
            Some((Some(name), Some(email))) => format!("{name} ({email})"),
            Some((None, Some(email))) => email,
            Some((Some(name), None)) => name,
            _ => format!("an administrator of {}", account.name),
        },
        Actor::ApiKey(_) => format!("{} (through its integration)", account.name),
        Actor::Operator | Actor::System => "the service operator".into(),
    };
    let email = inv.personal.email().map(|e| e.to_string()).unwrap_or_default();
    let hash = ctx.admit.secrets.lookup.email_hash(&email);
    let n: i64 = on_db!(&ctx.admit.db, p => sqlx::query_scalar(
        "SELECT COUNT(*) FROM reservations WHERE kind = 'user_email' AND scope = '' AND key = $1",
    )
    .bind(hash)
    .fetch_one(p)
    .await?);
    Ok(Summary {
        account_name: account.name.to_string(),
        customer_number: account.customer_number.to_string(),
        inviter,
        roles: inv.access.roles.iter().map(|r| r.to_string()).collect(),
        email,
        invited_name: inv.personal.name().map(|n| n.to_string()),
        expires_at: inv.expires_at,
        user_exists: n > 0,
    })
}

/// The signed-in visitor (session cookie): their id and email.
async fn visitor(ctx: &ApiContext, headers: &HeaderMap) -> Result<Option<(UserId, String, String)>, Error> {
    let Some(token) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
    let Some((user, hash)) = ctx.sessions.resolve(&ctx.admit.db, token).await? else { return Ok(None) };
    let email = user_row(ctx, user.0).await?.and_then(|(_, e)| e).unwrap_or_default();
    Ok(Some((user, email, hash)))
}

/// Errors of the forms, per field, and what the visitor typed.
#[derive(Default)]
struct FormState {
    name: String,
    name_error: Option<String>,
    password_error: Option<String>,
    notice: Option<String>,
    /// Show the sign-in form even if no user was known (email taken meanwhile).
    sign_in: bool,
}

fn summary_html(s: &Summary) -> String {
    let roles = if s.roles.is_empty() {
        "none yet (an administrator grants your rights after you join)".to_string()
    } else {
        s.roles.iter().map(|r| esc(r)).collect::<Vec<_>>().join(", ")
    };
    format!(
        "<h1>You are invited to join {account}</h1>\
         <dl>\
         <dt>Account</dt><dd>{account}</dd>\
         <dt>Customer number</dt><dd>{number}</dd>\
         <dt>Invited by</dt><dd>{inviter}</dd>\
         <dt>Roles</dt><dd>{roles}</dd>\
         <dt>For</dt><dd>{email}</dd>\
         <dt>Valid until</dt><dd><time datetime=\"{iso}\">{when}</time></dd>\
         </dl>",
        account = esc(&s.account_name),
        number = esc(&s.customer_number),
        inviter = esc(&s.inviter),
        email = esc(&s.email),
        iso = s.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        when = s.expires_at.format("%-d %B %Y, %H:%M UTC"),
    )
}

fn field_error_html(id: &str, error: &Option<String>) -> String {
    match error {
        Some(e) => format!("<p class=\"error\" id=\"{id}-error\">{}</p>", esc(e)),
        None => String::new(),
    }
}

fn described_by(id: &str, hint: bool, error: &Option<String>) -> String {
    let mut ids = Vec::new();
    if hint {
        ids.push(format!("{id}-hint"));
    }
    if error.is_some() {
        ids.push(format!("{id}-error"));
    }
    let mut out = String::new();
    if !ids.is_empty() {
        out.push_str(&format!(" aria-describedby=\"{}\"", ids.join(" ")));
    }
    if error.is_some() {
        out.push_str(" aria-invalid=\"true\"");
    }
    out
}

fn live_page(
    ctx: &ApiContext,
    token: &str,
    csrf: &str,
    s: &Summary,
    visitor: Option<&(UserId, String, String)>,
    form: &FormState,
    status: StatusCode,
) -> Page {
    let action = format!("/invite/{}", esc(token));
    let hidden = csrf_input(csrf);
    let mut body = summary_html(s);
    if let Some(n) = &form.notice {
        body.push_str(&format!("<p class=\"notice\" role=\"alert\">{}</p>", esc(n)));
    }
    let same_email = |e: &str| match (EmailAddress::parse(e), EmailAddress::parse(&s.email)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let mismatched = visitor.is_some_and(|(_, email, _)| !same_email(email));
    match visitor {
        Some((_, email, _)) if !same_email(email) => {
            body.push_str(&format!(
                "<p class=\"notice\" role=\"alert\">You are signed in as <strong>{you}</strong>, but this invitation is for \
                 <strong>{invited}</strong>. Nothing has been accepted.</p>\
                 <form method=\"post\" action=\"{action}\">{hidden}<input type=\"hidden\" name=\"action\" value=\"switch_account\">\
                 <button type=\"submit\">Sign out and continue as {invited}</button></form>",
                you = esc(email),
                invited = esc(&s.email),
            ));
        }
        Some((_, email, _)) => {
            body.push_str(&format!(
                "<p>You are signed in as <strong>{}</strong>.</p>\
                 <form method=\"post\" action=\"{action}\">{hidden}<input type=\"hidden\" name=\"action\" value=\"accept\">\
                 <button type=\"submit\">Accept the invitation</button></form>",
                esc(email)
            ));
        }
        None if s.user_exists || form.sign_in => {
            body.push_str(&format!(
                "<h2>Sign in to accept</h2>\
                 <p>You already have a user with <strong>{email}</strong>. Sign in with its password; the account is then added to your list.</p>\
                 <form method=\"post\" action=\"{action}\" novalidate>{hidden}<input type=\"hidden\" name=\"action\" value=\"log_in\">\
                 <label for=\"email\">Email</label>\
                 <input type=\"email\" id=\"email\" name=\"email\" value=\"{email}\" autocomplete=\"username\" readonly>\
                 <label for=\"password\">Password</label>\
                 <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required{pw_attrs}>{pw_error}\
                 <button type=\"submit\">Sign in and accept</button></form>",
                email = esc(&s.email),
                pw_attrs = described_by("password", false, &form.password_error),
                pw_error = field_error_html("password", &form.password_error),
            ));
        }
        None => {
            let name =
                if form.name.is_empty() { s.invited_name.clone().unwrap_or_default() } else { form.name.clone() };
            body.push_str(&format!(
                "<h2>Create your user</h2>\
                 <form method=\"post\" action=\"{action}\" novalidate>{hidden}<input type=\"hidden\" name=\"action\" value=\"register\">\
                 <label for=\"email\">Email</label>\
                 <input type=\"email\" id=\"email\" name=\"email\" value=\"{email}\" autocomplete=\"username\" readonly>\
                 <label for=\"name\">Your name</label>\
                 <input type=\"text\" id=\"name\" name=\"name\" value=\"{name}\" autocomplete=\"name\" required maxlength=\"200\"{name_attrs}>{name_error}\
                 <label for=\"password\">Choose a password</label>\
                 <p class=\"hint\" id=\"password-hint\">{policy}</p>\
                 <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"new-password\" required{pw_attrs}>{pw_error}\
                 <button type=\"submit\">Create user and accept</button></form>",
                email = esc(&s.email),
                name = esc(&name),
                name_attrs = described_by("name", false, &form.name_error),
                name_error = field_error_html("name", &form.name_error),
                policy = esc(ctx.admit.password_policy.describe()),
                pw_attrs = described_by("password", true, &form.password_error),
                pw_error = field_error_html("password", &form.password_error),
            ));
        }
    }
    // Declining is offered to the invitee only, not to someone signed in
    // as another email.
    if !mismatched {
        body.push_str(&format!(
            "<form method=\"post\" action=\"{action}\">{hidden}<input type=\"hidden\" name=\"action\" value=\"decline\">\
             <button type=\"submit\" class=\"secondary\">Decline the invitation</button></form>"
        ));
    }
    Page::new(status, format!("Invitation to {}", s.account_name), body)
}

/// The CSRF nonce of the request's cookie, or a fresh one with its cookie.
fn csrf_nonce(ctx: &ApiContext, headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, CSRF_COOKIE) {
        Some(n) => (n.to_string(), None),
        None => {
            let n = random_b64(18);
            let c = format!("{CSRF_COOKIE}={n}; Path=/invite/; HttpOnly; SameSite=Strict{}", secure(ctx));
            (n, Some(c))
        }
    }
}

fn trouble_page(e: &Error) -> Page {
    if matches!(e, Error::TooManyAttempts) {
        return Page::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many attempts",
            "<h1>Too many attempts</h1><p>Too many links that do not work were opened from your network. \
             Wait 15 minutes, then open the link from your email again.</p>"
                .into(),
        );
    }
    tracing::warn!(error = %e, "accept page failed");
    Page::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "<h1>Something went wrong on our side</h1><p>Nothing was changed. Please try again in a moment.</p>".into(),
    )
}

/// `GET /invite/{token}`: the accept page.
pub async fn show(
    State(ctx): State<ApiContext>,
    token: Result<Path<String>, PathRejection>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path(token)) = token else { return dead_page(&LinkState::Invalid, &ctx, "", "").into_response() };
    let (nonce, set_cookie) = csrf_nonce(&ctx, &headers);
    let csrf = csrf_field(&ctx, &token, &nonce);
    let mut page = match render(&ctx, addr.ip(), &token, &csrf, &headers).await {
        Ok(page) => page,
        Err(e) => trouble_page(&e),
    };
    page.cookies.extend(set_cookie);
    page.into_response()
}

async fn render(
    ctx: &ApiContext,
    address: IpAddr,
    token: &str,
    csrf: &str,
    headers: &HeaderMap,
) -> Result<Page, Error> {
    let state = inspect(ctx, address, token).await?;
    let LinkState::Live(inv) = &state else { return Ok(dead_page(&state, ctx, token, csrf)) };
    // Visiting the link is a `clicked` fact; nothing else.
    ctx.admit.record_tracking(inv.id, DeliveryState::Clicked).await?;
    let summary = summarise(ctx, inv).await?;
    let visitor = visitor(ctx, headers).await?;
    Ok(live_page(ctx, token, csrf, &summary, visitor.as_ref(), &FormState::default(), StatusCode::OK))
}

/// The fields of the accept page's forms.
#[derive(Debug, Deserialize)]
pub struct AcceptForm {
    /// `register`, `log_in`, `accept`, `switch_account`, `decline` or `request_renewal`.
    #[serde(default)]
    pub action: String,
    /// The CSRF token of the form.
    #[serde(default)]
    pub csrf: String,
    /// New users: their name.
    #[serde(default)]
    pub name: Option<String>,
    /// New users: the chosen password; existing users: theirs.
    #[serde(default)]
    pub password: Option<String>,
    /// Shown read-only (for password managers); never trusted.
    #[serde(default)]
    pub email: Option<String>,
}

/// `POST /invite/{token}`: the accept page's forms.
pub async fn submit(
    State(ctx): State<ApiContext>,
    token: Result<Path<String>, PathRejection>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<AcceptForm>, FormRejection>,
) -> Response {
    let Ok(Path(token)) = token else { return dead_page(&LinkState::Invalid, &ctx, "", "").into_response() };
    let Ok(Form(form)) = form else {
        return Page::new(
            StatusCode::BAD_REQUEST,
            "Form not understood",
            format!(
                "<h1>The form could not be read</h1><p><a href=\"/invite/{}\">Back to the invitation</a></p>",
                esc(&token)
            ),
        )
        .into_response();
    };
    let nonce = cookie(&headers, CSRF_COOKIE).map(str::to_string);
    let csrf_ok = nonce.as_deref().is_some_and(|n| constant_time_eq(&csrf_field(&ctx, &token, n), &form.csrf));
    if !csrf_ok {
        return Page::new(
            StatusCode::FORBIDDEN,
            "Form expired",
            format!(
                "<h1>Please submit the form again</h1>\
                 <p>We could not confirm that this form came from this page (cookies may be blocked, or the page is old). \
                 Nothing was changed.</p><p><a class=\"button\" href=\"/invite/{}\">Reload the invitation</a></p>",
                esc(&token)
            ),
        )
        .into_response();
    }
    let csrf = form.csrf.clone();
    match act(&ctx, &token, &csrf, addr, &headers, form).await {
        Ok(r) => r,
        Err(e) => trouble_page(&e).into_response(),
    }
}

async fn act(
    ctx: &ApiContext,
    token: &str,
    csrf: &str,
    addr: std::net::SocketAddr,
    headers: &HeaderMap,
    form: AcceptForm,
) -> Result<Response, Error> {
    let state = inspect(ctx, addr.ip(), token).await?;
    if form.action == "request_renewal" {
        return Ok(renewal(ctx, token, &state).await?.into_response());
    }
    let LinkState::Live(inv) = &state else { return Ok(dead_page(&state, ctx, token, csrf).into_response()) };
    let summary = summarise(ctx, inv).await?;
    let visitor = visitor(ctx, headers).await?;
    let redirect = inv.redirect_url.clone();
    let invited_email = inv.personal.email().cloned();
    let again = |form: FormState, status: StatusCode| -> Response {
        live_page(ctx, token, csrf, &summary, visitor.as_ref(), &form, status).into_response()
    };
    match form.action.as_str() {
        "switch_account" => {
            if let Some((_, _, hash)) = &visitor {
                ctx.sessions.end(&ctx.admit.db, hash).await?;
            }
            let mut r = axum::response::Redirect::to(&format!("/invite/{token}")).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}", secure(ctx))) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            Ok(r)
        }
        "decline" => match ctx.admit.decline(token).await {
            Ok(_) => Ok(Page::new(
                StatusCode::OK,
                "Invitation declined",
                format!("<h1>You declined the invitation</h1><p>{} has not been added to your accounts. Nothing else happens.</p>", esc(&summary.account_name)),
            )
            .into_response()),
            Err(e) => outcome_error(ctx, token, csrf, e).await,
        },
        "accept" => {
            let Some((user, _, _)) = &visitor else {
                return Ok(again(FormState { notice: Some("Please sign in first.".into()), ..Default::default() }, StatusCode::UNAUTHORIZED));
            };
            match ctx.admit.accept_as_user(*user, token).await {
                Ok(_) => Ok(confirmation(ctx, &summary, redirect.as_deref(), None)),
                Err(Error::Domain(e)) if e.code() == "email_mismatch" => Ok(again(FormState::default(), StatusCode::FORBIDDEN)),
                Err(e) => outcome_error(ctx, token, csrf, e).await,
            }
        }
        "log_in" => {
            let Some(email) = invited_email else { return Ok(dead_page(&LinkState::Revoked, ctx, token, csrf).into_response()) };
            let email_key = format!("email:{}", ctx.admit.secrets.lookup.email_hash(email.as_str()));
            let address_key = format!("addr:{}", addr.ip());
            let password = form.password.unwrap_or_default();
            if ctx.throttle.check(&email_key, &address_key).is_err() {
                let f = FormState {
                    password_error: Some("Too many failed attempts. Wait 15 minutes, then try again.".into()),
                    sign_in: true,
                    ..Default::default()
                };
                return Ok(again(f, StatusCode::TOO_MANY_REQUESTS));
            }
            let user = match ctx.admit.log_in(&email, &password).await {
                Ok(user) => user,
                Err(Error::InvalidCredentials) => {
                    ctx.throttle.fail(&email_key, &address_key);
                    let f = FormState { password_error: Some("That password is not correct.".into()), sign_in: true, ..Default::default() };
                    return Ok(again(f, StatusCode::UNAUTHORIZED));
                }
                Err(e) => return Err(e),
            };
            let (session, _) = ctx.sessions.create(&ctx.admit.db, user).await?;
            match ctx.admit.accept_as_user(user, token).await {
                Ok(_) => Ok(confirmation(ctx, &summary, redirect.as_deref(), Some(&session))),
                Err(e) => outcome_error(ctx, token, csrf, e).await,
            }
        }
        "register" => {
            let typed = form.name.clone().unwrap_or_default();
            let mut f = FormState { name: typed.clone(), ..Default::default() };
            let name = match PersonName::parse(&typed) {
                Ok(n) => Some(n),
                Err(e) => {
                    f.name_error = Some(if typed.trim().is_empty() { "Please enter your name.".into() } else { reason(&e) });
                    None
                }
            };
            let password = form.password.unwrap_or_default();
            if password.is_empty() {
                f.password_error = Some("Please choose a password.".into());
            }
            let (Some(name), None) = (name, &f.password_error) else {
                return Ok(again(f, StatusCode::UNPROCESSABLE_ENTITY));
            };
            match ctx.admit.accept_as_new_user(token, name, &password).await {
                Ok(user) => {
                    let (session, _) = ctx.sessions.create(&ctx.admit.db, user).await?;
                    Ok(confirmation(ctx, &summary, redirect.as_deref(), Some(&session)))
                }
                Err(Error::Domain(e @ DomainError::Invalid { field: "password", .. })) => {
                    f.password_error = Some(reason(&e));
                    Ok(again(f, StatusCode::UNPROCESSABLE_ENTITY))
                }
                Err(Error::Domain(e)) if e.code() == "email_taken" => {
                    let f = FormState {
                        notice: Some("A user with this email exists already: sign in with its password instead.".into()),
                        sign_in: true,
                        ..Default::default()
                    };
                    Ok(again(f, StatusCode::CONFLICT))
                }
                Err(e) => outcome_error(ctx, token, csrf, e).await,
            }
        }
        _ => Ok(Page::new(
            StatusCode::BAD_REQUEST,
            "Form not understood",
            format!("<h1>The form could not be read</h1><p><a href=\"/invite/{}\">Back to the invitation</a></p>", esc(token)),
        )
        .into_response()),
    }
}

fn reason(e: &DomainError) -> String {
    match e {
        DomainError::Invalid { reason, .. } | DomainError::Refused { reason, .. } => {
            let mut r = reason.clone();
            if let Some(first) = r.get(..1) {
                r.replace_range(..1, &first.to_uppercase());
            }
            if !r.ends_with('.') {
                r.push('.');
            }
            r
        }
    }
}

/// A refusal after the visitor acted: the link's new state if it changed
/// meanwhile, else the refusal's explanation.
async fn outcome_error(ctx: &ApiContext, token: &str, csrf: &str, e: Error) -> Result<Response, Error> {
    let Error::Domain(d) = &e else { return Err(e) };
    let state = link_state(ctx, token).await?;
    if !matches!(state, LinkState::Live(_)) {
        return Ok(dead_page(&state, ctx, token, csrf).into_response());
    }
    Ok(Page::new(
        e.status(),
        "Could not accept",
        format!(
            "<h1>The invitation could not be accepted</h1><p role=\"alert\">{}</p><p><a href=\"/invite/{}\">Back to the invitation</a></p>",
            esc(&reason(d)),
            esc(token)
        ),
    )
    .into_response())
}

fn confirmation(ctx: &ApiContext, s: &Summary, redirect: Option<&str>, session: Option<&str>) -> Response {
    let mut page = Page::new(
        StatusCode::OK,
        "Welcome",
        format!(
            "<h1>Welcome to {account}</h1>\
             <p role=\"status\">You have joined <strong>{account}</strong> (customer number {number}) as {email}.</p>{link}",
            account = esc(&s.account_name),
            number = esc(&s.customer_number),
            email = esc(&s.email),
            link = app_link(ctx, redirect),
        ),
    );
    if let Some(token) = session {
        let max_age = ctx.sessions.ttl.num_seconds();
        page.cookies.push(format!(
            "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
            secure(ctx)
        ));
    }
    page.into_response()
}

async fn renewal(ctx: &ApiContext, token: &str, state: &LinkState) -> Result<Page, Error> {
    let LinkState::Expired = state else {
        return Ok(Page::new(
            StatusCode::CONFLICT,
            "No new invitation needed",
            format!(
                "<h1>This invitation has not expired</h1><p><a href=\"/invite/{}\">Back to the invitation</a></p>",
                esc(token)
            ),
        ));
    };
    match ctx.admit.request_renewal(token).await {
        Ok(_) => Ok(Page::new(
            StatusCode::OK,
            "New invitation requested",
            "<h1>We asked for a new invitation</h1>\
             <p role=\"status\">The person who invited you gets an email asking them to invite you again. \
             The new invitation will come to the same email address.</p>"
                .into(),
        )),
        Err(Error::Domain(e)) if e.code() == "renewal_already_requested" => Ok(Page::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Already requested",
            "<h1>A new invitation was already requested</h1>\
             <p role=\"status\">The person who invited you has been told. You can ask again tomorrow.</p>"
                .into(),
        )),
        Err(Error::Domain(e)) => Ok(Page::new(
            e_status(&e),
            "Could not request",
            format!("<h1>A new invitation cannot be requested</h1><p>{}</p>", esc(&reason(&e))),
        )),
        Err(e) => Err(e),
    }
}

fn e_status(e: &DomainError) -> StatusCode {
    Error::Domain(e.clone()).status()
}
