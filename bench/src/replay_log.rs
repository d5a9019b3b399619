//! A realistic event log for the replay benchmark, written straight into a
//! database through the ledger's append API.
//!
//! The log is simulated, not scripted: accounts are opened over a day, then
//! a queue of timed steps (ordered by simulated time) drives each account's
//! invitations through their lifecycle — delivery records, opens and
//! clicks, updates, resends, reminders, then accepted (a new user
//! registers, or an existing user of another account signs in and joins),
//! declined, revoked or expired at their deadline (and sometimes a request
//! for a new invitation through the expired link) — and each member
//! through sign-ins, access changes, deactivation, removal and
//! cancellation, while admins define roles, change settings and manage API
//! keys. Events of different accounts interleave in the global order as
//! they would in production.
//!
//! Each step is appended the way the application appends a command (one
//! append per stream it touches, personal data sealed with the person's key
//! from the ledger's personal-key API, `Exact` expected versions), but many
//! steps share one transaction so a million events take minutes. The read
//! models are not written: `admit replay` builds them from the log.
//! Reservations (pending invitation and user email uniqueness) are not
//! written either, so the generated database is for replaying, auditing
//! and verifying, not for serving new commands.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use admit_domain::access::{Access, Level, Permission, SiteAccess, SourceScope};
use admit_domain::account::{AccountEvent, AccountSettings};
use admit_domain::ids::{AccountId, Actor, ApiKeyId, InvitationId, PersonId, UserId};
use admit_domain::invitation::{Channel, DeliveryState, InvitationEvent, RevokeReason};
use admit_domain::personal::Personal;
use admit_domain::token::LinkNonce;
use admit_domain::user::{PasswordHash, UserEvent};
use admit_domain::values::{
    AccountName, CustomerNumber, EmailAddress, FeatureName, PersonName, RoleName, SiteId, SourceId,
};
use admit_domain::{DomainError, Event};
use admit_ledger::personal::{LookupKey, PersonKey};
use admit_ledger::{Database, ExpectedVersion, LedgerError, Metadata, Tx};
use admit_projections::Codec;
use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use uuid::Uuid;

/// What shapes the generated log.
#[derive(Debug, Clone)]
pub struct LogShape {
    /// Stop once at least this many events are written.
    pub events: u64,
    /// Accounts opened on the first simulated day.
    pub accounts: usize,
    /// Events appended per transaction (steps are never split).
    pub events_per_transaction: u64,
    /// Seed of the simulation: the same seed gives the same story.
    pub seed: u64,
}

impl Default for LogShape {
    fn default() -> LogShape {
        LogShape { events: 1_000_000, accounts: 10_000, events_per_transaction: 5_000, seed: 1 }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default)]
pub struct GeneratedLog {
    /// Events appended.
    pub events: u64,
    /// Accounts opened.
    pub accounts: u64,
    /// Invitations sent.
    pub invitations: u64,
    /// Users registered.
    pub users: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Events appended, per event type.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

/// Why generating failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The database refused an append or a key.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A generated value broke a domain rule (a bug of the generator).
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// Writes a simulated log of `shape.events` events into `db` (migrated by
/// the caller), sealing personal data with keys the ledger keeps; email
/// lookup hashes use `lookup`, which must be the one `admit replay` will
/// run with (the same `ADMIT_SECRET_KEY`). `progress` is told the events
/// written after each commit.
pub async fn generate(
    db: &Database,
    lookup: &LookupKey,
    password_hash: PasswordHash,
    shape: &LogShape,
    mut progress: impl FnMut(u64),
) -> Result<GeneratedLog, GenerateError> {
    let started = Instant::now();
    let mut sim = Simulation::new(lookup.clone(), password_hash, shape);
    let mut writer = Writer::new(db.clone(), shape.events_per_transaction);
    for a in 0..shape.accounts {
        let at = sim.start + chrono::Duration::milliseconds((a as i64 * 86_400_000) / shape.accounts.max(1) as i64);
        sim.schedule(at, Step::OpenAccount(a as u32));
    }
    while writer.written < shape.events {
        let Some(Reverse((micros, _, step))) = sim.queue.pop() else { break };
        sim.now = Utc.timestamp_micros(micros).single().unwrap_or(sim.now);
        let before = writer.committed_events;
        sim.run(&mut writer, step).await?;
        if writer.committed_events != before {
            progress(writer.committed_events);
        }
    }
    writer.finish().await?;
    progress(writer.written);
    Ok(GeneratedLog {
        events: writer.written,
        accounts: sim.accounts.len() as u64,
        invitations: sim.invitations.len() as u64,
        users: sim.users.len() as u64,
        transactions: writer.transactions,
        by_type: writer.by_type,
        elapsed: started.elapsed(),
    })
}

/// Appends steps the way the application appends commands, many steps per
/// transaction.
struct Writer {
    db: Database,
    tx: Option<Tx>,
    in_tx: u64,
    per_tx: u64,
    written: u64,
    committed_events: u64,
    transactions: u64,
    by_type: BTreeMap<&'static str, u64>,
}

/// One stream's part of a step: its stream, its version before, its events.
type Append = (String, i64, Vec<Event>);

impl Writer {
    fn new(db: Database, per_tx: u64) -> Writer {
        Writer {
            db,
            tx: None,
            in_tx: 0,
            per_tx: per_tx.max(1),
            written: 0,
            committed_events: 0,
            transactions: 0,
            by_type: BTreeMap::new(),
        }
    }

