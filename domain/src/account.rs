//! The account aggregate: its settings, roles and members.
//!
//! Stream `account-{id}`. Invitations live in streams of their own; the
//! account knows its members, which the invitation rules consult.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Access, Permission, RoleCatalog};
use crate::ids::{AccountId, Actor, ApiKeyId, InvitationId, UserId};
use crate::template::{MailKind, MailTemplate};
use crate::values::{AccountName, CustomerNumber, LinkLifetime, RoleName};
use crate::DomainError;

/// Bounds and defaults an account sets for its invitations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSettings {
    /// Active members plus pending invitations never exceed this.
    pub seat_limit: u32,
    /// Lifetime of a new link unless the invitation says otherwise.
    pub invitation_lifetime_hours: u32,
    /// Invitations (resends included) one inviter may send per rolling day.
    pub daily_invitation_quota: u32,
    /// When not empty, only these email domains may be invited (stored in
    /// the normalised form email addresses use: lower case, IDNA ASCII).
    #[serde(default)]
    pub allowed_email_domains: BTreeSet<String>,
    /// URLs an invitation may redirect to after acceptance.
    #[serde(default)]
    pub allowed_redirect_urls: BTreeSet<String>,
    /// The account's own invitation and reminder emails (empty: Admit's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mail_templates: BTreeMap<MailKind, MailTemplate>,
}

impl AccountSettings {
    /// The defaults of the products this replaces: 24-hour links, 50
    /// invitations per inviter and day.
    pub fn with_seats(seat_limit: u32) -> AccountSettings {
        AccountSettings {
            seat_limit,
            invitation_lifetime_hours: 24,
            daily_invitation_quota: 50,
            allowed_email_domains: BTreeSet::new(),
            allowed_redirect_urls: BTreeSet::new(),
            mail_templates: BTreeMap::new(),
        }
    }

    /// Normalises the allowed email domains the way email addresses are
    /// normalised, refusing (`invalid_email_domain`) what is no domain.
    pub fn with_allowed_email_domains<'a>(
        mut self,
        domains: impl IntoIterator<Item = &'a str>,
    ) -> Result<AccountSettings, DomainError> {
        let mut out = BTreeSet::new();
        for d in domains {
            let probe = crate::values::EmailAddress::parse(&format!("x@{}", d.trim())).map_err(|_| {
                DomainError::invalid("allowed_email_domains", "invalid_email_domain", format!("`{d}` is not a domain"))
            })?;
            out.insert(probe.domain().to_string());
        }
        self.allowed_email_domains = out;
        Ok(self)
    }

    /// The lifetime of a new link: the requested one, or the account's
    /// default (`invalid_expiry` when the default is out of bounds).
    pub fn lifetime(&self, requested: Option<LinkLifetime>) -> Result<Duration, DomainError> {
        let lifetime = match requested {
            Some(l) => l,
            None => LinkLifetime::from_hours(u64::from(self.invitation_lifetime_hours))?,
        };
        Ok(lifetime.duration())
    }
}

/// Whether a member may use the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    /// Uses a seat and holds their access.
    Active,
    /// Kept, but may not use the account and takes no seat.
    Deactivated,
}

/// A user's membership of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Roles, features and sites held.
    pub access: Access,
    /// Active or deactivated.
    pub status: MemberStatus,
}

/// The account as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Display name.
    pub name: AccountName,
    /// The customer number people know it by.
    pub customer_number: CustomerNumber,
    /// Seats, lifetimes, quota, domains.
    pub settings: AccountSettings,
    /// Built-in and custom roles.
    pub roles: RoleCatalog,
    /// Current members (removed and cancelled ones are gone).
    pub members: BTreeMap<UserId, Member>,
    /// False while the operator has deactivated the account: nobody can be
    /// invited or join, and members keep their data but not their use.
    pub active: bool,
}

