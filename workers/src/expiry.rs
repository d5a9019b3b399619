//! The expiry worker: keeps the deadline of every pending invitation from
//! the events it consumes (in `expiry_deadlines`, so a restart loses none)
//! and appends `InvitationExpired` once a deadline passes. An acceptance
//! racing it is settled by the invitation stream's version: exactly one of
//! the two commits. The accept path refuses lapsed links by itself anyway.

use std::time::Duration;

use admit_api::Admit;
use admit_domain::ids::InvitationId;
use admit_domain::invitation::InvitationEvent;
use admit_domain::Event;
use admit_ledger::{on_db, on_db_write};
use uuid::Uuid;

use crate::feed::LogFeed;
use crate::Result;

/// How often the expiry worker looks.
#[derive(Debug, Clone)]
pub struct ExpiryConfig {
    /// Time between checks for due deadlines (an invitation expires at most
    /// this long after its deadline).
    pub tick: Duration,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig { tick: Duration::from_secs(1) }
    }
}

/// The expiry worker.
#[derive(Debug, Clone)]
pub struct Expiry {
    admit: Admit,
    config: ExpiryConfig,
    feed: LogFeed,
}

impl Expiry {
    /// The worker over `admit`'s database.
    pub fn new(admit: Admit, config: ExpiryConfig) -> Expiry {
        let feed = LogFeed::new(admit.db.clone(), "expiry");
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

    /// Takes in the new events, then expires what is due. Returns how many
    /// invitations it expired.
    pub async fn run_once(&self) -> Result<usize> {
        self.ingest().await?;
        self.expire_due().await
    }

    async fn ingest(&self) -> Result<()> {
        let mut cursor = self.feed.checkpoint().await?;
        loop {
            let batch = self.feed.next(cursor, 500).await?;
            let Some((last, _)) = batch.last() else { return Ok(()) };
            for (_, env) in &batch {
                if let Event::Invitation(id, e) = &env.event {
                    match e {
                        InvitationEvent::InvitationSent { expires_at, .. }
                        | InvitationEvent::InvitationUpdated { expires_at, .. }
                        | InvitationEvent::InvitationResent { expires_at, .. } => self.keep(id.0, *expires_at).await?,
                        InvitationEvent::InvitationAccepted { .. }
                        | InvitationEvent::InvitationDeclined {}
                        | InvitationEvent::InvitationExpired {}
                        | InvitationEvent::InvitationRevoked { .. } => self.forget(id.0).await?,
                        InvitationEvent::InvitationDeliveryRecorded { .. } => {}
                    }
                }
            }
            cursor = *last;
            self.feed.save(cursor).await?;
        }
    }

    async fn keep(&self, id: Uuid, expires_at: chrono::DateTime<chrono::Utc>) -> Result<()> {
        on_db_write!(&self.admit.db, p => sqlx::query(
            "INSERT INTO expiry_deadlines (invitation_id, expires_at) VALUES ($1, $2) \
             ON CONFLICT (invitation_id) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(expires_at)
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

    async fn expire_due(&self) -> Result<usize> {
        let due: Vec<(Uuid,)> = on_db!(&self.admit.db, p => sqlx::query_as(
            "SELECT invitation_id FROM expiry_deadlines WHERE expires_at <= $1 ORDER BY expires_at LIMIT 1000",
        )
        .bind(self.admit.now())
        .fetch_all(p)
        .await?);
        let mut expired = 0;
        for (id,) in due {
            // Lost races (it was accepted or revoked meanwhile) expire nothing.
            if self.admit.expire(InvitationId(id)).await? {
                expired += 1;
            }
            self.forget(id).await?;
        }
        Ok(expired)
    }
}
