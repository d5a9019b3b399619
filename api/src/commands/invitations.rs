//! Inviting, updating, resending, revoking, declining, accepting, expiring,
//! and recording delivery.

use admit_domain::access::Access;
use admit_domain::account::{self, quota_window_start};
use admit_domain::ids::{AccountId, InvitationId, PersonId, UserId};
use admit_domain::invitation::{
    self, Acceptor, DeliveryState, Invitation, InvitationEvent, InviteeFacts, RevokeReason,
};
use admit_domain::token::{InvitationToken, LinkNonce};
use admit_domain::user;
use admit_domain::values::{EmailAddress, LinkLifetime, PersonName};
use admit_domain::DomainError;
use admit_ledger::reservations::{Claim, InvitationSend, InviteeLookup};
use admit_ledger::Tx;
use admit_projections::{Codec, NewInvitation};
use chrono::{DateTime, Utc};
use rand::RngCore;
use uuid::Uuid;

use super::{
    account_events, in_transaction, invitation_events, user_events, Admit, RequestContext, Unit, ATTEMPTS,
    PENDING_INVITATION, USER_EMAIL,
};
use crate::Error;

/// What an admin asks for when inviting one person.
#[derive(Debug, Clone)]
pub struct InviteRequest {
    /// Who to invite.
    pub email: EmailAddress,
    /// Their name, if known.
    pub name: Option<PersonName>,
    /// What accepting grants.
    pub access: Access,
    /// Link lifetime (None: the account's default).
    pub expires_in: Option<LinkLifetime>,
    /// The inviter's own data (a JSON object).
    pub metadata: Option<serde_json::Value>,
    /// Where to send the invitee after accepting.
    pub redirect_url: Option<String>,
}

/// A freshly issued invitation link. The token exists only here: it is
/// never stored, only rebuilt from the invitation id, nonce and server key.
#[derive(Debug, Clone)]
pub struct IssuedInvitation {
    /// The invitation.
    pub invitation_id: InvitationId,
    /// Its account.
    pub account_id: AccountId,
    /// The secret link token.
    pub token: InvitationToken,
    /// When the link dies.
    pub expires_at: DateTime<Utc>,
    /// The read-model row a new invitation starts as (None for a resent
    /// link): what `POST .../invitations` answers with.
    pub created: Option<NewInvitation>,
}

fn fresh_nonce() -> LinkNonce {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    LinkNonce::from_bytes(b)
}

fn ensure_in_account(inv: &Invitation, account: AccountId) -> Result<(), Error> {
    if inv.account_id != account {
        return Err(Error::NotFound("invitation"));
    }
    Ok(())
}

impl Admit {
    /// Invites one person (see [`invitation::invite`] for the rules).
    pub async fn invite(
        &self,
        ctx: &RequestContext,
        account: AccountId,
        req: InviteRequest,
    ) -> Result<IssuedInvitation, Error> {
        in_transaction!(self, |tx| self.invite_in(&mut tx, ctx, account, &req, self.now()).await)
    }

    /// The body of [`Admit::invite`], inside a caller's transaction (bulk
    /// invitations run many in one).
    pub(crate) async fn invite_in(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        account_id: AccountId,
        req: &InviteRequest,
        now: DateTime<Utc>,
    ) -> Result<IssuedInvitation, Error> {
        self.invite_counting(tx, ctx, account_id, req, now, 0).await
    }

