//! Opening an account and inviting its first owner.

use admit_domain::access::Access;
use admit_domain::account::{self, AccountSettings};
use admit_domain::ids::AccountId;
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, PersonName, RoleName};
use uuid::Uuid;

use super::{account_events, in_transaction, Admit, InviteRequest, IssuedInvitation, RequestContext, Unit, ATTEMPTS};
use crate::Error;

/// What the operator gives to open an account.
#[derive(Debug, Clone)]
pub struct OpenAccount {
    /// Display name.
    pub name: AccountName,
    /// Customer number.
    pub customer_number: CustomerNumber,
    /// Seat limit.
    pub seats: u32,
    /// The first owner's email.
    pub owner_email: EmailAddress,
    /// The first owner's name, if known.
    pub owner_name: Option<PersonName>,
}

/// An opened account and its owner's invitation.
#[derive(Debug, Clone)]
pub struct OpenedAccount {
    /// The new account.
    pub account_id: AccountId,
    /// The owner's invitation (link token inside).
    pub owner_invitation: IssuedInvitation,
}

impl Admit {
    /// Opens an account and invites its owner, in one transaction.
    pub async fn open_account(&self, ctx: &RequestContext, req: OpenAccount) -> Result<OpenedAccount, Error> {
        let account_id = AccountId(Uuid::now_v7());
        let settings = AccountSettings::with_seats(req.seats);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let events =
                account::open(account_id, req.name.clone(), req.customer_number.clone(), settings.clone(), None)?;
            let mut unit = Unit::default();
            unit.push(0, account_events(account_id, events));
            self.write(&mut tx, ctx, unit, now).await?;
            let invite = InviteRequest {
                email: req.owner_email.clone(),
                name: req.owner_name.clone(),
                access: Access::roles([RoleName::owner()]),
                expires_in: None,
                metadata: None,
                redirect_url: None,
            };
            let owner_invitation = self.invite_in(&mut tx, ctx, account_id, &invite, now).await?;
            Ok(OpenedAccount { account_id, owner_invitation })
        }
        .await)
    }
}
