//! Members: change access, deactivate, reactivate, remove, cancel own access.

use admit_domain::access::Access;
use admit_domain::account::{self, Account, AccountEvent};
use admit_domain::ids::{AccountId, Actor, InvitationId, UserId};
use admit_domain::invitation::RevokeReason;
use admit_ledger::{on_tx, Tx};
use uuid::Uuid;

use super::{account_events, in_transaction, Admit, RequestContext, Unit, ATTEMPTS, PENDING_INVITATION};
use crate::Error;

/// The member operations that share one shape: decide on the account, then
/// (for those that take someone out) revoke what they sent.
#[derive(Debug, Clone)]
enum MemberChange {
    Access(Access),
    Deactivate,
    Reactivate,
    Remove,
    Cancel,
}

impl Admit {
    /// Changes what a member holds (roles, features, sites).
    pub async fn change_member_access(
        &self,
        ctx: &RequestContext,
        account: AccountId,
        user: UserId,
        access: Access,
    ) -> Result<(), Error> {
        self.change_member(ctx, account, user, MemberChange::Access(access)).await
    }

    /// Deactivates a member and revokes the invitations they sent.
    pub async fn deactivate_member(&self, ctx: &RequestContext, account: AccountId, user: UserId) -> Result<(), Error> {
        self.change_member(ctx, account, user, MemberChange::Deactivate).await
    }

    /// Reactivates a member (needs a free seat).
    pub async fn reactivate_member(&self, ctx: &RequestContext, account: AccountId, user: UserId) -> Result<(), Error> {
        self.change_member(ctx, account, user, MemberChange::Reactivate).await
    }

    /// Removes a member and revokes the invitations they sent.
    pub async fn remove_member(&self, ctx: &RequestContext, account: AccountId, user: UserId) -> Result<(), Error> {
        self.change_member(ctx, account, user, MemberChange::Remove).await
    }

    /// The member cancels their own access to the account.
    pub async fn cancel_membership(&self, user: UserId, account: AccountId) -> Result<(), Error> {
        let ctx = RequestContext::new(Actor::User(user), admit_domain::invitation::Channel::Session);
        self.change_member(&ctx, account, user, MemberChange::Cancel).await
    }

    async fn change_member(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        user: UserId,
        change: MemberChange,
    ) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, version) = self.account(&mut tx, account_id).await?;
            let caller = ctx.caller(&account);
            let events = match &change {
                MemberChange::Access(a) => account::change_member_access(&account, &caller, user, a.clone())?,
                MemberChange::Deactivate => account::deactivate_member(&account, &caller, user)?,
                MemberChange::Reactivate => {
                    let pending = tx.count_live_reservations(PENDING_INVITATION, &account_id.to_string(), now).await?;
                    account::reactivate_member(&account, &caller, user, pending as u32)?
                }
                MemberChange::Remove => account::remove_member(&account, &caller, user)?,
                MemberChange::Cancel => account::cancel_membership(&account, user)?,
            };
            let takes_out = events.iter().any(|e| {
                matches!(
                    e,
                    AccountEvent::MemberDeactivated { .. }
                        | AccountEvent::MemberRemoved { .. }
                        | AccountEvent::MembershipCancelled { .. }
                )
            });
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            if takes_out {
                self.revoke_sent_by(&mut tx, &mut unit, &account, user).await?;
            }
            self.write(&mut tx, ctx, unit, now).await
        }
        .await)
    }

    /// Revokes every pending invitation `inviter` sent in `account`
    /// (reason `inviter_removed`).
    async fn revoke_sent_by(
        &self,
        tx: &mut Tx,
        unit: &mut Unit,
        account: &Account,
        inviter: UserId,
    ) -> Result<(), Error> {
        let ids = pending_sent_by(tx, account.id, &Actor::User(inviter).to_string()).await?;
        let system = RequestContext::system();
        for id in ids {
            self.revoke_in(tx, unit, account, &system, InvitationId(id), RevokeReason::InviterRemoved).await?;
        }
        Ok(())
    }
}

/// Pending invitations `inviter` sent in `account`, from the read model
/// (consistent inside the transaction).
async fn pending_sent_by(tx: &mut Tx, account: AccountId, inviter: &str) -> Result<Vec<Uuid>, Error> {
    let rows: Vec<(Uuid,)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT invitation_id FROM invitations WHERE account_id = $1 AND invited_by = $2 AND status = 'pending' ORDER BY invitation_id",
    )
    .bind(account.0)
    .bind(inviter)
    .fetch_all(&mut *c)
    .await?);
    Ok(rows.into_iter().map(|(id,)| id).collect())
}
