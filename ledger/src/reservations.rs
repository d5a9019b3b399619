//! Claims for set-based rules, written in the same transaction as events.
//!
//! A rule such as "one user per email" spans many streams, so no single
//! stream's version can guard it. Instead the command claims a row keyed by
//! the rule (`kind`, `scope`, `key`); the primary key makes a second claim
//! fail even when both commands run at the same moment.

use chrono::{DateTime, Utc};

use crate::personal::PersonKey;
use crate::{on_tx, Conn, Result, Tx};

/// A claimed reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Who holds it (a user id, an invitation id, ...).
    pub holder: String,
    /// When the claim lapses by itself (a pending invitation's deadline).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What [`Tx::invitee_claims`] looks up for one invitation.
#[derive(Debug, Clone, Copy)]
pub struct InviteeLookup<'a> {
    /// The invitee's key (their email's lookup hash).
    pub key: &'a str,
    /// (`kind`, `scope`) of the claim that makes them a user.
    pub user: (&'a str, &'a str),
    /// (`kind`, `scope`) of a pending invitation of theirs in the account;
    /// the seat count counts this kind in this scope.
    pub pending: (&'a str, &'a str),
    /// Claims lapsed at this time hold no seat.
    pub now: DateTime<Utc>,
    /// The account, for the inviter's daily quota.
    pub account: uuid::Uuid,
    /// Who invites.
    pub inviter: &'a str,
    /// The start of the quota's window.
    pub since: DateTime<Utc>,
}

/// What [`Tx::invitee_claims`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InviteeClaims {
    /// The claim under [`InviteeLookup::user`]: the invitee is this user.
    pub user: Option<Reservation>,
    /// The claim under [`InviteeLookup::pending`]: their pending invitation.
    pub pending: Option<Reservation>,
    /// Unlapsed claims of the pending kind in the account's scope.
    pub live_in_scope: i64,
    /// Invitations the inviter sent in the account within the window.
    pub sent_since: i64,
}

/// A claim found by [`Tx::invitee_claims`], with the two counts (every
/// row carries them; one row has no claim when none is held).
type ClaimRow = (Option<String>, Option<String>, Option<String>, Option<DateTime<Utc>>, i64, i64);

/// The invitee's claims under both lookups (`$1` to `$5`), as a CTE.
fn held(lock: &str) -> String {
    format!(
        "held AS (SELECT kind, scope, holder, expires_at FROM reservations \
                  WHERE key = $1 AND ((kind = $2 AND scope = $3) OR (kind = $4 AND scope = $5)){lock})"
    )
}

/// The columns of a [`ClaimRow`]: a held claim, the unlapsed claims in the
/// pending scope (`$4`, `$5`, `$6`), the inviter's sends (`$7` to `$9`).
const CLAIMS_AND_COUNTS: &str = "h.kind, h.scope, h.holder, h.expires_at, \
     (SELECT COUNT(*) FROM reservations WHERE kind = $4 AND scope = $5 AND (expires_at IS NULL OR expires_at > $6)), \
     (SELECT COUNT(*) FROM invitation_sends WHERE account_id = $7 AND inviter = $8 AND sent_at > $9)";

/// One row even when no claim is held, so the counts always come back.
const FROM_HELD: &str = "FROM (SELECT 1 AS one) AS one LEFT JOIN held AS h ON 1 = 1";

/// Binds an [`InviteeLookup`] as `$1` to `$9` of the statements above (a
/// macro: the query types differ per backend).
macro_rules! bind_lookup {
    ($query:expr, $lookup:expr) => {
        $query
            .bind($lookup.key)
            .bind($lookup.user.0)
            .bind($lookup.user.1)
            .bind($lookup.pending.0)
            .bind($lookup.pending.1)
            .bind($lookup.now)
            .bind($lookup.account)
            .bind($lookup.inviter)
            .bind($lookup.since)
    };
}