    async fn tx(&mut self) -> Result<&mut Tx, GenerateError> {
        if self.tx.is_none() {
            self.tx = Some(self.db.begin().await?);
        }
        Ok(self.tx.as_mut().expect("just opened"))
    }

    /// The person holding `email`, created with a fresh key when new.
    async fn person(
        &mut self,
        lookup: &LookupKey,
        email: &EmailAddress,
        at: DateTime<Utc>,
    ) -> Result<(PersonId, PersonKey), GenerateError> {
        let hash = lookup.email_hash(email.as_str());
        let (id, key) = self.tx().await?.person_for_email(&hash, at).await?;
        Ok((PersonId(id), key))
    }

    /// Appends one step: every stream it touches, sealing with `key`.
    async fn step(
        &mut self,
        actor: &Actor,
        at: DateTime<Utc>,
        appends: Vec<Append>,
        key: Option<&PersonKey>,
    ) -> Result<(), GenerateError> {
        let metadata = Metadata {
            actor: Some(actor.to_string()),
            correlation_id: Some(Uuid::now_v7()),
            causation_id: None,
            request_id: None,
        };
        let mut n = 0;
        for (stream, expected, events) in appends {
            let stored: Vec<_> = events.iter().map(|e| Codec::encode(e, Uuid::now_v7(), e.person().and(key))).collect();
            for e in &events {
                *self.by_type.entry(e.event_type()).or_default() += 1;
            }
            self.tx().await?.append(&stream, ExpectedVersion::Exact(expected), &stored, &metadata, at).await?;
            n += stored.len() as u64;
        }
        self.written += n;
        self.in_tx += n;
        if self.in_tx >= self.per_tx {
            self.commit().await?;
        }
        Ok(())
    }

    async fn commit(&mut self) -> Result<(), GenerateError> {
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
            self.transactions += 1;
            self.committed_events = self.written;
            self.in_tx = 0;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), GenerateError> {
        self.commit().await
    }
}

/// A timed thing that happens next in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// The operator opens account n and invites its owner.
    OpenAccount(u32),
    /// Someone in the account invites a person.
    Invite(u32),
    /// The next move of invitation n.
    Invitation(u32),
    /// Something a member (account, user) does or has done to them.
    Member(u32, u32),
    /// An admin changes the account's roles, settings or API keys.
    Administer(u32),
    /// The invitee of expired invitation n asks for a new one.
    RequestRenewal(u32),
}

/// The next thing that happens to an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Processed,
    Delivered,
    Bounced,
    Opened,
    Clicked,
    Reminded,
    Updated,
    Resent,
    Accept,
    Decline,
    Revoke,
    /// Waits for the deadline (the expiry worker).
    Expire,
}

struct AccountState {
    id: AccountId,
    version: i64,
    settings: AccountSettings,
    owner: Option<u32>,
    /// Members (user index) who may invite besides the owner.
    admins: Vec<u32>,
    /// Custom roles; the flag marks roles never granted (safe to delete).
    custom_roles: Vec<(RoleName, bool)>,
    api_keys: Vec<ApiKeyId>,
    pending: HashSet<u32>,
    members: HashMap<u32, Member>,
    roles_made: u32,
}

#[derive(Clone, Copy)]
struct Member {
    active: bool,
    admin: bool,
}

struct Person {
    id: PersonId,
    key: PersonKey,
    email: EmailAddress,
    name: Option<PersonName>,
    user: Option<u32>,
}

struct UserState {
    id: UserId,
    person: u32,
    version: i64,
    active: bool,
}

struct InvitationState {
    id: InvitationId,
    invited_by: Actor,
    account: u32,
    person: u32,
    version: i64,
    access: Access,
    expires_at: DateTime<Utc>,
    owner: bool,
    plan: VecDeque<(Move, f64)>,
}

struct Simulation {
    rng: StdRng,
    lookup: LookupKey,
    password_hash: PasswordHash,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    seq: u64,
    queue: BinaryHeap<Reverse<(i64, u64, Step)>>,
    accounts: Vec<AccountState>,
    people: Vec<Person>,
    users: Vec<UserState>,
    invitations: Vec<InvitationState>,
}