/// Facts about an account, in past tense.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// The operator opened the account.
    AccountOpened {
        /// Its id.
        account_id: AccountId,
        /// Display name.
        name: AccountName,
        /// Customer number.
        customer_number: CustomerNumber,
        /// Initial settings.
        settings: AccountSettings,
    },
    /// Settings changed.
    AccountSettingsChanged {
        /// The new settings.
        settings: AccountSettings,
    },
    /// The operator deactivated the account.
    AccountDeactivated {},
    /// The operator reactivated the account.
    AccountReactivated {},
    /// An API key was created for automation; it acts with `permissions`.
    ApiKeyCreated {
        /// Its id.
        key_id: ApiKeyId,
        /// A label for people.
        name: String,
        /// What it may do (never more than its creator held).
        permissions: BTreeSet<Permission>,
        /// SHA-256 of the secret (the secret itself is shown once, never stored).
        secret_hash: String,
        /// Who created it.
        created_by: Actor,
    },
    /// An API key was revoked and stops working.
    ApiKeyRevoked {
        /// Its id.
        key_id: ApiKeyId,
    },
    /// A custom role was defined.
    RoleDefined {
        /// Its name.
        role: RoleName,
        /// What it allows.
        permissions: BTreeSet<Permission>,
    },
    /// A custom role's permissions changed (members holding it change too).
    RoleChanged {
        /// Its name.
        role: RoleName,
        /// What it now allows.
        permissions: BTreeSet<Permission>,
    },
    /// A custom role was deleted and taken from every member holding it.
    RoleDeleted {
        /// Its name.
        role: RoleName,
    },
    /// A user joined by accepting an invitation.
    MemberJoined {
        /// The new member.
        user_id: UserId,
        /// The invitation accepted.
        invitation_id: InvitationId,
        /// What they hold from now on.
        access: Access,
    },
    /// An admin changed what a member holds.
    MemberAccessChanged {
        /// The member.
        user_id: UserId,
        /// What they hold from now on.
        access: Access,
    },
    /// An admin deactivated a member.
    MemberDeactivated {
        /// The member.
        user_id: UserId,
    },
    /// An admin reactivated a member.
    MemberReactivated {
        /// The member.
        user_id: UserId,
    },
    /// An admin removed a member.
    MemberRemoved {
        /// The former member.
        user_id: UserId,
    },
    /// The member cancelled their own access.
    MembershipCancelled {
        /// The former member.
        user_id: UserId,
    },
    /// An invitee whose link expired asked for a new invitation from the
    /// accept page; the mailer tells the inviter (or the account's admins).
    InvitationRenewalRequested {
        /// The expired invitation.
        invitation_id: InvitationId,
        /// Who sent it: the person asked to invite again.
        invited_by: Actor,
    },
}

impl AccountEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::AccountSettingsChanged { .. } => "AccountSettingsChanged",
            AccountEvent::AccountDeactivated { .. } => "AccountDeactivated",
            AccountEvent::AccountReactivated { .. } => "AccountReactivated",
            AccountEvent::ApiKeyCreated { .. } => "ApiKeyCreated",
            AccountEvent::ApiKeyRevoked { .. } => "ApiKeyRevoked",
            AccountEvent::RoleDefined { .. } => "RoleDefined",
            AccountEvent::RoleChanged { .. } => "RoleChanged",
            AccountEvent::RoleDeleted { .. } => "RoleDeleted",
            AccountEvent::MemberJoined { .. } => "MemberJoined",
            AccountEvent::MemberAccessChanged { .. } => "MemberAccessChanged",
            AccountEvent::MemberDeactivated { .. } => "MemberDeactivated",
            AccountEvent::MemberReactivated { .. } => "MemberReactivated",
            AccountEvent::MemberRemoved { .. } => "MemberRemoved",
            AccountEvent::MembershipCancelled { .. } => "MembershipCancelled",
            AccountEvent::InvitationRenewalRequested { .. } => "InvitationRenewalRequested",
        }
    }
}

impl Account {
    /// Folds one event into the state (None before the account is opened).
    pub fn evolve(state: Option<Account>, event: &AccountEvent) -> Option<Account> {
        use AccountEvent::*;
        if let AccountOpened { account_id, name, customer_number, settings } = event {
            return Some(Account {
                id: *account_id,
                name: name.clone(),
                customer_number: customer_number.clone(),
                settings: settings.clone(),
                roles: RoleCatalog::default(),
                members: BTreeMap::new(),
                active: true,
            });
        }
        let mut a = state?;
        match event {
            AccountOpened { .. } => {}
            AccountSettingsChanged { settings } => a.settings = settings.clone(),
            AccountDeactivated {} => a.active = false,
            ApiKeyCreated { key_id, permissions, .. } => {
                a.roles.key_roles.insert(crate::access::api_key_role(key_id), permissions.clone());
            }
            ApiKeyRevoked { key_id } => {
                a.roles.key_roles.remove(&crate::access::api_key_role(key_id));
            }
            AccountReactivated {} => a.active = true,
            RoleDefined { role, permissions } | RoleChanged { role, permissions } => {
                a.roles.custom.insert(role.clone(), permissions.clone());
            }
            RoleDeleted { role } => {
                a.roles.custom.remove(role);
                for m in a.members.values_mut() {
                    m.access.roles.remove(role);
                }
            }
            MemberJoined { user_id, access, .. } => {
                a.members.insert(*user_id, Member { access: access.clone(), status: MemberStatus::Active });
            }
            MemberAccessChanged { user_id, access } => {
                if let Some(m) = a.members.get_mut(user_id) {
                    m.access = access.clone();
                }
            }
            MemberDeactivated { user_id } => set_status(&mut a, user_id, MemberStatus::Deactivated),
            MemberReactivated { user_id } => set_status(&mut a, user_id, MemberStatus::Active),
            MemberRemoved { user_id } | MembershipCancelled { user_id } => {
                a.members.remove(user_id);
            }
            InvitationRenewalRequested { .. } => {}
        }
        Some(a)
    }

