//! Claims for set-based rules, written in the same transaction as events.
//!
//! A rule such as "one user per email" spans many streams, so no single
//! stream's version can guard it. Instead the command claims a row keyed by
//! the rule (`kind`, `scope`, `key`); the primary key makes a second claim
//! fail even when both commands run at the same moment.

use chrono::{DateTime, Utc};

use crate::{on_tx, Conn, Result, Tx};

/// A claimed reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Who holds it (a user id, an invitation id, ...).
    pub holder: String,
    /// When the claim lapses by itself (a pending invitation's deadline).
    pub expires_at: Option<DateTime<Utc>>,
}

impl Tx {
    /// The current holder of (`kind`, `scope`, `key`), if any. On
    /// PostgreSQL the row stays locked until commit.
    pub async fn reservation(&mut self, kind: &str, scope: &str, key: &str) -> Result<Option<Reservation>> {
        let row: Option<(String, Option<DateTime<Utc>>)> = match &mut self.conn {
            Conn::Postgres(t) => sqlx::query_as(
                "SELECT holder, expires_at FROM reservations WHERE kind = $1 AND scope = $2 AND key = $3 FOR UPDATE",
            )
            .bind(kind)
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut **t)
            .await?,
            Conn::Sqlite(t) => sqlx::query_as(
                "SELECT holder, expires_at FROM reservations WHERE kind = $1 AND scope = $2 AND key = $3",
            )
            .bind(kind)
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut **t)
            .await?,
        };
        Ok(row.map(|(holder, expires_at)| Reservation { holder, expires_at }))
    }

    /// [`Tx::reservation`] of one `key` under two (`kind`, `scope`) pairs in
    /// one statement (an invitation looks up both the invitee's user and
    /// their pending invitation in the account). On PostgreSQL both rows
    /// stay locked until commit.
    pub async fn reservation_pair(
        &mut self,
        key: &str,
        first: (&str, &str),
        second: (&str, &str),
    ) -> Result<(Option<Reservation>, Option<Reservation>)> {
        let lock = if matches!(self.conn, Conn::Postgres(_)) { " FOR UPDATE" } else { "" };
        let sql = format!(
            "SELECT kind, scope, holder, expires_at FROM reservations \
             WHERE key = $1 AND ((kind = $2 AND scope = $3) OR (kind = $4 AND scope = $5)){lock}"
        );
        let rows: Vec<(String, String, String, Option<DateTime<Utc>>)> = on_tx!(self, c => sqlx::query_as(&sql)
            .bind(key)
            .bind(first.0)
            .bind(first.1)
            .bind(second.0)
            .bind(second.1)
            .fetch_all(&mut *c)
            .await?);
        let find = |(kind, scope): (&str, &str)| {
            rows.iter()
                .find(|(k, s, _, _)| k == kind && s == scope)
                .map(|(_, _, holder, expires_at)| Reservation { holder: holder.clone(), expires_at: *expires_at })
        };
        Ok((find(first), find(second)))
    }

    /// Claims (`kind`, `scope`, `key`) for `holder`. Returns false when
    /// someone already holds it (the caller refuses the command).
    pub async fn reserve(
        &mut self,
        kind: &str,
        scope: &str,
        key: &str,
        holder: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let affected = on_tx!(self, c => sqlx::query(
            "INSERT INTO reservations (kind, scope, key, holder, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, scope, key) DO NOTHING",
        )
        .bind(kind)
        .bind(scope)
        .bind(key)
        .bind(holder)
        .bind(expires_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// Changes the lapse time of a held reservation.
    pub async fn extend_reservation(
        &mut self,
        kind: &str,
        scope: &str,
        key: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "UPDATE reservations SET expires_at = $1 WHERE kind = $2 AND scope = $3 AND key = $4",
        )
        .bind(expires_at)
        .bind(kind)
        .bind(scope)
        .bind(key)
        .execute(&mut *c)
        .await.map(|_| ())?);
        Ok(())
    }

    /// Gives up every reservation of `kind` held by `holder`.
    pub async fn release(&mut self, kind: &str, holder: &str) -> Result<()> {
        on_tx!(self, c => sqlx::query("DELETE FROM reservations WHERE kind = $1 AND holder = $2")
            .bind(kind)
            .bind(holder)
            .execute(&mut *c)
            .await.map(|_| ())?);
        Ok(())
    }

    /// How many reservations of `kind` exist in `scope` (e.g. pending
    /// invitations of one account, for the seat limit).
    pub async fn count_reservations(&mut self, kind: &str, scope: &str) -> Result<i64> {
        let (n,): (i64,) = on_tx!(self, c => sqlx::query_as(
            "SELECT COUNT(*) FROM reservations WHERE kind = $1 AND scope = $2",
        )
        .bind(kind)
        .bind(scope)
        .fetch_one(&mut *c)
        .await?);
        Ok(n)
    }

    /// How many reservations of `kind` in `scope` have not lapsed at `now`
    /// (pending invitations still inside their deadline hold a seat).
    pub async fn count_live_reservations(&mut self, kind: &str, scope: &str, now: DateTime<Utc>) -> Result<i64> {
        let (n,): (i64,) = on_tx!(self, c => sqlx::query_as(
            "SELECT COUNT(*) FROM reservations WHERE kind = $1 AND scope = $2 AND (expires_at IS NULL OR expires_at > $3)",
        )
        .bind(kind)
        .bind(scope)
        .bind(now)
        .fetch_one(&mut *c)
        .await?);
        Ok(n)
    }

    /// [`Tx::count_live_reservations`] and [`Tx::sends_since`] in one
    /// statement: an invitation is checked against both (the seat limit and
    /// the inviter's daily quota), and each statement is a round trip.
    pub async fn live_reservations_and_sends(
        &mut self,
        kind: &str,
        scope: &str,
        now: DateTime<Utc>,
        account: uuid::Uuid,
        inviter: &str,
        since: DateTime<Utc>,
    ) -> Result<(i64, i64)> {
        let counts: (i64, i64) = on_tx!(self, c => sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM reservations WHERE kind = $1 AND scope = $2 AND (expires_at IS NULL OR expires_at > $3)), \
                    (SELECT COUNT(*) FROM invitation_sends WHERE account_id = $4 AND inviter = $5 AND sent_at > $6)",
        )
        .bind(kind)
        .bind(scope)
        .bind(now)
        .bind(account)
        .bind(inviter)
        .bind(since)
        .fetch_one(&mut *c)
        .await?);
        Ok(counts)
    }

    /// Records that `inviter` sent (or resent) an invitation at `sent_at`.
    pub async fn record_send(
        &mut self,
        account: uuid::Uuid,
        inviter: &str,
        invitation: uuid::Uuid,
        sent_at: DateTime<Utc>,
    ) -> Result<()> {
        on_tx!(self, c => sqlx::query(
            "INSERT INTO invitation_sends (account_id, inviter, invitation_id, sent_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(account)
        .bind(inviter)
        .bind(invitation)
        .bind(sent_at)
        .execute(&mut *c)
        .await.map(|_| ())?);
        Ok(())
    }

    /// How many invitations `inviter` sent in `account` since `since`.
    pub async fn sends_since(&mut self, account: uuid::Uuid, inviter: &str, since: DateTime<Utc>) -> Result<i64> {
        let (n,): (i64,) = on_tx!(self, c => sqlx::query_as(
            "SELECT COUNT(*) FROM invitation_sends WHERE account_id = $1 AND inviter = $2 AND sent_at > $3",
        )
        .bind(account)
        .bind(inviter)
        .bind(since)
        .fetch_one(&mut *c)
        .await?);
        Ok(n)
    }
}
