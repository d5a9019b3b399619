//! The invitation funnel of an account, per UTC day, as the analytics
//! worker counted it from the event stream.

use std::collections::BTreeMap;

use admit_domain::access::Permission;
use admit_domain::ids::AccountId;
use admit_ledger::on_db;
use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiPath, ApiQuery, Principal};
use super::ApiContext;
use crate::{Error, FieldError};

/// Query of the funnel: an inclusive range of UTC days.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FunnelQuery {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
    pub from: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today).
    pub to: Option<String>,
}

/// The funnel over some days.
#[derive(Debug, Default, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FunnelCounts {
    /// Invitations sent.
    pub invited: i64,
    /// Accepted by the SMTP server (each invitation once).
    pub delivered: i64,
    /// Opened (tracking pixel; each invitation once).
    pub opened: i64,
    /// Link visited (each invitation once).
    pub clicked: i64,
    /// Accepted.
    pub accepted: i64,
    /// Expired unused.
    pub expired: i64,
    /// Revoked.
    pub revoked: i64,
    /// `accepted / invited` (null when nothing was sent).
    pub acceptance_rate: Option<f64>,
    /// Median time from sending to acceptance, in seconds (nearest rank).
    pub median_seconds_to_accept: Option<i64>,
    /// 90th percentile of the time to accept, in seconds (nearest rank).
    pub p90_seconds_to_accept: Option<i64>,
}

/// One day of the funnel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FunnelDay {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// What happened that day.
    #[serde(flatten)]
    pub counts: FunnelCounts,
}

/// The answer of the funnel route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Funnel {
    /// The account.
    pub account_id: Uuid,
    /// First day.
    pub from: String,
    /// Last day.
    pub to: String,
    /// The whole range.
    pub total: FunnelCounts,
    /// Each day with any activity, in order.
    pub days: Vec<FunnelDay>,
}

/// Longest range one request may ask for.
const MAX_DAYS: i64 = 366;

#[derive(sqlx::FromRow)]
struct DayRow {
    day: String,
    invited: i64,
    delivered: i64,
    opened: i64,
    clicked: i64,
    accepted: i64,
    expired: i64,
    revoked: i64,
}

fn bad_range(field: &str, message: &str) -> Error {
    Error::Validation(vec![FieldError {
        field: field.into(),
        code: "invalid_date_range".into(),
        message: message.into(),
    }])
}

fn day(field: &str, value: Option<&str>, default: NaiveDate) -> Result<NaiveDate, Error> {
    match value {
        None => Ok(default),
        Some(v) => {
            NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|_| bad_range(field, "a day is written YYYY-MM-DD"))
        }
    }
}

/// The value at rank `ceil(q * n)` of sorted `values` (None when empty).
fn nearest_rank(values: &[i64], q: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn finish(mut counts: FunnelCounts, mut seconds: Vec<i64>) -> FunnelCounts {
    seconds.sort_unstable();
    counts.acceptance_rate = (counts.invited > 0).then(|| counts.accepted as f64 / counts.invited as f64);
    counts.median_seconds_to_accept = nearest_rank(&seconds, 0.5);
    counts.p90_seconds_to_accept = nearest_rank(&seconds, 0.9);
    counts
}

/// `GET /v1/accounts/{account}/analytics/funnel?from=&to=`: invited,
/// delivered, opened, clicked, accepted, expired and revoked per day, with
/// the acceptance rate and the median and p90 time to accept.
#[utoipa::path(get, path = "/v1/accounts/{account}/analytics/funnel", tag = "analytics", params(("account" = Uuid, Path), FunnelQuery),
    security(("bearer" = [])), responses((status = 200, body = Funnel), (status = 422, description = "invalid_date_range")))]
pub async fn funnel(
    State(ctx): State<ApiContext>,
    who: Principal,
    ApiPath(account): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<FunnelQuery>,
) -> Result<Json<Funnel>, Error> {
    ctx.authorize(&who, AccountId(account), Permission::InvitationsRead).await?;
    let to = day("to", q.to.as_deref(), ctx.admit.now().date_naive())?;
    let from = day("from", q.from.as_deref(), to - chrono::Duration::days(MAX_DAYS.min(30) - 1))?;
    if from > to || (to - from).num_days() >= MAX_DAYS {
        return Err(bad_range("from", &format!("`from` must be on or before `to`, at most {MAX_DAYS} days apart")));
    }
    let (from_s, to_s) = (from.format("%Y-%m-%d").to_string(), to.format("%Y-%m-%d").to_string());
    let rows: Vec<DayRow> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT day, invited, delivered, opened, clicked, accepted, expired, revoked FROM analytics_daily \
         WHERE account_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
    )
    .bind(account)
    .bind(&from_s)
    .bind(&to_s)
    .fetch_all(p)
    .await?);
    let times: Vec<(String, i64)> = on_db!(&ctx.admit.db, p => sqlx::query_as(
        "SELECT day, seconds_to_accept FROM analytics_acceptances WHERE account_id = $1 AND day >= $2 AND day <= $3",
    )
    .bind(account)
    .bind(&from_s)
    .bind(&to_s)
    .fetch_all(p)
    .await?);
    let mut by_day: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (d, s) in &times {
        by_day.entry(d.clone()).or_default().push(*s);
    }
    let mut total = FunnelCounts::default();
    let mut days = Vec::with_capacity(rows.len());
    for r in rows {
        let counts = FunnelCounts {
            invited: r.invited,
            delivered: r.delivered,
            opened: r.opened,
            clicked: r.clicked,
            accepted: r.accepted,
            expired: r.expired,
            revoked: r.revoked,
            ..FunnelCounts::default()
        };
        total.invited += counts.invited;
        total.delivered += counts.delivered;
        total.opened += counts.opened;
        total.clicked += counts.clicked;
        total.accepted += counts.accepted;
        total.expired += counts.expired;
        total.revoked += counts.revoked;
        let seconds = by_day.remove(&r.day).unwrap_or_default();
        days.push(FunnelDay { day: r.day, counts: finish(counts, seconds) });
    }
    let total = finish(total, times.into_iter().map(|(_, s)| s).collect());
    Ok(Json(Funnel { account_id: account, from: from_s, to: to_s, total, days }))
}

#[cfg(test)]
mod tests {
    use super::nearest_rank;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 0.5), None);
        assert_eq!(nearest_rank(&[7], 0.9), Some(7));
        assert_eq!(nearest_rank(&[1, 2, 3, 4], 0.5), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), Some(9));
    }
}
