//! The members and invitations of every account as they stood at a past
//! moment (a time or a log position), folded from the log with the domain's
//! own `evolve`, so it answers "who had access then, and why".

use std::collections::BTreeMap;

use admit_domain::access::Access;
use admit_domain::account::{Account, AccountEvent, MemberStatus};
use admit_domain::ids::{AccountId, InvitationId, UserId};
use admit_domain::invitation::Invitation;
use admit_domain::user::User;
use admit_domain::Event;
use admit_ledger::{Database, GlobalCursor};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Codec, Result};

/// Where to stop folding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    /// Events recorded at or before this time.
    Time(DateTime<Utc>),
    /// Events at or below this global position.
    Position(i64),
}

impl std::str::FromStr for Moment {
    type Err = String;

    /// An RFC 3339 time or a position (a whole number).
    fn from_str(s: &str) -> std::result::Result<Moment, String> {
        if let Ok(p) = s.parse::<i64>() {
            return Ok(Moment::Position(p));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Moment::Time(t.with_timezone(&Utc)))
            .map_err(|_| format!("`{s}` is neither an RFC 3339 time nor a log position"))
    }
}

/// One account as it stood.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountView {
    /// Its id.
    pub account_id: AccountId,
    /// Name then.
    pub name: String,
    /// Customer number.
    pub customer_number: String,
    /// Members then.
    pub members: Vec<MemberView>,
    /// Invitations then.
    pub invitations: Vec<InvitationView>,
}

/// A member as they stood: what they held and through which invitation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MemberView {
    /// The user.
    pub user_id: UserId,
    /// Their email, or null once erased.
    pub email: Option<String>,
    /// Their name, or null once erased.
    pub name: Option<String>,
    /// `active` or `inactive`.
    pub status: &'static str,
    /// What they held.
    pub access: Access,
    /// The invitation that brought them in (why they had access).
    pub invitation_id: Option<InvitationId>,
    /// Who sent that invitation.
    pub invited_by: Option<String>,
}

/// An invitation as it stood.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InvitationView {
    /// Its id.
    pub invitation_id: InvitationId,
    /// Invitee email, or null once erased.
    pub email: Option<String>,
    /// Status then.
    pub status: &'static str,
    /// What accepting grants.
    pub access: Access,
    /// Who invited.
    pub invited_by: String,
    /// Deadline then.
    pub expires_at: DateTime<Utc>,
}

/// Folds the log up to `moment` and returns every account as it stood.
pub async fn accounts_as_of(db: &Database, moment: Moment) -> Result<Vec<AccountView>> {
    let mut accounts: BTreeMap<AccountId, Option<Account>> = BTreeMap::new();
    let mut joined_via: BTreeMap<(AccountId, UserId), InvitationId> = BTreeMap::new();
    let mut invitations: BTreeMap<InvitationId, Option<Invitation>> = BTreeMap::new();
    let mut users: BTreeMap<UserId, Option<User>> = BTreeMap::new();
    // One snapshot for the whole scan: a consistent state, and no waiting
    // for transactions in flight anywhere on the server.
    let mut tx = db.begin_snapshot().await?;
    let mut cursor = GlobalCursor::START;
    loop {
        let batch = tx.read_all_committed(cursor, 5_000).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let included: Vec<_> = batch
            .into_iter()
            .filter(|e| match moment {
                Moment::Time(t) => e.recorded_at <= t,
                Moment::Position(p) => e.position <= p,
            })
            .collect();
        for env in Codec::decode_all_in(&mut tx, &included).await? {
            match &env.event {
                Event::Account(id, e) => {
                    if let AccountEvent::MemberJoined { user_id, invitation_id, .. } = e {
                        joined_via.insert((*id, *user_id), *invitation_id);
                    }
                    let slot = accounts.entry(*id).or_default();
                    *slot = Account::evolve(slot.take(), e);
                }
                Event::Invitation(id, e) => {
                    let slot = invitations.entry(*id).or_default();
                    *slot = Invitation::evolve(slot.take(), e);
                }
                Event::User(id, e) => {
                    let slot = users.entry(*id).or_default();
                    *slot = User::evolve(slot.take(), e);
                }
            }
        }
    }

    let mut out = Vec::new();
    for (id, account) in accounts {
        let Some(account) = account else { continue };
        let members = account
            .members
            .iter()
            .map(|(user_id, m)| {
                let user = users.get(user_id).and_then(|u| u.as_ref());
                let invitation_id = joined_via.get(&(id, *user_id)).copied();
                let invited_by = invitation_id
                    .and_then(|i| invitations.get(&i).and_then(|x| x.as_ref()))
                    .map(|i| i.invited_by.to_string());
                MemberView {
                    user_id: *user_id,
                    email: user.and_then(|u| u.personal.email()).map(|e| e.to_string()),
                    name: user.and_then(|u| u.personal.name()).map(|n| n.to_string()),
                    status: if m.status == MemberStatus::Active { "active" } else { "inactive" },
                    access: m.access.clone(),
                    invitation_id,
                    invited_by,
                }
            })
            .collect();
        let invitations = invitations
            .values()
            .flatten()
            .filter(|i| i.account_id == id)
            .map(|i| InvitationView {
                invitation_id: i.id,
                email: i.personal.email().map(|e| e.to_string()),
                status: i.status.as_str(),
                access: i.access.clone(),
                invited_by: i.invited_by.to_string(),
                expires_at: i.expires_at,
            })
            .collect();
        out.push(AccountView {
            account_id: id,
            name: account.name.to_string(),
            customer_number: account.customer_number.to_string(),
            members,
            invitations,
        });
    }
    Ok(out)
}