    /// Folds a whole stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a AccountEvent>) -> Option<Account> {
        events.into_iter().fold(None, Account::evolve)
    }

    /// Members that currently take a seat.
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| m.status == MemberStatus::Active).count()
    }

    /// The access `actor` holds here, when they are an active member (or
    /// the operator, who holds everything). API keys carry their own access,
    /// given by the caller.
    pub fn access_of(&self, actor: &Actor) -> Option<Access> {
        match actor {
            Actor::User(u) => {
                self.members.get(u).filter(|m| m.status == MemberStatus::Active).map(|m| m.access.clone())
            }
            Actor::Operator | Actor::System => Some(Access::roles([RoleName::owner()])),
            Actor::ApiKey(k) => {
                let role = crate::access::api_key_role(k);
                let permissions = self.roles.key_roles.get(&role)?;
                let sites = if permissions.contains(&Permission::AccountManage) {
                    crate::access::SiteAccess::All
                } else {
                    crate::access::SiteAccess::default()
                };
                Some(Access { roles: [role].into(), sites, ..Access::default() })
            }
        }
    }

    /// Refuses (`account_deactivated`) while the account is deactivated.
    pub fn require_active(&self) -> Result<(), DomainError> {
        if !self.active {
            return Err(DomainError::refused("account_deactivated", "this account is deactivated"));
        }
        Ok(())
    }

    /// Refuses (`forbidden`) unless `access` includes `permission` (and
    /// `account_deactivated` while the account is deactivated).
    pub fn require(&self, access: Option<&Access>, permission: Permission) -> Result<Access, DomainError> {
        self.require_active()?;
        match access {
            Some(a) if self.roles.permissions_of(a).contains(&permission) => Ok(a.clone()),
            _ => Err(DomainError::refused("forbidden", "you may not do this in this account")),
        }
    }

    fn active_owners(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.status == MemberStatus::Active && m.access.roles.contains(&RoleName::owner()))
            .count()
    }

    fn member(&self, user: UserId) -> Result<&Member, DomainError> {
        self.members.get(&user).ok_or_else(|| DomainError::refused("member_not_found", "no such member"))
    }

    /// Refuses when taking `user` out (or their owner role) would leave the
    /// account without an active owner.
    fn keep_an_owner(&self, user: UserId, remaining: Option<&Access>) -> Result<(), DomainError> {
        let m = self.member(user)?;
        let is_owner = m.status == MemberStatus::Active && m.access.roles.contains(&RoleName::owner());
        let stays_owner = remaining.is_some_and(|a| a.roles.contains(&RoleName::owner()));
        if is_owner && !stays_owner && self.active_owners() <= 1 {
            return Err(DomainError::refused("last_owner", "the account must keep at least one active owner"));
        }
        Ok(())
    }
}

fn set_status(a: &mut Account, user: &UserId, status: MemberStatus) {
    if let Some(m) = a.members.get_mut(user) {
        m.status = status;
    }
}

/// Who acts and with which rights (API keys bring their own access).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub actor: Actor,
    /// What they hold here (None: not a member).
    pub access: Option<Access>,
}

impl Caller {
    /// The caller as seen by `account`: members hold their membership's
    /// access; the operator holds everything.
    pub fn of(account: &Account, actor: Actor) -> Caller {
        Caller { actor, access: account.access_of(&actor) }
    }
}

