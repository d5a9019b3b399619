//! Recording many delivery facts at once: the mailer's entry point, one
//! transaction per batch of emails instead of one command per fact.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use admit_domain::ids::InvitationId;
use admit_domain::invitation::{DeliveryState, InvitationEvent};
use admit_domain::Event;
use admit_ledger::{ExpectedVersion, NewEvent, StreamAppend, Tx};
use admit_projections::Codec;
use uuid::Uuid;

use super::{appended, in_transaction, Admit, RequestContext, ATTEMPTS};
use crate::Error;

/// One delivery fact: the invitation, what happened to its email, and the
/// server's answer or the reason it failed.
pub type DeliveryFact = (InvitationId, DeliveryState, Option<String>);

/// The caller's own writes in a [`Admit::record_deliveries`] transaction,
/// returning the facts to record with them.
pub type DeliveryWrites<'t> = Pin<Box<dyn Future<Output = Result<Vec<DeliveryFact>, Error>> + Send + 't>>;

impl Admit {
    /// Records delivery facts of many invitations in one transaction,
    /// together with the caller's own writes: `writes` runs first in the
    /// transaction and returns the facts to record, and both commit or
    /// neither. The mailer records its claims and outcomes (`mail_sends`)
    /// with the `processed`, `delivered` and `failed` they mean this way, so
    /// an outcome is recorded exactly once, and a batch of emails costs one
    /// commit instead of one command per email. Facts of one invitation are
    /// appended in the order given; invitations are locked in id order, so
    /// two such batches never wait on each other in a cycle. On PostgreSQL
    /// the whole batch is appended and projected in seven statements
    /// ([`Tx::append_streams`], [`admit_projections::Projector::apply_all`]).
    /// Like any command, the whole transaction (`writes` included) is
    /// retried when it lost a race. Returns how many facts were recorded.
    pub async fn record_deliveries<F>(&self, mut writes: F) -> Result<usize, Error>
    where
        F: for<'t> FnMut(&'t mut Tx) -> DeliveryWrites<'t> + Send,
    {
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let facts = writes(&mut tx).await?;
            let count = facts.len();
            let mut by_invitation: BTreeMap<Uuid, Vec<(DeliveryState, Option<String>)>> = BTreeMap::new();
            for (id, state, detail) in facts {
                by_invitation.entry(id.0).or_default().push((state, detail));
            }
            let recorded_at = admit_ledger::log::storable_time(now);
            let metadata = ctx.metadata();
            let streams: Vec<(String, Vec<Event>, Vec<NewEvent>)> = by_invitation
                .into_iter()
                .map(|(id, facts)| {
                    let id = InvitationId(id);
                    let events: Vec<Event> = facts
                        .into_iter()
                        .map(|(state, detail)| {
                            Event::Invitation(id, InvitationEvent::InvitationDeliveryRecorded { state, detail })
                        })
                        .collect();
                    // Delivery facts hold no personal data: nothing to seal.
                    let stored = events.iter().map(|e| Codec::encode(e, Uuid::now_v7(), None)).collect();
                    (id.stream(), events, stored)
                })
                .collect();
            // Every invitation's head is locked (in stream order) by the
            // append; a delivery fact needs nothing else of the invitation
            // (the domain records every one), so its events are not read.
            let appends: Vec<StreamAppend<'_>> = streams
                .iter()
                .map(|(stream, _, stored)| StreamAppend { stream, expected: ExpectedVersion::Any, events: stored })
                .collect();
            let outcomes = tx.append_streams(&appends, &metadata, recorded_at).await?;
            let mut envelopes = Vec::with_capacity(count);
            for ((_, events, stored), outcome) in streams.into_iter().zip(outcomes) {
                let base = outcome.version - events.len() as i64;
                if base == 0 {
                    // The append would have opened the stream: no such
                    // invitation (the transaction is rolled back).
                    return Err(Error::NotFound("invitation"));
                }
                envelopes.extend(appended(events, &stored, base, recorded_at, &metadata));
            }
            self.projector.apply_all(&mut tx, &envelopes).await?;
            Ok(count)
        }
        .await)
    }
}
