//! Custom roles: define, change, delete.

use std::collections::BTreeSet;

use admit_domain::access::Permission;
use admit_domain::account::{self, Account, AccountEvent, Caller};
use admit_domain::ids::AccountId;
use admit_domain::values::RoleName;
use admit_domain::DomainError;
use chrono::Utc;

use super::{account_events, in_transaction, Admit, RequestContext, Unit, ATTEMPTS};
use crate::Error;

impl Admit {
    /// Defines a custom role.
    pub async fn define_role(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        role: RoleName,
        permissions: BTreeSet<Permission>,
    ) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::define_role(a, c, role.clone(), permissions.clone())).await
    }

    /// Changes a custom role's permissions.
    pub async fn change_role(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        role: RoleName,
        permissions: BTreeSet<Permission>,
    ) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::change_role(a, c, role.clone(), permissions.clone())).await
    }

    /// Deletes a custom role; members holding it lose it.
    pub async fn delete_role(&self, ctx: &RequestContext, account_id: AccountId, role: RoleName) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::delete_role(a, c, role.clone())).await
    }

    /// The operator deactivates (`active = false`) or reactivates an account.
    pub async fn set_account_active(&self, ctx: &RequestContext, account_id: AccountId, active: bool) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::set_account_active(a, c, active)).await
    }

    /// Runs a decision that touches only the account's own stream.
    pub(crate) async fn on_account(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        decide: impl Fn(&Account, &Caller) -> Result<Vec<AccountEvent>, DomainError>,
    ) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let (account, version) = self.account(&mut tx, account_id).await?;
            let events = decide(&account, &ctx.caller(&account))?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            self.write(&mut tx, ctx, unit, Utc::now()).await
        }
        .await)
    }
}
