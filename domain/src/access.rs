//! What a member may do in an account: roles, feature permissions with
//! levels, and access to sites and their sources; and the role ceiling that
//! stops anyone granting more than they hold.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::values::{FeatureName, RoleName, SiteId, SourceId};
use crate::DomainError;

/// One thing a role allows in Admit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// See the account and its settings.
    #[serde(rename = "account.read")]
    AccountRead,
    /// Change the account's settings, seats, API keys.
    #[serde(rename = "account.manage")]
    AccountManage,
    /// List members.
    #[serde(rename = "members.read")]
    MembersRead,
    /// Change, deactivate and remove members.
    #[serde(rename = "members.manage")]
    MembersManage,
    /// List invitations.
    #[serde(rename = "invitations.read")]
    InvitationsRead,
    /// Invite people.
    #[serde(rename = "invitations.create")]
    InvitationsCreate,
    /// Invite many at once (JSON list or CSV).
    #[serde(rename = "invitations.bulk")]
    InvitationsBulk,
    /// Update, resend and revoke anyone's invitations.
    #[serde(rename = "invitations.manage")]
    InvitationsManage,
    /// Define, change and delete custom roles.
    #[serde(rename = "roles.manage")]
    RolesManage,
    /// Read the account's raw events and replay them (auditors).
    #[serde(rename = "audit.read")]
    AuditRead,
    /// Grant or take the owner role.
    #[serde(rename = "owners.manage")]
    OwnersManage,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 11] = [
        Permission::AccountRead,
        Permission::AccountManage,
        Permission::MembersRead,
        Permission::MembersManage,
        Permission::InvitationsRead,
        Permission::InvitationsCreate,
        Permission::InvitationsBulk,
        Permission::InvitationsManage,
        Permission::RolesManage,
        Permission::AuditRead,
        Permission::OwnersManage,
    ];
}

/// The permissions of a built-in role; None for a custom role name.
///
/// owner: everything. admin: everything but granting ownership. editor:
/// read members and invitations. viewer: read the account. auditor: read
/// everything including the raw events, change nothing.
pub fn built_in_permissions(role: &RoleName) -> Option<BTreeSet<Permission>> {
    use Permission::*;
    let set: &[Permission] = match role.as_str() {
        "owner" => &Permission::ALL,
        "admin" => &[
            AccountRead,
            AccountManage,
            MembersRead,
            MembersManage,
            InvitationsRead,
            InvitationsCreate,
            InvitationsBulk,
            InvitationsManage,
            RolesManage,
            AuditRead,
        ],
        "editor" => &[AccountRead, MembersRead, InvitationsRead],
        "viewer" => &[AccountRead],
        "auditor" => &[AccountRead, MembersRead, InvitationsRead, AuditRead],
        _ => return None,
    };
    Some(set.iter().copied().collect())
}

/// How much of a product feature a member may use. Ordered: View < Edit < Manage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// May look.
    View,
    /// May change.
    Edit,
    /// May change and administer.
    Manage,
}

/// Which sources of one site a member reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceScope {
    /// Every source of the site, present and future.
    All,
    /// Only these sources.
    Only(BTreeSet<SourceId>),
}

/// Which sites a member reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteAccess {
    /// Every site of the account, present and future.
    All,
    /// Only these sites, each with its sources.
    Only(BTreeMap<SiteId, SourceScope>),
}

impl Default for SiteAccess {
    fn default() -> Self {
        SiteAccess::Only(BTreeMap::new())
    }
}

/// What an invitation grants and a member holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// Built-in or custom roles.
    #[serde(default)]
    pub roles: BTreeSet<RoleName>,
    /// Product features with a level each.
    #[serde(default)]
    pub features: BTreeMap<FeatureName, Level>,
    /// Sites and their sources.
    #[serde(default)]
    pub sites: SiteAccess,
}

impl Access {
    /// Access made of roles only.
    pub fn roles(roles: impl IntoIterator<Item = RoleName>) -> Access {
        Access { roles: roles.into_iter().collect(), ..Access::default() }
    }

    /// A member with no rights at all is "restricted" until an admin grants some.
    pub fn is_restricted(&self) -> bool {
        self.roles.is_empty() && self.features.is_empty() && self.sites == SiteAccess::default()
    }

