//! Command handlers: one transaction per command, retried on conflict.
//!
//! Each handler loads what it needs inside the transaction, asks the pure
//! domain to decide, and hands the resulting events to a [`Unit`], which
//! appends them (sealing personal data), updates the read models, and
//! commits together with any reservations the handler claimed.

mod account_states;
mod accounts;
mod bulk;
mod delivery;
mod erasure;
mod invitations;
mod members;
mod renewal;
mod roles;
mod users;

use std::collections::HashMap;
use std::sync::Arc;

use admit_domain::account::Account;
use admit_domain::ids::{AccountId, Actor, InvitationId, UserId};
use admit_domain::invitation::{Channel, Invitation, InvitationEvent};
use admit_domain::password::PasswordPolicy;
use admit_domain::user::{User, UserEvent};
use admit_domain::Event;
use admit_ledger::personal::PersonKey;
use admit_ledger::{Database, ExpectedVersion, Metadata, NewEvent, StreamAppend, Tx};
use admit_projections::{Codec, Envelope, Projector};
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use accounts::{OpenAccount, OpenedAccount};
pub use bulk::{BulkOptions, BulkOutcome};
pub use delivery::{DeliveryFact, DeliveryWrites};
pub use invitations::{InviteRequest, IssuedInvitation};
pub use renewal::{RENEWAL_INTERVAL_HOURS, RENEWAL_REQUEST};
pub use roles::{secret_hash, API_KEY_PREFIX};

use crate::{Error, Secrets};

/// Reservation kind: one user per normalised email (scope empty).
pub const USER_EMAIL: &str = "user_email";
/// Reservation kind: one live pending invitation per account and email.
pub const PENDING_INVITATION: &str = "pending_invitation";

/// How often a command is retried after losing a race before giving up.
const ATTEMPTS: usize = 8;

/// Who is calling and in answer to what; stored as event metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Who acts.
    pub actor: Actor,
    /// Through which channel invitations are made.
    pub channel: Channel,
    /// Groups the events of one request.
    pub correlation_id: Uuid,
    /// The HTTP request id, if any.
    pub request_id: Option<String>,
}

impl RequestContext {
    /// A context for `actor` with a fresh correlation id.
    pub fn new(actor: Actor, channel: Channel) -> RequestContext {
        RequestContext { actor, channel, correlation_id: Uuid::now_v7(), request_id: None }
    }

    /// The operator at the command line.
    pub fn cli() -> RequestContext {
        RequestContext::new(Actor::Operator, Channel::Cli)
    }

    /// Admit itself (workers, cascades).
    pub fn system() -> RequestContext {
        RequestContext::new(Actor::System, Channel::Cli)
    }

    fn metadata(&self) -> Metadata {
        Metadata {
            actor: Some(self.actor.to_string()),
            correlation_id: Some(self.correlation_id),
            causation_id: None,
            request_id: self.request_id.clone(),
        }
    }

    /// The caller as the domain sees them in `account` (an API key holds
    /// its key role's permissions there), read from the state the command
    /// runs on: inside a transaction, the locked and current account.
    pub fn caller(&self, account: &Account) -> admit_domain::account::Caller {
        admit_domain::account::Caller::of(account, self.actor)
    }
}

/// The time commands run at. Tests move it forward to reach deadlines
/// without waiting; production reads the system clock.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_micros: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl Clock {
    /// Now, plus whatever the clock was advanced by, in whole microseconds:
    /// what both backends store, so every time a command decides (a link's
    /// deadline, say) reads back from either database as it was decided.
    pub fn now(&self) -> DateTime<Utc> {
        let now =
            Utc::now() + chrono::Duration::microseconds(self.offset_micros.load(std::sync::atomic::Ordering::Relaxed));
        admit_ledger::log::storable_time(now)
    }

    /// Moves this clock (and every `Admit` sharing it) forward.
    pub fn advance(&self, by: chrono::Duration) {
        self.offset_micros.fetch_add(by.num_microseconds().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }
}

/// The application: database, secrets, read-model projector, policies.
#[derive(Debug, Clone)]
pub struct Admit {
    /// The ledger's database.
    pub db: Database,
    /// Link and lookup keys.
    pub secrets: Secrets,
    /// Projects into the live read models.
    pub projector: Projector,
    /// Password rules for registration.
    pub password_policy: PasswordPolicy,
    /// The time commands run at.
    pub clock: Clock,
    /// Accounts as last folded, caught up from the log on every use.
    pub(crate) accounts: account_states::AccountStates,
}

