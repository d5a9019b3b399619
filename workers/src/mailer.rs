//! The mailer: invitation emails (and copies to the resender), welcome
//! emails, with delivery recorded as events and each email sent at most
//! once per triggering event.
//!
//! Dedupe: before sending, the mailer claims `(event id, kind)` in
//! `mail_sends`; a claim already `sent` or `failed` is never sent again. A
//! claim left `sending` by a crash is retried on restart: the one window SMTP
//! cannot close is a crash after the server accepted the message and before
//! the claim was marked sent. Such a duplicate carries the same Message-ID
//! (derived from the event), so receiving systems can drop it. The same
//! holds for an attempt whose answer never came (a server that stalls after
//! DATA until the SMTP timeout, or drops the connection): the server may
//! have kept the message, and the retry carries the same Message-ID.
//!
//! Retries: a 4xx answer, a dropped connection or a timeout is retried after
//! the backoff (doubling up to the maximum) until the configured attempts
//! are used; a 5xx answer is permanent and fails the email at once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use admit_api::Admit;
use admit_domain::access::Permission;
use admit_domain::account::{Account, AccountEvent, MemberStatus};
use admit_domain::ids::{AccountId, Actor, InvitationId, UserId};
use admit_domain::invitation::{DeliveryState, Invitation, InvitationEvent, InvitationStatus};
use admit_domain::template::{MailKind, MailTemplate};
use admit_domain::token::InvitationToken;
use admit_domain::user::UserEvent;
use admit_domain::Event;
use admit_ledger::database::ids_in;
use admit_ledger::{on_db, on_db_write, on_tx, Database};
use admit_projections::Envelope;
use chrono::Utc;
use uuid::Uuid;

use crate::feed::Feed;
use crate::mail::{html_escape, message, Letter, Sender, Transport};
use crate::{Result, WorkerError};

/// How the mailer sends and retries.
#[derive(Debug, Clone)]
pub struct MailerConfig {
    /// SMTP or a folder.
    pub transport: Transport,
    /// From and reply-to.
    pub sender: Sender,
    /// Base of accept links.
    pub public_url: String,
    /// Where to send people after they joined (welcome email).
    pub app_url: Option<String>,
    /// Sending attempts per email before it is `failed`.
    pub attempts: u32,
    /// First wait between attempts; doubles each time.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How often to look for new events when idle.
    pub poll: Duration,
    /// Emails sent at the same time (see [`SENDING_AT_ONCE`]; 1 sends one by one).
    pub at_once: usize,
}

/// Emails one mailer sends at the same time by default, over as many SMTP
/// connections. Sending one by one capped a mailer at about 25 emails a
/// second, each waiting for its SMTP answer and its delivery records; 16
/// at once at about 160, 64 keeps up with 333 a second here (each email
/// takes several round trips to the server, and a slot waits for its
/// outcome's commit). The price: a mailer killed mid-batch may resend up
/// to this many emails (each with its Message-ID), where one by one it
/// resent at most one. Servers may cap connections per client (Postfix:
/// `smtpd_client_connection_count_limit`, 50 unless the client is in
/// `mynetworks`); set `ADMIT_MAIL_AT_ONCE` below such a cap.
pub const SENDING_AT_ONCE: usize = 64;

/// The mailer worker.
#[derive(Debug)]
pub struct Mailer {
    admit: Admit,
    config: MailerConfig,
    feed: Feed,
}

/// What to send for one triggering event.
struct Outgoing {
    event_id: Uuid,
    /// What and for whom (`invitation`, `copy`, `welcome`, `left:<user>`):
    /// with the event id, the key that makes each email go out once.
    kind: String,
    invitation: Option<InvitationId>,
    to: String,
    letter: Letter,
}

/// What became of one email after its attempts.
enum Outcome {
    /// Accepted; the server's answer.
    Sent(String),
    /// Refused for good, out of attempts, or not sendable; the reason.
    Failed(String),
}

/// An email whose outcome waits to be recorded.
struct Finished {
    event_id: Uuid,
    kind: String,
    invitation: Option<InvitationId>,
    outcome: Outcome,
}

/// Told once the outcome of an email is committed.
type Ack = tokio::sync::oneshot::Sender<()>;

