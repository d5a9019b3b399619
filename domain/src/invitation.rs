//! The invitation aggregate: one email invited to one account, from sent to
//! accepted, declined, expired or revoked. Stream `invitation-{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::{Access, Permission};
use crate::account::{self, Account, Caller};
use crate::ids::{AccountId, Actor, InvitationId, PersonId, UserId};
use crate::personal::Personal;
use crate::token::{LinkKey, LinkNonce, ParsedToken};
use crate::values::{EmailAddress, LinkLifetime, PersonName, RoleName};
use crate::DomainError;

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting for the invitee.
    Pending,
    /// The invitee joined.
    Accepted,
    /// The invitee said no.
    Declined,
    /// The link's deadline passed.
    Expired,
    /// An admin (or a cascade) withdrew it.
    Revoked,
}

impl InvitationStatus {
    /// The stable lower-case name used in the API and read models.
    pub fn as_str(&self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
            InvitationStatus::Expired => "expired",
            InvitationStatus::Revoked => "revoked",
        }
    }
}

/// How the invitation was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A signed-in admin, one at a time.
    Session,
    /// An API key.
    ApiKey,
    /// A bulk request (JSON list or CSV).
    Bulk,
    /// The `admit` command line.
    Cli,
    /// The operator API.
    Operator,
}

/// What happened to the invitation email.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// The mailer took it.
    Processed,
    /// The SMTP server accepted it.
    Delivered,
    /// The tracking pixel was loaded.
    Opened,
    /// The link was visited.
    Clicked,
    /// The server bounced it.
    Bounced,
    /// Sending failed after retries.
    Failed,
}

impl DeliveryState {
    /// The stable lower-case name used in events, the API and read models
    /// (the serde name).
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Processed => "processed",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Opened => "opened",
            DeliveryState::Clicked => "clicked",
            DeliveryState::Bounced => "bounced",
            DeliveryState::Failed => "failed",
        }
    }
}

/// Why an invitation was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// An admin withdrew it.
    ByAdmin,
    /// The member who sent it was removed or deactivated.
    InviterRemoved,
    /// The invitee's personal data was erased.
    PersonErased,
}

/// Facts about an invitation, in past tense.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum InvitationEvent {
    /// An invitation was sent (the mailer mails it).
    InvitationSent {
        /// Its id.
        invitation_id: InvitationId,
        /// The account invited to.
        account_id: AccountId,
        /// The person invited (key holder of `personal`).
        person_id: PersonId,
        /// Email and name (sealed when stored).
        personal: Personal,
        /// What accepting grants.
        access: Access,
        /// Who invited.
        invited_by: Actor,
        /// Through which channel.
        channel: Channel,
        /// Deadline of the link.
        expires_at: DateTime<Utc>,
        /// Per-issue nonce: the link token is an HMAC of id and nonce.
        link_nonce: LinkNonce,
        /// The inviter's own data for the invitation (a JSON object).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
        /// Where to send the invitee after accepting (an allowed URL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        redirect_url: Option<String>,
    },
    /// A pending invitation's grant or deadline changed.
    InvitationUpdated {
        /// What accepting grants now.
        access: Access,
        /// The deadline now.
        expires_at: DateTime<Utc>,
        /// Who changed it.
        updated_by: Actor,
    },
    /// A new link was issued; the old one is dead.
    InvitationResent {
        /// The new link's nonce.
        link_nonce: LinkNonce,
        /// The new deadline.
        expires_at: DateTime<Utc>,
        /// Who resent.
        resent_by: Actor,
        /// Mail a copy to the resender too.
        send_copy_to_me: bool,
    },
    /// The mailer or the tracking routes learned something about delivery.
    InvitationDeliveryRecorded {
        /// What happened.
        state: DeliveryState,
        /// Server answer or failure reason.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// The pending invitee was reminded (the mailer mails the reminder);
    /// at most once per link.
    InvitationReminded {
        /// The deadline the reminder announces.
        expires_at: DateTime<Utc>,
    },
    /// The invitee joined the account.
    InvitationAccepted {
        /// The user who joined.
        user_id: UserId,
        /// The access granted (after dropping deleted roles).
        access: Access,
    },
    /// The invitee said no.
    InvitationDeclined {},
    /// The deadline passed before anyone accepted.
    InvitationExpired {},
    /// The invitation was withdrawn.
    InvitationRevoked {
        /// Who withdrew it.
        revoked_by: Actor,
        /// Why.
        reason: RevokeReason,
    },
}

