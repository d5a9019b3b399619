//! "Request a new invitation" from an expired link's page.

use admit_domain::ids::InvitationId;
use admit_domain::renewal;
use admit_domain::token::InvitationToken;
use admit_domain::DomainError;

use super::{account_events, in_transaction, Admit, RequestContext, Unit, ATTEMPTS};
use crate::Error;

/// Reservation kind: the last renewal request of an invitation, lapsing
/// after [`RENEWAL_INTERVAL_HOURS`] (the rate limit).
pub const RENEWAL_REQUEST: &str = "renewal_request";

/// One renewal request per invitation per this many hours.
pub const RENEWAL_INTERVAL_HOURS: i64 = 24;

impl Admit {
    /// Records that the invitee behind an expired link asks for a new
    /// invitation (`InvitationRenewalRequested` on the account's stream;
    /// the mailer tells the inviter). At most once per invitation per
    /// [`RENEWAL_INTERVAL_HOURS`]: later requests are refused with
    /// `renewal_already_requested`.
    pub async fn request_renewal(&self, token: &str) -> Result<InvitationId, Error> {
        let parsed = InvitationToken::parse(token)?;
        let id = InvitationId(parsed.invitation_id);
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (inv, _) = self
                .invitation(&mut tx, id)
                .await
                .map_err(|_| Error::from(DomainError::refused("invalid_token", "this invitation link is not valid")))?;
            let (account, version) = self.account(&mut tx, inv.account_id).await?;
            let scope = id.to_string();
            let held = tx.reservation(RENEWAL_REQUEST, &scope, "").await?;
            let recent = held.as_ref().is_some_and(|r| r.expires_at.is_some_and(|t| t > now));
            let events = renewal::request_renewal(&account, &inv, &parsed, &self.secrets.link, recent, now)?;
            if held.is_some() {
                tx.release(RENEWAL_REQUEST, &scope).await?;
            }
            let until = now + chrono::Duration::hours(RENEWAL_INTERVAL_HOURS);
            tx.reserve(RENEWAL_REQUEST, &scope, "", &scope, Some(until)).await?;
            let mut unit = Unit::default();
            unit.push(version, account_events(account.id, events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(id)
        }
        .await)
    }
}