    /// Drops roles the account no longer defines (a deleted custom role).
    pub fn without_unknown_roles(mut self, catalog: &RoleCatalog) -> Access {
        self.roles.retain(|r| catalog.permissions(r).is_some());
        self
    }
}

/// The roles an account knows: the built-ins plus its custom roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCatalog {
    /// Custom roles and their permissions.
    pub custom: BTreeMap<RoleName, BTreeSet<Permission>>,
    /// The permission sets of active API keys, each under the reserved role
    /// name [`api_key_role`]: an API key acts as a holder of that role only.
    /// Never grantable and never listed.
    #[serde(default)]
    pub key_roles: BTreeMap<RoleName, BTreeSet<Permission>>,
}

/// Prefix of the reserved role names that stand for API keys.
pub const API_KEY_ROLE_PREFIX: &str = "key-";

/// The reserved role name standing for one API key's permissions.
pub fn api_key_role(key: &crate::ids::ApiKeyId) -> RoleName {
    RoleName::parse(&format!("{API_KEY_ROLE_PREFIX}{}", key.0.simple())).expect("a valid role name")
}

impl RoleCatalog {
    /// The permissions of `role`, or None when the account has no such role.
    pub fn permissions(&self, role: &RoleName) -> Option<BTreeSet<Permission>> {
        built_in_permissions(role)
            .or_else(|| self.custom.get(role).cloned())
            .or_else(|| self.key_roles.get(role).cloned())
    }

    /// The union of the permissions of `access`'s roles.
    pub fn permissions_of(&self, access: &Access) -> BTreeSet<Permission> {
        access.roles.iter().filter_map(|r| self.permissions(r)).flatten().collect()
    }

    /// Refuses roles the account does not define (`unknown_role`); the
    /// reserved API-key roles count as unknown: nobody can be given one.
    pub fn check_known(&self, access: &Access) -> Result<(), DomainError> {
        let grantable = |r: &RoleName| built_in_permissions(r).is_some() || self.custom.contains_key(r);
        match access.roles.iter().find(|r| !grantable(r)) {
            Some(r) => Err(DomainError::refused("unknown_role", format!("the account has no role `{r}`"))),
            None => Ok(()),
        }
    }

    /// The role ceiling: refuses (`exceeds_own_rights`) when `granted`
    /// holds anything `grantor` does not. Someone who manages the account
    /// holds every feature level and every site.
    pub fn check_ceiling(&self, grantor: &Access, granted: &Access) -> Result<(), DomainError> {
        let mine = self.permissions_of(grantor);
        let theirs = self.permissions_of(granted);
        if let Some(p) = theirs.difference(&mine).next() {
            return Err(exceeds(format!("it grants `{}`, which you do not hold", permission_name(*p))));
        }
        if granted.roles.contains(&RoleName::owner()) && !mine.contains(&Permission::OwnersManage) {
            return Err(exceeds("only owners may grant the owner role".into()));
        }
        if mine.contains(&Permission::AccountManage) {
            return Ok(());
        }
        for (feature, level) in &granted.features {
            if grantor.features.get(feature).is_none_or(|own| own < level) {
                return Err(exceeds(format!("it grants feature `{feature}` above your own level")));
            }
        }
        if !sites_cover(&grantor.sites, &granted.sites) {
            return Err(exceeds("it grants sites or sources you cannot reach".into()));
        }
        Ok(())
    }
}

fn exceeds(reason: String) -> DomainError {
    DomainError::refused("exceeds_own_rights", format!("you cannot grant this: {reason}"))
}