/// What a batch's invitation emails are made from, read together once
/// per batch rather than once per email: the invitations as they stand
/// now, their accounts, and the names of the users who invited. A batch of
/// one account's invitations reads its account and its inviters once.
#[derive(Default)]
struct Sources {
    invitations: HashMap<InvitationId, Invitation>,
    accounts: HashMap<AccountId, Account>,
    /// Inviters of `invitations` that have a name.
    inviter_names: HashMap<UserId, String>,
}

/// Events one run takes from the feed. A run's emails go out side by side
/// and the next run starts when the last is recorded, so each run ends on
/// a tail where few slots are busy; with 200 events (about 66 invitations
/// amid the mailer's own records) that tail and the run's preparation
/// kept 333 invitations a second at 0.7–5.7 s p99 from append to SMTP,
/// with 600 at 0.7–0.8 s (docs/performance.md, "Relay and mail lag").
/// Polling stops early when the feed is idle, so this costs nothing at
/// low rates.
const BATCH: usize = 600;

impl Mailer {
    /// The mailer over `admit`'s database, tailing its log.
    pub fn new(admit: Admit, config: MailerConfig) -> Result<Mailer> {
        let feed = Feed::log(admit.db.clone(), "mailer");
        Ok(Mailer::with_feed(admit, config, feed))
    }

    /// The mailer consuming `feed` (the topic, in a Kafka deployment).
    pub fn with_feed(admit: Admit, config: MailerConfig, feed: Feed) -> Mailer {
        Mailer { admit, config, feed }
    }

