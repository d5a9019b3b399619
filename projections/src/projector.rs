//! Applies decoded events to the read-model tables inside a transaction.

use admit_domain::access::Access;
use admit_domain::account::{AccountEvent, MemberStatus};
use admit_domain::invitation::{DeliveryState, InvitationEvent, InvitationStatus};
use admit_domain::user::UserEvent;
use admit_domain::Event;
use admit_ledger::personal::LookupKey;
use admit_ledger::{on_tx, Tx};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Envelope, Result};

/// Projects events into the read models under one table prefix.
#[derive(Debug, Clone)]
pub struct Projector {
    prefix: String,
    lookup: LookupKey,
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn roles_text(access: &Access) -> String {
    access.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" ")
}

fn status_text(s: MemberStatus) -> &'static str {
    match s {
        MemberStatus::Active => "active",
        MemberStatus::Deactivated => "inactive",
    }
}

/// The `invitations` row a sent invitation starts as, in the cells the
/// table stores: the projector inserts it, and the API answers
/// `POST .../invitations` from it instead of reading the row back after the
/// commit (one round trip fewer per invitation; docs/performance.md, "The
/// twelfth round"). What the row holds beyond these cells starts empty:
/// status `pending`, no delivery, no clicks, no resends.
#[derive(Debug, Clone, PartialEq)]
pub struct NewInvitation {
    /// The invitation.
    pub invitation_id: Uuid,
    /// Its account.
    pub account_id: Uuid,
    /// The person invited.
    pub person_id: Uuid,
    /// Their email (sealed events decoded without a key carry none).
    pub email: Option<String>,
    /// Their name.
    pub name: Option<String>,
    /// The grant, as JSON text.
    pub access: String,
    /// The grant's role names, space separated (for filtering).
    pub roles: String,
    /// Who invited (`user:<id>`, `api_key:<id>`, `operator`).
    pub invited_by: String,
    /// How it was sent (`session`, `api_key`, ...).
    pub channel: String,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When its link dies.
    pub expires_at: DateTime<Utc>,
    /// The inviter's own data, as JSON text.
    pub metadata: Option<String>,
    /// Where accepting sends the invitee.
    pub redirect_url: Option<String>,
}

impl NewInvitation {
    /// The row of invitation `id` that `event` starts, recorded at `at`;
    /// None for any event but `InvitationSent`.
    pub fn of(id: Uuid, event: &InvitationEvent, at: DateTime<Utc>) -> Option<NewInvitation> {
        let InvitationEvent::InvitationSent {
            account_id,
            person_id,
            personal,
            access,
            invited_by,
            channel,
            expires_at,
            metadata,
            redirect_url,
            ..
        } = event
        else {
            return None;
        };
        Some(NewInvitation {
            invitation_id: id,
            account_id: account_id.0,
            person_id: person_id.0,
            email: personal.email().map(|e| e.to_string()),
            name: personal.name().map(|n| n.to_string()),
            access: json(access),
            roles: roles_text(access),
            invited_by: invited_by.to_string(),
            channel: json(channel).trim_matches('"').to_string(),
            created_at: at,
            expires_at: *expires_at,
            metadata: metadata.as_ref().map(|m| m.to_string()),
            redirect_url: redirect_url.clone(),
        })
    }
}

impl Projector {
    /// The projector of the live tables.
    pub fn live(lookup: LookupKey) -> Projector {
        Projector { prefix: String::new(), lookup }
    }

    /// A projector writing to tables named `{prefix}{table}`.
    pub fn with_prefix(prefix: &str, lookup: LookupKey) -> Projector {
        Projector { prefix: prefix.to_string(), lookup }
    }

    pub(crate) fn sql(&self, template: &str) -> String {
        template.replace("{p}", &self.prefix)
    }

    /// Applies one event. Rows carry their stream version, so an event
    /// already reflected is skipped.
    pub async fn apply(&self, tx: &mut Tx, env: &Envelope) -> Result<()> {
        let at = env.recorded_at;
        let v = env.stream_version;
        match &env.event {
            Event::Account(id, e) => self.account(tx, id.0, e, at, v).await,
            Event::Invitation(id, e) => self.invitation(tx, id.0, e, at, v).await,
            Event::User(id, e) => self.user(tx, id.0, e, at, v).await,
        }
    }

