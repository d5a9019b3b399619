//! The HTTP API (axum): one module per resource, an [`ApiContext`] state,
//! errors as problem+json, and the OpenAPI document generated from the same
//! route definitions (a route cannot be served without being documented).

pub mod accounts;
pub mod analytics;
pub mod api_keys;
pub mod attempts;
pub mod audit;
pub mod bulk;
pub mod csv;
pub mod exports;
pub mod extract;
#[cfg(test)]
mod fuzz;
pub mod idempotency;
pub mod invitations;
pub mod me;
pub mod members;
pub mod openapi;
pub mod pages;
pub mod problem;
pub mod public;
pub mod roles;
pub mod sessions;
pub mod telemetry;

use std::sync::Arc;

use admit_domain::access::Permission;
use admit_domain::account::Account;
use admit_domain::ids::{AccountId, Actor};
use admit_domain::invitation::Channel;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{Admit, Error, RequestContext};
use extract::Principal;

/// Settings of the HTTP server.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base of every link Admit builds (never the request's Host header).
    pub public_url: String,
    /// Where invitees go after accepting, when the invitation names no redirect.
    pub app_url: Option<String>,
    /// Secret that guards the operator routes (`POST /v1/accounts`); unset
    /// disables them.
    pub operator_token: Option<String>,
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct ApiContext {
    /// The application (commands and database).
    pub admit: Admit,
    /// Server settings.
    pub config: Arc<HttpConfig>,
    /// Session store.
    pub sessions: sessions::Sessions,
    /// Failed sign-in throttle.
    pub throttle: Arc<attempts::Throttle>,
    /// Failed link-token throttle.
    pub link_throttle: Arc<attempts::LinkThrottle>,
}

impl ApiContext {
    /// A context with default session lifetime (12 hours) and throttle.
    pub fn new(admit: Admit, config: HttpConfig) -> ApiContext {
        ApiContext {
            admit,
            config: Arc::new(config),
            sessions: sessions::Sessions { ttl: chrono::Duration::hours(12) },
            throttle: Arc::new(attempts::Throttle::default()),
            link_throttle: Arc::new(attempts::LinkThrottle::default()),
        }
    }

    /// The accept link for an invitation token.
    pub fn accept_link(&self, token: &str) -> String {
        format!("{}/invite/{token}", self.config.public_url.trim_end_matches('/'))
    }

    /// Checks that `who` is an active member of `account` holding
    /// `permission`. Non-members get 404 (they may not learn that the
    /// account exists); members without the permission get 403.
    pub async fn authorize(
        &self,
        who: &Principal,
        account: AccountId,
        permission: Permission,
    ) -> Result<(Account, RequestContext), Error> {
        let rctx = request_context(who, account)?;
        let snapshot = self.admit.account_snapshot(account).await.map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound("account"),
            other => other,
        })?;
        allows(&snapshot, &rctx, permission)?;
        Ok((snapshot, rctx))
    }

    /// [`authorize`](Self::authorize) against the account state this
    /// process keeps, without asking the log (one round trip fewer), for a
    /// route whose command checks the caller's permission again inside its
    /// transaction, against the locked and current account: the kept state
    /// only lets the request through to that check. Where nothing is kept,
    /// or the kept state refuses, this asks the log as `authorize` does, so
    /// every refusal here is the current state's. A command refused with
    /// `forbidden` after this (another process took the permission away in
    /// the meantime) is answered with [`refusal`](Self::refusal).
    pub async fn authorize_kept(
        &self,
        who: &Principal,
        account: AccountId,
        permission: Permission,
    ) -> Result<RequestContext, Error> {
        if let Some(kept) = self.admit.kept_account(account) {
            let rctx = request_context(who, account)?;
            if allows(&kept, &rctx, permission).is_ok() {
                return Ok(rctx);
            }
        }
        Ok(self.authorize(who, account, permission).await?.1)
    }

    /// What to answer for a command authorized by
    /// [`authorize_kept`](Self::authorize_kept) that was refused with
    /// `err`: when the refusal is `forbidden`, what `authorize` says now (404
    /// for someone who is no longer a member, as for any non-member), else
    /// `err` itself.
    pub async fn refusal(&self, who: &Principal, account: AccountId, permission: Permission, err: Error) -> Error {
        if err.code() != "forbidden" {
            return err;
        }
        self.authorize(who, account, permission).await.err().unwrap_or(err)
    }
}