const FEATURES: [&str; 4] = ["reports", "dashboards", "exports", "alerts"];
const DOMAINS: [&str; 4] = ["mail.example", "inbox.example", "post.example", "webmail.example"];
const FIRST: [&str; 8] = ["Ada", "Björn", "Chiara", "Dmitri", "Emeka", "Fatima", "Grace", "Hiro"];
const LAST: [&str; 8] = ["Lovelace", "Nilsson", "Rossi", "Ivanov", "Okafor", "Haddad", "Hopper", "Tanaka"];

fn role(name: &str) -> RoleName {
    RoleName::parse(name).expect("generator role names are valid")
}

impl Simulation {
    fn new(lookup: LookupKey, password_hash: PasswordHash, shape: &LogShape) -> Simulation {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 8, 0, 0).single().expect("valid start");
        Simulation {
            rng: StdRng::seed_from_u64(shape.seed),
            lookup,
            password_hash,
            start,
            now: start,
            seq: 0,
            queue: BinaryHeap::new(),
            accounts: Vec::with_capacity(shape.accounts),
            people: Vec::new(),
            users: Vec::new(),
            invitations: Vec::new(),
        }
    }

    fn schedule(&mut self, at: DateTime<Utc>, step: Step) {
        self.seq += 1;
        self.queue.push(Reverse((at.timestamp_micros(), self.seq, step)));
    }

    /// `now` plus an exponentially distributed delay with this mean.
    fn after(&mut self, mean_seconds: f64) -> DateTime<Utc> {
        let u: f64 = self.rng.gen_range(1e-9..1.0);
        self.now + chrono::Duration::milliseconds((-u.ln() * mean_seconds * 1000.0) as i64 + 1)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p.clamp(0.0, 1.0))
    }

    fn nonce(&mut self) -> LinkNonce {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        LinkNonce::from_bytes(b)
    }

    async fn run(&mut self, w: &mut Writer, step: Step) -> Result<(), GenerateError> {
        match step {
            Step::OpenAccount(a) => self.open_account(w, a).await,
            Step::Invite(a) => self.invite(w, a).await,
            Step::Invitation(i) => self.advance(w, i).await,
            Step::Member(a, u) => self.member(w, a, u).await,
            Step::Administer(a) => self.administer(w, a).await,
            Step::RequestRenewal(i) => self.request_renewal(w, i).await,
        }
    }

    async fn open_account(&mut self, w: &mut Writer, a: u32) -> Result<(), GenerateError> {
        let id = AccountId(Uuid::now_v7());
        let mut settings =
            AccountSettings::with_seats(*[25u32, 50, 100, 250].get(self.rng.gen_range(0..4)).unwrap_or(&50));
        settings.invitation_lifetime_hours = match self.rng.gen_range(0..10) {
            0..=6 => 24,
            7..=8 => 72,
            _ => 168,
        };
        let opened = AccountEvent::AccountOpened {
            account_id: id,
            name: AccountName::parse(&format!("Customer {a} {}", LAST[a as usize % LAST.len()]))?,
            customer_number: CustomerNumber::parse(&format!("C-{:06}", 100_000 + a))?,
            settings: settings.clone(),
        };
        self.accounts.push(AccountState {
            id,
            version: 0,
            settings,
            owner: None,
            admins: Vec::new(),
            custom_roles: Vec::new(),
            api_keys: Vec::new(),
            pending: HashSet::new(),
            members: HashMap::new(),
            roles_made: 0,
        });
        let person = self.new_person(w, a).await?;
        let appends = vec![(id.stream(), 0, vec![Event::Account(id, opened)])];
        let (sent, key) = self.send(a, person, Access::roles([RoleName::owner()]), Actor::Operator, Channel::Cli, true);
        let mut appends = appends;
        appends.push(sent);
        w.step(&Actor::Operator, self.now, appends, Some(&key)).await?;
        self.accounts[a as usize].version = 1;
        Ok(())
    }

    /// A new person with an email of their own and a fresh ledger key.
    async fn new_person(&mut self, w: &mut Writer, a: u32) -> Result<u32, GenerateError> {
        let n = self.people.len();
        let domain =
            if self.chance(0.6) { format!("customer{a}.example") } else { DOMAINS[n % DOMAINS.len()].to_string() };
        let email = EmailAddress::parse(&format!("person{n}@{domain}"))?;
        let name = if self.chance(0.7) {
            let f = FIRST[self.rng.gen_range(0..FIRST.len())];
            let l = LAST[self.rng.gen_range(0..LAST.len())];
            Some(PersonName::parse(&format!("{f} {l}"))?)
        } else {
            None
        };
        let (id, key) = w.person(&self.lookup, &email, self.now).await?;
        self.people.push(Person { id, key, email, name, user: None });
        Ok(n as u32)
    }

    /// Builds an InvitationSent append and its plan; returns the append
    /// and the key that seals it.
    fn send(
        &mut self,
        a: u32,
        p: u32,
        access: Access,
        by: Actor,
        channel: Channel,
        owner: bool,
    ) -> (Append, PersonKey) {
        let id = InvitationId(Uuid::now_v7());
        let lifetime = i64::from(self.accounts[a as usize].settings.invitation_lifetime_hours);
        let expires_at = self.now + chrono::Duration::hours(lifetime);
        let link_nonce = self.nonce();
        let metadata = self.chance(0.1).then(|| serde_json::json!({ "team": format!("team-{}", p % 7) }));
        let person = &self.people[p as usize];
        let event = InvitationEvent::InvitationSent {
            invitation_id: id,
            account_id: self.accounts[a as usize].id,
            person_id: person.id,
            personal: Personal::Known { email: person.email.clone(), name: person.name.clone() },
            access: access.clone(),
            invited_by: by,
            channel,
            expires_at,
            link_nonce,
            metadata,
            redirect_url: None,
        };
        let key = person.key.clone();
        let plan = self.plan(lifetime, owner);
        let index = self.invitations.len() as u32;
        self.invitations.push(InvitationState {
            id,
            invited_by: by,
            account: a,
            person: p,
            version: 1,
            access,
            expires_at,
            owner,
            plan,
        });
        self.accounts[a as usize].pending.insert(p);
        self.next_move(index);
        ((id.stream(), 0, vec![Event::Invitation(id, event)]), key)
    }

    /// The story of one invitation: each move with its delay (seconds)
    /// after the one before.
    fn plan(&mut self, lifetime_hours: i64, owner: bool) -> VecDeque<(Move, f64)> {
        use Move::*;
        let mut plan = VecDeque::new();
        plan.push_back((Processed, 2.0));
        if !owner && self.chance(0.03) {
            plan.push_back((Bounced, 20.0));
            plan.push_back(if self.chance(0.6) { (Revoke, 4.0 * 3600.0) } else { (Expire, f64::INFINITY) });
            return plan;
        }
        plan.push_back((Delivered, 15.0));
        let outcome = if owner { 0 } else { self.rng.gen_range(0..100) };
        if !owner && self.chance(0.06) {
            plan.push_back((Updated, 3600.0));
        }
        if !owner && self.chance(0.12) {
            plan.push_back((Resent, 8.0 * 3600.0));
            plan.push_back((Processed, 2.0));
            plan.push_back((Delivered, 15.0));
        }
        match outcome {
            0..=61 => {
                if self.chance(0.9) {
                    plan.push_back((Opened, 2.0 * 3600.0));
                    if self.chance(0.3) {
                        plan.push_back((Opened, 1800.0));
                    }
                }
                plan.push_back((Clicked, 60.0));
                plan.push_back((Accept, 240.0));
            }
            62..=67 => {
                plan.push_back((Opened, 3.0 * 3600.0));
                plan.push_back((Clicked, 60.0));
                plan.push_back((Decline, 120.0));
            }
            68..=77 => plan.push_back((Revoke, 6.0 * 3600.0)),
            _ => {
                if self.chance(0.3) {
                    plan.push_back((Opened, 5.0 * 3600.0));
                }
                if lifetime_hours > 48 {
                    plan.push_back((Reminded, f64::NAN));
                }
                plan.push_back((Expire, f64::INFINITY));
            }
        }
        plan
    }

    /// Schedules the invitation's next move; whatever would come after its
    /// deadline becomes the expiry worker's `Expire` instead.
    fn next_move(&mut self, i: u32) {
        let Some(&(mv, delay)) = self.invitations[i as usize].plan.front() else { return };
        let deadline = self.invitations[i as usize].expires_at;
        let at = if delay.is_nan() {
            // A reminder: a day before the deadline.
            let at = deadline - chrono::Duration::hours(24);
            if at <= self.now {
                self.invitations[i as usize].plan.pop_front();
                return self.next_move(i);
            }
            at
        } else if delay.is_infinite() {
            deadline + chrono::Duration::milliseconds(self.rng.gen_range(1..1000))
        } else {
            self.after(delay)
        };
        if at >= deadline && mv != Move::Expire {
            let inv = &mut self.invitations[i as usize];
            inv.plan.clear();
            inv.plan.push_back((Move::Expire, f64::INFINITY));
            let at = deadline + chrono::Duration::milliseconds(self.rng.gen_range(1..1000));
            self.schedule(at, Step::Invitation(i));
            return;
        }
        self.schedule(at, Step::Invitation(i));
    }

    /// A new invitation in account `a`, to a new person or to someone who
    /// already uses Admit through another account.
    async fn invite(&mut self, w: &mut Writer, a: u32) -> Result<(), GenerateError> {
        let next = self.after(10.0 * 3600.0);
        self.schedule(next, Step::Invite(a));
        let acc = &self.accounts[a as usize];
        if acc.members.len() + acc.pending.len() >= acc.settings.seat_limit as usize {
            return Ok(());
        }
        let mut person = None;
        if self.chance(0.3) && !self.users.is_empty() {
            // Someone who already uses Admit through another account.
            for _ in 0..3 {
                let u = self.rng.gen_range(0..self.users.len());
                let (p, active) = (self.users[u].person, self.users[u].active);
                let acc = &self.accounts[a as usize];
                if active && !acc.members.contains_key(&(u as u32)) && !acc.pending.contains(&p) {
                    person = Some(p);
                    break;
                }
            }
        } else if self.chance(0.05) && !self.people.is_empty() {
            // Someone invited before who never registered (declined, expired).
            let p = self.rng.gen_range(0..self.people.len()) as u32;
            if self.people[p as usize].user.is_none() && !self.accounts[a as usize].pending.contains(&p) {
                person = Some(p);
            }
        }
        let person = match person {
            Some(p) => p,
            None => self.new_person(w, a).await?,
        };
        let access = self.access(a);
        let acc = &self.accounts[a as usize];
        let owner = acc.owner.expect("invites start once the owner joined");
        let (by, channel) = match self.rng.gen_range(0..100) {
            0..=64 => (Actor::User(self.users[owner as usize].id), Channel::Session),
            65..=74 if !acc.admins.is_empty() => {
                let admin = acc.admins[self.rng.gen_range(0..acc.admins.len())];
                (Actor::User(self.users[admin as usize].id), Channel::Session)
            }
            75..=89 if !acc.api_keys.is_empty() => {
                (Actor::ApiKey(acc.api_keys[self.rng.gen_range(0..acc.api_keys.len())]), Channel::ApiKey)
            }
            90..=99 => (Actor::User(self.users[owner as usize].id), Channel::Bulk),
            _ => (Actor::User(self.users[owner as usize].id), Channel::Session),
        };
        let (append, key) = self.send(a, person, access, by, channel, false);
        w.step(&by, self.now, vec![append], Some(&key)).await
    }

    /// What an invitation grants: mostly built-in roles, sometimes a
    /// custom role, features with levels, sites and sources, or nothing
    /// (a restricted member).
    fn access(&mut self, a: u32) -> Access {
        let mut access = Access::default();
        let r = self.rng.gen_range(0..100);
        let customs: Vec<RoleName> =
            self.accounts[a as usize].custom_roles.iter().filter(|(_, temp)| !temp).map(|(r, _)| r.clone()).collect();
        match r {
            0..=34 => access.roles.insert(RoleName::viewer()),
            35..=69 => access.roles.insert(RoleName::editor()),
            70..=77 => access.roles.insert(RoleName::admin()),
            78..=81 => access.roles.insert(RoleName::auditor()),
            82..=92 if !customs.is_empty() => {
                access.roles.insert(customs[self.rng.gen_range(0..customs.len())].clone())
            }
            82..=92 => access.roles.insert(RoleName::viewer()),
            _ => false,
        };
        if r < 93 && self.chance(0.3) {
            let f = FeatureName::parse(FEATURES[self.rng.gen_range(0..FEATURES.len())]).expect("valid feature");
            let level = [Level::View, Level::Edit, Level::Manage][self.rng.gen_range(0..3)];
            access.features.insert(f, level);
        }
        if r < 93 && self.chance(0.2) {
            let mut sites = BTreeMap::new();
            let site = SiteId::parse(&format!("site-{}", self.rng.gen_range(1..4))).expect("valid site");
            let scope = if self.chance(0.5) {
                SourceScope::All
            } else {
                SourceScope::Only(BTreeSet::from([SourceId::parse("web").expect("valid source")]))
            };
            sites.insert(site, scope);
            access.sites = SiteAccess::Only(sites);
        }
        access
    }

    /// Carries out the invitation's next move.
    async fn advance(&mut self, w: &mut Writer, i: u32) -> Result<(), GenerateError> {
        let Some((mv, _)) = self.invitations[i as usize].plan.pop_front() else { return Ok(()) };
        let inv = &self.invitations[i as usize];
        let (id, version, a) = (inv.id, inv.version, inv.account);
        let system = Actor::System;
        let owner_actor = self.accounts[a as usize].owner.map(|o| Actor::User(self.users[o as usize].id));
        let one = |e: InvitationEvent| vec![(id.stream(), version, vec![Event::Invitation(id, e)])];
        let delivery = |state: DeliveryState, detail: Option<&str>| {
            one(InvitationEvent::InvitationDeliveryRecorded { state, detail: detail.map(str::to_string) })
        };
        match mv {
            Move::Processed => w.step(&system, self.now, delivery(DeliveryState::Processed, None), None).await?,
            Move::Delivered => {
                w.step(&system, self.now, delivery(DeliveryState::Delivered, Some("250 2.0.0 OK queued")), None).await?
            }
            Move::Bounced => {
                w.step(&system, self.now, delivery(DeliveryState::Bounced, Some("550 5.1.1 mailbox unavailable")), None)
                    .await?
            }
            Move::Opened => w.step(&system, self.now, delivery(DeliveryState::Opened, None), None).await?,
            Move::Clicked => w.step(&system, self.now, delivery(DeliveryState::Clicked, None), None).await?,
            Move::Reminded => {
                let expires_at = self.invitations[i as usize].expires_at;
                w.step(&system, self.now, one(InvitationEvent::InvitationReminded { expires_at }), None).await?
            }
            Move::Updated => {
                let by = owner_actor.unwrap_or(Actor::Operator);
                let access = self.access(a);
                let hours = i64::from(self.accounts[a as usize].settings.invitation_lifetime_hours);
                let expires_at = self.now + chrono::Duration::hours(hours);
                let e = InvitationEvent::InvitationUpdated { access: access.clone(), expires_at, updated_by: by };
                w.step(&by, self.now, one(e), None).await?;
                let inv = &mut self.invitations[i as usize];
                inv.access = access;
                inv.expires_at = expires_at;
            }
            Move::Resent => {
                let by = owner_actor.unwrap_or(Actor::Operator);
                let hours = i64::from(self.accounts[a as usize].settings.invitation_lifetime_hours);
                let expires_at = self.now + chrono::Duration::hours(hours);
                let send_copy_to_me = self.chance(0.2);
                let e = InvitationEvent::InvitationResent {
                    link_nonce: self.nonce(),
                    expires_at,
                    resent_by: by,
                    send_copy_to_me,
                };
                w.step(&by, self.now, one(e), None).await?;
                self.invitations[i as usize].expires_at = expires_at;
            }
            Move::Accept => return self.accept(w, i).await,
            Move::Decline => {
                w.step(&system, self.now, one(InvitationEvent::InvitationDeclined {}), None).await?;
                self.close(i);
                return Ok(());
            }
            Move::Revoke => {
                let by = owner_actor.unwrap_or(Actor::Operator);
                let e = InvitationEvent::InvitationRevoked { revoked_by: by, reason: RevokeReason::ByAdmin };
                w.step(&by, self.now, one(e), None).await?;
                self.close(i);
                return Ok(());
            }
            Move::Expire => {
                w.step(&system, self.now, one(InvitationEvent::InvitationExpired {}), None).await?;
                self.close(i);
                if self.chance(0.15) {
                    let at = self.after(6.0 * 3600.0);
                    self.schedule(at, Step::RequestRenewal(i));
                }
                return Ok(());
            }
        }
        self.invitations[i as usize].version += 1;
        self.next_move(i);
        Ok(())
    }

    fn close(&mut self, i: u32) {
        let inv = &mut self.invitations[i as usize];
        inv.version += 1;
        inv.plan.clear();
        let (a, p) = (inv.account, inv.person);
        self.accounts[a as usize].pending.remove(&p);
    }

    /// The invitee accepts: a new person registers in the same step; a
    /// person who already has a user (from another account) signs in first.
    async fn accept(&mut self, w: &mut Writer, i: u32) -> Result<(), GenerateError> {
        let inv = &self.invitations[i as usize];
        let (id, iv, a, p, owner) = (inv.id, inv.version, inv.account, inv.person, inv.owner);
        let access = inv.access.clone();
        let account = self.accounts[a as usize].id;
        let av = self.accounts[a as usize].version;
        let existing = self.people[p as usize].user;
        if existing.is_some_and(|u| !self.users[u as usize].active) {
            // A deactivated user cannot sign in to accept: they decline.
            w.step(
                &Actor::System,
                self.now,
                vec![(id.stream(), iv, vec![Event::Invitation(id, InvitationEvent::InvitationDeclined {})])],
                None,
            )
            .await?;
            self.close(i);
            return Ok(());
        }
        let (u, user_id) = match existing {
            Some(u) => {
                let user = &self.users[u as usize];
                let (uid, uv) = (user.id, user.version);
                let actor = Actor::User(uid);
                w.step(
                    &actor,
                    self.now,
                    vec![(uid.stream(), uv, vec![Event::User(uid, UserEvent::UserLoggedIn {})])],
                    None,
                )
                .await?;
                self.users[u as usize].version += 1;
                (u, uid)
            }
            None => {
                let uid = UserId(Uuid::now_v7());
                let u = self.users.len() as u32;
                self.users.push(UserState { id: uid, person: p, version: 0, active: true });
                self.people[p as usize].user = Some(u);
                (u, uid)
            }
        };
        let actor = Actor::User(user_id);
        let mut appends = Vec::new();
        let mut key = None;
        if existing.is_none() {
            let person = &self.people[p as usize];
            let registered = UserEvent::UserRegistered {
                user_id,
                person_id: person.id,
                personal: Personal::Known { email: person.email.clone(), name: person.name.clone() },
                password_hash: self.password_hash.clone(),
            };
            key = Some(person.key.clone());
            appends.push((user_id.stream(), 0, vec![Event::User(user_id, registered)]));
            self.users[u as usize].version = 1;
        }
        appends.push((
            id.stream(),
            iv,
            vec![Event::Invitation(id, InvitationEvent::InvitationAccepted { user_id, access: access.clone() })],
        ));
        let joined = AccountEvent::MemberJoined { user_id, invitation_id: id, access: access.clone() };
        appends.push((account.stream(), av, vec![Event::Account(account, joined)]));
        w.step(&actor, self.now, appends, key.as_ref()).await?;
        self.accounts[a as usize].version += 1;
        self.close(i);
        let admin = access.roles.contains(&RoleName::admin()) || owner;
        self.accounts[a as usize].members.insert(u, Member { active: true, admin });
        if admin && !owner {
            self.accounts[a as usize].admins.push(u);
        }
        if owner {
            self.accounts[a as usize].owner = Some(u);
            let at = self.after(3600.0);
            self.schedule(at, Step::Invite(a));
            let at = self.after(2.0 * 86_400.0);
            self.schedule(at, Step::Administer(a));
        }
        let at = self.after(86_400.0);
        self.schedule(at, Step::Member(a, u));
        Ok(())
    }

    /// Through the expired link's page, the invitee asks the inviter for a
    /// new invitation (recorded on the account's stream).
    async fn request_renewal(&mut self, w: &mut Writer, i: u32) -> Result<(), GenerateError> {
        let inv = &self.invitations[i as usize];
        let (invitation_id, invited_by, a) = (inv.id, inv.invited_by, inv.account);
        let acc = &self.accounts[a as usize];
        let (account, av) = (acc.id, acc.version);
        let e = AccountEvent::InvitationRenewalRequested { invitation_id, invited_by };
        w.step(&Actor::System, self.now, vec![(account.stream(), av, vec![Event::Account(account, e)])], None).await?;
        self.accounts[a as usize].version += 1;
        Ok(())
    }

    /// A member signs in (most often), or has their access changed, is
    /// deactivated, reactivated, removed, cancels, changes their password
    /// or has their user deactivated.
    async fn member(&mut self, w: &mut Writer, a: u32, u: u32) -> Result<(), GenerateError> {
        let Some(m) = self.accounts[a as usize].members.get(&u).copied() else { return Ok(()) };
        if !self.users[u as usize].active {
            return Ok(());
        }
        let acc = &self.accounts[a as usize];
        let (account, av) = (acc.id, acc.version);
        let owner = acc.owner.map(|o| Actor::User(self.users[o as usize].id)).unwrap_or(Actor::Operator);
        let is_owner = acc.owner == Some(u);
        let user = &self.users[u as usize];
        let (uid, uv) = (user.id, user.version);
        let member_event = |e: AccountEvent| vec![(account.stream(), av, vec![Event::Account(account, e)])];
        let roll = self.rng.gen_range(0..1000);
        let protected = is_owner || m.admin;
        let mut stays = true;
        match roll {
            _ if !m.active => {
                // A deactivated member is reactivated or removed.
                if self.chance(0.5) {
                    w.step(&owner, self.now, member_event(AccountEvent::MemberReactivated { user_id: uid }), None)
                        .await?;
                    self.member_mut(a, u).active = true;
                } else {
                    w.step(&owner, self.now, member_event(AccountEvent::MemberRemoved { user_id: uid }), None).await?;
                    stays = false;
                }
                self.accounts[a as usize].version += 1;
            }
            0..=59 if !protected => {
                let access = self.access(a);
                let access =
                    Access { roles: access.roles.into_iter().filter(|r| r != &RoleName::admin()).collect(), ..access };
                w.step(
                    &owner,
                    self.now,
                    member_event(AccountEvent::MemberAccessChanged { user_id: uid, access }),
                    None,
                )
                .await?;
                self.accounts[a as usize].version += 1;
            }
            60..=89 if !protected => {
                w.step(&owner, self.now, member_event(AccountEvent::MemberDeactivated { user_id: uid }), None).await?;
                self.accounts[a as usize].version += 1;
                self.member_mut(a, u).active = false;
            }
            90..=109 if !protected => {
                w.step(&owner, self.now, member_event(AccountEvent::MemberRemoved { user_id: uid }), None).await?;
                self.accounts[a as usize].version += 1;
                stays = false;
            }
            110..=124 if !protected => {
                let actor = Actor::User(uid);
                w.step(&actor, self.now, member_event(AccountEvent::MembershipCancelled { user_id: uid }), None)
                    .await?;
                self.accounts[a as usize].version += 1;
                stays = false;
            }
            125..=134 => {
                let actor = Actor::User(uid);
                let e = UserEvent::UserPasswordChanged { password_hash: self.password_hash.clone() };
                w.step(&actor, self.now, vec![(uid.stream(), uv, vec![Event::User(uid, e)])], None).await?;
                self.users[u as usize].version += 1;
            }
            135..=136 if !protected => {
                w.step(
                    &Actor::Operator,
                    self.now,
                    vec![(uid.stream(), uv, vec![Event::User(uid, UserEvent::UserDeactivated {})])],
                    None,
                )
                .await?;
                self.users[u as usize].version += 1;
                self.users[u as usize].active = false;
            }
            _ => {
                let actor = Actor::User(uid);
                w.step(
                    &actor,
                    self.now,
                    vec![(uid.stream(), uv, vec![Event::User(uid, UserEvent::UserLoggedIn {})])],
                    None,
                )
                .await?;
                self.users[u as usize].version += 1;
            }
        }
        if stays {
            let at = self.after(86_400.0);
            self.schedule(at, Step::Member(a, u));
        } else {
            self.accounts[a as usize].members.remove(&u);
        }
        Ok(())
    }

    fn member_mut(&mut self, a: u32, u: u32) -> &mut Member {
        self.accounts[a as usize].members.get_mut(&u).expect("a member of the account")
    }

    /// The owner defines, changes or deletes a role, changes the settings,
    /// or creates or revokes an API key.
    async fn administer(&mut self, w: &mut Writer, a: u32) -> Result<(), GenerateError> {
        let at = self.after(4.0 * 86_400.0);
        self.schedule(at, Step::Administer(a));
        let roll = self.rng.gen_range(0..100);
        let temp = self.chance(0.25);
        let pick = self.rng.gen_range(0..1000usize);
        let quota = [50, 100, 200][self.rng.gen_range(0..3)];
        let lifetime = [24, 72, 168][self.rng.gen_range(0..3)];
        let redirect = self.chance(0.2);
        let mut secret = [0u8; 32];
        self.rng.fill_bytes(&mut secret);
        let acc = &mut self.accounts[a as usize];
        let (account, av) = (acc.id, acc.version);
        let Some(owner) = acc.owner else { return Ok(()) };
        let owner_actor = Actor::User(self.users[owner as usize].id);
        let perms = |p: &[Permission]| p.iter().copied().collect::<BTreeSet<_>>();
        let event = match roll {
            0..=29 if acc.custom_roles.len() < 4 => {
                let made = acc.roles_made;
                let name = if temp {
                    format!("temp-{made}")
                } else {
                    ["support", "billing", "analyst", "ops"][made as usize % 4].to_string()
                };
                let name = if acc.custom_roles.iter().any(|(r, _)| r.as_str() == name) {
                    format!("{name}-{made}")
                } else {
                    name
                };
                let name = role(&name);
                acc.roles_made += 1;
                acc.custom_roles.push((name.clone(), temp));
                AccountEvent::RoleDefined {
                    role: name,
                    permissions: perms(&[Permission::AccountRead, Permission::MembersRead]),
                }
            }
            30..=44 if !acc.custom_roles.is_empty() => {
                let (name, _) = acc.custom_roles[pick % acc.custom_roles.len()].clone();
                AccountEvent::RoleChanged {
                    role: name,
                    permissions: perms(&[
                        Permission::AccountRead,
                        Permission::MembersRead,
                        Permission::InvitationsRead,
                    ]),
                }
            }
            45..=54 if acc.custom_roles.iter().any(|(_, temp)| *temp) => {
                let k = acc.custom_roles.iter().position(|(_, temp)| *temp).expect("a temporary role");
                let (name, _) = acc.custom_roles.remove(k);
                AccountEvent::RoleDeleted { role: name }
            }
            55..=79 => {
                let mut settings = acc.settings.clone();
                settings.daily_invitation_quota = quota;
                settings.invitation_lifetime_hours = lifetime;
                if redirect {
                    settings.allowed_redirect_urls.insert(format!("https://app.customer{a}.example/welcome"));
                }
                acc.settings = settings.clone();
                AccountEvent::AccountSettingsChanged { settings }
            }
            80..=89 if acc.api_keys.len() < 3 => {
                let key_id = ApiKeyId(Uuid::now_v7());
                acc.api_keys.push(key_id);
                AccountEvent::ApiKeyCreated {
                    key_id,
                    name: format!("provisioning {}", acc.api_keys.len()),
                    permissions: perms(&[Permission::InvitationsCreate, Permission::InvitationsRead]),
                    secret_hash: secret.iter().map(|b| format!("{b:02x}")).collect(),
                    created_by: owner_actor,
                }
            }
            90..=99 if !acc.api_keys.is_empty() => {
                let key_id = acc.api_keys.remove(0);
                AccountEvent::ApiKeyRevoked { key_id }
            }
            _ => return Ok(()),
        };
        w.step(&owner_actor, self.now, vec![(account.stream(), av, vec![Event::Account(account, event)])], None)
            .await?;
        self.accounts[a as usize].version += 1;
        Ok(())
    }
}