impl InvitationEvent {
    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            InvitationEvent::InvitationSent { .. } => "InvitationSent",
            InvitationEvent::InvitationUpdated { .. } => "InvitationUpdated",
            InvitationEvent::InvitationResent { .. } => "InvitationResent",
            InvitationEvent::InvitationDeliveryRecorded { .. } => "InvitationDeliveryRecorded",
            InvitationEvent::InvitationReminded { .. } => "InvitationReminded",
            InvitationEvent::InvitationAccepted { .. } => "InvitationAccepted",
            InvitationEvent::InvitationDeclined { .. } => "InvitationDeclined",
            InvitationEvent::InvitationExpired { .. } => "InvitationExpired",
            InvitationEvent::InvitationRevoked { .. } => "InvitationRevoked",
        }
    }
}

/// The invitation as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Its id.
    pub id: InvitationId,
    /// The account invited to.
    pub account_id: AccountId,
    /// The person invited.
    pub person_id: PersonId,
    /// Their email and name, or erased.
    pub personal: Personal,
    /// What accepting grants.
    pub access: Access,
    /// Who invited.
    pub invited_by: Actor,
    /// Where it stands.
    pub status: InvitationStatus,
    /// Deadline of the current link.
    pub expires_at: DateTime<Utc>,
    /// Nonce of the current link.
    pub link_nonce: LinkNonce,
    /// How often a new link was issued.
    pub resend_count: u32,
    /// Where to send the invitee after accepting.
    pub redirect_url: Option<String>,
    /// Kinds of delivery fact recorded so far.
    pub delivery_seen: std::collections::BTreeSet<DeliveryState>,
    /// Whether the invitee was reminded of the current link.
    pub reminded: bool,
}

impl Invitation {
    /// Folds one event into the state.
    pub fn evolve(state: Option<Invitation>, event: &InvitationEvent) -> Option<Invitation> {
        use InvitationEvent::*;
        if let InvitationSent {
            invitation_id,
            account_id,
            person_id,
            personal,
            access,
            invited_by,
            expires_at,
            link_nonce,
            redirect_url,
            ..
        } = event
        {
            return Some(Invitation {
                id: *invitation_id,
                account_id: *account_id,
                person_id: *person_id,
                personal: personal.clone(),
                access: access.clone(),
                invited_by: *invited_by,
                status: InvitationStatus::Pending,
                expires_at: *expires_at,
                link_nonce: *link_nonce,
                resend_count: 0,
                redirect_url: redirect_url.clone(),
                delivery_seen: Default::default(),
                reminded: false,
            });
        }
        let mut i = state?;
        match event {
            InvitationSent { .. } => {}
            InvitationDeliveryRecorded { state, .. } => {
                i.delivery_seen.insert(*state);
            }
            InvitationUpdated { access, expires_at, .. } => {
                i.access = access.clone();
                i.reminded &= i.expires_at == *expires_at;
                i.expires_at = *expires_at;
            }
            InvitationResent { link_nonce, expires_at, .. } => {
                i.link_nonce = *link_nonce;
                i.expires_at = *expires_at;
                i.resend_count += 1;
                i.reminded = false;
            }
            InvitationReminded { .. } => i.reminded = true,
            InvitationAccepted { access, .. } => {
                i.status = InvitationStatus::Accepted;
                i.access = access.clone();
            }
            InvitationDeclined {} => i.status = InvitationStatus::Declined,
            InvitationExpired {} => i.status = InvitationStatus::Expired,
            InvitationRevoked { .. } => i.status = InvitationStatus::Revoked,
        }
        Some(i)
    }

    /// Folds a whole stream.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a InvitationEvent>) -> Option<Invitation> {
        events.into_iter().fold(None, Invitation::evolve)
    }

    /// Pending and its deadline not passed: it holds a seat and blocks
    /// another invitation of the same email. A lapsed one blocks nothing.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.status == InvitationStatus::Pending && now < self.expires_at
    }

    /// Refuses unless pending and not past its deadline, with a code per
    /// case (`invitation_used`, `invitation_expired`, ...).
    pub fn require_live(&self, now: DateTime<Utc>) -> Result<(), DomainError> {
        let (code, what) = match self.status {
            InvitationStatus::Pending if now < self.expires_at => return Ok(()),
            InvitationStatus::Pending | InvitationStatus::Expired => ("invitation_expired", "has expired"),
            InvitationStatus::Accepted => ("invitation_used", "was already used"),
            InvitationStatus::Declined => ("invitation_declined", "was declined"),
            InvitationStatus::Revoked => ("invitation_revoked", "was revoked"),
        };
        Err(DomainError::refused(code, format!("this invitation {what}")))
    }
}