/// Runs `$body` (an async expression using `$tx`) in a transaction,
/// committing on success and retrying the whole body when it lost a race.
macro_rules! in_transaction {
    ($admit:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut $tx = $admit.db.begin().await?;
            let outcome = $body;
            match outcome {
                Ok(value) => match {
                    let appended = $tx.appended();
                    $tx.commit().await.map(|()| appended)
                } {
                    Ok(appended) => {
                        crate::http::telemetry::record_events_appended(appended);
                        break Ok(value);
                    }
                    Err(e) => {
                        let e = crate::Error::from(e);
                        if !e.is_retryable() || attempt >= ATTEMPTS {
                            break Err(e);
                        }
                    }
                },
                Err(e) => {
                    let _ = $tx.rollback().await;
                    let e: crate::Error = e;
                    if !e.is_retryable() {
                        break Err(e);
                    }
                    if attempt >= ATTEMPTS {
                        break Err(crate::Error::Contention);
                    }
                }
            }
        }
    }};
}
pub(crate) use in_transaction;

/// Events decided by one command, per stream, ready to append together.
#[derive(Default)]
pub(crate) struct Unit {
    /// Per stream: the version its events follow, and the events.
    appends: Vec<(String, i64, Vec<Event>)>,
    keys: HashMap<Uuid, PersonKey>,
}

impl Unit {
    /// Queues `events` for `stream` at `expected`.
    pub(crate) fn push(&mut self, expected: i64, events: Vec<Event>) {
        if let Some(first) = events.first() {
            self.appends.push((first.stream(), expected, events));
        }
    }

    /// Makes a person's key available for sealing their data.
    pub(crate) fn key(&mut self, person: Uuid, key: PersonKey) {
        self.keys.insert(person, key);
    }
}

/// The envelopes of `events`, just appended to one stream as `stored`
/// after its version `before`, to project them in the same transaction.
pub(crate) fn appended<'a>(
    events: Vec<Event>,
    stored: &'a [NewEvent],
    before: i64,
    recorded_at: DateTime<Utc>,
    metadata: &'a Metadata,
) -> impl Iterator<Item = Envelope> + 'a {
    events.into_iter().zip(stored).enumerate().map(move |(i, (event, row))| Envelope {
        event_id: row.event_id,
        stream_version: before + 1 + i as i64,
        recorded_at,
        actor: metadata.actor.clone(),
        event,
    })
}

impl Admit {
    /// The application over `db`.
    pub fn new(db: Database, secrets: Secrets, password_policy: PasswordPolicy) -> Admit {
        let projector = Projector::live(secrets.lookup.clone());
        Admit { db, secrets, projector, password_policy, clock: Clock::default(), accounts: Default::default() }
    }

    /// The current time of this application's clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Migrates the log and creates the read-model tables.
    pub async fn prepare(&self) -> Result<(), Error> {
        let _only_us = self.db.lock_preparation().await?;
        self.db.migrate().await?;
        admit_projections::rebuild::ensure_live_tables(&self.db, &self.secrets.lookup).await?;
        Ok(())
    }

    /// Appends every queued stream (all at once: see [`Tx::append_streams`])
    /// and then projects each event in the order queued, in `tx`.
    pub(crate) async fn write(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        unit: Unit,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let recorded_at = admit_ledger::log::storable_time(now);
        let metadata = ctx.metadata();
        let mut queued = Vec::with_capacity(unit.appends.len());
        for (stream, base, events) in unit.appends {
            let mut stored = Vec::with_capacity(events.len());
            for event in &events {
                let key = event.person().and_then(|p| unit.keys.get(&p.0));
                if event.person().is_some() && key.is_none() {
                    return Err(Error::Internal(format!("no key to seal {}", event.event_type())));
                }
                stored.push(Codec::encode(event, Uuid::now_v7(), key));
            }
            queued.push((stream, base, events, stored));
        }
        let appends: Vec<StreamAppend<'_>> = queued
            .iter()
            .map(|(stream, base, _, stored)| StreamAppend {
                stream,
                expected: ExpectedVersion::Exact(*base),
                events: stored,
            })
            .collect();
        tx.append_streams(&appends, &metadata, recorded_at).await?;
        for (_, base, events, stored) in queued {
            for env in appended(events, &stored, base, recorded_at, &metadata) {
                self.projector.apply(tx, &env).await?;
            }
        }
        Ok(())
    }

    async fn load(&self, tx: &mut Tx, stream: &str, lock: bool) -> Result<(Vec<Envelope>, i64), Error> {
        let version = tx.stream_version(stream, lock).await?.unwrap_or(0);
        if version == 0 {
            return Ok((vec![], 0));
        }
        let events = tx.read_stream(stream).await?;
        Ok((Codec::decode_all_in(tx, &events).await?, version))
    }

    /// The account as it stands now, read without locking (for queries and
    /// authorization; commands re-check inside their transaction).
    pub async fn account_snapshot(&self, id: AccountId) -> Result<Account, Error> {
        Ok(Account::clone(&*self.accounts.current(&self.db, id).await?))
    }

    /// The account as this process last folded it, without asking the log
    /// (None when it keeps none): it may be behind another process's
    /// appends, so only a check that the command repeats inside its
    /// transaction may rely on it (see `ApiContext::authorize_kept`).
    pub fn kept_account(&self, id: AccountId) -> Option<Arc<Account>> {
        self.accounts.kept(id)
    }

