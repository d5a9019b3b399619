//! "Request a new invitation": the one thing an invitee can do with an
//! expired link. The request is a fact on the account's stream
//! (`InvitationRenewalRequested`); the mailer tells the inviter.

use chrono::{DateTime, Utc};

use crate::account::{Account, AccountEvent};
use crate::invitation::{Invitation, InvitationStatus};
use crate::token::{LinkKey, ParsedToken};
use crate::DomainError;

/// Decides a renewal request made through an invitation link. Only a link
/// that is still the invitation's current one, whose invitation lapsed (or
/// was expired by the worker), may ask; used, declined and revoked
/// invitations may not, and neither may a live one (it can simply be
/// accepted). `already_requested` is whether a request for this invitation
/// is still within its rate-limit window (looked up by the caller).
pub fn request_renewal(
    account: &Account,
    invitation: &Invitation,
    token: &ParsedToken,
    key: &LinkKey,
    already_requested: bool,
    now: DateTime<Utc>,
) -> Result<Vec<AccountEvent>, DomainError> {
    crate::invitation::check_token(invitation, token, key)?;
    account.require_active()?;
    let lapsed = match invitation.status {
        InvitationStatus::Expired => true,
        InvitationStatus::Pending => now >= invitation.expires_at,
        _ => false,
    };
    if !lapsed {
        invitation.require_live(now)?;
        return Err(DomainError::refused(
            "invitation_not_expired",
            "this invitation has not expired; accept it instead",
        ));
    }
    if already_requested {
        return Err(DomainError::refused(
            "renewal_already_requested",
            "a new invitation was already requested for this link; the inviter has been told",
        ));
    }
    Ok(vec![AccountEvent::InvitationRenewalRequested {
        invitation_id: invitation.id,
        invited_by: invitation.invited_by,
    }])
}