/// What the command handler looked up about an invitee before inviting.
#[derive(Debug, Clone, Default)]
pub struct InviteeFacts {
    /// The user with this email, if one exists.
    pub user: Option<UserId>,
    /// A live pending invitation of this email to this account.
    pub pending_invitation: Option<InvitationId>,
    /// Live pending invitations of the account (seats they hold).
    pub pending_in_account: u32,
    /// Invitations the inviter sent in the last rolling day.
    pub sent_by_inviter_today: u32,
}

/// Everything needed to decide one invitation.
#[derive(Debug, Clone)]
pub struct Invite {
    /// New invitation's id.
    pub invitation_id: InvitationId,
    /// The invitee's person id (from the key vault).
    pub person_id: PersonId,
    /// Invitee email.
    pub email: EmailAddress,
    /// Invitee name, optional.
    pub name: Option<PersonName>,
    /// What accepting grants.
    pub access: Access,
    /// Requested lifetime (None: the account's default).
    pub expires_in: Option<LinkLifetime>,
    /// Random nonce for the link.
    pub link_nonce: LinkNonce,
    /// Through which channel.
    pub channel: Channel,
    /// The inviter's own data (a JSON object of at most [`MAX_METADATA_BYTES`]).
    pub metadata: Option<serde_json::Value>,
    /// Where to send the invitee after accepting; must be allowed by the account.
    pub redirect_url: Option<String>,
}

/// Largest serialised `metadata` an invitation may carry.
pub const MAX_METADATA_BYTES: usize = 4096;

fn check_metadata(metadata: &Option<serde_json::Value>) -> Result<(), DomainError> {
    match metadata {
        None => Ok(()),
        Some(v) if !v.is_object() => {
            Err(DomainError::invalid("metadata", "invalid_metadata", "metadata must be a JSON object"))
        }
        Some(v) if v.to_string().len() > MAX_METADATA_BYTES => Err(DomainError::invalid(
            "metadata",
            "invalid_metadata",
            format!("metadata may hold at most {MAX_METADATA_BYTES} bytes"),
        )),
        Some(_) => Ok(()),
    }
}