    /// The invitation as it stands now, read without locking.
    pub async fn invitation_snapshot(&self, id: InvitationId) -> Result<Invitation, Error> {
        let mut tx = self.db.begin_snapshot().await?;
        Ok(self.fold_invitation(&mut tx, id, false).await?.0)
    }

    /// Several invitations as they stand now, read together (one read of
    /// their events and one of their keys) and without locking: the mailer
    /// prepares a batch's emails from these. An invitation without events
    /// is missing from the map.
    pub async fn invitation_snapshots(&self, ids: &[InvitationId]) -> Result<HashMap<InvitationId, Invitation>, Error> {
        let streams: Vec<String> =
            ids.iter().map(|id| id.stream()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let events = self.db.read_streams(&streams).await?;
        let envelopes = Codec::decode_all(&self.db, &events).await?;
        let mut by_invitation: HashMap<InvitationId, Vec<&InvitationEvent>> = HashMap::new();
        for env in &envelopes {
            if let Event::Invitation(id, e) = &env.event {
                by_invitation.entry(*id).or_default().push(e);
            }
        }
        Ok(by_invitation
            .into_iter()
            .filter_map(|(id, events)| Invitation::from_events(events).map(|inv| (id, inv)))
            .collect())
    }

    /// Events of an account's streams (the account and its invitations)
    /// after `after_position`, by position, optionally of one stream or type.
    pub async fn account_events(
        &self,
        account: AccountId,
        after_position: i64,
        limit: i64,
        stream: Option<&str>,
        event_type: Option<&str>,
    ) -> Result<Vec<admit_ledger::RecordedEvent>, Error> {
        let columns = admit_ledger::log::event_columns(self.db.backend());
        let rows: Vec<admit_ledger::log::EventRow> = admit_ledger::on_db!(&self.db, p => {
            let mut b = sqlx::QueryBuilder::new(format!(
                "SELECT {columns} FROM events WHERE stream_id IN (SELECT stream_id FROM account_streams WHERE account_id = "
            ));
            b.push_bind(account.0).push(") AND position > ").push_bind(after_position);
            if let Some(st) = stream {
                b.push(" AND stream_id = ").push_bind(st.to_string());
            }
            if let Some(t) = event_type {
                b.push(" AND event_type = ").push_bind(t.to_string());
            }
            b.push(" ORDER BY position LIMIT ").push_bind(limit);
            b.build_query_as().fetch_all(p).await?
        });
        rows.into_iter().map(|r| admit_ledger::RecordedEvent::try_from(r).map_err(Error::from)).collect()
    }

    /// The account and its stream version; locks it for this transaction.
    pub(crate) async fn account(&self, tx: &mut Tx, id: AccountId) -> Result<(Account, i64), Error> {
        let version = tx.stream_version(&id.stream(), true).await?.unwrap_or(0);
        if version == 0 {
            return Err(Error::NotFound("account"));
        }
        let account = self.accounts.at(tx, id, version).await?;
        Ok((Account::clone(&*account), version))
    }

    /// The invitation and its stream version; locks it for this transaction.
    pub(crate) async fn invitation(&self, tx: &mut Tx, id: InvitationId) -> Result<(Invitation, i64), Error> {
        self.fold_invitation(tx, id, true).await
    }

    /// The user and their stream version; locks it for this transaction.
    pub(crate) async fn user(&self, tx: &mut Tx, id: UserId) -> Result<(User, i64), Error> {
        let (events, version) = self.load(tx, &id.stream(), true).await?;
        let user = User::from_events(events.iter().filter_map(|e| e.event.as_user()));
        user.map(|u| (u, version)).ok_or(Error::NotFound("user"))
    }

    async fn fold_invitation(&self, tx: &mut Tx, id: InvitationId, lock: bool) -> Result<(Invitation, i64), Error> {
        let (events, version) = self.load(tx, &id.stream(), lock).await?;
        let inv = Invitation::from_events(events.iter().filter_map(|e| e.event.as_invitation()));
        inv.map(|i| (i, version)).ok_or(Error::NotFound("invitation"))
    }

    /// The user holding `email_hash`, per the email reservation.
    pub(crate) async fn user_by_email_hash(&self, tx: &mut Tx, email_hash: &str) -> Result<Option<UserId>, Error> {
        let r = tx.reservation(USER_EMAIL, "", email_hash).await?;
        Ok(r.and_then(|r| r.holder.parse().ok().map(UserId)))
    }
}

/// Wraps invitation events for the unit.
pub(crate) fn invitation_events(id: InvitationId, events: Vec<InvitationEvent>) -> Vec<Event> {
    events.into_iter().map(|e| Event::Invitation(id, e)).collect()
}

/// Wraps account events for the unit.
pub(crate) fn account_events(id: AccountId, events: Vec<admit_domain::account::AccountEvent>) -> Vec<Event> {
    events.into_iter().map(|e| Event::Account(id, e)).collect()
}

/// Wraps user events for the unit.
pub(crate) fn user_events(id: UserId, events: Vec<UserEvent>) -> Vec<Event> {
    events.into_iter().map(|e| Event::User(id, e)).collect()
}
