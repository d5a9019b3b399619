//! The expiry worker: keeps the deadline of every pending invitation from
//! the events it consumes (in `expiry_deadlines`, so a restart loses none)
//! and appends `InvitationExpired` once a deadline passes; it also appends
//! `InvitationReminded` when a pending link's reminder is due (the mailer
//! sends it). An acceptance
//! racing it is settled by the invitation stream's version: exactly one of
//! the two commits. The accept path refuses lapsed links by itself anyway.

use std::collections::BTreeMap;
use std::time::Duration;

use admit_api::Admit;
use admit_domain::ids::InvitationId;
use admit_domain::invitation::InvitationEvent;
use admit_domain::Event;
use admit_ledger::{on_db, on_db_write, on_tx, Tx};
use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
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
        // Expiring and reminding need no email or name.
        Expiry { admit, config, feed: feed.without_personal_data() }
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

    /// Takes in every event available now, a batch at a time: each batch's
    /// deadline changes are folded per invitation ([`fold`]) and written
    /// in one transaction of at most three statements, so an invitation
    /// costs no commit of its own (an autocommitted statement per event
    /// was one more commit per invitation than the command's).
    async fn ingest(&self) -> Result<()> {
        loop {
            let batch = self.feed.poll(500).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let fates = fold(&batch, self.config.reminders);
            if !fates.is_empty() {
                let mut tx = self.admit.db.begin().await?;
                write(&mut tx, &fates).await?;
                tx.commit().await?;
            }
            self.feed.commit().await?;
        }
    }

    /// Clears a link's reminder time once its reminder was recorded.
    async fn reminded(&self, id: Uuid) -> Result<()> {
        self.for_one(CLEAR_REMINDER, id).await
    }

    /// Drops a link's deadline once it is settled.
    async fn forget(&self, id: Uuid) -> Result<()> {
        self.for_one(DROP_DEADLINE, id).await
    }

    /// Runs `statement` (one of [`CLEAR_REMINDER`], [`DROP_DEADLINE`]) for
    /// one invitation, on its own.
    async fn for_one(&self, statement: &str, id: Uuid) -> Result<()> {
        let sql = format!("{statement} = $1");
        on_db_write!(&self.admit.db, p => sqlx::query(&sql).bind(id).execute(p).await.map(|_| ())?);
        Ok(())
    }

    /// Invitations whose `column` (`remind_at` or `expires_at`) has passed.
    async fn due(&self, column: &str) -> Result<Vec<Uuid>> {
        let sql =
            format!("SELECT invitation_id FROM expiry_deadlines WHERE {column} <= $1 ORDER BY {column} LIMIT 1000");
        let due: Vec<(Uuid,)> =
            on_db!(&self.admit.db, p => sqlx::query_as(&sql).bind(self.admit.now()).fetch_all(p).await?);
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

/// Clears the reminder time of the invitations the statement is completed
/// with (`= $1`, `= ANY($1)` or `IN (...)`).
const CLEAR_REMINDER: &str = "UPDATE expiry_deadlines SET remind_at = NULL WHERE invitation_id";

/// Drops the deadlines of the invitations the statement is completed with.
const DROP_DEADLINE: &str = "DELETE FROM expiry_deadlines WHERE invitation_id";

/// What a batch of events leaves of one invitation's row in
/// `expiry_deadlines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The row is (re)written with this deadline and reminder time.
    Keep { expires_at: DateTime<Utc>, remind_at: Option<DateTime<Utc>> },
    /// The reminder was sent: a stored row keeps its deadline only.
    Reminded,
    /// The invitation is settled: no row.
    Forget,
}

/// The batch's effect on `expiry_deadlines`, one fate per invitation, as
/// applying its events one by one would leave the table: a later event of
/// an invitation overrides an earlier one, and a reminder clears the
/// reminder time of a deadline kept earlier in the batch.
fn fold(batch: &[admit_projections::Envelope], reminders: Option<ReminderPolicy>) -> BTreeMap<Uuid, Fate> {
    let mut fates = BTreeMap::new();
    for env in batch {
        let Event::Invitation(id, e) = &env.event else { continue };
        let fate = match e {
            InvitationEvent::InvitationSent { expires_at, .. }
            | InvitationEvent::InvitationUpdated { expires_at, .. }
            | InvitationEvent::InvitationResent { expires_at, .. } => Fate::Keep {
                expires_at: *expires_at,
                remind_at: reminders.and_then(|r| r.remind_at(env.recorded_at, *expires_at)),
            },
            InvitationEvent::InvitationReminded { .. } => match fates.get(&id.0) {
                Some(Fate::Keep { expires_at, .. }) => Fate::Keep { expires_at: *expires_at, remind_at: None },
                Some(Fate::Forget) => Fate::Forget,
                _ => Fate::Reminded,
            },
            InvitationEvent::InvitationAccepted { .. }
            | InvitationEvent::InvitationDeclined {}
            | InvitationEvent::InvitationExpired {}
            | InvitationEvent::InvitationRevoked { .. } => Fate::Forget,
            InvitationEvent::InvitationDeliveryRecorded { .. } => continue,
        };
        fates.insert(id.0, fate);
    }
    fates
}

