//! The analytics worker: counts, per account and UTC day, how many
//! invitations were sent, delivered, opened, clicked, accepted, expired and
//! revoked, and how long each acceptance took. `GET
//! /v1/accounts/{account}/analytics/funnel` reads what it built.
//!
//! Each batch is counted in one transaction together with the ids of its
//! events (`analytics_seen`), so a redelivered event is never counted twice.
//! Delivered, opened and clicked count each invitation once (the first
//! time), on the day it happened.

use std::time::Duration;

use admit_domain::invitation::{DeliveryState, InvitationEvent};
use admit_domain::Event;
use admit_ledger::{on_tx, Database, Tx};
use admit_projections::Envelope;
use uuid::Uuid;

use crate::feed::Feed;
use crate::Result;

/// The analytics worker.
#[derive(Debug)]
pub struct Analytics {
    db: Database,
    feed: Feed,
    poll: Duration,
}

impl Analytics {
    /// The worker over `db`, tailing its log.
    pub fn new(db: Database, poll: Duration) -> Analytics {
        let feed = Feed::log(db.clone(), "analytics");
        Analytics::with_feed(db, feed, poll)
    }

    /// The worker consuming `feed` (the topic, in a Kafka deployment).
    pub fn with_feed(db: Database, feed: Feed, poll: Duration) -> Analytics {
        Analytics { db, feed, poll }
    }

    /// Counts until `shutdown` turns true.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        crate::feed::poll_until_shutdown("analytics", self.poll, shutdown, || self.run_once()).await
    }

    /// Counts the events available now; returns how many it took in.
    pub async fn run_once(&self) -> Result<usize> {
        let batch = self.feed.poll(500).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let mut tx = self.db.begin().await?;
        for env in &batch {
            count(&mut tx, env).await?;
        }
        tx.commit().await?;
        self.feed.commit().await?;
        Ok(batch.len())
    }
}

/// The funnel column an event adds to, if any.
fn step(event: &InvitationEvent) -> Option<&'static str> {
    Some(match event {
        InvitationEvent::InvitationSent { .. } => "invited",
        InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Delivered, .. } => "delivered",
        InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Opened, .. } => "opened",
        InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Clicked, .. } => "clicked",
        InvitationEvent::InvitationAccepted { .. } => "accepted",
        InvitationEvent::InvitationExpired {} => "expired",
        InvitationEvent::InvitationRevoked { .. } => "revoked",
        _ => return None,
    })
}

async fn count(tx: &mut Tx, env: &Envelope) -> Result<()> {
    let Event::Invitation(id, event) = &env.event else {
        return Ok(());
    };
    let Some(column) = step(event) else {
        return Ok(());
    };
    let first_time = on_tx!(tx, c => sqlx::query("INSERT INTO analytics_seen (event_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(env.event_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    if first_time == 0 {
        return Ok(());
    }
    let id = id.0;
    let at = env.recorded_at;
    let day = at.format("%Y-%m-%d").to_string();
    if let InvitationEvent::InvitationSent { account_id, .. } = event {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO analytics_invitations (invitation_id, account_id, sent_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(account_id.0)
        .bind(at)
        .execute(&mut *c)
        .await
        .map(|_| ())?);
    }
    let known: Option<(Uuid, chrono::DateTime<chrono::Utc>)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT account_id, sent_at FROM analytics_invitations WHERE invitation_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await?);
    // An invitation sent before analytics existed is not in the funnel.
    let Some((account, sent_at)) = known else {
        return Ok(());
    };
    if matches!(column, "delivered" | "opened" | "clicked") {
        let sql = format!("UPDATE analytics_invitations SET {column} = 1 WHERE invitation_id = $1 AND {column} = 0");
        let changed = on_tx!(tx, c => sqlx::query(&sql).bind(id).execute(&mut *c).await?.rows_affected());
        if changed == 0 {
            return Ok(());
        }
    }
    if column == "accepted" {
        on_tx!(tx, c => sqlx::query(
            "INSERT INTO analytics_acceptances (invitation_id, account_id, day, seconds_to_accept) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(account)
        .bind(&day)
        .bind((at - sent_at).num_seconds().max(0))
        .execute(&mut *c)
        .await
        .map(|_| ())?);
    }
    let sql = format!(
        "INSERT INTO analytics_daily (account_id, day, {column}) VALUES ($1, $2, 1) \
         ON CONFLICT (account_id, day) DO UPDATE SET {column} = analytics_daily.{column} + 1"
    );
    on_tx!(tx, c => sqlx::query(&sql).bind(account).bind(&day).execute(&mut *c).await.map(|_| ())?);
    Ok(())
}
