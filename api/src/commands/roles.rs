//! Custom roles: define, change, delete.

use std::collections::BTreeSet;

use admit_domain::access::Permission;
use admit_domain::account::{self, Account, AccountEvent, Caller};
use admit_domain::ids::AccountId;
use admit_domain::values::RoleName;
use admit_domain::DomainError;

use admit_domain::ids::InvitationId;
use admit_domain::invitation;
use admit_ledger::{on_tx, Tx};
use uuid::Uuid;

use super::{account_events, in_transaction, invitation_events, Admit, RequestContext, Unit, ATTEMPTS};
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

    /// Deletes a custom role: members holding it lose it, and so do the
    /// pending invitations that grant it.
    pub async fn delete_role(&self, ctx: &RequestContext, account_id: AccountId, role: RoleName) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let (account, version) = self.account(&mut tx, account_id).await?;
            let events = account::delete_role(&account, &ctx.caller(&account), role.clone())?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account_id, events));
            for id in pending_with_role(&mut tx, account_id, &role).await? {
                let (inv, v) = self.invitation(&mut tx, id).await?;
                unit.push(v, invitation_events(id, invitation::drop_role(&inv, &role, ctx.actor)));
            }
            self.write(&mut tx, ctx, unit, self.now()).await
        }
        .await)
    }

    /// How many pending invitations and members carry `role` (the API
    /// tells this before a role is changed or deleted).
    pub async fn role_usage(&self, account_id: AccountId, role: &RoleName) -> Result<(u64, u64), Error> {
        let mut tx = self.db.begin_snapshot().await?;
        let invitations = pending_with_role(&mut tx, account_id, role).await?.len() as u64;
        let members = members_with_role(&mut tx, account_id, role).await?;
        Ok((invitations, members))
    }

    /// The operator deactivates (`active = false`) or reactivates an account.
    pub async fn set_account_active(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        active: bool,
    ) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::set_account_active(a, c, active)).await
    }

    /// Creates an API key with `permissions`; returns its id and the secret
    /// bearer token, which is shown this once and stored only as a hash.
    pub async fn create_api_key(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        name: String,
        permissions: BTreeSet<Permission>,
    ) -> Result<(admit_domain::ids::ApiKeyId, String), Error> {
        use base64::Engine;
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let secret = format!("{}{}", API_KEY_PREFIX, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
        let key_id = admit_domain::ids::ApiKeyId(Uuid::now_v7());
        let hash = secret_hash(&secret);
        self.on_account(ctx, account_id, |a, c| {
            account::create_api_key(a, c, key_id, name.clone(), permissions.clone(), hash.clone())
        })
        .await?;
        Ok((key_id, secret))
    }

    /// Revokes an API key.
    pub async fn revoke_api_key(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        key: admit_domain::ids::ApiKeyId,
    ) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::revoke_api_key(a, c, key)).await
    }

    /// Changes the account's settings.
    pub async fn change_settings(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        settings: admit_domain::account::AccountSettings,
    ) -> Result<(), Error> {
        self.on_account(ctx, account_id, |a, c| account::change_settings(a, c, settings.clone())).await
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
            self.write(&mut tx, ctx, unit, self.now()).await
        }
        .await)
    }
}

/// Roles are stored space-separated in the read models; match whole words
/// (`_` in a role name is escaped: it is a LIKE wildcard).
fn role_pattern(role: &RoleName) -> String {
    format!("% {} %", role.as_str().replace('_', "\\_"))
}

/// Pending invitations of `account` whose grant includes `role`.
async fn pending_with_role(tx: &mut Tx, account: AccountId, role: &RoleName) -> Result<Vec<InvitationId>, Error> {
    let rows: Vec<(Uuid,)> = on_tx!(tx, c => sqlx::query_as(
        "SELECT invitation_id FROM invitations WHERE account_id = $1 AND status = 'pending' \
         AND ' ' || roles || ' ' LIKE $2 ESCAPE '\\' ORDER BY invitation_id",
    )
    .bind(account.0)
    .bind(role_pattern(role))
    .fetch_all(&mut *c)
    .await?);
    Ok(rows.into_iter().map(|(id,)| InvitationId(id)).collect())
}

/// How many members of `account` hold `role`.
async fn members_with_role(tx: &mut Tx, account: AccountId, role: &RoleName) -> Result<u64, Error> {
    let (n,): (i64,) = on_tx!(tx, c => sqlx::query_as(
        "SELECT COUNT(*) FROM members WHERE account_id = $1 AND ' ' || roles || ' ' LIKE $2 ESCAPE '\\'",
    )
    .bind(account.0)
    .bind(role_pattern(role))
    .fetch_one(&mut *c)
    .await?);
    Ok(n as u64)
}

/// Prefix that makes API keys recognisable in logs and secret scanners.
pub const API_KEY_PREFIX: &str = "key_";

/// SHA-256 of a high-entropy bearer secret, hex-encoded.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}
