//! CSV exports of an account's members and invitations, streamed page by
//! page from the read models so a large account never sits in memory.
//! Every cell is neutralised against formula injection (`csv::neutralise`).

use std::collections::HashMap;

use admit_domain::access::Permission;
use admit_domain::ids::AccountId;
use admit_ledger::on_db;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use uuid::Uuid;

use super::csv::write_row;
use super::extract::{ApiPath, Principal};
use super::ApiContext;
use crate::Error;

/// Rows read per database round trip while streaming.
const PAGE: i64 = 500;

/// Columns of `members.csv`, in order (README "Exports").
pub const MEMBER_COLUMNS: [&str; 9] =
    ["user_id", "email", "name", "status", "roles", "restricted", "joined_at", "last_login_at", "invited_by"];

/// Columns of `invitations.csv`, in order (README "Exports").
pub const INVITATION_COLUMNS: [&str; 15] = [
    "invitation_id",
    "email",
    "name",
    "status",
    "roles",
    "delivery_state",
    "delivery_updated_at",
    "invited_by",
    "channel",
    "created_at",
    "expires_at",
    "accepted_at",
    "last_login_at",
    "resend_count",
    "revoke_reason",
];

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)).unwrap_or_default()
}

fn roles_of(access: &str) -> String {
    let access: admit_domain::access::Access = serde_json::from_str(access).unwrap_or_default();
    access.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(";")
}

/// The inviters' emails, for `invited_by` cells (`user:<id>` → email).
async fn inviter_emails(
    ctx: &ApiContext,
    actors: impl Iterator<Item = &str>,
) -> Result<HashMap<String, String>, Error> {
    let ids: Vec<Uuid> = actors.filter_map(|a| a.strip_prefix("user:")).filter_map(|id| id.parse().ok()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Option<String>)> = on_db!(&ctx.admit.db, p => {
        admit_ledger::database::ids_in("SELECT user_id, email FROM users WHERE user_id IN", ids.iter().copied())
            .build_query_as()
            .fetch_all(p)
            .await?
    });
    Ok(rows.into_iter().filter_map(|(id, email)| email.map(|e| (format!("user:{id}"), e))).collect())
}

fn who(actor: &str, emails: &HashMap<String, String>) -> String {
    emails.get(actor).cloned().unwrap_or_else(|| actor.to_string())
}

fn csv_response(
    filename: &str,
    header_row: &[&str],
    pages: impl futures::Stream<Item = Result<String, Error>> + Send + 'static,
) -> Response {
    use futures::StreamExt;
    // A byte-order mark first, so spreadsheets read the file as UTF-8.
    let head = futures::stream::once(std::future::ready(Ok(format!("\u{feff}{}", write_row(header_row)))));
    let body = head.chain(pages).map(|chunk| {
        chunk.map(Bytes::from).map_err(|e| {
            tracing::error!(error = %e, "export stopped");
            std::io::Error::other("export stopped")
        })
    });
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

type MemberRow =
    (Uuid, Option<String>, Option<String>, String, String, i64, DateTime<Utc>, Option<DateTime<Utc>>, Option<String>);

/// `GET /v1/accounts/{account}/members.csv`: every member, streamed.
#[utoipa::path(get, path = "/v1/accounts/{account}/members.csv", tag = "members", params(("account" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv",
        description = "columns: user_id, email, name, status, roles (separated by ';'), restricted, joined_at, last_login_at, invited_by"),
        (status = 403), (status = 404)))]