/// Who `who` acts as in `account`; an API key acts only in its own account
/// (404 elsewhere, as for any account one is not a member of).
fn request_context(who: &Principal, account: AccountId) -> Result<RequestContext, Error> {
    let (actor, channel) = match who {
        Principal::User(u) => (Actor::User(u.user_id), Channel::Session),
        Principal::Key { key_id, account: own } if *own == account => (Actor::ApiKey(*key_id), Channel::ApiKey),
        Principal::Key { .. } => return Err(Error::NotFound("account")),
    };
    Ok(RequestContext::new(actor, channel))
}

/// Whether `account` lets `rctx`'s actor use `permission`: 404 for a
/// non-member, the domain's refusal (403) for a member without it.
fn allows(account: &Account, rctx: &RequestContext, permission: Permission) -> Result<(), Error> {
    let access = account.access_of(&rctx.actor).ok_or(Error::NotFound("account"))?;
    account.require(Some(&access), permission)?;
    Ok(())
}

/// Largest request body accepted (bulk requests included).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// The OpenAPI document's fixed parts; paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(title = "Admit", description = "An event-sourced invitation ledger", version = "1"),
    components(schemas(problem::Problem)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The documented routes, and the OpenAPI document they make.
pub fn api_routes() -> (Router<ApiContext>, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = documented_routes();
    utoipa::Modify::modify(&openapi::FlattenedBodies, &mut openapi);
    utoipa::Modify::modify(&openapi::ProblemResponses, &mut openapi);
    (router, openapi)
}

fn documented_routes() -> (Router<ApiContext>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::open_account))
        .routes(routes!(accounts::get_account, accounts::change_settings))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(sessions::sign_in))
        .routes(routes!(sessions::sign_out))
        .routes(routes!(me::me))
        .routes(routes!(me::cancel_membership))
        .routes(routes!(invitations::invite, invitations::list))
        .routes(routes!(bulk::bulk))
        .routes(routes!(bulk::template))
        .routes(routes!(exports::invitations_csv))
        .routes(routes!(exports::members_csv))
        .routes(routes!(invitations::get_one, invitations::update, invitations::revoke))
        .routes(routes!(invitations::resend))
        .routes(routes!(public::preview))
        .routes(routes!(public::accept))
        .routes(routes!(public::decline))
        .routes(routes!(public::pixel))
        .routes(routes!(members::list))
        .routes(routes!(members::get_one, members::patch, members::remove))
        .routes(routes!(members::deactivate))
        .routes(routes!(members::reactivate))
        .routes(routes!(roles::list, roles::create))
        .routes(routes!(roles::patch, roles::delete))
        .routes(routes!(audit::events))
        .routes(routes!(analytics::funnel))
        .split_for_parts()
}

/// The router of `admit serve`.
pub fn router(ctx: ApiContext) -> Router {
    let (api, openapi) = api_routes();
    let openapi = Arc::new(openapi);
    Router::new()
        .merge(api)
        .route("/invite/{token}", get(pages::show).post(pages::submit))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(telemetry::metrics))
        .route("/openapi.json", get(move || async move { Json(openapi.as_ref().clone()) }))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), idempotency::replay_or_record))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(telemetry::track))
        .with_state(ctx)
}

async fn not_found() -> Error {
    Error::NotFound("route")
}

/// Liveness: the process answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers and every migration is applied.
async fn readyz(State(ctx): State<ApiContext>) -> (StatusCode, Json<serde_json::Value>) {
    match ctx.admit.db.is_migrated().await {
        Ok(true) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Ok(false) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "migrations pending" }))),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "database unreachable" }))),
    }
}
