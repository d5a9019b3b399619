//! "Request a new invitation" through an expired link: who may ask, when.

use admit_domain::access::Access;
use admit_domain::account::{Account, AccountEvent, AccountSettings};
use admit_domain::ids::{AccountId, Actor, InvitationId, PersonId, UserId};
use admit_domain::invitation::{Channel, Invitation, InvitationEvent, RevokeReason};
use admit_domain::personal::Personal;
use admit_domain::renewal::request_renewal;
use admit_domain::token::{InvitationToken, LinkKey, LinkNonce, ParsedToken};
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress};
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

const ACCOUNT: AccountId = AccountId(Uuid::from_u128(0xA));
const INV: InvitationId = InvitationId(Uuid::from_u128(0x1_0001));
const ADMIN: UserId = UserId(Uuid::from_u128(0x102));

fn at(hours: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::hours(hours)
}

fn key() -> LinkKey {
    LinkKey::from_bytes([7; 32])
}

fn token(n: u8) -> ParsedToken {
    InvitationToken::parse(InvitationToken::issue(&key(), INV.0, &LinkNonce::from_bytes([n; 16])).as_str()).unwrap()
}

fn account(extra: &[AccountEvent]) -> Account {
    let mut events = vec![AccountEvent::AccountOpened {
        account_id: ACCOUNT,
        name: AccountName::parse("Acme").unwrap(),
        customer_number: CustomerNumber::parse("C-0042").unwrap(),
        settings: AccountSettings::with_seats(5),
    }];
    events.extend_from_slice(extra);
    Account::from_events(&events).unwrap()
}

fn invitation(later: &[InvitationEvent]) -> Invitation {
    let mut events = vec![InvitationEvent::InvitationSent {
        invitation_id: INV,
        account_id: ACCOUNT,
        person_id: PersonId(Uuid::from_u128(0x2_0001)),
        personal: Personal::Known { email: EmailAddress::parse("bob@example.com").unwrap(), name: None },
        access: Access::default(),
        invited_by: Actor::User(ADMIN),
        channel: Channel::Session,
        expires_at: at(24),
        link_nonce: LinkNonce::from_bytes([1; 16]),
        metadata: None,
        redirect_url: None,
    }];
    events.extend_from_slice(later);
    Invitation::from_events(&events).unwrap()
}

fn code(r: Result<Vec<AccountEvent>, admit_domain::DomainError>) -> &'static str {
    r.expect_err("a refusal").code()
}

#[test]
fn given_an_expired_link_when_requesting_then_the_inviter_is_asked() {
    let expected =
        vec![AccountEvent::InvitationRenewalRequested { invitation_id: INV, invited_by: Actor::User(ADMIN) }];
    // Lapsed but not yet expired by the worker, and expired by the worker.
    assert_eq!(
        request_renewal(&account(&[]), &invitation(&[]), &token(1), &key(), false, at(25)),
        Ok(expected.clone())
    );
    let expired = invitation(&[InvitationEvent::InvitationExpired {}]);
    assert_eq!(request_renewal(&account(&[]), &expired, &token(1), &key(), false, at(25)), Ok(expected));
}

#[test]
fn given_a_recent_request_when_requesting_again_then_refused() {
    let r = request_renewal(&account(&[]), &invitation(&[]), &token(1), &key(), true, at(25));
    assert_eq!(code(r), "renewal_already_requested");
}

#[test]
fn given_a_live_used_revoked_or_replaced_link_when_requesting_then_refused() {
    let a = account(&[]);
    assert_eq!(code(request_renewal(&a, &invitation(&[]), &token(1), &key(), false, at(1))), "invitation_not_expired");
    let used = invitation(&[InvitationEvent::InvitationAccepted {
        user_id: UserId(Uuid::from_u128(0x201)),
        access: Access::default(),
    }]);
    assert_eq!(code(request_renewal(&a, &used, &token(1), &key(), false, at(25))), "invitation_used");
    let revoked = invitation(&[InvitationEvent::InvitationRevoked {
        revoked_by: Actor::User(ADMIN),
        reason: RevokeReason::ByAdmin,
    }]);
    assert_eq!(code(request_renewal(&a, &revoked, &token(1), &key(), false, at(25))), "invitation_revoked");
    // The link of an earlier issue (replaced by a resend) is not valid.
    assert_eq!(code(request_renewal(&a, &invitation(&[]), &token(2), &key(), false, at(25))), "invalid_token");
    let closed = account(&[AccountEvent::AccountDeactivated {}]);
    assert!(request_renewal(&closed, &invitation(&[]), &token(1), &key(), false, at(25)).is_err());
}