pub async fn members_csv(
    State(ctx): State<ApiContext>,
    who_calls: Principal,
    ApiPath(account): ApiPath<Uuid>,
) -> Result<Response, Error> {
    ctx.authorize(&who_calls, AccountId(account), Permission::MembersRead).await?;
    let pages = futures::stream::try_unfold(Some(None::<(DateTime<Utc>, Uuid)>), move |after| {
        let ctx = ctx.clone();
        async move {
            let Some(after) = after else { return Ok(None) };
            let rows: Vec<MemberRow> = on_db!(&ctx.admit.db, p => {
                let mut b = sqlx::QueryBuilder::new(
                    "SELECT m.user_id, u.email, u.name, m.status, m.access, m.restricted, m.joined_at, u.last_login_at, i.invited_by \
                     FROM members m LEFT JOIN users u ON u.user_id = m.user_id \
                     LEFT JOIN invitations i ON i.invitation_id = m.invitation_id WHERE m.account_id = ",
                );
                b.push_bind(account);
                if let Some((at, id)) = after {
                    b.push(" AND (m.joined_at > ").push_bind(at).push(" OR (m.joined_at = ").push_bind(at).push(" AND m.user_id > ").push_bind(id).push("))");
                }
                b.push(" ORDER BY m.joined_at, m.user_id LIMIT ").push_bind(PAGE);
                b.build_query_as().fetch_all(p).await?
            });
            if rows.is_empty() {
                return Ok(None);
            }
            let emails = inviter_emails(&ctx, rows.iter().filter_map(|r| r.8.as_deref())).await?;
            let mut chunk = String::new();
            for (user_id, email, name, status, access, restricted, joined_at, last_login_at, invited_by) in &rows {
                chunk.push_str(&write_row(&[
                    user_id.to_string(),
                    email.clone().unwrap_or_default(),
                    name.clone().unwrap_or_default(),
                    status.clone(),
                    roles_of(access),
                    (*restricted != 0).to_string(),
                    time(Some(*joined_at)),
                    time(*last_login_at),
                    invited_by.as_deref().map(|a| who(a, &emails)).unwrap_or_default(),
                ]));
            }
            let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| (r.6, r.0)));
            Ok(Some((chunk, next)))
        }
    });
    Ok(csv_response("members.csv", &MEMBER_COLUMNS, pages))
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    invitation_id: Uuid,
    email: Option<String>,
    name: Option<String>,
    status: String,
    access: String,
    delivery_state: Option<String>,
    delivery_updated_at: Option<DateTime<Utc>>,
    invited_by: String,
    channel: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    last_login_at: Option<DateTime<Utc>>,
    resend_count: i64,
    revoke_reason: Option<String>,
}

/// `GET /v1/accounts/{account}/invitations.csv`: every invitation, streamed.
#[utoipa::path(get, path = "/v1/accounts/{account}/invitations.csv", tag = "invitations", params(("account" = Uuid, Path)),
    security(("bearer" = [])),
    responses((status = 200, content_type = "text/csv",
        description = "columns: invitation_id, email, name, status, roles (separated by ';'), delivery_state, delivery_updated_at, invited_by, channel, created_at, expires_at, accepted_at, last_login_at (of the user who accepted), resend_count, revoke_reason"),
        (status = 403), (status = 404)))]
pub async fn invitations_csv(
    State(ctx): State<ApiContext>,
    who_calls: Principal,
    ApiPath(account): ApiPath<Uuid>,
) -> Result<Response, Error> {
    ctx.authorize(&who_calls, AccountId(account), Permission::InvitationsRead).await?;
    let pages = futures::stream::try_unfold(Some(None::<(DateTime<Utc>, Uuid)>), move |after| {
        let ctx = ctx.clone();
        async move {
            let Some(after) = after else { return Ok(None) };
            let rows: Vec<InvitationRow> = on_db!(&ctx.admit.db, p => {
                let mut b = sqlx::QueryBuilder::new(
                    "SELECT i.invitation_id, i.email, i.name, i.status, i.access, i.delivery_state, i.delivery_updated_at, i.invited_by, \
                     i.channel, i.created_at, i.expires_at, i.accepted_at, u.last_login_at, i.resend_count, i.revoke_reason \
                     FROM invitations i LEFT JOIN users u ON u.user_id = i.accepted_by WHERE i.account_id = ",
                );
                b.push_bind(account);
                if let Some((at, id)) = after {
                    b.push(" AND (i.created_at > ").push_bind(at).push(" OR (i.created_at = ").push_bind(at).push(" AND i.invitation_id > ").push_bind(id).push("))");
                }
                b.push(" ORDER BY i.created_at, i.invitation_id LIMIT ").push_bind(PAGE);
                b.build_query_as().fetch_all(p).await?
            });
            if rows.is_empty() {
                return Ok(None);
            }
            let emails = inviter_emails(&ctx, rows.iter().map(|r| r.invited_by.as_str())).await?;
            let mut chunk = String::new();
            for r in &rows {
                chunk.push_str(&write_row(&[
                    r.invitation_id.to_string(),
                    r.email.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default(),
                    r.status.clone(),
                    roles_of(&r.access),
                    r.delivery_state.clone().unwrap_or_default(),
                    time(r.delivery_updated_at),
                    who(&r.invited_by, &emails),
                    r.channel.clone(),
                    time(Some(r.created_at)),
                    time(Some(r.expires_at)),
                    time(r.accepted_at),
                    time(r.last_login_at),
                    r.resend_count.to_string(),
                    r.revoke_reason.clone().unwrap_or_default(),
                ]));
            }
            let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| (r.created_at, r.invitation_id)));
            Ok(Some((chunk, next)))
        }
    });
    Ok(csv_response("invitations.csv", &INVITATION_COLUMNS, pages))
}
