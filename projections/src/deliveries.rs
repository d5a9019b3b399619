//! Projecting a batch of delivery records (the mailer's `processed`,
//! `delivered` and `failed`) in two statements on PostgreSQL instead of two
//! per event: the mailer records every outcome waiting at once, and round
//! trips were most of what that cost.

use std::collections::BTreeMap;

use admit_domain::invitation::{DeliveryState, InvitationEvent};
use admit_domain::Event;
use admit_ledger::{Conn, Tx};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Envelope, Projector, Result};

/// What a run of delivery records of one invitation leaves on its row:
/// the last record's state, time and version, and whether the state only
/// moves when the invitee has not opened or clicked yet (true when every
/// record of the run is `processed` or `delivered`).
struct Outcome {
    state: &'static str,
    at: DateTime<Utc>,
    version: i64,
    unless_engaged: bool,
}

impl Projector {
    /// Applies `events` in order, as [`Projector::apply`] one by one would.
    ///
    /// On PostgreSQL, when every event is a delivery record that
    /// `processed`, `delivered` or `failed` (what the mailer records), it
    /// takes two statements: the delivery rows inserted, and each
    /// invitation's row updated once, to what its last record leaves.
    /// That is what applying the records one by one leaves, because a
    /// `failed` overwrites the state whatever it was and `processed` and
    /// `delivered` only keep an `opened` or `clicked`: a run of records
    /// ending in `failed` leaves `failed`, one of only `processed` and
    /// `delivered` leaves its last state unless the invitee engaged. A run
    /// with a `failed` before its end, opens, clicks, other events and
    /// SQLite take the one-by-one path.
    pub async fn apply_all(&self, tx: &mut Tx, events: &[Envelope]) -> Result<()> {
        match (&mut tx.conn, batchable(events)) {
            (Conn::Postgres(t), Some(outcomes)) => {
                let (mut ids, mut seqs, mut states, mut details, mut times) = (vec![], vec![], vec![], vec![], vec![]);
                for env in events {
                    if let Event::Invitation(id, InvitationEvent::InvitationDeliveryRecorded { state, detail }) =
                        &env.event
                    {
                        ids.push(id.0);
                        seqs.push(env.stream_version);
                        states.push(state.as_str());
                        details.push(detail.clone());
                        times.push(env.recorded_at);
                    }
                }
                sqlx::query(&self.sql(
                    "INSERT INTO {p}invitation_deliveries (invitation_id, seq, state, detail, recorded_at) \
                     SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[]) \
                     ON CONFLICT (invitation_id, seq) DO NOTHING",
                ))
                .bind(&ids)
                .bind(&seqs)
                .bind(&states)
                .bind(&details)
                .bind(&times)
                .execute(&mut **t)
                .await?;
                let (mut ids, mut states, mut times, mut versions, mut conditional) =
                    (vec![], vec![], vec![], vec![], vec![]);
                for (id, o) in outcomes {
                    ids.push(id);
                    states.push(o.state);
                    times.push(o.at);
                    versions.push(o.version);
                    conditional.push(o.unless_engaged);
                }
                sqlx::query(&self.sql(
                    "UPDATE {p}invitations AS i SET \
                     delivery_state = CASE WHEN u.unless_engaged AND i.delivery_state IN ('opened', 'clicked') \
                                           THEN i.delivery_state ELSE u.state END, \
                     delivery_updated_at = CASE WHEN u.unless_engaged AND i.delivery_state IN ('opened', 'clicked') \
                                                THEN i.delivery_updated_at ELSE u.at END, \
                     updated_at = u.at, version = u.version \
                     FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::bigint[], $5::bool[]) \
                          AS u(invitation_id, state, at, version, unless_engaged) \
                     WHERE i.invitation_id = u.invitation_id AND i.version < u.version",
                ))
                .bind(&ids)
                .bind(&states)
                .bind(&times)
                .bind(&versions)
                .bind(&conditional)
                .execute(&mut **t)
                .await?;
                Ok(())
            }
            _ => {
                for env in events {
                    self.apply(tx, env).await?;
                }
                Ok(())
            }
        }
    }
}

/// Per invitation, what its run of records leaves, when every event is a
/// delivery record the batch handles (see [`Projector::apply_all`]).
fn batchable(events: &[Envelope]) -> Option<BTreeMap<Uuid, Outcome>> {
    let mut outcomes: BTreeMap<Uuid, Outcome> = BTreeMap::new();
    for env in events {
        let Event::Invitation(id, InvitationEvent::InvitationDeliveryRecorded { state, .. }) = &env.event else {
            return None;
        };
        let unless_engaged = match state {
            DeliveryState::Processed | DeliveryState::Delivered => true,
            DeliveryState::Failed => false,
            _ => return None,
        };
        let outcome =
            Outcome { state: state.as_str(), at: env.recorded_at, version: env.stream_version, unless_engaged };
        match outcomes.get_mut(&id.0) {
            None => {
                outcomes.insert(id.0, outcome);
            }
            // Records of one invitation come in version order; after a
            // `failed` the one-by-one path decides.
            Some(run) if run.unless_engaged && run.version < outcome.version => *run = outcome,
            Some(_) => return None,
        }
    }
    Some(outcomes)
}