/// Decides opening an account.
pub fn open(
    account_id: AccountId,
    name: AccountName,
    customer_number: CustomerNumber,
    settings: AccountSettings,
    existing: Option<&Account>,
) -> Result<Vec<AccountEvent>, DomainError> {
    if existing.is_some() {
        return Err(DomainError::refused("account_exists", "this account is already open"));
    }
    if settings.seat_limit == 0 {
        return Err(DomainError::invalid("seats", "invalid_seats", "an account needs at least one seat"));
    }
    settings.lifetime(None)?;
    Ok(vec![AccountEvent::AccountOpened { account_id, name, customer_number, settings }])
}

/// Decides the operator deactivating (`active = false`) or reactivating an
/// account. Only the operator may; doing what is already so decides nothing.
pub fn set_account_active(account: &Account, caller: &Caller, active: bool) -> Result<Vec<AccountEvent>, DomainError> {
    if caller.actor != Actor::Operator {
        return Err(DomainError::refused("forbidden", "only the operator deactivates or reactivates accounts"));
    }
    if account.active == active {
        return Ok(vec![]);
    }
    Ok(vec![if active { AccountEvent::AccountReactivated {} } else { AccountEvent::AccountDeactivated {} }])
}

/// Decides creating an API key: only with `account.manage`, and never with
/// more than the creator holds (nor `owners.manage`).
pub fn create_api_key(
    account: &Account,
    caller: &Caller,
    key_id: ApiKeyId,
    name: String,
    permissions: BTreeSet<Permission>,
    secret_hash: String,
) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::AccountManage)?;
    let name = name.trim().to_string();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DomainError::invalid(
            "name",
            "invalid_name",
            "a key needs a name of 1 to 100 printable characters",
        ));
    }
    check_role_permissions(account, &own, &permissions)?;
    Ok(vec![AccountEvent::ApiKeyCreated { key_id, name, permissions, secret_hash, created_by: caller.actor }])
}

/// Decides revoking an API key.
pub fn revoke_api_key(account: &Account, caller: &Caller, key_id: ApiKeyId) -> Result<Vec<AccountEvent>, DomainError> {
    account.require(caller.access.as_ref(), Permission::AccountManage)?;
    if !account.roles.key_roles.contains_key(&crate::access::api_key_role(&key_id)) {
        return Err(DomainError::refused("api_key_not_found", "no such API key"));
    }
    Ok(vec![AccountEvent::ApiKeyRevoked { key_id }])
}

/// Decides changing the account's settings: `account.manage` for
/// lifetimes, quota, domains and redirects; the seat limit is the
/// operator's (it is what the customer pays for).
pub fn change_settings(
    account: &Account,
    caller: &Caller,
    settings: AccountSettings,
) -> Result<Vec<AccountEvent>, DomainError> {
    account.require(caller.access.as_ref(), Permission::AccountManage)?;
    if settings.seat_limit != account.settings.seat_limit && caller.actor != Actor::Operator {
        return Err(DomainError::refused("forbidden", "only the operator changes the seat limit"));
    }
    if settings.seat_limit == 0 {
        return Err(DomainError::invalid("seats", "invalid_seats", "an account needs at least one seat"));
    }
    settings.lifetime(None)?;
    if settings.daily_invitation_quota == 0 {
        return Err(DomainError::invalid(
            "daily_invitation_quota",
            "invalid_quota",
            "the daily quota must be at least 1",
        ));
    }
    if settings == account.settings {
        return Ok(vec![]);
    }
    Ok(vec![AccountEvent::AccountSettingsChanged { settings }])
}

/// Decides defining a custom role: its permissions must be the caller's own.
pub fn define_role(
    account: &Account,
    caller: &Caller,
    role: RoleName,
    permissions: BTreeSet<Permission>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::RolesManage)?;
    if role.as_str().starts_with(crate::access::API_KEY_ROLE_PREFIX) {
        return Err(DomainError::invalid("name", "invalid_role_name", "role names starting with `key-` are reserved"));
    }
    if role.is_built_in() || account.roles.custom.contains_key(&role) {
        return Err(DomainError::refused("role_exists", format!("the role `{role}` already exists")));
    }
    check_role_permissions(account, &own, &permissions)?;
    Ok(vec![AccountEvent::RoleDefined { role, permissions }])
}

/// Decides changing a custom role.
pub fn change_role(
    account: &Account,
    caller: &Caller,
    role: RoleName,
    permissions: BTreeSet<Permission>,
) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::RolesManage)?;
    custom_role(account, &role)?;
    check_role_permissions(account, &own, &permissions)?;
    if account.roles.custom.get(&role) == Some(&permissions) {
        return Ok(vec![]);
    }
    Ok(vec![AccountEvent::RoleChanged { role, permissions }])
}