    /// [`Admit::invite_in`], counting `extra_seats` more seats as taken
    /// (bulk rows refused only by the daily quota still hold a seat for
    /// the rows after them; see `commands::bulk`).
    pub(crate) async fn invite_counting(
        &self,
        tx: &mut Tx,
        ctx: &RequestContext,
        account_id: AccountId,
        req: &InviteRequest,
        now: DateTime<Utc>,
        extra_seats: u32,
    ) -> Result<IssuedInvitation, Error> {
        let (account, _) = self.account(tx, account_id).await?;
        let caller = ctx.caller(&account);
        let email_hash = self.secrets.lookup.email_hash(req.email.as_str());
        let scope = account_id.to_string();
        let mut unit = Unit::default();

        let inviter = ctx.actor.to_string();
        let (claims, (person, key)) = tx
            .invitee_claims_and_person(&InviteeLookup {
                key: &email_hash,
                user: (USER_EMAIL, ""),
                pending: (PENDING_INVITATION, &scope),
                now,
                account: account_id.0,
                inviter: &inviter,
                since: quota_window_start(now),
            })
            .await?;
        let mut facts =
            InviteeFacts { user: claims.user.and_then(|r| r.holder.parse().ok().map(UserId)), ..Default::default() };
        if let Some(held) = claims.pending {
            let holder =
                InvitationId(held.holder.parse().map_err(|_| Error::Internal("bad reservation holder".into()))?);
            if held.expires_at.is_some_and(|t| t > now) {
                facts.pending_invitation = Some(holder);
            } else {
                // Its deadline passed but the expiry worker has not caught
                // up: expire it now, so it never blocks a fresh invitation
                // (a lapsed claim holds no seat in the count either).
                self.expire_in(tx, &mut unit, holder, now).await?;
            }
        }
        facts.pending_in_account = claims.live_in_scope as u32 + extra_seats;
        facts.sent_by_inviter_today = claims.sent_since as u32;

        let invitation_id = InvitationId(Uuid::now_v7());
        let nonce = fresh_nonce();
        let cmd = invitation::Invite {
            invitation_id,
            person_id: PersonId(person),
            email: req.email.clone(),
            name: req.name.clone(),
            access: req.access.clone(),
            expires_in: req.expires_in,
            link_nonce: nonce,
            channel: ctx.channel,
            metadata: req.metadata.clone(),
            redirect_url: req.redirect_url.clone(),
        };
        let events = invitation::invite(&account, &caller, cmd, &facts, now)?;
        // The row the invitation starts as, recorded at the time `write`
        // records its events at.
        let created = events
            .first()
            .and_then(|sent| NewInvitation::of(invitation_id.0, sent, admit_ledger::log::storable_time(now)))
            .ok_or_else(|| Error::Internal("invite decided no InvitationSent".into()))?;
        let expires_at = created.expires_at;
        let holder = invitation_id.to_string();
        let claim = Claim {
            kind: PENDING_INVITATION,
            scope: &scope,
            key: &email_hash,
            holder: &holder,
            expires_at: Some(expires_at),
        };
        let send =
            InvitationSend { account: account_id.0, inviter: &inviter, invitation: invitation_id.0, sent_at: now };
        if !tx.reserve_and_record_send(&claim, &send).await? {
            return Err(DomainError::refused("already_invited", "this person already has a pending invitation").into());
        }
        unit.key(person, key);
        unit.push(0, invitation_events(invitation_id, events));
        self.write(tx, ctx, unit, now).await?;
        Ok(IssuedInvitation {
            invitation_id,
            account_id,
            token: InvitationToken::issue(&self.secrets.link, invitation_id.0, &nonce),
            expires_at,
            created: Some(created),
        })
    }

