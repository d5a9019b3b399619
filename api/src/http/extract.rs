//! Extractors that turn every bad request into problem+json: JSON bodies,
//! query strings, path ids, and the bearer credentials of the caller.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiContext;
use crate::Error;

/// A JSON body; malformed JSON, wrong types, unknown fields, a wrong
/// content type and oversized bodies all become 4xx problem+json.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> Error {
    let (code, detail) = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            ("unsupported_media_type", "send the body as application/json".to_string())
        }
        JsonRejection::JsonSyntaxError(e) => ("malformed_json", e.body_text()),
        JsonRejection::JsonDataError(e) => ("invalid_body", e.body_text()),
        JsonRejection::BytesRejection(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            ("payload_too_large", "the body is larger than allowed".to_string())
        }
        other => ("invalid_body", other.body_text()),
    };
    Error::BadRequest { code, detail }
}

/// A query string; unknown or ill-typed parameters become 400 problem+json.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e: QueryRejection| Error::BadRequest { code: "invalid_query", detail: e.body_text() })
    }
}

/// Path parameters; a malformed id is the same 404 as a missing one.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_: PathRejection| Error::NotFound("resource"))
    }
}

/// The bearer token of the request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// A signed-in user (by session token). Requests without a valid session
/// are refused with 401.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user_id: admit_domain::ids::UserId,
    /// Hash of the session token (to end this session).
    pub session_hash: String,
}

impl<S> FromRequestParts<S> for SignedIn
where
    ApiContext: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let ctx = ApiContext::from_ref(state);
        let token = bearer(parts).ok_or(Error::Unauthenticated)?;
        let (user_id, session_hash) =
            ctx.sessions.resolve(&ctx.admit.db, token).await?.ok_or(Error::Unauthenticated)?;
        Ok(SignedIn { user_id, session_hash })
    }
}

/// A signed-in user when the request carries a session, else nobody.
#[derive(Debug, Clone)]
pub struct MaybeSignedIn(pub Option<SignedIn>);

impl<S> FromRequestParts<S> for MaybeSignedIn
where
    ApiContext: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        if bearer(parts).is_none() {
            return Ok(MaybeSignedIn(None));
        }
        SignedIn::from_request_parts(parts, state).await.map(|s| MaybeSignedIn(Some(s)))
    }
}

/// The request id set by the telemetry middleware, for event metadata.
pub fn request_id(parts_or_ext: &axum::http::Extensions) -> Option<String> {
    parts_or_ext.get::<super::telemetry::RequestId>().map(|r| r.0.clone())
}

/// Who calls an account route: a signed-in user, or an API key of that
/// account (bearer `key_...`).
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user with a session.
    User(SignedIn),
    /// An API key.
    Key {
        /// The key.
        key_id: admit_domain::ids::ApiKeyId,
        /// The account it belongs to.
        account: admit_domain::ids::AccountId,
    },
}

impl<S> FromRequestParts<S> for Principal
where
    ApiContext: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let token = bearer(parts).ok_or(Error::Unauthenticated)?;
        if token.starts_with(crate::commands::API_KEY_PREFIX) {
            let ctx = ApiContext::from_ref(state);
            let hash = crate::commands::secret_hash(token);
            let row: Option<(uuid::Uuid, uuid::Uuid)> = admit_ledger::on_db!(&ctx.admit.db, p => sqlx::query_as(
                "SELECT key_id, account_id FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL",
            )
            .bind(hash)
            .fetch_optional(p)
            .await?);
            let (key_id, account) = row.ok_or(Error::Unauthenticated)?;
            return Ok(Principal::Key {
                key_id: admit_domain::ids::ApiKeyId(key_id),
                account: admit_domain::ids::AccountId(account),
            });
        }
        SignedIn::from_request_parts(parts, state).await.map(Principal::User)
    }
}
