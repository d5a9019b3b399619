//! Custom roles: define, change, delete.

use std::collections::BTreeSet;

use admit_domain::access::Permission;
use admit_domain::account;
use admit_domain::ids::AccountId;
use admit_domain::values::RoleName;
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
        in_transaction!(self, |tx| async {
            let (account, version) = self.account(&mut tx, account_id).await?;
            let events = account::define_role(&account, &ctx.caller(&account), role.clone(), permissions.clone())?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            self.write(&mut tx, ctx, unit, Utc::now()).await
        }
        .await)
    }

    /// Changes a custom role's permissions.
    pub async fn change_role(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        role: RoleName,
        permissions: BTreeSet<Permission>,
    ) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let (account, version) = self.account(&mut tx, account_id).await?;
            let events = account::change_role(&account, &ctx.caller(&account), role.clone(), permissions.clone())?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            self.write(&mut tx, ctx, unit, Utc::now()).await
        }
        .await)
    }

    /// Deletes a custom role; members holding it lose it.
    pub async fn delete_role(&self, ctx: &RequestContext, account_id: AccountId, role: RoleName) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let (account, version) = self.account(&mut tx, account_id).await?;
            let events = account::delete_role(&account, &ctx.caller(&account), role.clone())?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            self.write(&mut tx, ctx, unit, Utc::now()).await
        }
        .await)
    }
}