/// Folds the rows of [`Tx::invitee_claims`] into what they say.
fn fold_claims(lookup: &InviteeLookup<'_>, rows: impl IntoIterator<Item = ClaimRow>) -> InviteeClaims {
    let mut claims = InviteeClaims::default();
    for (kind, scope, holder, expires_at, live, sent) in rows {
        claims.live_in_scope = live;
        claims.sent_since = sent;
        let (Some(kind), Some(scope), Some(holder)) = (kind, scope, holder) else { continue };
        let claim = Some(Reservation { holder, expires_at });
        if (kind.as_str(), scope.as_str()) == lookup.user {
            claims.user = claim;
        } else if (kind.as_str(), scope.as_str()) == lookup.pending {
            claims.pending = claim;
        }
    }
    claims
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
            Conn::Sqlite(t) => {
                sqlx::query_as(
                    "SELECT holder, expires_at FROM reservations WHERE kind = $1 AND scope = $2 AND key = $3",
                )
                .bind(kind)
                .bind(scope)
                .bind(key)
                .fetch_optional(&mut **t)
                .await?
            }
        };
        Ok(row.map(|(holder, expires_at)| Reservation { holder, expires_at }))
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

    /// Everything an invitation is checked against, in one statement (each
    /// statement is a round trip, made while the command holds the
    /// account's lock): the invitee's claims under `lookup.user` and
    /// `lookup.pending` (on PostgreSQL both rows stay locked until commit),
    /// the claims of `lookup.pending`'s kind and scope that have not lapsed
    /// at `lookup.now` (the seat limit), and the invitations the inviter
    /// sent in the account since `lookup.since` (the daily quota).
    pub async fn invitee_claims(&mut self, lookup: &InviteeLookup<'_>) -> Result<InviteeClaims> {
        let lock = if matches!(self.conn, Conn::Postgres(_)) { " FOR UPDATE" } else { "" };
        let sql = format!("WITH {} SELECT {CLAIMS_AND_COUNTS} {FROM_HELD}", held(lock));
        let rows: Vec<ClaimRow> =
            on_tx!(self, c => bind_lookup!(sqlx::query_as(&sql), lookup).fetch_all(&mut *c).await?);
        Ok(fold_claims(lookup, rows))
    }

    /// [`invitee_claims`](Tx::invitee_claims), and the invitee's person
    /// as [`person_for_email`](Tx::person_for_email) finds or makes it
    /// (`lookup.key` is their email hash, `lookup.now` the time a new
    /// person is made at). On PostgreSQL in one statement (a data-modifying
    /// CTE): one round trip fewer per invitation while the command holds
    /// the account's lock (docs/performance.md, "The twelfth round").
    pub async fn invitee_claims_and_person(
        &mut self,
        lookup: &InviteeLookup<'_>,
    ) -> Result<(InviteeClaims, (uuid::Uuid, PersonKey))> {
        let Conn::Postgres(t) = &mut self.conn else {
            let claims = self.invitee_claims(lookup).await?;
            return Ok((claims, self.person_for_email(lookup.key, lookup.now).await?));
        };
        let (id, key) = (uuid::Uuid::now_v7(), PersonKey::generate());
        let sql = format!(
            "WITH {}, made AS (INSERT INTO person_keys (person_id, email_hash, key, created_at) VALUES ($10, $1, $11, $6) \
                               ON CONFLICT (email_hash) DO NOTHING RETURNING person_id, key) \
             SELECT {CLAIMS_AND_COUNTS}, \
                    COALESCE((SELECT person_id FROM made), (SELECT person_id FROM person_keys WHERE email_hash = $1)), \
                    COALESCE((SELECT key FROM made), (SELECT key FROM person_keys WHERE email_hash = $1)) \
             {FROM_HELD}",
            held(" FOR UPDATE")
        );
        type Row = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            i64,
            i64,
            Option<uuid::Uuid>,
            Option<Vec<u8>>,
        );
        let rows: Vec<Row> = bind_lookup!(sqlx::query_as(&sql), lookup)
            .bind(id)
            .bind(key.as_bytes().to_vec())
            .fetch_all(&mut **t)
            .await?;
        let person = rows.first().and_then(|r| Some((r.6?, PersonKey::from_slice(r.7.as_deref()?)?)));
        let claims = fold_claims(lookup, rows.into_iter().map(|r| (r.0, r.1, r.2, r.3, r.4, r.5)));
        let person = match person {
            Some(person) => person,
            // Someone else made this person after the statement began (its
            // snapshot does not show them; a new statement does).
            None => self
                .person_by_email(lookup.key)
                .await?
                .ok_or_else(|| crate::LedgerError::Corrupt("person key vanished while created".into()))?,
        };
        Ok((claims, person))
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

    /// A new invitation's two ledger rows: claims its pending-invitation
    /// reservation (`kind`, `scope`, `key`) for `holder` as
    /// [`reserve`](Tx::reserve) does, and records the send as
    /// [`record_send`](Tx::record_send) does. On PostgreSQL in one
    /// statement (a data-modifying CTE), one round trip fewer per
    /// invitation while the command holds the account's lock
    /// (docs/performance.md, "The eleventh round"). Returns false when
    /// someone already holds the claim; the send is then recorded all the
    /// same, and the caller refuses the command, which rolls both back.
    pub async fn reserve_and_record_send(&mut self, claim: &Claim<'_>, send: &InvitationSend<'_>) -> Result<bool> {
        let Conn::Postgres(t) = &mut self.conn else {
            let claimed = self.reserve(claim.kind, claim.scope, claim.key, claim.holder, claim.expires_at).await?;
            self.record_send(send.account, send.inviter, send.invitation, send.sent_at).await?;
            return Ok(claimed);
        };
        let claimed: Option<i32> = sqlx::query_scalar(
            "WITH sent AS (INSERT INTO invitation_sends (account_id, inviter, invitation_id, sent_at) VALUES ($6, $7, $8, $9)) \
             INSERT INTO reservations (kind, scope, key, holder, expires_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (kind, scope, key) DO NOTHING RETURNING 1",
        )
        .bind(claim.kind)
        .bind(claim.scope)
        .bind(claim.key)
        .bind(claim.holder)
        .bind(claim.expires_at)
        .bind(send.account)
        .bind(send.inviter)
        .bind(send.invitation)
        .bind(send.sent_at)
        .fetch_optional(&mut **t)
        .await?;
        Ok(claimed.is_some())
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

/// A reservation to claim (the arguments of [`Tx::reserve`], together).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// What is reserved (e.g. a pending invitation).
    pub kind: &'a str,
    /// Where it is unique (e.g. the account).
    pub scope: &'a str,
    /// The reserved value (e.g. the email hash).
    pub key: &'a str,
    /// Who holds it.
    pub holder: &'a str,
    /// When it lapses by itself (None: never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// An invitation sent, counted against the inviter's daily quota (the
/// arguments of [`Tx::record_send`], together).
#[derive(Debug, Clone, Copy)]
pub struct InvitationSend<'a> {
    /// The account it was sent in.
    pub account: uuid::Uuid,
    /// Who sent it.
    pub inviter: &'a str,
    /// The invitation.
    pub invitation: uuid::Uuid,
    /// When.
    pub sent_at: DateTime<Utc>,
}