    /// Changes a pending invitation's grant and/or lifetime.
    pub async fn update_invitation(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        id: InvitationId,
        access: Option<Access>,
        expires_in: Option<LinkLifetime>,
    ) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, _) = self.account(&mut tx, account_id).await?;
            let (inv, version) = self.invitation(&mut tx, id).await?;
            ensure_in_account(&inv, account_id)?;
            let events = invitation::update(&account, &ctx.caller(&account), &inv, access.clone(), expires_in, now)?;
            if let Some(InvitationEvent::InvitationUpdated { expires_at, .. }) = events.first() {
                self.move_deadline(&mut tx, &inv, *expires_at).await?;
            }
            let mut unit = Unit::default();
            unit.push(version, invitation_events(id, events));
            self.write(&mut tx, ctx, unit, now).await
        }
        .await)
    }

    /// Issues a new link (the old one dies) with a fresh deadline.
    pub async fn resend(
        &self,
        ctx: &RequestContext,
        account_id: AccountId,
        id: InvitationId,
        send_copy_to_me: bool,
    ) -> Result<IssuedInvitation, Error> {
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, _) = self.account(&mut tx, account_id).await?;
            let (inv, version) = self.invitation(&mut tx, id).await?;
            ensure_in_account(&inv, account_id)?;
            let sent = tx.sends_since(account_id.0, &ctx.actor.to_string(), quota_window_start(now)).await? as u32;
            let nonce = fresh_nonce();
            let events = invitation::resend(&account, &ctx.caller(&account), &inv, nonce, send_copy_to_me, sent, now)?;
            let expires_at = match events.first() {
                Some(InvitationEvent::InvitationResent { expires_at, .. }) => *expires_at,
                _ => return Err(Error::Internal("resend decided nothing".into())),
            };
            self.move_deadline(&mut tx, &inv, expires_at).await?;
            tx.record_send(account_id.0, &ctx.actor.to_string(), id.0, now).await?;
            let mut unit = Unit::default();
            unit.push(version, invitation_events(id, events));
            self.write(&mut tx, ctx, unit, now).await?;
            Ok(IssuedInvitation {
                invitation_id: id,
                account_id,
                token: InvitationToken::issue(&self.secrets.link, id.0, &nonce),
                expires_at,
                created: None,
            })
        }
        .await)
    }

    /// Moves the pending reservation's lapse time with the invitation's deadline.
    async fn move_deadline(&self, tx: &mut Tx, inv: &Invitation, expires_at: DateTime<Utc>) -> Result<(), Error> {
        if let Some(email) = inv.personal.email() {
            let hash = self.secrets.lookup.email_hash(email.as_str());
            tx.extend_reservation(PENDING_INVITATION, &inv.account_id.to_string(), &hash, Some(expires_at)).await?;
        }
        Ok(())
    }

    /// Revokes a pending invitation.
    pub async fn revoke(&self, ctx: &RequestContext, account_id: AccountId, id: InvitationId) -> Result<(), Error> {
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, _) = self.account(&mut tx, account_id).await?;
            let mut unit = Unit::default();
            self.revoke_in(&mut tx, &mut unit, &account, ctx, id, RevokeReason::ByAdmin).await?;
            self.write(&mut tx, ctx, unit, now).await
        }
        .await)
    }

    /// Queues the revocation of `id` into `unit` and frees its seat.
    pub(crate) async fn revoke_in(
        &self,
        tx: &mut Tx,
        unit: &mut Unit,
        account: &admit_domain::account::Account,
        ctx: &RequestContext,
        id: InvitationId,
        reason: RevokeReason,
    ) -> Result<(), Error> {
        let (inv, version) = self.invitation(tx, id).await?;
        ensure_in_account(&inv, account.id)?;
        let caller = ctx.caller(account);
        let events = invitation::revoke(account, &caller, &inv, reason)?;
        tx.release(PENDING_INVITATION, &id.to_string()).await?;
        unit.push(version, invitation_events(id, events));
        Ok(())
    }

    /// The invitee declines through their link.
    pub async fn decline(&self, token: &str) -> Result<InvitationId, Error> {
        let parsed = InvitationToken::parse(token)?;
        let id = InvitationId(parsed.invitation_id);
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (inv, version) = self.invitation(&mut tx, id).await.map_err(|_| invalid_link())?;
            let events = invitation::decline(&inv, &parsed, &self.secrets.link, now)?;
            tx.release(PENDING_INVITATION, &id.to_string()).await?;
            let mut unit = Unit::default();
            unit.push(version, invitation_events(id, events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(id)
        }
        .await)
    }

    /// Expires a pending invitation whose deadline passed (the expiry
    /// worker's command). Does nothing for any other invitation.
    pub async fn expire(&self, id: InvitationId) -> Result<bool, Error> {
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let mut unit = Unit::default();
            let expired = self.expire_in(&mut tx, &mut unit, id, now).await?;
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(expired)
        }
        .await)
    }

    /// Reminds a pending invitee of their link (the expiry worker's
    /// command); true when a reminder was recorded, false when the
    /// invitation is closed, lapsed or already reminded.
    pub async fn remind(&self, id: InvitationId) -> Result<bool, Error> {
        self.decide_as_system(id, invitation::remind).await
    }

    /// Runs a decision the system makes about one invitation (no caller's
    /// rights involved) and writes what it decided; true when it decided
    /// anything.
    async fn decide_as_system(
        &self,
        id: InvitationId,
        decide: impl Fn(&Invitation, DateTime<Utc>) -> Vec<InvitationEvent>,
    ) -> Result<bool, Error> {
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (inv, version) = self.invitation(&mut tx, id).await?;
            let events = decide(&inv, now);
            let decided = !events.is_empty();
            let mut unit = Unit::default();
            unit.push(version, invitation_events(id, events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(decided)
        }
        .await)
    }

    async fn expire_in(
        &self,
        tx: &mut Tx,
        unit: &mut Unit,
        id: InvitationId,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let (inv, version) = self.invitation(tx, id).await?;
        let events = invitation::expire(&inv, now)?;
        if events.is_empty() {
            return Ok(false);
        }
        tx.release(PENDING_INVITATION, &id.to_string()).await?;
        unit.push(version, invitation_events(id, events));
        Ok(true)
    }

    /// Records a delivery fact from the mailer or the tracking routes.
    pub async fn record_delivery(
        &self,
        id: InvitationId,
        state: DeliveryState,
        detail: Option<String>,
    ) -> Result<(), Error> {
        let ctx = RequestContext::system();
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (inv, version) = self.invitation(&mut tx, id).await?;
            let events = invitation::record_delivery(&inv, state, detail.clone())?;
            let mut unit = Unit::default();
            unit.push(version, invitation_events(id, events));
            self.write(&mut tx, &ctx, unit, now).await
        }
        .await)
    }

    /// Records an `opened` (tracking pixel) or `clicked` (link visited) of
    /// an invitation: the first changes its delivery state, later ones are
    /// counted.
    pub async fn record_tracking(&self, id: InvitationId, state: DeliveryState) -> Result<bool, Error> {
        self.decide_as_system(id, |inv, _| invitation::record_tracking(inv, state)).await
    }

    /// The signature that makes a tracking-pixel URL valid for one
    /// invitation (so nobody can mark others' invitations opened).
    pub fn pixel_signature(&self, id: InvitationId) -> String {
        self.secrets.lookup.email_hash(&format!("tracking-pixel:{id}"))[..32].to_string()
    }

    /// The invitation behind a link token, read without a transaction.
    pub async fn invitation_for_token(&self, token: &str) -> Result<Invitation, Error> {
        let parsed = InvitationToken::parse(token)?;
        let events = self.db.read_stream(&InvitationId(parsed.invitation_id).stream()).await?;
        let decoded = Codec::decode_all(&self.db, &events).await?;
        let inv =
            Invitation::from_events(decoded.iter().filter_map(|e| e.event.as_invitation())).ok_or_else(invalid_link)?;
        invitation::check_token(&inv, &parsed, &self.secrets.link)?;
        Ok(inv)
    }

    /// A new user accepts: registers with name and password, and joins.
    pub async fn accept_as_new_user(&self, token: &str, name: PersonName, password: &str) -> Result<UserId, Error> {
        let parsed = InvitationToken::parse(token)?;
        let snapshot = self.invitation_for_token(token).await?;
        let email = snapshot.personal.email().cloned().ok_or_else(invalid_link)?;
        self.password_policy.check(password, &[email.local_part(), name.as_str()])?;
        let hash = crate::passwords::hash(password.to_string()).await?;
        let ctx_user = UserId(Uuid::now_v7());
        let ctx =
            RequestContext::new(admit_domain::ids::Actor::User(ctx_user), admit_domain::invitation::Channel::Session);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, av) = self.account(&mut tx, snapshot.account_id).await?;
            let (inv, iv) = self.invitation(&mut tx, snapshot.id).await?;
            let email_hash = self.secrets.lookup.email_hash(email.as_str());
            let taken = self.user_by_email_hash(&mut tx, &email_hash).await?.is_some();
            let person = inv.person_id;
            let key = tx.person_keys(&[person.0]).await?.remove(&person.0).ok_or_else(invalid_link)?;
            // The link's own state speaks first (a used link says so, not
            // "email taken"), then the registration.
            let acceptor = Acceptor { user_id: ctx_user, email: email.clone() };
            let (inv_events, account_events_) =
                invitation::accept(&account, &inv, &parsed, &self.secrets.link, &acceptor, now)?;
            let registered = user::register(ctx_user, person, email.clone(), name.clone(), hash.clone(), taken)?;
            if !tx.reserve(USER_EMAIL, "", &email_hash, &ctx_user.to_string(), None).await? {
                return Err(DomainError::refused(
                    "email_taken",
                    "a user with this email already exists; sign in instead",
                )
                .into());
            }
            tx.release(PENDING_INVITATION, &inv.id.to_string()).await?;
            let mut unit = Unit::default();
            unit.key(person.0, key);
            unit.push(0, user_events(ctx_user, registered));
            unit.push(iv, invitation_events(inv.id, inv_events));
            unit.push(av, account_events(account.id, account_events_));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(ctx_user)
        }
        .await)
    }

    /// A signed-in user accepts; their email must be the invited one.
    pub async fn accept_as_user(&self, user_id: UserId, token: &str) -> Result<AccountId, Error> {
        let parsed = InvitationToken::parse(token)?;
        let snapshot = self.invitation_for_token(token).await?;
        let ctx =
            RequestContext::new(admit_domain::ids::Actor::User(user_id), admit_domain::invitation::Channel::Session);
        in_transaction!(self, |tx| async {
            let now = self.now();
            let (account, av) = self.account(&mut tx, snapshot.account_id).await?;
            let (inv, iv) = self.invitation(&mut tx, snapshot.id).await?;
            let (user, _) = self.user(&mut tx, user_id).await?;
            let email = user.personal.email().cloned().ok_or(Error::InvalidCredentials)?;
            let acceptor = Acceptor { user_id, email };
            let (inv_events, acc_events) =
                invitation::accept(&account, &inv, &parsed, &self.secrets.link, &acceptor, now)?;
            tx.release(PENDING_INVITATION, &inv.id.to_string()).await?;
            let mut unit = Unit::default();
            unit.push(iv, invitation_events(inv.id, inv_events));
            unit.push(av, account_events(account.id, acc_events));
            self.write(&mut tx, &ctx, unit, now).await?;
            Ok(account.id)
        }
        .await)
    }
}

fn invalid_link() -> Error {
    DomainError::refused("invalid_token", "this invitation link is not valid").into()
}

#[allow(dead_code)]
const _: usize = ATTEMPTS;
#[allow(unused_imports)]
use account as _;
