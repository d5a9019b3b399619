//! Sign-in sessions (`POST /v1/sessions`, `DELETE /v1/sessions/current`)
//! (the throttle on failed sign-ins is in `attempts`).

use admit_domain::ids::UserId;
use admit_domain::values::EmailAddress;
use admit_ledger::{on_db, Database};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, SignedIn};
use super::ApiContext;
use crate::Error;

/// Issues, resolves and ends sessions. Only a SHA-256 of each bearer token
/// is stored; the token itself is shown once, at sign-in.
#[derive(Debug, Clone)]
pub struct Sessions {
    /// How long a session lives.
    pub ttl: chrono::Duration,
}

/// Prefix that makes session tokens recognisable in logs and scanners.
const PREFIX: &str = "ses_";

pub use crate::commands::secret_hash;

impl Sessions {
    /// Starts a session for `user`; returns the token (shown once) and expiry.
    pub async fn create(&self, db: &Database, user: UserId) -> Result<(String, DateTime<Utc>), Error> {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let now = Utc::now();
        let expires_at = now + self.ttl;
        // Sign-ins clear the user's expired sessions, so the table stays small.
        admit_ledger::on_db_write!(db, p => sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND expires_at <= $2")
            .bind(user.0)
            .bind(now)
            .execute(p)
            .await
            .map(|_| ())?);
        admit_ledger::on_db_write!(db, p => sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(secret_hash(&token))
        .bind(user.0)
        .bind(now)
        .bind(expires_at)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok((token, expires_at))
    }

    /// The user behind a live session token, and the token's hash.
    pub async fn resolve(&self, db: &Database, token: &str) -> Result<Option<(UserId, String)>, Error> {
        if !token.starts_with(PREFIX) {
            return Ok(None);
        }
        let hash = secret_hash(token);
        let row: Option<(Uuid,)> = on_db!(db, p => sqlx::query_as(
            "SELECT user_id FROM sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(&hash)
        .bind(Utc::now())
        .fetch_optional(p)
        .await?);
        Ok(row.map(|(u,)| (UserId(u), hash)))
    }

    /// Ends one session.
    pub async fn end(&self, db: &Database, hash: &str) -> Result<(), Error> {
        admit_ledger::on_db_write!(db, p => sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(hash).execute(p).await.map(|_| ())?);
        Ok(())
    }
}

/// Sign-in request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInRequest {
    /// Email address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A new session: the bearer token is shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// Bearer token for `Authorization: Bearer ...`.
    pub token: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The signed-in user.
    pub user_id: Uuid,
}

/// `POST /v1/sessions`: sign in with email and password.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = SignInRequest,
    responses((status = 201, body = SessionResponse), (status = 401, description = "wrong email or password"), (status = 429, description = "too many attempts")))]
pub async fn sign_in(
    State(ctx): State<ApiContext>,
    ConnectInfo(addr): ConnectInfo<std::net::SocketAddr>,
    ApiJson(req): ApiJson<SignInRequest>,
) -> Result<(StatusCode, Json<SessionResponse>), Error> {
    // Unparseable emails are counted like unknown ones: the answer is the
    // same 401 after the same work, so nothing tells whether an email exists.
    let email_key = format!("email:{}", ctx.admit.secrets.lookup.email_hash(req.email.trim().to_lowercase().as_str()));
    let address_key = format!("addr:{}", addr.ip());
    ctx.throttle.check(&email_key, &address_key)?;
    let outcome = match EmailAddress::parse(&req.email) {
        Ok(email) => ctx.admit.log_in(&email, &req.password).await,
        Err(_) => {
            crate::passwords::verify(req.password.clone(), None).await;
            Err(Error::InvalidCredentials)
        }
    };
    let user = match outcome {
        Ok(user) => user,
        Err(Error::InvalidCredentials) => {
            ctx.throttle.fail(&email_key, &address_key);
            return Err(Error::InvalidCredentials);
        }
        Err(e) => return Err(e),
    };
    let (token, expires_at) = ctx.sessions.create(&ctx.admit.db, user).await?;
    Ok((StatusCode::CREATED, Json(SessionResponse { token, expires_at, user_id: user.0 })))
}

/// `DELETE /v1/sessions/current`: sign out.
#[utoipa::path(delete, path = "/v1/sessions/current", tag = "sessions", responses((status = 204), (status = 401)))]
pub async fn sign_out(State(ctx): State<ApiContext>, who: SignedIn) -> Result<StatusCode, Error> {
    ctx.sessions.end(&ctx.admit.db, &who.session_hash).await?;
    Ok(StatusCode::NO_CONTENT)
}