/// Decides deleting a custom role.
pub fn delete_role(account: &Account, caller: &Caller, role: RoleName) -> Result<Vec<AccountEvent>, DomainError> {
    account.require(caller.access.as_ref(), Permission::RolesManage)?;
    custom_role(account, &role)?;
    Ok(vec![AccountEvent::RoleDeleted { role }])
}

fn custom_role(account: &Account, role: &RoleName) -> Result<(), DomainError> {
    if role.is_built_in() {
        return Err(DomainError::refused("built_in_role", "built-in roles cannot be changed or deleted"));
    }
    if !account.roles.custom.contains_key(role) {
        return Err(DomainError::refused("role_not_found", format!("the account has no role `{role}`")));
    }
    Ok(())
}

fn check_role_permissions(
    account: &Account,
    own: &Access,
    permissions: &BTreeSet<Permission>,
) -> Result<(), DomainError> {
    let mine = account.roles.permissions_of(own);
    if permissions.contains(&Permission::OwnersManage) || !permissions.is_subset(&mine) {
        return Err(DomainError::refused(
            "exceeds_own_rights",
            "a role may only hold permissions you hold yourself (and never owners.manage)",
        ));
    }
    Ok(())
}

/// Decides changing what a member holds (role ceiling on both the member's
/// current and new access: nobody edits someone above themselves).
pub fn change_member_access(
    account: &Account,
    caller: &Caller,
    user: UserId,
    access: Access,
) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::MembersManage)?;
    let member = account.member(user)?;
    account.roles.check_known(&access)?;
    account.roles.check_ceiling(&own, &member.access)?;
    account.roles.check_ceiling(&own, &access)?;
    account.keep_an_owner(user, Some(&access))?;
    if member.access == access {
        return Ok(vec![]);
    }
    Ok(vec![AccountEvent::MemberAccessChanged { user_id: user, access }])
}

/// Decides deactivating a member.
pub fn deactivate_member(account: &Account, caller: &Caller, user: UserId) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::MembersManage)?;
    let member = account.member(user)?;
    account.roles.check_ceiling(&own, &member.access)?;
    if member.status == MemberStatus::Deactivated {
        return Ok(vec![]);
    }
    account.keep_an_owner(user, None)?;
    Ok(vec![AccountEvent::MemberDeactivated { user_id: user }])
}

/// Decides reactivating a member: they take a seat again, so
/// `pending_invitations` (from the reservations) counts.
pub fn reactivate_member(
    account: &Account,
    caller: &Caller,
    user: UserId,
    pending_invitations: u32,
) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::MembersManage)?;
    let member = account.member(user)?;
    account.roles.check_ceiling(&own, &member.access)?;
    if member.status == MemberStatus::Active {
        return Ok(vec![]);
    }
    check_seat(account, pending_invitations)?;
    Ok(vec![AccountEvent::MemberReactivated { user_id: user }])
}

/// Decides removing a member.
pub fn remove_member(account: &Account, caller: &Caller, user: UserId) -> Result<Vec<AccountEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::MembersManage)?;
    let member = account.member(user)?;
    account.roles.check_ceiling(&own, &member.access)?;
    account.keep_an_owner(user, None)?;
    Ok(vec![AccountEvent::MemberRemoved { user_id: user }])
}

/// Decides a member cancelling their own access.
pub fn cancel_membership(account: &Account, user: UserId) -> Result<Vec<AccountEvent>, DomainError> {
    account.member(user)?;
    account.require_active()?;
    account.keep_an_owner(user, None)?;
    Ok(vec![AccountEvent::MembershipCancelled { user_id: user }])
}

/// Refuses (`seat_limit_reached`) when one more seat would exceed the limit.
pub fn check_seat(account: &Account, pending_invitations: u32) -> Result<(), DomainError> {
    let used = account.active_members() as u64 + u64::from(pending_invitations);
    if used >= u64::from(account.settings.seat_limit) {
        return Err(DomainError::refused(
            "seat_limit_reached",
            format!("all {} seats are taken by members and pending invitations", account.settings.seat_limit),
        ));
    }
    Ok(())
}

/// Start of the rolling day for quota counting.
pub fn quota_window_start(now: DateTime<Utc>) -> DateTime<Utc> {
    now - Duration::days(1)
}