/// Writes `fates` in `tx`: one upsert of the kept rows, one update of the
/// reminded ones, one delete of the settled ones (each invitation is in
/// one of them, so their order does not matter). A batch holds at most 500
/// events, so the upsert binds at most 1,500 values, within SQLite's bound.
/// The statements' lengths vary, so they are not kept prepared.
async fn write(tx: &mut Tx, fates: &BTreeMap<Uuid, Fate>) -> Result<()> {
    let kept: Vec<(Uuid, DateTime<Utc>, Option<DateTime<Utc>>)> = fates
        .iter()
        .filter_map(|(id, f)| match f {
            Fate::Keep { expires_at, remind_at } => Some((*id, *expires_at, *remind_at)),
            _ => None,
        })
        .collect();
    let only =
        |wanted: Fate| fates.iter().filter(move |(_, f)| **f == wanted).map(|(id, _)| *id).collect::<Vec<Uuid>>();
    let (reminded, settled) = (only(Fate::Reminded), only(Fate::Forget));
    if !kept.is_empty() {
        on_tx!(tx, c => {
            let mut b = QueryBuilder::new("INSERT INTO expiry_deadlines (invitation_id, expires_at, remind_at) ");
            b.push_values(&kept, |mut row, (id, expires_at, remind_at)| {
                row.push_bind(*id).push_bind(*expires_at).push_bind(*remind_at);
            });
            b.push(" ON CONFLICT (invitation_id) DO UPDATE SET expires_at = excluded.expires_at, remind_at = excluded.remind_at");
            b.build().persistent(false).execute(&mut *c).await.map(|_| ())?
        });
    }
    for (statement, ids) in [(CLEAR_REMINDER, reminded), (DROP_DEADLINE, settled)] {
        if ids.is_empty() {
            continue;
        }
        tx.execute_for_ids(statement, ids).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The fold of a batch, given events, then the fates it leaves.
    use super::*;
    use admit_domain::access::Access;
    use admit_domain::ids::Actor;
    use admit_domain::invitation::DeliveryState;
    use admit_projections::Envelope;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + chrono::Duration::hours(hours)
    }

    fn on(id: u128, event: InvitationEvent) -> Envelope {
        Envelope {
            event_id: Uuid::nil(),
            stream_version: 1,
            recorded_at: at(0),
            actor: None,
            event: Event::Invitation(InvitationId(Uuid::from_u128(id)), event),
        }
    }

    fn updated(expires_in_hours: i64) -> InvitationEvent {
        InvitationEvent::InvitationUpdated {
            access: Access::default(),
            expires_at: at(expires_in_hours),
            updated_by: Actor::System,
        }
    }

    fn fates(batch: &[Envelope]) -> Vec<(u128, Fate)> {
        let policy = ReminderPolicy::default();
        fold(batch, Some(policy)).into_iter().map(|(id, f)| (id.as_u128(), f)).collect()
    }

    #[test]
    fn a_later_event_of_an_invitation_overrides_an_earlier_one() {
        let batch = [
            on(1, updated(72)),
            on(2, updated(72)),
            on(1, updated(24)),
            on(2, InvitationEvent::InvitationExpired {}),
            on(3, InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Delivered, detail: None }),
        ];
        assert_eq!(
            fates(&batch),
            [(1, Fate::Keep { expires_at: at(24), remind_at: None }), (2, Fate::Forget)],
            "invitation 1 keeps its last deadline (24 h: too short for a reminder), 2 is settled, 3 has no deadline change"
        );
    }

    #[test]
    fn a_reminder_clears_the_reminder_time_kept_earlier_in_the_batch() {
        let batch = [
            on(1, updated(72)),
            on(1, InvitationEvent::InvitationReminded { expires_at: at(72) }),
            on(2, InvitationEvent::InvitationReminded { expires_at: at(72) }),
            on(3, InvitationEvent::InvitationDeclined {}),
            on(3, InvitationEvent::InvitationReminded { expires_at: at(72) }),
            on(4, updated(72)),
        ];
        assert_eq!(
            fates(&batch),
            [
                (1, Fate::Keep { expires_at: at(72), remind_at: None }),
                (2, Fate::Reminded),
                (3, Fate::Forget),
                (4, Fate::Keep { expires_at: at(72), remind_at: Some(at(48)) }),
            ]
        );
    }
}