fn permission_name(p: Permission) -> String {
    serde_json::to_value(p).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn sites_cover(mine: &SiteAccess, theirs: &SiteAccess) -> bool {
    match (mine, theirs) {
        (SiteAccess::All, _) => true,
        (SiteAccess::Only(_), SiteAccess::All) => false,
        (SiteAccess::Only(own), SiteAccess::Only(granted)) => {
            granted.iter().all(|(site, scope)| match (own.get(site), scope) {
                (None, _) => false,
                (Some(SourceScope::All), _) => true,
                (Some(SourceScope::Only(_)), SourceScope::All) => false,
                (Some(SourceScope::Only(a)), SourceScope::Only(b)) => b.is_subset(a),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(s: &str) -> RoleName {
        RoleName::parse(s).unwrap()
    }

    fn site(s: &str, sources: &[&str]) -> (SiteId, SourceScope) {
        let scope = if sources.is_empty() {
            SourceScope::All
        } else {
            SourceScope::Only(sources.iter().map(|x| SourceId::parse(x).unwrap()).collect())
        };
        (SiteId::parse(s).unwrap(), scope)
    }

    #[test]
    fn given_an_admin_when_granting_owner_then_refused() {
        let c = RoleCatalog::default();
        let err = c.check_ceiling(&Access::roles([role("admin")]), &Access::roles([role("owner")])).unwrap_err();
        assert_eq!(err.code(), "exceeds_own_rights");
        assert!(c.check_ceiling(&Access::roles([role("owner")]), &Access::roles([role("owner")])).is_ok());
        assert!(c.check_ceiling(&Access::roles([role("admin")]), &Access::roles([role("admin")])).is_ok());
    }

    #[test]
    fn given_an_editor_when_granting_admin_then_refused() {
        let c = RoleCatalog::default();
        assert!(c.check_ceiling(&Access::roles([role("editor")]), &Access::roles([role("admin")])).is_err());
        assert!(c.check_ceiling(&Access::roles([role("editor")]), &Access::roles([role("viewer")])).is_ok());
    }

    #[test]
    fn given_a_custom_role_when_its_permissions_exceed_the_grantor_then_refused() {
        let mut c = RoleCatalog::default();
        c.custom.insert(role("support"), [Permission::InvitationsCreate, Permission::AuditRead].into());
        let grantor = Access::roles([role("editor")]);
        assert!(c.check_ceiling(&grantor, &Access::roles([role("support")])).is_err());
        assert!(c.check_ceiling(&Access::roles([role("admin")]), &Access::roles([role("support")])).is_ok());
    }

    #[test]
    fn given_feature_levels_then_only_up_to_the_grantors_level() {
        let c = RoleCatalog::default();
        let f = FeatureName::parse("reports").unwrap();
        let mut grantor = Access::roles([role("editor")]);
        grantor.features.insert(f.clone(), Level::Edit);
        let mut granted = Access::default();
        granted.features.insert(f.clone(), Level::Edit);
        assert!(c.check_ceiling(&grantor, &granted).is_ok());
        granted.features.insert(f, Level::Manage);
        assert!(c.check_ceiling(&grantor, &granted).is_err());
    }

    #[test]
    fn given_site_grants_then_only_reachable_sites_and_sources() {
        let c = RoleCatalog::default();
        let grantor =
            Access { sites: SiteAccess::Only([site("a", &["s1", "s2"]), site("b", &[])].into()), ..Access::default() };
        let ok =
            Access { sites: SiteAccess::Only([site("a", &["s1"]), site("b", &["x"])].into()), ..Access::default() };
        assert!(c.check_ceiling(&grantor, &ok).is_ok());
        for bad in [
            SiteAccess::All,
            SiteAccess::Only([site("c", &[])].into()),
            SiteAccess::Only([site("a", &[])].into()),
            SiteAccess::Only([site("a", &["s3"])].into()),
        ] {
            assert!(c.check_ceiling(&grantor, &Access { sites: bad.clone(), ..Access::default() }).is_err(), "{bad:?}");
        }
        // An account manager reaches every site.
        assert!(c
            .check_ceiling(&Access::roles([role("admin")]), &Access { sites: SiteAccess::All, ..Access::default() })
            .is_ok());
    }

    #[test]
    fn restricted_means_no_rights_at_all() {
        assert!(Access::default().is_restricted());
        assert!(!Access::roles([role("viewer")]).is_restricted());
    }

    #[test]
    fn unknown_roles_are_refused_and_dropped() {
        let c = RoleCatalog::default();
        assert_eq!(c.check_known(&Access::roles([role("ghost")])).unwrap_err().code(), "unknown_role");
        let kept = Access::roles([role("ghost"), role("viewer")]).without_unknown_roles(&c);
        assert_eq!(kept, Access::roles([role("viewer")]));
    }
}
