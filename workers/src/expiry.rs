//! The expiry worker: keeps the deadline of every pending invitation from
//! the events it consumes (in `expiry_deadlines`, so a restart loses none)
//! and appends `InvitationExpired` once a deadline passes; it also appends
//! `InvitationReminded` when a pending link's reminder is due (the mailer
//! sends it). An acceptance
//! racing it is settled by the invitation stream's version: exactly one of
//! the two commits. The accept path refuses lapsed links by itself anyway.

use std::time::Duration;

use admit_api::Admit;
use admit_domain::ids::InvitationId;
use admit_domain::invitation::InvitationEvent;
use admit_domain::Event;
use admit_ledger::{on_db, on_db_write};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::feed::Feed;
use crate::Result;

/// When pending invitees get their one reminder.
#[derive(Debug, Clone, Copy)]
pub struct ReminderPolicy {
    /// How long before the deadline the reminder is due.
    pub before_deadline: chrono::Duration,
    /// Only links that live longer than this get a reminder.
    pub longer_than: chrono::Duration,
}

impl Default for ReminderPolicy {
    /// 24 hours before the deadline, for links that live longer than 48 hours.
    fn default() -> Self {
        ReminderPolicy { before_deadline: chrono::Duration::hours(24), longer_than: chrono::Duration::hours(48) }
    }
}

impl ReminderPolicy {
    /// When a link issued at `issued` that dies at `deadline` is reminded.
    fn remind_at(&self, issued: DateTime<Utc>, deadline: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Whole seconds: the log keeps times to the microsecond, deadlines finer.
        ((deadline - issued).num_seconds() > self.longer_than.num_seconds()).then(|| deadline - self.before_deadline)
    }
}

/// How often the expiry worker looks, and when it reminds.
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    /// Time between checks for due deadlines (an invitation expires at most
    /// this long after its deadline).
    pub tick: Duration,
    /// Reminders (None: never remind).
    pub reminders: Option<ReminderPolicy>,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig { tick: Duration::from_secs(1), reminders: Some(ReminderPolicy::default()) }
    }
}

/// The expiry worker (it also sends the reminders due before deadlines).
#[derive(Debug)]
pub struct Expiry {
    admit: Admit,
    config: ExpiryConfig,
    feed: Feed,
}

impl Expiry {
    /// The worker over `admit`'s database, tailing its log.
    pub fn new(admit: Admit, config: ExpiryConfig) -> Expiry {
        let feed = Feed::log(admit.db.clone(), "expiry");
        Expiry::with_feed(admit, config, feed)
    }

    /// The worker consuming `feed` (the topic, in a Kafka deployment).
    pub fn with_feed(admit: Admit, config: ExpiryConfig, feed: Feed) -> Expiry {
        Expiry { admit, config, feed }
    }

    /// Works until `shutdown` turns true, one round per tick.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        // A round reports 0 so the next one waits a full tick.
        crate::feed::poll_until_shutdown("expiry", self.config.tick, shutdown, || async {
            self.run_once().await.map(|_| 0)
        })
        .await
    }

    /// Takes in the new events, then expires and reminds what is due.
    /// Returns how many invitations it expired.
    pub async fn run_once(&self) -> Result<usize> {
        self.ingest().await?;
        self.remind_due().await?;
        self.expire_due().await
    }

    async fn ingest(&self) -> Result<()> {
        loop {
            let batch = self.feed.poll(500).await?;
            if batch.is_empty() {
                return Ok(());
            }
            for env in &batch {
                if let Event::Invitation(id, e) = &env.event {
                    match e {
                        // A new deadline counts as a new link for the reminder.
                        InvitationEvent::InvitationSent { expires_at, .. }
                        | InvitationEvent::InvitationUpdated { expires_at, .. }
                        | InvitationEvent::InvitationResent { expires_at, .. } => {
                            self.keep(id.0, *expires_at, env.recorded_at).await?
                        }
                        InvitationEvent::InvitationReminded { .. } => self.reminded(id.0).await?,
                        InvitationEvent::InvitationAccepted { .. }
                        | InvitationEvent::InvitationDeclined {}
                        | InvitationEvent::InvitationExpired {}
                        | InvitationEvent::InvitationRevoked { .. } => self.forget(id.0).await?,
                        InvitationEvent::InvitationDeliveryRecorded { .. } => {}
                    }
                }
            }
            self.feed.commit().await?;
        }
    }

    /// Stores a link's deadline and its reminder time.
    async fn keep(&self, id: Uuid, expires_at: DateTime<Utc>, issued: DateTime<Utc>) -> Result<()> {
        let remind_at = self.config.reminders.and_then(|r| r.remind_at(issued, expires_at));
        on_db_write!(&self.admit.db, p => sqlx::query(
            "INSERT INTO expiry_deadlines (invitation_id, expires_at, remind_at) VALUES ($1, $2, $3) \
             ON CONFLICT (invitation_id) DO UPDATE SET expires_at = excluded.expires_at, remind_at = excluded.remind_at",
        )
        .bind(id)
        .bind(expires_at)
        .bind(remind_at)
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }

    async fn reminded(&self, id: Uuid) -> Result<()> {
        on_db_write!(&self.admit.db, p => sqlx::query("UPDATE expiry_deadlines SET remind_at = NULL WHERE invitation_id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())?);
        Ok(())
    }

    async fn forget(&self, id: Uuid) -> Result<()> {
        on_db_write!(&self.admit.db, p => sqlx::query("DELETE FROM expiry_deadlines WHERE invitation_id = $1")
            .bind(id)
            .execute(p)
            .await
            .map(|_| ())?);
        Ok(())
    }

    /// Invitations whose `column` (`remind_at` or `expires_at`) has passed.
    async fn due(&self, column: &str) -> Result<Vec<Uuid>> {
        let sql = format!("SELECT invitation_id FROM expiry_deadlines WHERE {column} <= $1 ORDER BY {column} LIMIT 1000");
        let due: Vec<(Uuid,)> = on_db!(&self.admit.db, p => sqlx::query_as(&sql).bind(self.admit.now()).fetch_all(p).await?);
        Ok(due.into_iter().map(|(id,)| id).collect())
    }

    async fn remind_due(&self) -> Result<usize> {
        let mut reminded = 0;
        for id in self.due("remind_at").await? {
            // Closed, lapsed or already reminded: nothing is recorded.
            if self.admit.remind(InvitationId(id)).await? {
                reminded += 1;
            }
            self.reminded(id).await?;
        }
        Ok(reminded)
    }

    async fn expire_due(&self) -> Result<usize> {
        let mut expired = 0;
        for id in self.due("expires_at").await? {
            // Lost races (it was accepted or revoked meanwhile) expire nothing.
            if self.admit.expire(InvitationId(id)).await? {
                expired += 1;
            }
            self.forget(id).await?;
        }
        Ok(expired)
    }
}
