//! The analytics worker: counts, per account and UTC day, how many
//! invitations were sent, delivered, opened, clicked, accepted, expired and
//! revoked, and how long each acceptance took. `GET
//! /v1/accounts/{account}/analytics/funnel` reads what it built.
//!
//! Each batch is counted in one transaction together with the ids of its
//! events (`analytics_seen`), so a redelivered event is never counted twice.
//! Delivered, opened and clicked count each invitation once (the first
//! time), on the day it happened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use admit_domain::invitation::{DeliveryState, InvitationEvent};
use admit_domain::Event;
use admit_ledger::database::ids_in;
use admit_ledger::{on_tx, Conn, Database, Tx};
use admit_projections::Envelope;
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use uuid::Uuid;

use crate::feed::Feed;
use crate::Result;

/// The analytics worker.
#[derive(Debug)]
pub struct Analytics {
    db: Database,
    feed: Feed,
    poll: Duration,
    batch: usize,
}

/// Events counted per transaction by default.
const BATCH: usize = 500;

impl Analytics {
    /// The worker over `db`, tailing its log.
    pub fn new(db: Database, poll: Duration) -> Analytics {
        let feed = Feed::log(db.clone(), "analytics");
        Analytics::with_feed(db, feed, poll)
    }

    /// The worker consuming `feed` (the topic, in a Kafka deployment).
    pub fn with_feed(db: Database, feed: Feed, poll: Duration) -> Analytics {
        // Counting needs no email or name.
        Analytics { db, feed: feed.without_personal_data(), poll, batch: BATCH }
    }

    /// At most `events` events per batch (from 1 to the default 500, which
    /// keeps a batch's statements within SQLite's bound parameters): the
    /// tests count a day in one batch and a few events at a time, and
    /// compare.
    pub fn batch_size(mut self, events: usize) -> Analytics {
        self.batch = events.clamp(1, BATCH);
        self
    }

    /// Counts until `shutdown` turns true. A round that took a full batch
    /// runs again at once; any other waits `poll` (half a second in
    /// `serve`) before the next. Funnel counts need not be current to the
    /// millisecond, and a worker that polled again at once counted a
    /// handful of events per round under load, each round a log read, a
    /// transaction and a checkpoint: several statements per invitation
    /// taken from the writers on the same database. Waiting, a round
    /// counts what the last half second brought in one transaction.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        let full = self.batch;
        crate::feed::poll_until_shutdown("analytics", self.poll, shutdown, || async move {
            // 0 makes the next round wait.
            self.run_once().await.map(|n| if n >= full { n } else { 0 })
        })
        .await
    }

    /// Counts the events available now; returns how many it took in.
    pub async fn run_once(&self) -> Result<usize> {
        let batch = self.feed.poll(self.batch).await?;
        if batch.is_empty() {
            return Ok(0);
        }
        let steps: Vec<Step<'_>> = batch.iter().filter_map(Step::of).collect();
        if !steps.is_empty() {
            let mut tx = self.db.begin().await?;
            count(&mut tx, &steps).await?;
            tx.commit().await?;
        }
        self.feed.commit().await?;
        Ok(batch.len())
    }
}

/// The funnel's columns in `analytics_daily`, in the order of [`Tally`].
const COLUMNS: [&str; 7] = ["invited", "delivered", "opened", "clicked", "accepted", "expired", "revoked"];

/// The columns of `analytics_invitations` that count an invitation once.
const ONCE: [Column; 3] = [Column::Delivered, Column::Opened, Column::Clicked];

/// A funnel column, by its place in [`COLUMNS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    Invited = 0,
    Delivered = 1,
    Opened = 2,
    Clicked = 3,
    Accepted = 4,
    Expired = 5,
    Revoked = 6,
}