    /// Handles events until `shutdown` turns true.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        crate::feed::poll_until_shutdown("mailer", self.config.poll, shutdown, || self.run_once()).await
    }

    /// Handles the events available now; returns how many it handled.
    ///
    /// The batch's emails are prepared side by side, claimed together (one
    /// statement), then sent:
    /// emails of one invitation in order (a resend after the first email),
    /// those of different invitations side by side, at most `at_once`, so
    /// one slow answer does not hold up the rest. Outcomes are recorded as
    /// they come, each transaction taking every outcome that is waiting
    /// (group commit): the claim's `sent`/`failed` with the invitation's
    /// `processed` and `delivered` or `failed`. A sending slot is free
    /// again only once its email's outcome is committed, so at most
    /// `at_once` emails are ever sent and not yet recorded (what a crash
    /// may resend). The batch is committed only when every email of it is
    /// done.
    pub async fn run_once(&self) -> Result<usize> {
        use futures::{StreamExt, TryStreamExt};
        let at_once = self.config.at_once.max(1);
        let batch = self.feed.poll(BATCH).await?;
        let sources = self.sources(&batch).await?;
        let preparing: Vec<_> = batch.iter().map(|env| self.outgoing(env, &sources)).collect();
        let prepared: Vec<Vec<Outgoing>> = futures::stream::iter(preparing).buffered(at_once).try_collect().await?;
        let mut queues: BTreeMap<String, Vec<Outgoing>> = BTreeMap::new();
        for out in self.claim(prepared.into_iter().flatten().collect()).await? {
            let key = match out.invitation {
                Some(id) => id.0.to_string(),
                None => format!("{}.{}", out.event_id, out.kind),
            };
            queues.entry(key).or_default().push(out);
        }
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel::<(Finished, Ack)>();
        // Each queue holds a sender, so the recorder stops once the last
        // queue is done.
        let queues: Vec<_> = queues.into_values().map(|queue| (queue, done.clone())).collect();
        drop(done);
        let sending = futures::stream::iter(queues)
            .map(|(queue, done)| {
                async move {
                    for out in queue {
                        let outcome = self.send(&out).await?;
                        let (ack, acked) = tokio::sync::oneshot::channel();
                        let finished =
                            Finished { event_id: out.event_id, kind: out.kind, invitation: out.invitation, outcome };
                        if done.send((finished, ack)).is_err() || acked.await.is_err() {
                            // The recorder stopped on an error, which the batch reports.
                            return Ok(());
                        }
                    }
                    Ok::<(), WorkerError>(())
                }
            })
            .buffer_unordered(at_once)
            .try_collect::<Vec<()>>();
        // Owns the receiver, so a recorder stopped by an error closes the
        // channel and every sender waiting on it stops too.
        let recording = async move {
            while let Some(first) = finished.recv().await {
                let mut group = vec![first];
                while let Ok(more) = finished.try_recv() {
                    group.push(more);
                }
                let (outcomes, acks): (Vec<Finished>, Vec<Ack>) = group.into_iter().unzip();
                self.record_outcomes(outcomes).await?;
                for ack in acks {
                    let _ = ack.send(());
                }
            }
            Ok::<(), WorkerError>(())
        };
        let (sent, recorded) = tokio::join!(sending, recording);
        recorded?;
        sent?;
        self.feed.commit().await?;
        Ok(batch.len())
    }

    /// What the batch's invitation emails are made from, read once per
    /// batch (see [`Sources`]).
    async fn sources(&self, batch: &[Envelope]) -> Result<Sources> {
        let ids: Vec<InvitationId> = batch
            .iter()
            .filter_map(|env| match &env.event {
                Event::Invitation(
                    id,
                    InvitationEvent::InvitationSent { .. }
                    | InvitationEvent::InvitationResent { .. }
                    | InvitationEvent::InvitationReminded { .. },
                ) => Some(*id),
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return Ok(Sources::default());
        }
        let invitations = self.admit.invitation_snapshots(&ids).await?;
        let mut accounts = HashMap::new();
        for account_id in invitations.values().map(|inv| inv.account_id).collect::<HashSet<_>>() {
            accounts.insert(account_id, self.admit.account_snapshot(account_id).await?);
        }
        let inviters: HashSet<Uuid> =
            invitations.values().filter_map(|inv| inv.invited_by.user()).map(|u| u.0).collect();
        let inviter_names = self.user_names(inviters).await?;
        Ok(Sources { invitations, accounts, inviter_names })
    }

    /// The names of `users` (one statement); a user without a row or a
    /// name is missing.
    async fn user_names(&self, users: HashSet<Uuid>) -> Result<HashMap<UserId, String>> {
        if users.is_empty() {
            return Ok(HashMap::new());
        }
        const SELECT: &str = "SELECT user_id, name FROM users WHERE name IS NOT NULL AND user_id";
        let rows: Vec<(Uuid, String)> = match &self.admit.db {
            Database::Postgres(p) => {
                let users: Vec<Uuid> = users.into_iter().collect();
                sqlx::query_as(&format!("{SELECT} = ANY($1)")).bind(&users).fetch_all(p).await?
            }
            Database::Sqlite { reader, .. } => {
                ids_in(&format!("{SELECT} IN"), users).build_query_as().persistent(false).fetch_all(reader).await?
            }
        };
        Ok(rows.into_iter().map(|(id, name)| (UserId(id), name)).collect())
    }

    async fn outgoing(&self, env: &Envelope, sources: &Sources) -> Result<Vec<Outgoing>> {
        let mail = |id: &InvitationId, kind, copy_to| self.invitation_mail(env.event_id, *id, sources, kind, copy_to);
        Ok(match &env.event {
            Event::Invitation(id, InvitationEvent::InvitationSent { .. }) => {
                mail(id, MailKind::Invitation, None).await?
            }
            Event::Invitation(id, InvitationEvent::InvitationResent { resent_by, send_copy_to_me, .. }) => {
                let copy_to = if *send_copy_to_me { resent_by.user() } else { None };
                mail(id, MailKind::Invitation, copy_to).await?
            }
            Event::Invitation(id, InvitationEvent::InvitationReminded { .. }) => {
                mail(id, MailKind::Reminder, None).await?
            }
            Event::User(_, UserEvent::UserRegistered { personal, .. }) => match personal.email() {
                Some(email) => vec![Outgoing {
                    event_id: env.event_id,
                    kind: "welcome".into(),
                    invitation: None,
                    to: email.to_string(),
                    letter: self.welcome(personal.name().map(|n| n.to_string())),
                }],
                None => vec![],
            },
            Event::Account(account, AccountEvent::MembershipCancelled { user_id }) => {
                self.departure_notices(env.event_id, *account, *user_id).await?
            }
            Event::Account(account, AccountEvent::InvitationRenewalRequested { invitation_id, invited_by }) => {
                self.renewal_request(env.event_id, *account, *invitation_id, *invited_by).await?
            }
            _ => vec![],
        })
    }

    /// One short notice (`<kind>:<user>`) to each of `users` who has an email.
    async fn notices(
        &self,
        event_id: Uuid,
        kind: &str,
        users: Vec<UserId>,
        subject: String,
        text: String,
    ) -> Result<Vec<Outgoing>> {
        let html = format!("<!doctype html><html><body><p>{}</p></body></html>", html_escape(&text));
        let mut out = Vec::new();
        for user in users {
            if let (_, Some(email)) = self.user_name_and_email(user).await? {
                let letter = Letter { subject: subject.clone(), text: text.clone(), html: html.clone() };
                out.push(Outgoing { event_id, kind: format!("{kind}:{user}"), invitation: None, to: email, letter });
            }
        }
        Ok(out)
    }

    /// The account's admins: active members who manage members.
    fn admins(account: &admit_domain::account::Account) -> Vec<UserId> {
        account
            .members
            .iter()
            .filter(|(_, m)| {
                m.status == MemberStatus::Active
                    && account.roles.permissions_of(&m.access).contains(&Permission::MembersManage)
            })
            .map(|(u, _)| *u)
            .collect()
    }

    /// Tells the account's admins that someone cancelled their own access.
    async fn departure_notices(&self, event_id: Uuid, account_id: AccountId, leaver: UserId) -> Result<Vec<Outgoing>> {
        let account = self.admit.account_snapshot(account_id).await?;
        let (leaver_name, leaver_email) = self.user_name_and_email(leaver).await?;
        let who = leaver_name.or(leaver_email).unwrap_or_else(|| "A member".into());
        let admins = Self::admins(&account).into_iter().filter(|u| *u != leaver).collect();
        let subject = format!("{who} left {} ({})", account.name, account.customer_number);
        let text = format!(
            "{who} cancelled their access to {} (customer number {}).\n",
            account.name, account.customer_number
        );
        self.notices(event_id, "left", admins, subject, text).await
    }

    /// Tells the inviter (when still an active member; otherwise the
    /// account's admins) that an invitee whose link expired asks for a new
    /// invitation.
    async fn renewal_request(
        &self,
        event_id: Uuid,
        account_id: AccountId,
        id: InvitationId,
        invited_by: Actor,
    ) -> Result<Vec<Outgoing>> {
        let account = self.admit.account_snapshot(account_id).await?;
        let inv = self.admit.invitation_snapshot(id).await?;
        let Some(invitee) = inv.personal.email().map(|e| e.to_string()) else { return Ok(vec![]) };
        let inviter =
            invited_by.user().filter(|u| account.members.get(u).is_some_and(|m| m.status == MemberStatus::Active));
        let to = match inviter {
            Some(u) => vec![u],
            None => Self::admins(&account),
        };
        let subject = format!("{invitee} asks for a new invitation to {} ({})", account.name, account.customer_number);
        let text = format!(
            "The invitation of {invitee} to {} (customer number {}) expired on {}. They asked for a new one: \
             resend it from the account's invitations if they should still join.\n",
            account.name,
            account.customer_number,
            inv.expires_at.format("%Y-%m-%d %H:%M UTC")
        );
        self.notices(event_id, "renewal", to, subject, text).await
    }

    /// The invitation (or reminder) email for the invitation's current
    /// link, in the account's own template when it has one; nothing when
    /// the invitation is no longer pending (the link would not work).
    /// `sources` holds what the batch read (what it lacks is read here).
    async fn invitation_mail(
        &self,
        event_id: Uuid,
        id: InvitationId,
        sources: &Sources,
        kind: MailKind,
        copy_to: Option<UserId>,
    ) -> Result<Vec<Outgoing>> {
        let inv = match sources.invitations.get(&id) {
            Some(inv) => inv.clone(),
            None => self.admit.invitation_snapshot(id).await?,
        };
        let Some(to) = inv.personal.email().map(|e| e.to_string()) else {
            return Ok(vec![]);
        };
        if inv.status != InvitationStatus::Pending {
            return Ok(vec![]);
        }
        let account = match sources.accounts.get(&inv.account_id) {
            Some(account) => account.clone(),
            None => self.admit.account_snapshot(inv.account_id).await?,
        };
        let inviter = match inv.invited_by {
            Actor::User(u) if sources.invitations.contains_key(&id) => sources.inviter_names.get(&u).cloned(),
            Actor::User(u) => self.user_name_and_email(u).await?.0,
            _ => None,
        }
        .unwrap_or_else(|| format!("An administrator of {}", account.name));
        let token = InvitationToken::issue(&self.admit.secrets.link, id.0, &inv.link_nonce);
        let roles: Vec<String> = inv.access.roles.iter().map(|r| r.to_string()).collect();
        let values: BTreeMap<&str, String> = [
            ("account_name", account.name.to_string()),
            ("customer_number", account.customer_number.to_string()),
            ("inviter", inviter),
            ("invitee_name", inv.personal.name().map(|n| n.to_string()).unwrap_or_default()),
            ("roles", if roles.is_empty() { "no role yet".to_string() } else { roles.join(", ") }),
            ("expires_at", inv.expires_at.format("%Y-%m-%d %H:%M UTC").to_string()),
            ("accept_url", format!("{}/invite/{}", self.config.public_url.trim_end_matches('/'), token.as_str())),
        ]
        .into();
        let template = account.settings.mail_templates.get(&kind).unwrap_or_else(|| standard_template(kind));
        let text = template.text(&values);
        let html = template.html(&values, html_escape).unwrap_or_else(|| paragraphs(&text));
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\">",
            html_escape(&format!(
                "{}/v1/invitations/{id}/pixel.gif?sig={}",
                self.config.public_url.trim_end_matches('/'),
                self.admit.pixel_signature(id)
            ))
        );
        let html = match html.rfind("</body>") {
            Some(at) => format!("{}{pixel}{}", &html[..at], &html[at..]),
            None => format!("{html}{pixel}"),
        };
        let letter = Letter { subject: template.subject(&values), text, html };
        let name = match kind {
            MailKind::Invitation => "invitation",
            MailKind::Reminder => "reminder",
        };
        let mut out = vec![Outgoing { event_id, kind: name.into(), invitation: Some(id), to, letter: letter.clone() }];
        if let Some(user) = copy_to {
            if let (_, Some(email)) = self.user_name_and_email(user).await? {
                let copy = Letter { subject: format!("Copy: {}", letter.subject), ..letter };
                out.push(Outgoing { event_id, kind: "copy".into(), invitation: None, to: email, letter: copy });
            }
        }
        Ok(out)
    }

    fn welcome(&self, name: Option<String>) -> Letter {
        let hello = name.map(|n| format!("Hello {n},")).unwrap_or_else(|| "Hello,".into());
        let app = self.config.app_url.clone().unwrap_or_else(|| self.config.public_url.clone());
        Letter {
            subject: "Welcome to Admit".into(),
            text: format!("{hello}\n\nyour user is ready. Sign in at {app}\n"),
            html: format!(
                "<!doctype html><html><body><p>{}</p><p>Your user is ready. <a href=\"{}\">Sign in</a>.</p></body></html>",
                html_escape(&hello),
                html_escape(&app)
            ),
        }
    }

    async fn user_name_and_email(&self, user: UserId) -> Result<(Option<String>, Option<String>)> {
        let row: Option<(Option<String>, Option<String>)> = on_db!(&self.admit.db, p => sqlx::query_as(
            "SELECT name, email FROM users WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_optional(p)
        .await?);
        Ok(row.unwrap_or((None, None)))
    }

    /// Claims the batch's emails in `mail_sends` (one statement). Returns
    /// the emails to send, each once: those claimed now and those a run
    /// that stopped (a crash) claimed without finishing; an email already
    /// `sent` or `failed` is never sent again.
    async fn claim(&self, outgoing: Vec<Outgoing>) -> Result<Vec<Outgoing>> {
        let mut seen = HashSet::new();
        let outgoing: Vec<Outgoing> =
            outgoing.into_iter().filter(|o| seen.insert((o.event_id, o.kind.clone()))).collect();
        if outgoing.is_empty() {
            return Ok(outgoing);
        }
        let events: BTreeSet<Uuid> = outgoing.iter().map(|o| o.event_id).collect();
        // PostgreSQL: the ids as one array, so that it is one prepared
        // statement whatever the batch's size (a list of hundreds of
        // parameters was parsed and planned again for each batch). SQLite
        // has no arrays.
        let rows: Vec<(Uuid, String, String)> = match &self.admit.db {
            Database::Postgres(p) => {
                let ids: Vec<Uuid> = events.iter().copied().collect();
                sqlx::query_as("SELECT event_id, kind, status FROM mail_sends WHERE event_id = ANY($1)")
                    .bind(ids)
                    .fetch_all(p)
                    .await?
            }
            Database::Sqlite { reader, .. } => {
                ids_in("SELECT event_id, kind, status FROM mail_sends WHERE event_id IN", events)
                    .build_query_as()
                    .fetch_all(reader)
                    .await?
            }
        };
        let status: HashMap<(Uuid, String), String> = rows.into_iter().map(|(e, k, s)| ((e, k), s)).collect();
        let mut to_send = Vec::with_capacity(outgoing.len());
        // Places in `to_send` of the emails nobody claimed yet.
        let mut fresh = Vec::new();
        for out in outgoing {
            match status.get(&(out.event_id, out.kind.clone())).map(String::as_str) {
                Some("sent") | Some("failed") => {}
                Some(_) => to_send.push(out),
                None => {
                    fresh.push(to_send.len());
                    to_send.push(out);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(to_send);
        }
        let now = Utc::now();
        on_db_write!(&self.admit.db, p => {
            let mut b = sqlx::QueryBuilder::new(
                "INSERT INTO mail_sends (event_id, kind, invitation_id, message_id, status, attempts, claimed_at) ",
            );
            b.push_values(fresh.iter().map(|&i| &to_send[i]), |mut row, out| {
                row.push_bind(out.event_id)
                    .push_bind(out.kind.clone())
                    .push_bind(out.invitation.map(|i| i.0))
                    .push_bind(message_id(out))
                    .push_bind("sending")
                    .push_bind(0i32)
                    .push_bind(now);
            });
            b.push(" ON CONFLICT (event_id, kind) DO NOTHING");
            b.build().execute(p).await.map(|_| ())?
        });
        Ok(to_send)
    }

    /// Sends one claimed email, with retries (each failed attempt noted on
    /// its claim); what became of it.
    async fn send(&self, out: &Outgoing) -> Result<Outcome> {
        let msg = match message(&self.config.sender, &out.to, &out.letter, &message_id(out)) {
            Ok(m) => m,
            Err(e) => return Ok(Outcome::Failed(e)),
        };
        let mut wait = self.config.backoff;
        let mut last_error = String::new();
        for attempt in 1..=self.config.attempts.max(1) {
            // Retries open a new connection: an attempt after a failure starts clean.
            match self.config.transport.send(msg.clone(), attempt > 1).await {
                Ok(answer) => return Ok(Outcome::Sent(answer)),
                Err(e) => {
                    tracing::warn!(attempt, error = %e.reason, permanent = e.permanent, kind = %out.kind, "sending failed");
                    last_error = e.reason;
                    self.note_attempt(out, attempt, &last_error).await?;
                    if e.permanent {
                        break;
                    }
                    if attempt < self.config.attempts {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(self.config.max_backoff);
                    }
                }
            }
        }
        Ok(Outcome::Failed(last_error))
    }

    async fn note_attempt(&self, out: &Outgoing, attempt: u32, error: &str) -> Result<()> {
        on_db_write!(&self.admit.db, p => sqlx::query(
            "UPDATE mail_sends SET attempts = $1, last_error = $2 WHERE event_id = $3 AND kind = $4",
        )
        .bind(attempt as i32)
        .bind(error)
        .bind(out.event_id)
        .bind(&out.kind)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    /// Records what became of `outcomes` in one transaction: each claim
    /// still `sending` turns `sent` or `failed`, and for invitation emails
    /// `processed` and then `delivered` (with the server's answer) or
    /// `failed` (with the reason) go with it, so each outcome is recorded
    /// once, however often a crash made the mailer send the email.
    async fn record_outcomes(&self, outcomes: Vec<Finished>) -> Result<()> {
        let outcomes = Arc::new(outcomes);
        self.admit
            .record_deliveries(move |tx| {
                let outcomes = outcomes.clone();
                Box::pin(async move {
                    let now = Utc::now();
                    let finished = finish_claims(tx, &outcomes, now).await?;
                    let mut facts = Vec::new();
                    for (done, finished) in outcomes.iter().zip(finished) {
                        if let (true, Some(inv)) = (finished, done.invitation) {
                            let (state, detail) = match &done.outcome {
                                Outcome::Sent(answer) => (DeliveryState::Delivered, answer.clone()),
                                Outcome::Failed(reason) => (DeliveryState::Failed, reason.clone()),
                            };
                            facts.push((inv, DeliveryState::Processed, None));
                            facts.push((inv, state, Some(detail)));
                        }
                    }
                    Ok(facts)
                })
            })
            .await?;
        Ok(())
    }
}

/// Turns the claims of `outcomes` that are still `sending` into `sent` or
/// `failed`; for each outcome, whether its claim was still `sending` (so
/// its delivery facts are recorded now, and only once). One statement on
/// PostgreSQL, one per claim on SQLite (no round trips to save there).
async fn finish_claims(
    tx: &mut admit_ledger::Tx,
    outcomes: &[Finished],
    now: chrono::DateTime<Utc>,
) -> std::result::Result<Vec<bool>, admit_api::Error> {
    let rows: Vec<(&'static str, Option<&str>)> = outcomes
        .iter()
        .map(|done| match &done.outcome {
            Outcome::Sent(_) => ("sent", None),
            Outcome::Failed(reason) => ("failed", Some(reason.as_str())),
        })
        .collect();
    if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
        let events: Vec<Uuid> = outcomes.iter().map(|d| d.event_id).collect();
        let kinds: Vec<&str> = outcomes.iter().map(|d| d.kind.as_str()).collect();
        let (statuses, errors): (Vec<&str>, Vec<Option<&str>>) = rows.into_iter().unzip();
        let finished: Vec<(Uuid, String)> = sqlx::query_as(
            "UPDATE mail_sends AS m SET status = u.status, finished_at = $1, last_error = COALESCE(u.error, m.last_error) \
             FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[]) AS u(event_id, kind, status, error) \
             WHERE m.event_id = u.event_id AND m.kind = u.kind AND m.status = 'sending' RETURNING m.event_id, m.kind",
        )
        .bind(now)
        .bind(&events)
        .bind(&kinds)
        .bind(&statuses)
        .bind(&errors)
        .fetch_all(&mut **t)
        .await?;
        let finished: HashSet<(Uuid, String)> = finished.into_iter().collect();
        return Ok(outcomes.iter().map(|d| finished.contains(&(d.event_id, d.kind.clone()))).collect());
    }
    let mut finished = Vec::with_capacity(outcomes.len());
    for (done, (status, error)) in outcomes.iter().zip(rows) {
        let updated = on_tx!(tx, c => sqlx::query(
            "UPDATE mail_sends SET status = $1, finished_at = $2, last_error = COALESCE($3, last_error) \
             WHERE event_id = $4 AND kind = $5 AND status = 'sending'",
        )
        .bind(status)
        .bind(now)
        .bind(error)
        .bind(done.event_id)
        .bind(&done.kind)
        .execute(&mut *c)
        .await?
        .rows_affected());
        finished.push(updated == 1);
    }
    Ok(finished)
}

/// The Message-ID of an email: derived from its triggering event and
/// kind, so every resend of it carries the same one.
fn message_id(out: &Outgoing) -> String {
    format!("<{}.{}@admit>", out.event_id, out.kind)
}

/// Admit's own invitation and reminder emails, in the template language
/// accounts use for theirs.
fn standard_template(kind: MailKind) -> &'static MailTemplate {
    static INVITATION: OnceLock<MailTemplate> = OnceLock::new();
    static REMINDER: OnceLock<MailTemplate> = OnceLock::new();
    let (cell, subject, opening) = match kind {
        MailKind::Invitation => {
            (&INVITATION, "{{inviter}} invited you to {{account_name}} ({{customer_number}})", "Hello,")
        }
        MailKind::Reminder => (
            &REMINDER,
            "Reminder: {{inviter}} invited you to {{account_name}} ({{customer_number}})",
            "Hello, a reminder: your invitation is still waiting.",
        ),
    };
    cell.get_or_init(|| {
        let text = format!(
            "{opening}\n\n{{{{inviter}}}} invited you to join {{{{account_name}}}} (customer number {{{{customer_number}}}}) as: {{{{roles}}}}.\n\n\
             Accept the invitation: {{{{accept_url}}}}\n\nThe link works until {{{{expires_at}}}}. If you did not expect this, ignore this email.\n"
        );
        let html = format!(
            "<!doctype html><html><body><p>{opening}</p><p>{{{{inviter}}}} invited you to join <strong>{{{{account_name}}}}</strong> \
             (customer number {{{{customer_number}}}}) as: {{{{roles}}}}.</p><p><a href=\"{{{{accept_url}}}}\">Accept the invitation</a></p>\
             <p>The link works until {{{{expires_at}}}}. If you did not expect this, ignore this email.</p></body></html>"
        );
        MailTemplate::parse(subject, &text, Some(&html)).expect("the standard templates are valid")
    })
}

/// A text body as HTML paragraphs (escaped), for templates without HTML.
fn paragraphs(text: &str) -> String {
    let body: String = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", html_escape(p.trim())))
        .collect();
    format!("<!doctype html><html><body>{body}</body></html>")
}