    async fn exec(&self, tx: &mut Tx, template: &str, binds: Vec<Bind>) -> Result<u64> {
        let sql = self.sql(template);
        let n = on_tx!(tx, c => {
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = match b {
                    Bind::Uuid(x) => q.bind(x),
                    Bind::OptUuid(x) => q.bind(x),
                    Bind::Text(x) => q.bind(x),
                    Bind::OptText(x) => q.bind(x),
                    Bind::Int(x) => q.bind(x),
                    Bind::Time(x) => q.bind(x),
                    Bind::OptTime(x) => q.bind(x),
                };
            }
            q.execute(&mut *c).await?.rows_affected()
        });
        Ok(n)
    }

    async fn account(&self, tx: &mut Tx, id: Uuid, e: &AccountEvent, at: DateTime<Utc>, v: i64) -> Result<()> {
        use AccountEvent::*;
        match e {
            AccountOpened { name, customer_number, settings, .. } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}accounts (account_id, name, customer_number, status, settings, opened_at, updated_at, version) \
                     VALUES ($1, $2, $3, 'active', $4, $5, $5, $6) ON CONFLICT (account_id) DO NOTHING",
                    binds(vec![
                        Bind::Uuid(id),
                        Bind::Text(name.to_string()),
                        Bind::Text(customer_number.to_string()),
                        Bind::Text(json(settings)),
                        Bind::Time(at),
                        Bind::Int(v),
                    ]),
                )
                .await?;
                self.index_stream(tx, id, &format!("account-{id}"), at).await?;
                return Ok(());
            }
            AccountSettingsChanged { settings } => {
                self.exec(
                    tx,
                    "UPDATE {p}accounts SET settings = $1, updated_at = $2 WHERE account_id = $3",
                    binds(vec![Bind::Text(json(settings)), Bind::Time(at), Bind::Uuid(id)]),
                )
                .await?;
            }
            AccountDeactivated {} | AccountReactivated {} => {
                let status = if matches!(e, AccountDeactivated {}) { "inactive" } else { "active" };
                self.exec(
                    tx,
                    "UPDATE {p}accounts SET status = $1 WHERE account_id = $2",
                    binds(vec![Bind::Text(status.into()), Bind::Uuid(id)]),
                )
                .await?;
            }
            ApiKeyCreated { key_id, name, permissions, secret_hash, created_by } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}api_keys (key_id, account_id, name, permissions, secret_hash, created_by, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (key_id) DO NOTHING",
                    binds(vec![
                        Bind::Uuid(key_id.0),
                        Bind::Uuid(id),
                        Bind::Text(name.clone()),
                        Bind::Text(json(permissions)),
                        Bind::Text(secret_hash.clone()),
                        Bind::Text(created_by.to_string()),
                        Bind::Time(at),
                    ]),
                )
                .await?;
            }
            ApiKeyRevoked { key_id } => {
                self.exec(
                    tx,
                    "UPDATE {p}api_keys SET revoked_at = $1 WHERE key_id = $2",
                    binds(vec![Bind::Time(at), Bind::Uuid(key_id.0)]),
                )
                .await?;
            }
            RoleDefined { role, permissions } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}roles (account_id, role, permissions, defined_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (account_id, role) DO NOTHING",
                    binds(vec![Bind::Uuid(id), Bind::Text(role.to_string()), Bind::Text(json(permissions)), Bind::Time(at)]),
                )
                .await?;
            }
            RoleChanged { role, permissions } => {
                self.exec(
                    tx,
                    "UPDATE {p}roles SET permissions = $1, updated_at = $2 WHERE account_id = $3 AND role = $4",
                    binds(vec![
                        Bind::Text(json(permissions)),
                        Bind::Time(at),
                        Bind::Uuid(id),
                        Bind::Text(role.to_string()),
                    ]),
                )
                .await?;
            }
            RoleDeleted { role } => {
                self.exec(
                    tx,
                    "DELETE FROM {p}roles WHERE account_id = $1 AND role = $2",
                    binds(vec![Bind::Uuid(id), Bind::Text(role.to_string())]),
                )
                .await?;
                self.drop_role_from_members(tx, id, role.as_str(), at).await?;
            }
            MemberJoined { user_id, invitation_id, access } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}members (account_id, user_id, access, roles, restricted, status, invitation_id, joined_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $7) ON CONFLICT (account_id, user_id) DO NOTHING",
                    binds(vec![
                        Bind::Uuid(id),
                        Bind::Uuid(user_id.0),
                        Bind::Text(json(access)),
                        Bind::Text(roles_text(access)),
                        Bind::Int(access.is_restricted() as i64),
                        Bind::Uuid(invitation_id.0),
                        Bind::Time(at),
                    ]),
                )
                .await?;
            }
            MemberAccessChanged { user_id, access } => {
                self.set_member_access(tx, id, user_id.0, access, at).await?;
            }
            MemberDeactivated { user_id } | MemberReactivated { user_id } => {
                let status = if matches!(e, MemberDeactivated { .. }) {
                    MemberStatus::Deactivated
                } else {
                    MemberStatus::Active
                };
                self.exec(
                    tx,
                    "UPDATE {p}members SET status = $1, updated_at = $2 WHERE account_id = $3 AND user_id = $4",
                    binds(vec![
                        Bind::Text(status_text(status).into()),
                        Bind::Time(at),
                        Bind::Uuid(id),
                        Bind::Uuid(user_id.0),
                    ]),
                )
                .await?;
            }
            MemberRemoved { user_id } | MembershipCancelled { user_id } => {
                self.exec(
                    tx,
                    "DELETE FROM {p}members WHERE account_id = $1 AND user_id = $2",
                    binds(vec![Bind::Uuid(id), Bind::Uuid(user_id.0)]),
                )
                .await?;
            }
            // A request for the inviter's attention: no read model changes.
            InvitationRenewalRequested { .. } => {}
        }
        self.exec(
            tx,
            "UPDATE {p}accounts SET version = $1, updated_at = $2 WHERE account_id = $3",
            binds(vec![Bind::Int(v), Bind::Time(at), Bind::Uuid(id)]),
        )
        .await?;
        Ok(())
    }

    async fn set_member_access(
        &self,
        tx: &mut Tx,
        account: Uuid,
        user: Uuid,
        access: &Access,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.exec(
            tx,
            "UPDATE {p}members SET access = $1, roles = $2, restricted = $3, updated_at = $4 WHERE account_id = $5 AND user_id = $6",
            binds(vec![
                Bind::Text(json(access)),
                Bind::Text(roles_text(access)),
                Bind::Int(access.is_restricted() as i64),
                Bind::Time(at),
                Bind::Uuid(account),
                Bind::Uuid(user),
            ]),
        )
        .await?;
        Ok(())
    }

    async fn drop_role_from_members(&self, tx: &mut Tx, account: Uuid, role: &str, at: DateTime<Utc>) -> Result<()> {
        let sql = self.sql("SELECT user_id, access FROM {p}members WHERE account_id = $1");
        let rows: Vec<(Uuid, String)> = on_tx!(tx, c => sqlx::query_as(&sql).bind(account).fetch_all(&mut *c).await?);
        for (user, access) in rows {
            let Ok(mut access) = serde_json::from_str::<Access>(&access) else {
                continue;
            };
            if access.roles.iter().any(|r| r.as_str() == role) {
                access.roles.retain(|r| r.as_str() != role);
                self.set_member_access(tx, account, user, &access, at).await?;
            }
        }
        Ok(())
    }

    async fn invitation(&self, tx: &mut Tx, id: Uuid, e: &InvitationEvent, at: DateTime<Utc>, v: i64) -> Result<()> {
        use InvitationEvent::*;
        if let Some(row) = NewInvitation::of(id, e, at) {
            let email_hash = row.email.as_deref().map(|e| self.lookup.email_hash(e));
            let stream = format!("invitation-{id}");
            // PostgreSQL indexes the stream in the same statement (a
            // data-modifying CTE): one round trip fewer for every new
            // invitation (docs/performance.md, "The eleventh round").
            // SQLite has no such CTE, and no round trip to save.
            let postgres = tx.backend() == admit_ledger::Backend::Postgres;
            let indexing = match postgres {
                true => {
                    "WITH indexed AS (INSERT INTO {p}account_streams (account_id, stream_id, opened_at) \
                         VALUES ($2, $16, $11) ON CONFLICT (stream_id) DO NOTHING) "
                }
                false => "",
            };
            let mut values = binds(vec![
                Bind::Uuid(row.invitation_id),
                Bind::Uuid(row.account_id),
                Bind::Uuid(row.person_id),
                Bind::OptText(row.email),
                Bind::OptText(email_hash),
                Bind::OptText(row.name),
                Bind::Text(row.access),
                Bind::Text(row.roles),
                Bind::Text(row.invited_by),
                Bind::Text(row.channel),
                Bind::Time(row.created_at),
                Bind::Time(row.expires_at),
                Bind::Int(v),
                Bind::OptText(row.metadata),
                Bind::OptText(row.redirect_url),
            ]);
            if postgres {
                values.push(Bind::Text(stream.clone()));
            }
            self.exec(
                tx,
                &format!("{indexing}INSERT INTO {{p}}invitations (invitation_id, account_id, person_id, email, email_hash, name, status, access, roles, \
                 invited_by, channel, created_at, expires_at, resend_count, updated_at, version, metadata, redirect_url, opens, clicks) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9, $10, $11, $12, 0, $11, $13, $14, $15, 0, 0) \
                 ON CONFLICT (invitation_id) DO NOTHING"),
                values,
            )
            .await?;
            if !postgres {
                self.index_stream(tx, row.account_id, &stream, at).await?;
            }
            return Ok(());
        }
        // Skip an event the row already reflects (replays, retries).
        let guard = " AND version < $V";
        let (template, mut binds): (String, Vec<Bind>) = match e {
            InvitationSent { .. } => unreachable!("handled above"),
            InvitationUpdated { access, expires_at, .. } => (
                "UPDATE {p}invitations SET access = $1, roles = $2, expires_at = $3".into(),
                vec![Bind::Text(json(access)), Bind::Text(roles_text(access)), Bind::Time(*expires_at)],
            ),
            InvitationResent { expires_at, .. } => (
                "UPDATE {p}invitations SET expires_at = $1, resend_count = resend_count + 1".into(),
                vec![Bind::Time(*expires_at)],
            ),
            InvitationDeliveryRecorded { state, detail } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}invitation_deliveries (invitation_id, seq, state, detail, recorded_at) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (invitation_id, seq) DO NOTHING",
                    binds(vec![
                        Bind::Uuid(id),
                        Bind::Int(v),
                        Bind::Text(state.as_str().to_string()),
                        Bind::OptText(detail.clone()),
                        Bind::Time(at),
                    ]),
                )
                .await?;
                let state_name = Bind::Text(state.as_str().to_string());
                // Opens and clicks: the first moves the delivery state, every
                // one is counted.
                let counter = match state {
                    DeliveryState::Opened => Some("opens"),
                    DeliveryState::Clicked => Some("clicks"),
                    _ => None,
                };
                match counter {
                    Some(c) => (
                        format!(
                            "UPDATE {{p}}invitations SET {c} = {c} + 1, \
                             delivery_state = CASE WHEN {c} = 0 THEN $1 ELSE delivery_state END, \
                             delivery_updated_at = CASE WHEN {c} = 0 THEN $2 ELSE delivery_updated_at END"
                        ),
                        vec![state_name, Bind::Time(at)],
                    ),
                    // `processed` and `delivered` never move the state back
                    // from what the invitee already did (the mailer may note
                    // the server's answer after the invitee clicked).
                    None if matches!(state, DeliveryState::Processed | DeliveryState::Delivered) => (
                        "UPDATE {p}invitations SET \
                         delivery_state = CASE WHEN delivery_state IN ('opened', 'clicked') THEN delivery_state ELSE $1 END, \
                         delivery_updated_at = CASE WHEN delivery_state IN ('opened', 'clicked') THEN delivery_updated_at ELSE $2 END"
                            .into(),
                        vec![state_name, Bind::Time(at)],
                    ),
                    None => ("UPDATE {p}invitations SET delivery_state = $1, delivery_updated_at = $2".into(), vec![state_name, Bind::Time(at)]),
                }
            }
            InvitationReminded { .. } => ("UPDATE {p}invitations SET reminded_at = $1".into(), vec![Bind::Time(at)]),
            InvitationAccepted { user_id, access } => (
                "UPDATE {p}invitations SET status = 'accepted', accepted_at = $1, accepted_by = $2, closed_at = $1, access = $3, roles = $4".into(),
                vec![Bind::Time(at), Bind::Uuid(user_id.0), Bind::Text(json(access)), Bind::Text(roles_text(access))],
            ),
            InvitationDeclined {} => close(InvitationStatus::Declined, at),
            InvitationExpired {} => close(InvitationStatus::Expired, at),
            InvitationRevoked { reason, .. } => {
                let (t, mut b) = close(InvitationStatus::Revoked, at);
                b.push(Bind::Text(json(reason).trim_matches('"').to_string()));
                (t + ", revoke_reason = $3", b)
            }
        };
        let n = binds.len();
        binds.push(Bind::Time(at));
        binds.push(Bind::Int(v));
        binds.push(Bind::Uuid(id));
        let sql = format!(
            "{template}, updated_at = ${}, version = ${} WHERE invitation_id = ${}{}",
            n + 1,
            n + 2,
            n + 3,
            guard.replace("$V", &format!("${}", n + 2))
        );
        self.exec(tx, &sql, binds).await?;
        Ok(())
    }

    async fn user(&self, tx: &mut Tx, id: Uuid, e: &UserEvent, at: DateTime<Utc>, v: i64) -> Result<()> {
        match e {
            UserEvent::UserRegistered { person_id, personal, password_hash, .. } => {
                self.exec(
                    tx,
                    "INSERT INTO {p}users (user_id, person_id, email, email_hash, name, password_hash, status, registered_at, version) \
                     VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8) ON CONFLICT (user_id) DO NOTHING",
                    binds(vec![
                        Bind::Uuid(id),
                        Bind::Uuid(person_id.0),
                        Bind::OptText(personal.email().map(|e| e.to_string())),
                        Bind::OptText(personal.email().map(|e| self.lookup.email_hash(e.as_str()))),
                        Bind::OptText(personal.name().map(|n| n.to_string())),
                        Bind::Text(password_hash.as_str().to_string()),
                        Bind::Time(at),
                        Bind::Int(v),
                    ]),
                )
                .await?;
            }
            UserEvent::UserLoggedIn {} => {
                self.exec(
                    tx,
                    "UPDATE {p}users SET last_login_at = $1, version = $2 WHERE user_id = $3 AND version < $2",
                    binds(vec![Bind::Time(at), Bind::Int(v), Bind::Uuid(id)]),
                )
                .await?;
            }
            UserEvent::UserPasswordChanged { password_hash } => {
                self.exec(
                    tx,
                    "UPDATE {p}users SET password_hash = $1, version = $2 WHERE user_id = $3 AND version < $2",
                    binds(vec![Bind::Text(password_hash.as_str().to_string()), Bind::Int(v), Bind::Uuid(id)]),
                )
                .await?;
            }
            UserEvent::UserDeactivated {} => {
                self.exec(
                    tx,
                    "UPDATE {p}users SET status = 'inactive', version = $1 WHERE user_id = $2 AND version < $1",
                    binds(vec![Bind::Int(v), Bind::Uuid(id)]),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Records that `stream` belongs to `account` (auditors read an
    /// account's events through this index).
    async fn index_stream(&self, tx: &mut Tx, account: Uuid, stream: &str, at: DateTime<Utc>) -> Result<()> {
        self.exec(
            tx,
            "INSERT INTO {p}account_streams (account_id, stream_id, opened_at) VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING",
            binds(vec![Bind::Uuid(account), Bind::Text(stream.to_string()), Bind::Time(at)]),
        )
        .await?;
        Ok(())
    }

    /// Scrubs a person's clear data from every read model (erasure).
    pub async fn scrub_person(&self, tx: &mut Tx, person: Uuid) -> Result<()> {
        for table in ["users", "invitations"] {
            self.exec(
                tx,
                &format!("UPDATE {{p}}{table} SET email = NULL, email_hash = NULL, name = NULL WHERE person_id = $1"),
                binds(vec![Bind::Uuid(person)]),
            )
            .await?;
        }
        Ok(())
    }
}

fn close(status: InvitationStatus, at: DateTime<Utc>) -> (String, Vec<Bind>) {
    (
        "UPDATE {p}invitations SET status = $1, closed_at = $2".into(),
        vec![Bind::Text(status.as_str().into()), Bind::Time(at)],
    )
}

enum Bind {
    Uuid(Uuid),
    #[allow(dead_code)]
    OptUuid(Option<Uuid>),
    Text(String),
    OptText(Option<String>),
    Int(i64),
    Time(DateTime<Utc>),
    #[allow(dead_code)]
    OptTime(Option<DateTime<Utc>>),
}

/// Parameters of one statement, in `$1, $2, ...` order.
fn binds(v: Vec<Bind>) -> Vec<Bind> {
    v
}
