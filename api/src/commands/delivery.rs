//! Recording many delivery facts at once: the mailer's entry point, one
//! transaction per batch of emails instead of one command per fact.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use admit_domain::ids::InvitationId;
use admit_domain::invitation::{DeliveryState, InvitationEvent};
use admit_ledger::Tx;
use uuid::Uuid;

use super::{in_transaction, invitation_events, Admit, RequestContext, Unit, ATTEMPTS};
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
    /// two such batches never wait on each other in a cycle. Like any
    /// command, the whole transaction (`writes` included) is retried when
    /// it lost a race. Returns how many facts were recorded.
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
            let mut unit = Unit::default();
            for (id, facts) in by_invitation {
                let id = InvitationId(id);
                // Locks the invitation's stream head; a delivery fact needs
                // nothing else of the invitation (the domain records every
                // one), so its events are not read and decoded here.
                let version = tx.stream_version(&id.stream(), true).await?.ok_or(Error::NotFound("invitation"))?;
                let events = facts
                    .into_iter()
                    .map(|(state, detail)| InvitationEvent::InvitationDeliveryRecorded { state, detail })
                    .collect();
                unit.push(version, invitation_events(id, events));
            }
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(count)
        }
        .await)
    }
}