impl Column {
    /// The funnel column an event adds to, if any.
    fn of(event: &InvitationEvent) -> Option<Column> {
        Some(match event {
            InvitationEvent::InvitationSent { .. } => Column::Invited,
            InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Delivered, .. } => Column::Delivered,
            InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Opened, .. } => Column::Opened,
            InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Clicked, .. } => Column::Clicked,
            InvitationEvent::InvitationAccepted { .. } => Column::Accepted,
            InvitationEvent::InvitationExpired {} => Column::Expired,
            InvitationEvent::InvitationRevoked { .. } => Column::Revoked,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        COLUMNS[self as usize]
    }
}

/// An event the funnel counts.
#[derive(Debug)]
struct Step<'a> {
    env: &'a Envelope,
    invitation: Uuid,
    column: Column,
    /// The account, for a sent invitation.
    sent_to: Option<Uuid>,
}

impl<'a> Step<'a> {
    fn of(env: &'a Envelope) -> Option<Step<'a>> {
        let Event::Invitation(id, event) = &env.event else { return None };
        let sent_to = match event {
            InvitationEvent::InvitationSent { account_id, .. } => Some(account_id.0),
            _ => None,
        };
        Some(Step { env, invitation: id.0, column: Column::of(event)?, sent_to })
    }
}

/// What the funnel remembers of one invitation (`analytics_invitations`).
#[derive(Debug, Clone, Copy)]
struct Known {
    account: Uuid,
    sent_at: DateTime<Utc>,
    /// Delivered, opened, clicked: counted already.
    once: [bool; 3],
    /// Not in the table before this batch.
    new: bool,
}

/// One account's day: what the batch adds to each column.
type Tally = [i64; 7];

/// Counts a batch's steps in `tx`, in their order, with the rules of the
/// funnel: an event counts once (its id goes into `analytics_seen`), an
/// invitation sent before analytics existed is not in the funnel, and
/// delivered, opened and clicked count each invitation the first time.
///
/// The batch is counted in memory and written with one statement per
/// table: counted one by one, an invitation's sending and delivery cost
/// eight statements, a quarter of all the service ran for it. The
/// multi-row statements differ in length from batch to batch, so they are
/// not kept prepared (they would crowd the connection's statement cache).
async fn count(tx: &mut Tx, steps: &[Step<'_>]) -> Result<()> {
    let mut first_time = mark_seen(tx, steps).await?;
    let mut known = known(tx, steps).await?;
    let mut daily: BTreeMap<(Uuid, String), Tally> = BTreeMap::new();
    let mut once: [Vec<Uuid>; 3] = Default::default();
    let mut accepted: Vec<(Uuid, Uuid, String, i64)> = Vec::new();
    // Taken out of the set as counted: an event delivered twice in one
    // batch counts once too.
    for step in steps.iter().filter(|s| first_time.remove(&s.env.event_id)) {
        let at = step.env.recorded_at;
        if let Some(account) = step.sent_to {
            known.entry(step.invitation).or_insert(Known { account, sent_at: at, once: [false; 3], new: true });
        }
        // An invitation sent before analytics existed is not in the funnel.
        let Some(k) = known.get_mut(&step.invitation) else { continue };
        if let Some(i) = ONCE.iter().position(|c| *c == step.column) {
            if k.once[i] {
                continue;
            }
            k.once[i] = true;
            if !k.new {
                once[i].push(step.invitation);
            }
        }
        let day = at.format("%Y-%m-%d").to_string();
        if step.column == Column::Accepted && !accepted.iter().any(|a| a.0 == step.invitation) {
            accepted.push((step.invitation, k.account, day.clone(), (at - k.sent_at).num_seconds().max(0)));
        }
        daily.entry((k.account, day)).or_default()[step.column as usize] += 1;
    }
    let new: Vec<(&Uuid, &Known)> = known.iter().filter(|(_, k)| k.new).collect();
    if !new.is_empty() {
        on_tx!(tx, c => {
            let mut b = QueryBuilder::new("INSERT INTO analytics_invitations (invitation_id, account_id, sent_at, delivered, opened, clicked) ");
            b.push_values(&new, |mut row, (id, k)| {
                row.push_bind(**id).push_bind(k.account).push_bind(k.sent_at);
                for seen in k.once {
                    row.push_bind(i32::from(seen));
                }
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build().persistent(false).execute(&mut *c).await.map(|_| ())?
        });
    }
    for (column, ids) in ONCE.iter().zip(once) {
        if ids.is_empty() {
            continue;
        }
        let set = format!("UPDATE analytics_invitations SET {0} = 1 WHERE {0} = 0 AND invitation_id", column.name());
        tx.execute_for_ids(&set, ids).await?;
    }
    if !accepted.is_empty() {
        on_tx!(tx, c => {
            let mut b = QueryBuilder::new("INSERT INTO analytics_acceptances (invitation_id, account_id, day, seconds_to_accept) ");
            b.push_values(&accepted, |mut row, (id, account, day, seconds)| {
                row.push_bind(*id).push_bind(*account).push_bind(day.clone()).push_bind(*seconds);
            });
            b.push(" ON CONFLICT DO NOTHING");
            b.build().persistent(false).execute(&mut *c).await.map(|_| ())?
        });
    }
    if !daily.is_empty() {
        let added = COLUMNS.map(|c| format!("{c} = analytics_daily.{c} + excluded.{c}")).join(", ");
        on_tx!(tx, c => {
            let mut b = QueryBuilder::new(format!("INSERT INTO analytics_daily (account_id, day, {}) ", COLUMNS.join(", ")));
            b.push_values(&daily, |mut row, ((account, day), tally)| {
                row.push_bind(*account).push_bind(day.clone());
                for n in tally {
                    row.push_bind(*n);
                }
            });
            b.push(format!(" ON CONFLICT (account_id, day) DO UPDATE SET {added}"));
            b.build().persistent(false).execute(&mut *c).await.map(|_| ())?
        });
    }
    Ok(())
}

/// Records the steps' event ids as counted; returns the ids that were not
/// counted before (a redelivered event is counted once).
async fn mark_seen(tx: &mut Tx, steps: &[Step<'_>]) -> Result<HashSet<Uuid>> {
    let ids: Vec<Uuid> = steps.iter().map(|s| s.env.event_id).collect();
    let fresh: Vec<Uuid> = on_tx!(tx, c => {
        let mut b = QueryBuilder::new("INSERT INTO analytics_seen (event_id) ");
        b.push_values(&ids, |mut row, id| {
            row.push_bind(*id);
        });
        b.push(" ON CONFLICT DO NOTHING RETURNING event_id");
        b.build_query_scalar().persistent(false).fetch_all(&mut *c).await?
    });
    Ok(fresh.into_iter().collect())
}

/// What the funnel already holds of the steps' invitations. On
/// PostgreSQL the rows are locked until the batch commits, so that two
/// workers never both count an invitation's first delivery.
async fn known(tx: &mut Tx, steps: &[Step<'_>]) -> Result<HashMap<Uuid, Known>> {
    let mut ids: Vec<Uuid> = steps.iter().map(|s| s.invitation).collect();
    ids.sort_unstable();
    ids.dedup();
    const SELECT: &str = "SELECT invitation_id, account_id, sent_at, delivered, opened, clicked FROM analytics_invitations WHERE invitation_id";
    type Row = (Uuid, Uuid, DateTime<Utc>, i32, i32, i32);
    let rows: Vec<Row> = match &mut tx.conn {
        Conn::Postgres(t) => {
            sqlx::query_as(&format!("{SELECT} = ANY($1) ORDER BY invitation_id FOR UPDATE"))
                .bind(&ids)
                .fetch_all(&mut **t)
                .await?
        }
        Conn::Sqlite(t) => {
            ids_in(&format!("{SELECT} IN"), ids).build_query_as().persistent(false).fetch_all(&mut **t).await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(id, account, sent_at, d, o, c)| {
            (id, Known { account, sent_at, once: [d, o, c].map(|v| v != 0), new: false })
        })
        .collect())
}