/// Decides sending an invitation, enforcing every rule of DESIGN.md:
/// permission, role ceiling, known roles, allowed domains, no invitation to
/// a member, one pending invitation per email, seat limit, daily quota,
/// lifetime bounds.
pub fn invite(
    account: &Account,
    caller: &Caller,
    cmd: Invite,
    facts: &InviteeFacts,
    now: DateTime<Utc>,
) -> Result<Vec<InvitationEvent>, DomainError> {
    let own = account.require(caller.access.as_ref(), Permission::InvitationsCreate)?;
    account.roles.check_known(&cmd.access)?;
    account.roles.check_ceiling(&own, &cmd.access)?;
    let allowed = &account.settings.allowed_email_domains;
    if !allowed.is_empty() && !allowed.contains(cmd.email.domain()) {
        return Err(DomainError::refused(
            "email_domain_not_allowed",
            format!(
                "this account only invites addresses at {}",
                allowed.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    if facts.user.is_some_and(|u| account.members.contains_key(&u)) {
        return Err(DomainError::refused("already_member", "this person is already a member of the account"));
    }
    if facts.pending_invitation.is_some() {
        return Err(DomainError::refused("already_invited", "this person already has a pending invitation"));
    }
    check_metadata(&cmd.metadata)?;
    if let Some(url) = &cmd.redirect_url {
        if !account.settings.allowed_redirect_urls.contains(url) {
            return Err(DomainError::invalid(
                "redirect_url",
                "redirect_not_allowed",
                "the redirect URL is not in the account's allowed list",
            ));
        }
    }
    account::check_seat(account, facts.pending_in_account)?;
    check_quota(account, caller, facts.sent_by_inviter_today)?;
    let lifetime = account.settings.lifetime(cmd.expires_in)?;
    Ok(vec![InvitationEvent::InvitationSent {
        invitation_id: cmd.invitation_id,
        account_id: account.id,
        person_id: cmd.person_id,
        personal: Personal::Known { email: cmd.email, name: cmd.name },
        access: cmd.access,
        invited_by: caller.actor,
        channel: cmd.channel,
        expires_at: now + lifetime,
        link_nonce: cmd.link_nonce,
        metadata: cmd.metadata,
        redirect_url: cmd.redirect_url,
    }])
}

/// Decides taking a deleted custom role out of a pending invitation's
/// grant, so what the invitation shows is what accepting gives.
pub fn drop_role(invitation: &Invitation, role: &RoleName, by: Actor) -> Vec<InvitationEvent> {
    if invitation.status != InvitationStatus::Pending || !invitation.access.roles.contains(role) {
        return vec![];
    }
    let mut access = invitation.access.clone();
    access.roles.remove(role);
    vec![InvitationEvent::InvitationUpdated { access, expires_at: invitation.expires_at, updated_by: by }]
}

fn check_quota(account: &Account, caller: &Caller, sent_today: u32) -> Result<(), DomainError> {
    if matches!(caller.actor, Actor::Operator | Actor::System) {
        return Ok(());
    }
    if sent_today >= account.settings.daily_invitation_quota {
        return Err(DomainError::refused(
            "daily_quota_exceeded",
            format!("you may send {} invitations per day", account.settings.daily_invitation_quota),
        ));
    }
    Ok(())
}

/// Callers who may change an invitation: its inviter, or anyone with
/// `invitations.manage`; always within their own rights.
fn require_manager(account: &Account, caller: &Caller, invitation: &Invitation) -> Result<Access, DomainError> {
    let own = match account.require(caller.access.as_ref(), Permission::InvitationsManage) {
        Ok(own) => own,
        Err(e) if caller.actor != invitation.invited_by => return Err(e),
        Err(_) => account.require(caller.access.as_ref(), Permission::InvitationsCreate)?,
    };
    account.roles.check_ceiling(&own, &invitation.access)?;
    Ok(own)
}

/// Decides updating a pending invitation (grant and/or lifetime from now).
pub fn update(
    account: &Account,
    caller: &Caller,
    invitation: &Invitation,
    access: Option<Access>,
    expires_in: Option<LinkLifetime>,
    now: DateTime<Utc>,
) -> Result<Vec<InvitationEvent>, DomainError> {
    let own = require_manager(account, caller, invitation)?;
    invitation.require_live(now)?;
    let access = access.unwrap_or_else(|| invitation.access.clone());
    account.roles.check_known(&access)?;
    account.roles.check_ceiling(&own, &access)?;
    let expires_at = match expires_in {
        Some(l) => now + l.duration(),
        None => invitation.expires_at,
    };
    if access == invitation.access && expires_at == invitation.expires_at {
        return Ok(vec![]);
    }
    Ok(vec![InvitationEvent::InvitationUpdated { access, expires_at, updated_by: caller.actor }])
}

/// Decides resending: a new link with a fresh deadline; the old link dies.
/// Counts against the resender's daily quota.
pub fn resend(
    account: &Account,
    caller: &Caller,
    invitation: &Invitation,
    link_nonce: LinkNonce,
    send_copy_to_me: bool,
    sent_by_caller_today: u32,
    now: DateTime<Utc>,
) -> Result<Vec<InvitationEvent>, DomainError> {
    require_manager(account, caller, invitation)?;
    // A lapsed invitation holds no seat and no longer blocks a fresh one to
    // the same email, so reviving it could break both rules: invite anew.
    invitation.require_live(now)?;
    check_quota(account, caller, sent_by_caller_today)?;
    let expires_at = now + account.settings.lifetime(None)?;
    Ok(vec![InvitationEvent::InvitationResent { link_nonce, expires_at, resent_by: caller.actor, send_copy_to_me }])
}

/// Decides revoking a pending invitation.
pub fn revoke(
    account: &Account,
    caller: &Caller,
    invitation: &Invitation,
    reason: RevokeReason,
) -> Result<Vec<InvitationEvent>, DomainError> {
    if reason == RevokeReason::ByAdmin {
        require_manager(account, caller, invitation)?;
    }
    if invitation.status != InvitationStatus::Pending {
        return Err(DomainError::refused("invitation_not_pending", "only a pending invitation can be revoked"));
    }
    Ok(vec![InvitationEvent::InvitationRevoked { revoked_by: caller.actor, reason }])
}

/// Decides the invitee declining through their link.
pub fn decline(
    invitation: &Invitation,
    token: &ParsedToken,
    key: &LinkKey,
    now: DateTime<Utc>,
) -> Result<Vec<InvitationEvent>, DomainError> {
    check_token(invitation, token, key)?;
    invitation.require_live(now)?;
    Ok(vec![InvitationEvent::InvitationDeclined {}])
}

/// Decides expiring an invitation whose deadline passed.
pub fn expire(invitation: &Invitation, now: DateTime<Utc>) -> Result<Vec<InvitationEvent>, DomainError> {
    if invitation.status != InvitationStatus::Pending || now < invitation.expires_at {
        return Ok(vec![]);
    }
    Ok(vec![InvitationEvent::InvitationExpired {}])
}

/// Decides recording a delivery fact.
pub fn record_delivery(
    invitation: &Invitation,
    state: DeliveryState,
    detail: Option<String>,
) -> Result<Vec<InvitationEvent>, DomainError> {
    let _ = invitation;
    Ok(vec![InvitationEvent::InvitationDeliveryRecorded { state, detail }])
}

/// Decides recording an `opened` (tracking pixel) or `clicked` (link
/// visited) fact. Every one is a fact: the first changes the delivery
/// state, later ones are counted (mail scanners and reloads repeat them).
/// Nothing is accepted or consumed by it.
pub fn record_tracking(invitation: &Invitation, state: DeliveryState) -> Vec<InvitationEvent> {
    let _ = invitation;
    vec![InvitationEvent::InvitationDeliveryRecorded { state, detail: None }]
}

/// Decides reminding a pending invitee of their link: only while it is
/// live, at most once per link (a resend or a new deadline allows another).
pub fn remind(invitation: &Invitation, now: DateTime<Utc>) -> Vec<InvitationEvent> {
    if !invitation.is_live(now) || invitation.reminded {
        return vec![];
    }
    vec![InvitationEvent::InvitationReminded { expires_at: invitation.expires_at }]
}

/// Refuses (`invalid_token`) a token that is not the invitation's current link.
pub fn check_token(invitation: &Invitation, token: &ParsedToken, key: &LinkKey) -> Result<(), DomainError> {
    if token.invitation_id != invitation.id.0 || !token.matches(key, &invitation.link_nonce) {
        return Err(DomainError::refused("invalid_token", "this invitation link is not valid"));
    }
    Ok(())
}

/// Who is accepting.
#[derive(Debug, Clone)]
pub struct Acceptor {
    /// The user joining (new or existing).
    pub user_id: UserId,
    /// Their email (must be the invited one).
    pub email: EmailAddress,
}

/// Decides accepting: the token must be the current link, the invitation
/// live, the acceptor's email the invited one, and the inviter must still
/// hold what the invitation grants (the role ceiling at acceptance).
/// Returns the invitation's and the account's events.
pub fn accept(
    account: &Account,
    invitation: &Invitation,
    token: &ParsedToken,
    key: &LinkKey,
    acceptor: &Acceptor,
    now: DateTime<Utc>,
) -> Result<(Vec<InvitationEvent>, Vec<account::AccountEvent>), DomainError> {
    check_token(invitation, token, key)?;
    invitation.require_live(now)?;
    account.require_active()?;
    match invitation.personal.email() {
        Some(invited) if *invited == acceptor.email => {}
        Some(_) => {
            return Err(DomainError::refused(
                "email_mismatch",
                "you are signed in with another email address than the one invited",
            ))
        }
        None => return Err(DomainError::refused("invitation_revoked", "this invitation was withdrawn")),
    }
    if account.members.contains_key(&acceptor.user_id) {
        return Err(DomainError::refused("already_member", "you are already a member of this account"));
    }
    let access = invitation.access.clone().without_unknown_roles(&account.roles);
    if matches!(invitation.invited_by, Actor::User(_) | Actor::ApiKey(_)) {
        let inviter = Caller::of(account, invitation.invited_by);
        let ok = inviter.access.as_ref().is_some_and(|own| account.roles.check_ceiling(own, &access).is_ok());
        if !ok {
            return Err(DomainError::refused(
                "inviter_lacks_rights",
                "the person who invited you no longer holds the rights this invitation grants; ask for a new invitation",
            ));
        }
    }
    Ok((
        vec![InvitationEvent::InvitationAccepted { user_id: acceptor.user_id, access: access.clone() }],
        vec![account::AccountEvent::MemberJoined { user_id: acceptor.user_id, invitation_id: invitation.id, access }],
    ))
}

#[cfg(test)]
mod tests {
    use super::DeliveryState::{self, *};

    /// The names the read models store are the names the events carry.
    #[test]
    fn a_delivery_states_name_is_its_serde_name() {
        for state in [Processed, Delivered, Opened, Clicked, Bounced, Failed] {
            let serde_name = serde_json::to_string(&state).unwrap();
            assert_eq!(serde_name, format!("\"{}\"", state.as_str()), "{state:?}");
            assert_eq!(serde_json::from_str::<DeliveryState>(&serde_name).unwrap(), state);
        }
    }
}
