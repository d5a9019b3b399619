//! The rules of Admit's domain, one given-when-then test each.
//!
//! State is always built by folding events (`Account::from_events`,
//! `Invitation::from_events`, `User::from_events`), commands go through the
//! public decide functions, and every test asserts the exact events or the
//! exact `DomainError::code()`.

use std::collections::{BTreeMap, BTreeSet};

use admit_domain::access::{Access, Level, Permission, SiteAccess, SourceScope};
use admit_domain::account::{self, Account, AccountEvent, AccountSettings, Caller, MemberStatus};
use admit_domain::event::{self, Event};
use admit_domain::ids::{AccountId, Actor, ApiKeyId, InvitationId, PersonId, UserId};
use admit_domain::invitation::{
    self, Acceptor, Channel, DeliveryState, Invitation, InvitationEvent, InvitationStatus, Invite, InviteeFacts,
    RevokeReason,
};
use admit_domain::personal::Personal;
use admit_domain::token::{InvitationToken, LinkKey, LinkNonce, ParsedToken};
use admit_domain::user::{self, PasswordHash, User, UserEvent};
use admit_domain::values::{
    AccountName, CustomerNumber, EmailAddress, FeatureName, LinkLifetime, PersonName, RoleName, SiteId, SourceId,
};
use admit_domain::DomainError;
use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

const ACCOUNT: AccountId = AccountId(Uuid::from_u128(0xA));
const INV: InvitationId = InvitationId(Uuid::from_u128(0x1_0001));
const OTHER_INV: InvitationId = InvitationId(Uuid::from_u128(0x1_0002));
const PERSON: PersonId = PersonId(Uuid::from_u128(0x2_0001));

const OWNER: UserId = UserId(Uuid::from_u128(0x101));
const ADMIN: UserId = UserId(Uuid::from_u128(0x102));
const EDITOR: UserId = UserId(Uuid::from_u128(0x103));
const VIEWER: UserId = UserId(Uuid::from_u128(0x104));
const RECRUITER: UserId = UserId(Uuid::from_u128(0x105));
const RECRUITER2: UserId = UserId(Uuid::from_u128(0x106));
const OWNER2: UserId = UserId(Uuid::from_u128(0x107));
const STRANGER: UserId = UserId(Uuid::from_u128(0x1FF));
/// The invitee, once they have a user.
const BOB: UserId = UserId(Uuid::from_u128(0x201));

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).expect("valid timestamp")
}

fn at(hours: i64) -> DateTime<Utc> {
    t0() + Duration::hours(hours)
}

fn role(s: &str) -> RoleName {
    RoleName::parse(s).expect("valid role name")
}

fn access(roles: &[&str]) -> Access {
    Access::roles(roles.iter().map(|r| role(r)))
}

fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).expect("valid email")
}

fn bob_email() -> EmailAddress {
    email("bob@example.com")
}

fn key() -> LinkKey {
    LinkKey::from_bytes([7; 32])
}

fn nonce(n: u8) -> LinkNonce {
    LinkNonce::from_bytes([n; 16])
}

fn perms(ps: &[Permission]) -> BTreeSet<Permission> {
    ps.iter().copied().collect()
}

fn code<T: std::fmt::Debug>(r: Result<T, DomainError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected a refusal, got Ok({v:?})"),
        Err(e) => e.code(),
    }
}

// --- accounts --------------------------------------------------------------

fn opened_account(seats: u32) -> Vec<AccountEvent> {
    vec![AccountEvent::AccountOpened {
        account_id: ACCOUNT,
        name: AccountName::parse("Acme").unwrap(),
        customer_number: CustomerNumber::parse("C-0042").unwrap(),
        settings: AccountSettings::with_seats(seats),
    }]
}

fn and(mut events: Vec<AccountEvent>, event: AccountEvent) -> Vec<AccountEvent> {
    events.push(event);
    events
}

fn with_member(events: Vec<AccountEvent>, user: UserId, roles: &[&str]) -> Vec<AccountEvent> {
    with_member_access(events, user, access(roles))
}

fn with_member_access(events: Vec<AccountEvent>, user: UserId, access: Access) -> Vec<AccountEvent> {
    let invitation_id = InvitationId(Uuid::from_u128(0x9_0000 + user.0.as_u128()));
    and(events, AccountEvent::MemberJoined { user_id: user, invitation_id, access })
}

fn with_role(events: Vec<AccountEvent>, name: &str, ps: &[Permission]) -> Vec<AccountEvent> {
    and(events, AccountEvent::RoleDefined { role: role(name), permissions: perms(ps) })
}

fn deactivated(events: Vec<AccountEvent>, user: UserId) -> Vec<AccountEvent> {
    and(events, AccountEvent::MemberDeactivated { user_id: user })
}

/// Owner, admin, editor and viewer in an account of `seats` seats.
fn team(seats: u32) -> Vec<AccountEvent> {
    let e = opened_account(seats);
    let e = with_member(e, OWNER, &["owner"]);
    let e = with_member(e, ADMIN, &["admin"]);
    let e = with_member(e, EDITOR, &["editor"]);
    with_member(e, VIEWER, &["viewer"])
}

/// The team plus two members whose only way to invite is the custom role
/// `recruiter` (account.read + invitations.create, no invitations.manage).
fn team_with_recruiters() -> Vec<AccountEvent> {
    let e = with_role(team(20), "recruiter", &[Permission::AccountRead, Permission::InvitationsCreate]);
    let e = with_member(e, RECRUITER, &["recruiter"]);
    with_member(e, RECRUITER2, &["recruiter"])
}

fn account(events: &[AccountEvent]) -> Account {
    Account::from_events(events).expect("the account is open")
}

fn caller(account: &Account, user: UserId) -> Caller {
    Caller::of(account, Actor::User(user))
}

// --- invitations -----------------------------------------------------------

fn invite_cmd(to: &str, roles: &[&str]) -> Invite {
    Invite {
        invitation_id: INV,
        person_id: PERSON,
        email: email(to),
        name: Some(PersonName::parse("Bob").unwrap()),
        access: access(roles),
        expires_in: None,
        link_nonce: nonce(1),
        channel: Channel::Session,
        metadata: None,
        redirect_url: None,
    }
}

fn no_facts() -> InviteeFacts {
    InviteeFacts::default()
}

/// Bob invited at t0 by `by` with `roles`, link nonce 1, deadline t0 + 24h.
fn sent_by(by: Actor, roles: &[&str]) -> InvitationEvent {
    InvitationEvent::InvitationSent {
        invitation_id: INV,
        account_id: ACCOUNT,
        person_id: PERSON,
        personal: Personal::Known { email: bob_email(), name: Some(PersonName::parse("Bob").unwrap()) },
        access: access(roles),
        invited_by: by,
        channel: Channel::Session,
        expires_at: at(24),
        link_nonce: nonce(1),
        metadata: None,
        redirect_url: None,
    }
}

fn sent(roles: &[&str]) -> InvitationEvent {
    sent_by(Actor::User(ADMIN), roles)
}

/// A link lifetime of `h` hours.
fn hours(h: u64) -> LinkLifetime {
    LinkLifetime::from_hours(h).unwrap()
}

fn invitation(events: &[InvitationEvent]) -> Invitation {
    Invitation::from_events(events).expect("the invitation was sent")
}

fn resent(n: u8, now: DateTime<Utc>) -> InvitationEvent {
    InvitationEvent::InvitationResent {
        link_nonce: nonce(n),
        expires_at: now + Duration::hours(24),
        resent_by: Actor::User(ADMIN),
        send_copy_to_me: false,
    }
}

fn accepted(roles: &[&str]) -> InvitationEvent {
    InvitationEvent::InvitationAccepted { user_id: BOB, access: access(roles) }
}

fn revoked() -> InvitationEvent {
    InvitationEvent::InvitationRevoked { revoked_by: Actor::User(ADMIN), reason: RevokeReason::ByAdmin }
}

/// One invitation per non-pending status, with the code each one gives.
fn non_pending() -> Vec<(InvitationEvent, &'static str)> {
    vec![
        (accepted(&["editor"]), "invitation_used"),
        (InvitationEvent::InvitationExpired {}, "invitation_expired"),
        (InvitationEvent::InvitationDeclined {}, "invitation_declined"),
        (revoked(), "invitation_revoked"),
    ]
}

/// The token an invitee holds, as the API receives and parses it.
fn token(id: InvitationId, n: u8) -> ParsedToken {
    token_with(&key(), id, n)
}

fn token_with(k: &LinkKey, id: InvitationId, n: u8) -> ParsedToken {
    InvitationToken::parse(InvitationToken::issue(k, id.0, &nonce(n)).as_str()).expect("well-formed token")
}

fn bob() -> Acceptor {
    Acceptor { user_id: BOB, email: bob_email() }
}

// ===========================================================================
// Invite: who may invite
// ===========================================================================

#[test]
fn given_a_viewer_member_when_inviting_then_forbidden() {
    let a = account(&team(20));
    let r = invitation::invite(&a, &caller(&a, VIEWER), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "forbidden");
}

#[test]
fn given_an_editor_member_when_inviting_then_forbidden() {
    let a = account(&team(20));
    let r = invitation::invite(&a, &caller(&a, EDITOR), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "forbidden");
}

#[test]
fn given_a_non_member_when_inviting_then_forbidden() {
    let a = account(&team(20));
    let c = caller(&a, STRANGER);
    assert_eq!(c.access, None);
    let r = invitation::invite(&a, &c, invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "forbidden");
}

#[test]
fn given_a_deactivated_admin_when_inviting_then_forbidden() {
    let a = account(&deactivated(team(20), ADMIN));
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "forbidden");
}

#[test]
fn given_an_api_key_without_access_when_inviting_then_forbidden() {
    let a = account(&team(20));
    let c = Caller::of(&a, Actor::ApiKey(ApiKeyId(Uuid::from_u128(0xC0FFEE))));
    let r = invitation::invite(&a, &c, invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "forbidden");
}

// ===========================================================================
// Invite: the role ceiling and known roles
// ===========================================================================

#[test]
fn given_an_admin_when_inviting_an_owner_then_exceeds_own_rights() {
    let a = account(&team(20));
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["owner"]), &no_facts(), t0());
    assert_eq!(code(r), "exceeds_own_rights");
}

#[test]
fn given_an_owner_when_inviting_an_owner_then_sent() {
    let a = account(&team(20));
    let events =
        invitation::invite(&a, &caller(&a, OWNER), invite_cmd("bob@example.com", &["owner"]), &no_facts(), t0())
            .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(invitation(&events).access, access(&["owner"]));
}

#[test]
fn given_an_editor_who_may_invite_when_granting_admin_then_exceeds_own_rights() {
    // An editor who also holds a custom role with invitations.create.
    let e = with_role(team(20), "recruiter", &[Permission::InvitationsCreate]);
    let a = account(&with_member(e, RECRUITER, &["editor", "recruiter"]));
    let c = caller(&a, RECRUITER);
    let r = invitation::invite(&a, &c, invite_cmd("bob@example.com", &["admin"]), &no_facts(), t0());
    assert_eq!(code(r), "exceeds_own_rights");
    // Within their own rights it goes through.
    let ok = invitation::invite(&a, &c, invite_cmd("bob@example.com", &["editor"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_a_custom_role_exceeding_the_inviters_permissions_when_inviting_then_exceeds_own_rights() {
    let e = with_role(team_with_recruiters(), "support", &[Permission::AccountRead, Permission::AuditRead]);
    let a = account(&e);
    let r =
        invitation::invite(&a, &caller(&a, RECRUITER), invite_cmd("bob@example.com", &["support"]), &no_facts(), t0());
    assert_eq!(code(r), "exceeds_own_rights");
    // The admin holds audit.read, so they may grant it.
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["support"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_features_and_sites_when_inviting_then_only_up_to_the_inviters_own() {
    let reports = FeatureName::parse("reports").unwrap();
    let shop = SiteId::parse("shop").unwrap();
    let web = SourceId::parse("web").unwrap();
    let app = SourceId::parse("app").unwrap();
    let mut recruiter = access(&["recruiter"]);
    recruiter.features.insert(reports.clone(), Level::Edit);
    recruiter.sites = SiteAccess::Only([(shop.clone(), SourceScope::Only([web.clone()].into()))].into());
    let e = with_role(team(20), "recruiter", &[Permission::InvitationsCreate]);
    let a = account(&with_member_access(e, RECRUITER, recruiter));
    let c = caller(&a, RECRUITER);

    let mut within = Access::default();
    within.features.insert(reports.clone(), Level::Edit);
    within.sites = SiteAccess::Only([(shop.clone(), SourceScope::Only([web].into()))].into());
    let mut cmd = invite_cmd("bob@example.com", &[]);
    cmd.access = within;
    assert_eq!(invitation::invite(&a, &c, cmd, &no_facts(), t0()).unwrap().len(), 1);

    let mut higher_level = Access::default();
    higher_level.features.insert(reports, Level::Manage);
    let other_source =
        Access { sites: SiteAccess::Only([(shop, SourceScope::Only([app].into()))].into()), ..Access::default() };
    let all_sites = Access { sites: SiteAccess::All, ..Access::default() };
    for too_much in [higher_level, other_source, all_sites.clone()] {
        let mut cmd = invite_cmd("bob@example.com", &[]);
        cmd.access = too_much.clone();
        assert_eq!(code(invitation::invite(&a, &c, cmd, &no_facts(), t0())), "exceeds_own_rights", "{too_much:?}");
    }
    // Someone who manages the account reaches every site.
    let mut cmd = invite_cmd("bob@example.com", &[]);
    cmd.access = all_sites;
    assert_eq!(invitation::invite(&a, &caller(&a, ADMIN), cmd, &no_facts(), t0()).unwrap().len(), 1);
}

#[test]
fn given_a_role_the_account_does_not_define_when_inviting_then_unknown_role() {
    let a = account(&team(20));
    let r = invitation::invite(&a, &caller(&a, OWNER), invite_cmd("bob@example.com", &["ghost"]), &no_facts(), t0());
    assert_eq!(code(r), "unknown_role");
}

// ===========================================================================
// Invite: who may be invited
// ===========================================================================

#[test]
fn given_allowed_email_domains_when_inviting_another_domain_then_email_domain_not_allowed() {
    let mut settings = AccountSettings::with_seats(20);
    settings.allowed_email_domains = ["example.com".to_string()].into();
    let a = account(&and(team(20), AccountEvent::AccountSettingsChanged { settings }));
    let c = caller(&a, ADMIN);
    let r = invitation::invite(&a, &c, invite_cmd("bob@example.org", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "email_domain_not_allowed");
    // A subdomain is another domain.
    let r = invitation::invite(&a, &c, invite_cmd("bob@mail.example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "email_domain_not_allowed");
    // The listed domain, in any letter case, is fine.
    let ok = invitation::invite(&a, &c, invite_cmd("Bob@EXAMPLE.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_no_allowed_domains_when_inviting_any_domain_then_sent() {
    let a = account(&team(20));
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.org", &["viewer"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_an_active_member_when_inviting_them_then_already_member() {
    let a = account(&with_member(team(20), BOB, &["viewer"]));
    let facts = InviteeFacts { user: Some(BOB), ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(code(r), "already_member");
}

#[test]
fn given_a_deactivated_member_when_inviting_them_then_already_member() {
    let a = account(&deactivated(with_member(team(20), BOB, &["viewer"]), BOB));
    let facts = InviteeFacts { user: Some(BOB), ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(code(r), "already_member");
}

#[test]
fn given_a_user_who_is_not_a_member_when_inviting_them_then_sent() {
    let a = account(&team(20));
    let facts = InviteeFacts { user: Some(BOB), ..InviteeFacts::default() };
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_a_removed_former_member_when_inviting_them_again_then_sent() {
    let a = account(&and(with_member(team(20), BOB, &["viewer"]), AccountEvent::MemberRemoved { user_id: BOB }));
    let facts = InviteeFacts { user: Some(BOB), ..InviteeFacts::default() };
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_a_live_pending_invitation_of_the_email_when_inviting_again_then_already_invited() {
    let a = account(&team(20));
    let facts = InviteeFacts { pending_invitation: Some(OTHER_INV), pending_in_account: 1, ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(code(r), "already_invited");
}

// ===========================================================================
// Invite: seats, quota, lifetime
// ===========================================================================

#[test]
fn given_active_members_plus_pending_equal_the_seat_limit_when_inviting_then_seat_limit_reached() {
    // 4 active members, 1 pending invitation, 5 seats.
    let a = account(&team(5));
    let full = InviteeFacts { pending_in_account: 1, ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &full, t0());
    assert_eq!(code(r), "seat_limit_reached");
    // One seat left: the invitation takes it.
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_active_members_equal_the_seat_limit_when_inviting_then_seat_limit_reached() {
    let a = account(&team(4));
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "seat_limit_reached");
}

#[test]
fn given_a_full_account_when_a_member_is_deactivated_then_their_seat_is_free_for_an_invitation() {
    let a = account(&deactivated(team(4), VIEWER));
    assert_eq!(a.active_members(), 3);
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(ok.unwrap().len(), 1);
    // ... but only that one seat.
    let full = InviteeFacts { pending_in_account: 1, ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &full, t0());
    assert_eq!(code(r), "seat_limit_reached");
}

#[test]
fn given_the_operator_when_the_account_is_full_then_seat_limit_reached_too() {
    let a = account(&team(4));
    let c = Caller::of(&a, Actor::Operator);
    let r = invitation::invite(&a, &c, invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "seat_limit_reached");
}

#[test]
fn given_49_invitations_sent_today_when_inviting_then_sent() {
    let a = account(&team(20));
    assert_eq!(a.settings.daily_invitation_quota, 50);
    let facts = InviteeFacts { sent_by_inviter_today: 49, ..InviteeFacts::default() };
    let ok = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_50_invitations_sent_today_when_inviting_then_daily_quota_exceeded() {
    let a = account(&team(20));
    let facts = InviteeFacts { sent_by_inviter_today: 50, ..InviteeFacts::default() };
    let r = invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &facts, t0());
    assert_eq!(code(r), "daily_quota_exceeded");
}

#[test]
fn given_a_lower_account_quota_when_reached_then_daily_quota_exceeded() {
    let mut settings = AccountSettings::with_seats(20);
    settings.daily_invitation_quota = 3;
    let a = account(&and(team(20), AccountEvent::AccountSettingsChanged { settings }));
    let c = caller(&a, ADMIN);
    let two = InviteeFacts { sent_by_inviter_today: 2, ..InviteeFacts::default() };
    assert!(invitation::invite(&a, &c, invite_cmd("bob@example.com", &["viewer"]), &two, t0()).is_ok());
    let three = InviteeFacts { sent_by_inviter_today: 3, ..InviteeFacts::default() };
    assert_eq!(
        code(invitation::invite(&a, &c, invite_cmd("bob@example.com", &["viewer"]), &three, t0())),
        "daily_quota_exceeded"
    );
}

#[test]
fn given_the_operator_over_the_quota_when_inviting_then_exempt() {
    let a = account(&team(20));
    let c = Caller::of(&a, Actor::Operator);
    let facts = InviteeFacts { sent_by_inviter_today: 1_000, ..InviteeFacts::default() };
    let mut cmd = invite_cmd("bob@example.com", &["owner"]);
    cmd.channel = Channel::Operator;
    let events = invitation::invite(&a, &c, cmd, &facts, t0()).unwrap();
    assert_eq!(invitation(&events).invited_by, Actor::Operator);
}

#[test]
fn given_the_quota_window_then_it_is_the_rolling_last_day() {
    assert_eq!(account::quota_window_start(at(30)), at(6));
}

#[test]
fn given_a_lifetime_out_of_bounds_when_inviting_then_invalid_expiry() {
    let a = account(&team(20));
    for hours in [0, 721, u64::from(u32::MAX)] {
        assert_eq!(LinkLifetime::from_hours(hours).unwrap_err().code(), "invalid_expiry", "{hours} hours");
    }
    for seconds in [0, u64::from(LinkLifetime::MAX_SECONDS) + 1] {
        assert_eq!(LinkLifetime::from_seconds(seconds).unwrap_err().code(), "invalid_expiry", "{seconds} s");
    }
    let mut bad_default = a.clone();
    bad_default.settings.invitation_lifetime_hours = 0;
    let r = invitation::invite(
        &bad_default,
        &caller(&a, ADMIN),
        invite_cmd("bob@example.com", &["viewer"]),
        &no_facts(),
        t0(),
    );
    assert_eq!(code(r), "invalid_expiry");
}

#[test]
fn given_a_lifetime_at_the_bounds_when_inviting_then_the_deadline_is_now_plus_that() {
    let a = account(&team(20));
    for hours in [1, 720] {
        let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
        cmd.expires_in = Some(LinkLifetime::from_hours(hours).unwrap());
        let events = invitation::invite(&a, &caller(&a, ADMIN), cmd, &no_facts(), t0()).unwrap();
        assert_eq!(invitation(&events).expires_at, at(hours as i64));
    }
    let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
    cmd.expires_in = Some(LinkLifetime::from_seconds(3).unwrap());
    let events = invitation::invite(&a, &caller(&a, ADMIN), cmd, &no_facts(), t0()).unwrap();
    assert_eq!(invitation(&events).expires_at, t0() + chrono::Duration::seconds(3));
}

#[test]
fn given_no_lifetime_when_inviting_then_the_deadline_is_24_hours_from_now() {
    let a = account(&team(20));
    let events =
        invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0())
            .unwrap();
    assert_eq!(invitation(&events).expires_at, at(24));
}

#[test]
fn given_an_account_default_lifetime_when_inviting_then_it_is_used() {
    let mut settings = AccountSettings::with_seats(20);
    settings.invitation_lifetime_hours = 72;
    let a = account(&and(team(20), AccountEvent::AccountSettingsChanged { settings }));
    let events =
        invitation::invite(&a, &caller(&a, ADMIN), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0())
            .unwrap();
    assert_eq!(invitation(&events).expires_at, at(72));
}

#[test]
fn given_an_admin_when_inviting_then_exactly_one_invitation_sent() {
    let a = account(&team(20));
    let mut cmd = invite_cmd("  Bob@Example.COM ", &["editor"]);
    cmd.channel = Channel::Bulk;
    let events = invitation::invite(&a, &caller(&a, ADMIN), cmd, &no_facts(), t0()).unwrap();
    assert_eq!(
        events,
        vec![InvitationEvent::InvitationSent {
            invitation_id: INV,
            account_id: ACCOUNT,
            person_id: PERSON,
            personal: Personal::Known { email: bob_email(), name: Some(PersonName::parse("Bob").unwrap()) },
            access: access(&["editor"]),
            invited_by: Actor::User(ADMIN),
            channel: Channel::Bulk,
            expires_at: at(24),
            link_nonce: nonce(1),
            metadata: None,
            redirect_url: None,
        }]
    );
    let i = invitation(&events);
    assert_eq!(i.status, InvitationStatus::Pending);
    assert_eq!(i.resend_count, 0);
    assert!(i.is_live(t0()));
}

// ===========================================================================
// Liveness
// ===========================================================================

#[test]
fn given_a_pending_invitation_when_before_its_deadline_then_live() {
    let i = invitation(&[sent(&["viewer"])]);
    assert!(i.is_live(t0()));
    assert!(i.is_live(at(24) - Duration::seconds(1)));
    assert_eq!(i.require_live(at(23)), Ok(()));
}

#[test]
fn given_a_pending_invitation_when_past_its_deadline_then_not_live() {
    let i = invitation(&[sent(&["viewer"])]);
    assert_eq!(i.status, InvitationStatus::Pending);
    assert!(!i.is_live(at(24)));
    assert!(!i.is_live(at(100)));
    assert_eq!(code(i.require_live(at(24))), "invitation_expired");
}

#[test]
fn given_an_expired_revoked_declined_or_accepted_invitation_then_not_live_even_before_its_deadline() {
    for (event, expected) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        assert!(!i.is_live(t0()), "{event:?}");
        assert_eq!(code(i.require_live(t0())), expected, "{event:?}");
    }
}

#[test]
fn given_each_status_then_its_stable_name() {
    let names: Vec<_> = [
        InvitationStatus::Pending,
        InvitationStatus::Accepted,
        InvitationStatus::Declined,
        InvitationStatus::Expired,
        InvitationStatus::Revoked,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(names, ["pending", "accepted", "declined", "expired", "revoked"]);
}

// ===========================================================================
// Update
// ===========================================================================

#[test]
fn given_a_non_pending_invitation_when_updating_then_refused_with_its_status_code() {
    let a = account(&team(20));
    for (event, expected) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        let r = invitation::update(&a, &caller(&a, OWNER), &i, Some(access(&["viewer"])), None, at(1));
        assert_eq!(code(r), expected, "{event:?}");
    }
}

#[test]
fn given_a_pending_invitation_past_its_deadline_when_updating_then_invitation_expired() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::update(&a, &caller(&a, ADMIN), &i, Some(access(&["viewer"])), None, at(25));
    assert_eq!(code(r), "invitation_expired");
}

#[test]
fn given_an_admin_when_updating_a_pending_invitation_to_grant_owner_then_exceeds_own_rights() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::update(&a, &caller(&a, ADMIN), &i, Some(access(&["owner"])), None, at(1));
    assert_eq!(code(r), "exceeds_own_rights");
}

#[test]
fn given_an_admin_when_updating_an_owners_invitation_of_an_owner_then_exceeds_own_rights() {
    let a = account(&team(20));
    let i = invitation(&[sent_by(Actor::User(OWNER), &["owner"])]);
    let r = invitation::update(&a, &caller(&a, ADMIN), &i, None, Some(hours(48)), at(1));
    assert_eq!(code(r), "exceeds_own_rights");
}

#[test]
fn given_an_unknown_role_when_updating_then_unknown_role() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::update(&a, &caller(&a, ADMIN), &i, Some(access(&["ghost"])), None, at(1));
    assert_eq!(code(r), "unknown_role");
}

#[test]
fn given_nothing_changes_when_updating_then_no_event() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let c = caller(&a, ADMIN);
    assert_eq!(invitation::update(&a, &c, &i, None, None, at(1)), Ok(vec![]));
    assert_eq!(invitation::update(&a, &c, &i, Some(access(&["editor"])), None, at(1)), Ok(vec![]));
    // A lifetime that lands on the current deadline changes nothing either.
    assert_eq!(invitation::update(&a, &c, &i, None, Some(hours(24)), t0()), Ok(vec![]));
}

#[test]
fn given_a_new_grant_and_lifetime_when_updating_then_invitation_updated() {
    let a = account(&team(20));
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let update =
        invitation::update(&a, &caller(&a, ADMIN), &i, Some(access(&["viewer"])), Some(hours(48)), at(2)).unwrap();
    assert_eq!(
        update,
        vec![InvitationEvent::InvitationUpdated {
            access: access(&["viewer"]),
            expires_at: at(50),
            updated_by: Actor::User(ADMIN),
        }]
    );
    let after = invitation(&[events, update].concat());
    assert_eq!(after.access, access(&["viewer"]));
    assert_eq!(after.expires_at, at(50));
    assert_eq!(after.status, InvitationStatus::Pending);
}

#[test]
fn given_only_a_new_lifetime_when_updating_then_the_grant_is_kept() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let update = invitation::update(&a, &caller(&a, ADMIN), &i, None, Some(hours(2)), at(3)).unwrap();
    assert_eq!(
        update,
        vec![InvitationEvent::InvitationUpdated {
            access: access(&["editor"]),
            expires_at: at(5),
            updated_by: Actor::User(ADMIN),
        }]
    );
}

#[test]
fn given_the_inviter_with_only_invitations_create_when_updating_their_own_invitation_then_updated() {
    let a = account(&team_with_recruiters());
    let i = invitation(&[sent_by(Actor::User(RECRUITER), &["viewer"])]);
    let r = invitation::update(&a, &caller(&a, RECRUITER), &i, None, Some(hours(48)), at(1)).unwrap();
    assert_eq!(
        r,
        vec![InvitationEvent::InvitationUpdated {
            access: access(&["viewer"]),
            expires_at: at(49),
            updated_by: Actor::User(RECRUITER),
        }]
    );
}

#[test]
fn given_another_member_with_only_invitations_create_when_updating_someones_invitation_then_forbidden() {
    let a = account(&team_with_recruiters());
    let i = invitation(&[sent_by(Actor::User(RECRUITER), &["viewer"])]);
    let r = invitation::update(&a, &caller(&a, RECRUITER2), &i, None, Some(hours(48)), at(1));
    assert_eq!(code(r), "forbidden");
    // invitations.manage may change anyone's invitation.
    let ok = invitation::update(&a, &caller(&a, ADMIN), &i, None, Some(hours(48)), at(1));
    assert_eq!(ok.unwrap().len(), 1);
}

#[test]
fn given_an_inviter_who_left_when_updating_their_invitation_then_forbidden() {
    let e = and(team_with_recruiters(), AccountEvent::MemberRemoved { user_id: RECRUITER });
    let a = account(&e);
    let i = invitation(&[sent_by(Actor::User(RECRUITER), &["viewer"])]);
    let r = invitation::update(&a, &caller(&a, RECRUITER), &i, None, Some(hours(48)), at(1));
    assert_eq!(code(r), "forbidden");
}

#[test]
fn given_the_inviter_now_holding_only_invitations_manage_when_updating_their_own_invitation_then_updated() {
    // The recruiter sent the invitation, then their role was swapped for one
    // that manages invitations but does not create them.
    let e = with_role(team_with_recruiters(), "coordinator", &[Permission::AccountRead, Permission::InvitationsManage]);
    let e = and(e, AccountEvent::MemberAccessChanged { user_id: RECRUITER, access: access(&["coordinator"]) });
    let a = account(&e);
    let i = invitation(&[sent_by(Actor::User(RECRUITER), &["viewer"])]);
    let r = invitation::update(&a, &caller(&a, RECRUITER), &i, None, Some(hours(48)), at(1));
    assert_eq!(r.unwrap().len(), 1);
}

// ===========================================================================
// Resend
// ===========================================================================

#[test]
fn given_a_pending_invitation_when_resending_then_a_new_link_with_a_new_deadline() {
    let a = account(&team(20));
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let resend = invitation::resend(&a, &caller(&a, ADMIN), &i, nonce(2), true, 0, at(10)).unwrap();
    assert_eq!(
        resend,
        vec![InvitationEvent::InvitationResent {
            link_nonce: nonce(2),
            expires_at: at(34),
            resent_by: Actor::User(ADMIN),
            send_copy_to_me: true,
        }]
    );
    let after = invitation(&[events, resend].concat());
    assert_eq!(after.link_nonce, nonce(2));
    assert_eq!(after.expires_at, at(34));
    assert_eq!(after.resend_count, 1);
    assert_eq!(after.status, InvitationStatus::Pending);
}

#[test]
fn given_a_resent_invitation_when_checking_tokens_then_only_the_new_link_matches() {
    let a = account(&team(20));
    let events = vec![sent(&["editor"])];
    let before = invitation(&events);
    assert_eq!(invitation::check_token(&before, &token(INV, 1), &key()), Ok(()));

    let resend = invitation::resend(&a, &caller(&a, ADMIN), &before, nonce(2), false, 0, at(1)).unwrap();
    let after = invitation(&[events, resend].concat());
    assert_eq!(code(invitation::check_token(&after, &token(INV, 1), &key())), "invalid_token");
    assert_eq!(invitation::check_token(&after, &token(INV, 2), &key()), Ok(()));
}

#[test]
fn given_several_resends_then_resend_count_counts_them() {
    let i = invitation(&[sent(&["editor"]), resent(2, at(1)), resent(3, at(2)), resent(4, at(3))]);
    assert_eq!(i.resend_count, 3);
    assert_eq!(i.link_nonce, nonce(4));
    assert_eq!(i.expires_at, at(27));
}

#[test]
fn given_a_lapsed_invitation_when_resent_then_it_is_live_again_with_the_new_deadline() {
    // Folding: a resend moves the deadline, whatever the old one was.
    let i = invitation(&[sent(&["editor"]), resent(2, at(20))]);
    assert!(i.is_live(at(30)));
    assert!(!i.is_live(at(44)));
}

#[test]
fn given_the_resender_reached_the_quota_when_resending_then_daily_quota_exceeded() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let c = caller(&a, ADMIN);
    assert!(invitation::resend(&a, &c, &i, nonce(2), false, 49, at(1)).is_ok());
    assert_eq!(code(invitation::resend(&a, &c, &i, nonce(2), false, 50, at(1))), "daily_quota_exceeded");
}

#[test]
fn given_the_operator_over_the_quota_when_resending_then_exempt() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::resend(&a, &Caller::of(&a, Actor::Operator), &i, nonce(2), false, 500, at(1));
    assert_eq!(r.unwrap().len(), 1);
}

#[test]
fn given_a_non_pending_invitation_when_resending_then_refused_with_its_status_code() {
    let a = account(&team(20));
    for (event, expected) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        let r = invitation::resend(&a, &caller(&a, OWNER), &i, nonce(2), false, 0, at(1));
        assert_eq!(code(r), expected, "{event:?}");
    }
}

#[test]
fn given_a_pending_invitation_past_its_deadline_when_resending_then_invitation_expired() {
    // Once lapsed it holds no seat and no longer blocks a fresh invitation of
    // the same email; resending it would bring back a second live invitation
    // or exceed the seats, so it behaves like an expired one.
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::resend(&a, &caller(&a, ADMIN), &i, nonce(2), false, 0, at(24));
    assert_eq!(code(r), "invitation_expired");
}

#[test]
fn given_a_member_without_invitation_rights_when_resending_then_forbidden() {
    let a = account(&team_with_recruiters());
    let i = invitation(&[sent(&["viewer"])]);
    for who in [VIEWER, EDITOR, RECRUITER, STRANGER] {
        let r = invitation::resend(&a, &caller(&a, who), &i, nonce(2), false, 0, at(1));
        assert_eq!(code(r), "forbidden", "{who}");
    }
    // The inviter may resend their own.
    let own = invitation(&[sent_by(Actor::User(RECRUITER), &["viewer"])]);
    assert!(invitation::resend(&a, &caller(&a, RECRUITER), &own, nonce(2), false, 0, at(1)).is_ok());
}

// ===========================================================================
// Revoke
// ===========================================================================

#[test]
fn given_a_pending_invitation_when_an_admin_revokes_then_invitation_revoked() {
    let a = account(&team(20));
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let r = invitation::revoke(&a, &caller(&a, ADMIN), &i, RevokeReason::ByAdmin).unwrap();
    assert_eq!(r, vec![revoked()]);
    let after = invitation(&[events, r].concat());
    assert_eq!(after.status, InvitationStatus::Revoked);
    assert!(!after.is_live(t0()));
}

#[test]
fn given_a_non_pending_invitation_when_revoking_then_invitation_not_pending() {
    let a = account(&team(20));
    for (event, _) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        let r = invitation::revoke(&a, &caller(&a, OWNER), &i, RevokeReason::ByAdmin);
        assert_eq!(code(r), "invitation_not_pending", "{event:?}");
    }
}

#[test]
fn given_a_member_without_rights_when_revoking_by_admin_then_forbidden() {
    let a = account(&team_with_recruiters());
    let i = invitation(&[sent(&["viewer"])]);
    for who in [VIEWER, EDITOR, RECRUITER2, STRANGER] {
        let r = invitation::revoke(&a, &caller(&a, who), &i, RevokeReason::ByAdmin);
        assert_eq!(code(r), "forbidden", "{who}");
    }
}

#[test]
fn given_an_admin_when_revoking_an_invitation_that_grants_owner_then_exceeds_own_rights() {
    let a = account(&team(20));
    let i = invitation(&[sent_by(Actor::User(OWNER), &["owner"])]);
    let r = invitation::revoke(&a, &caller(&a, ADMIN), &i, RevokeReason::ByAdmin);
    assert_eq!(code(r), "exceeds_own_rights");
}

#[test]
fn given_the_inviter_was_removed_when_the_cascade_revokes_then_no_rights_are_needed() {
    let a = account(&and(team(20), AccountEvent::MemberRemoved { user_id: ADMIN }));
    let i = invitation(&[sent(&["editor"])]);
    let system = Caller { actor: Actor::System, access: None };
    let r = invitation::revoke(&a, &system, &i, RevokeReason::InviterRemoved).unwrap();
    assert_eq!(
        r,
        vec![InvitationEvent::InvitationRevoked { revoked_by: Actor::System, reason: RevokeReason::InviterRemoved }]
    );
    // Still only while pending.
    let done = invitation(&[sent(&["editor"]), accepted(&["editor"])]);
    assert_eq!(code(invitation::revoke(&a, &system, &done, RevokeReason::InviterRemoved)), "invitation_not_pending");
}

// ===========================================================================
// Accept
// ===========================================================================

#[test]
fn given_a_live_invitation_and_its_token_when_accepting_then_accepted_and_member_joined_with_the_same_access() {
    let account_events = team(20);
    let a = account(&account_events);
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let (inv_events, acc_events) = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(23)).unwrap();
    assert_eq!(inv_events, vec![accepted(&["editor"])]);
    assert_eq!(
        acc_events,
        vec![AccountEvent::MemberJoined { user_id: BOB, invitation_id: INV, access: access(&["editor"]) }]
    );
    let after = invitation(&[events, inv_events].concat());
    assert_eq!(after.status, InvitationStatus::Accepted);
    let joined = account(&[account_events, acc_events].concat());
    let member = &joined.members[&BOB];
    assert_eq!(member.access, access(&["editor"]));
    assert_eq!(member.status, MemberStatus::Active);
}

#[test]
fn given_an_email_typed_differently_when_accepting_then_it_is_the_same_email() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    let acceptor = Acceptor { user_id: BOB, email: email(" BOB@Example.Com ") };
    assert!(invitation::accept(&a, &i, &token(INV, 1), &key(), &acceptor, t0()).is_ok());
}

#[test]
fn given_a_wrong_token_when_accepting_then_invalid_token() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    for (what, t) in [
        ("other nonce", token(INV, 9)),
        ("other invitation", token(OTHER_INV, 1)),
        ("other key", token_with(&LinkKey::from_bytes([8; 32]), INV, 1)),
    ] {
        let r = invitation::accept(&a, &i, &t, &key(), &bob(), t0());
        assert_eq!(code(r), "invalid_token", "{what}");
    }
}

#[test]
fn given_a_token_forged_by_swapping_the_nonce_when_accepting_then_invalid_token() {
    let a = account(&team(20));
    // The invitation was resent (nonce 2); the attacker holds the old link
    // and writes the current nonce into it.
    let i = invitation(&[sent(&["editor"]), resent(2, t0())]);
    let mut forged = token(INV, 1);
    forged.nonce = nonce(2);
    let r = invitation::accept(&a, &i, &forged, &key(), &bob(), at(1));
    assert_eq!(code(r), "invalid_token");
}

#[test]
fn given_a_resent_invitation_when_accepting_with_the_old_token_then_invalid_token() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"]), resent(2, at(1))]);
    assert_eq!(code(invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(2))), "invalid_token");
    assert!(invitation::accept(&a, &i, &token(INV, 2), &key(), &bob(), at(2)).is_ok());
}

#[test]
fn given_the_deadline_passed_without_an_expired_event_when_accepting_then_invitation_expired() {
    let a = account(&team(20));
    let i = invitation(&[sent(&["editor"])]);
    assert_eq!(code(invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(24))), "invitation_expired");
    assert_eq!(code(invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(48))), "invitation_expired");
}

#[test]
fn given_an_accepted_invitation_when_accepting_again_then_invitation_used() {
    let a = account(&with_member(team(20), BOB, &["editor"]));
    let i = invitation(&[sent(&["editor"]), accepted(&["editor"])]);
    let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
    assert_eq!(code(r), "invitation_used");
    // Single use, whoever tries.
    let other = Acceptor { user_id: STRANGER, email: bob_email() };
    assert_eq!(code(invitation::accept(&a, &i, &token(INV, 1), &key(), &other, at(1))), "invitation_used");
}

#[test]
fn given_a_revoked_declined_or_expired_invitation_when_accepting_then_refused_with_its_code() {
    let a = account(&team(20));
    for (event, expected) in [
        (revoked(), "invitation_revoked"),
        (InvitationEvent::InvitationDeclined {}, "invitation_declined"),
        (InvitationEvent::InvitationExpired {}, "invitation_expired"),
    ] {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
        assert_eq!(code(r), expected, "{event:?}");
    }
}

#[test]
fn given_another_email_when_accepting_then_email_mismatch_and_the_invitation_is_unchanged() {
    let a = account(&team(20));
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let before = i.clone();
    let eve = Acceptor { user_id: STRANGER, email: email("eve@example.com") };
    let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &eve, at(1));
    assert_eq!(code(r), "email_mismatch");
    assert_eq!(i, before);
    assert_eq!(i.status, InvitationStatus::Pending);
    // The invited person can still accept.
    assert!(invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1)).is_ok());
}

#[test]
fn given_an_active_or_deactivated_member_when_accepting_then_already_member() {
    for events in [with_member(team(20), BOB, &["viewer"]), deactivated(with_member(team(20), BOB, &["viewer"]), BOB)] {
        let a = account(&events);
        let i = invitation(&[sent(&["editor"])]);
        let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
        assert_eq!(code(r), "already_member");
    }
}

#[test]
fn given_the_inviter_lost_their_admin_role_when_accepting_then_inviter_lacks_rights() {
    let e = and(team(20), AccountEvent::MemberAccessChanged { user_id: ADMIN, access: access(&["editor"]) });
    let a = account(&e);
    let i = invitation(&[sent(&["admin"])]);
    let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
    assert_eq!(code(r), "inviter_lacks_rights");
}

#[test]
fn given_the_inviter_lost_rights_but_still_holds_the_grant_when_accepting_then_accepted() {
    // The ceiling is on what is granted: an editor may still "grant" viewer.
    let e = and(team(20), AccountEvent::MemberAccessChanged { user_id: ADMIN, access: access(&["editor"]) });
    let a = account(&e);
    let i = invitation(&[sent(&["viewer"])]);
    assert!(invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1)).is_ok());
}

#[test]
fn given_the_inviter_was_removed_or_deactivated_when_accepting_then_inviter_lacks_rights() {
    for e in [and(team(20), AccountEvent::MemberRemoved { user_id: ADMIN }), deactivated(team(20), ADMIN)] {
        let a = account(&e);
        let i = invitation(&[sent(&["viewer"])]);
        let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
        assert_eq!(code(r), "inviter_lacks_rights");
    }
}

#[test]
fn given_a_custom_role_deleted_after_inviting_when_accepting_then_it_is_dropped_from_the_grant() {
    let e = with_role(team(20), "support", &[Permission::AccountRead, Permission::InvitationsRead]);
    let e = and(e, AccountEvent::RoleDeleted { role: role("support") });
    let a = account(&e);
    let i = invitation(&[sent(&["support", "viewer"])]);
    let (inv_events, acc_events) = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1)).unwrap();
    assert_eq!(inv_events, vec![accepted(&["viewer"])]);
    assert_eq!(
        acc_events,
        vec![AccountEvent::MemberJoined { user_id: BOB, invitation_id: INV, access: access(&["viewer"]) }]
    );
}

#[test]
fn given_an_invitation_sent_by_the_operator_when_accepting_then_no_inviter_check() {
    // A fresh account: nobody is a member yet, the operator invites its owner.
    let a = account(&opened_account(5));
    let i = invitation(&[sent_by(Actor::Operator, &["owner"])]);
    let (inv_events, acc_events) = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1)).unwrap();
    assert_eq!(inv_events, vec![accepted(&["owner"])]);
    assert_eq!(
        acc_events,
        vec![AccountEvent::MemberJoined { user_id: BOB, invitation_id: INV, access: access(&["owner"]) }]
    );
}

#[test]
fn given_an_erased_invitee_when_accepting_then_refused() {
    let a = account(&team(20));
    let mut erased = sent(&["editor"]);
    if let InvitationEvent::InvitationSent { personal, .. } = &mut erased {
        *personal = Personal::Erased;
    }
    let i = invitation(&[erased]);
    assert_eq!(i.personal.email(), None);
    let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
    assert_eq!(code(r), "invitation_revoked");
}

// ===========================================================================
// Decline and expire
// ===========================================================================

#[test]
fn given_the_current_token_when_declining_then_invitation_declined() {
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    let r = invitation::decline(&i, &token(INV, 1), &key(), at(1)).unwrap();
    assert_eq!(r, vec![InvitationEvent::InvitationDeclined {}]);
    let after = invitation(&[events, r].concat());
    assert_eq!(after.status, InvitationStatus::Declined);
    assert!(!after.is_live(at(1)));
}

#[test]
fn given_an_old_or_wrong_token_when_declining_then_invalid_token() {
    let i = invitation(&[sent(&["editor"]), resent(2, t0())]);
    assert_eq!(code(invitation::decline(&i, &token(INV, 1), &key(), at(1))), "invalid_token");
    assert_eq!(code(invitation::decline(&i, &token(OTHER_INV, 2), &key(), at(1))), "invalid_token");
    assert!(invitation::decline(&i, &token(INV, 2), &key(), at(1)).is_ok());
}

#[test]
fn given_a_dead_invitation_when_declining_then_refused_with_its_code() {
    let lapsed = invitation(&[sent(&["editor"])]);
    assert_eq!(code(invitation::decline(&lapsed, &token(INV, 1), &key(), at(24))), "invitation_expired");
    for (event, expected) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        assert_eq!(code(invitation::decline(&i, &token(INV, 1), &key(), at(1))), expected, "{event:?}");
    }
}

#[test]
fn given_a_pending_invitation_before_its_deadline_when_expiring_then_no_event() {
    let i = invitation(&[sent(&["editor"])]);
    assert_eq!(invitation::expire(&i, at(23)), Ok(vec![]));
    assert_eq!(invitation::expire(&i, at(24) - Duration::seconds(1)), Ok(vec![]));
}

#[test]
fn given_a_pending_invitation_at_or_after_its_deadline_when_expiring_then_invitation_expired() {
    let events = vec![sent(&["editor"])];
    let i = invitation(&events);
    assert_eq!(invitation::expire(&i, at(24)), Ok(vec![InvitationEvent::InvitationExpired {}]));
    let r = invitation::expire(&i, at(100)).unwrap();
    assert_eq!(r, vec![InvitationEvent::InvitationExpired {}]);
    assert_eq!(invitation(&[events, r].concat()).status, InvitationStatus::Expired);
}

#[test]
fn given_a_resent_invitation_when_expiring_at_the_old_deadline_then_no_event() {
    let i = invitation(&[sent(&["editor"]), resent(2, at(20))]);
    assert_eq!(invitation::expire(&i, at(30)), Ok(vec![]));
    assert_eq!(invitation::expire(&i, at(44)), Ok(vec![InvitationEvent::InvitationExpired {}]));
}

#[test]
fn given_a_non_pending_invitation_when_expiring_after_its_deadline_then_no_event() {
    for (event, _) in non_pending() {
        let i = invitation(&[sent(&["editor"]), event.clone()]);
        assert_eq!(invitation::expire(&i, at(100)), Ok(vec![]), "{event:?}");
    }
}

#[test]
fn given_any_invitation_when_recording_delivery_then_delivery_recorded() {
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::record_delivery(&i, DeliveryState::Bounced, Some("550 no such user".into())).unwrap();
    assert_eq!(
        r,
        vec![InvitationEvent::InvitationDeliveryRecorded {
            state: DeliveryState::Bounced,
            detail: Some("550 no such user".into()),
        }]
    );
    // Delivery facts change nothing about the invitation itself but the
    // record of what was seen.
    let after = invitation(&[sent(&["editor"]), r[0].clone()]);
    assert_eq!((after.status, &after.access, after.expires_at), (i.status, &i.access, i.expires_at));
    assert_eq!(after.delivery_seen, [DeliveryState::Bounced].into());
}

#[test]
fn given_an_opened_invitation_when_opened_or_clicked_again_then_each_is_recorded_and_nothing_consumed() {
    let i = invitation(&[sent(&["editor"])]);
    let opened = invitation::record_tracking(&i, DeliveryState::Opened);
    assert_eq!(
        opened,
        vec![InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Opened, detail: None }]
    );
    let i = invitation(&[sent(&["editor"]), opened[0].clone()]);
    assert_eq!(invitation::record_tracking(&i, DeliveryState::Opened), opened, "repeats are facts too");
    assert_eq!(invitation::record_tracking(&i, DeliveryState::Clicked).len(), 1);
    assert_eq!(i.status, InvitationStatus::Pending, "tracking consumes nothing");
    assert_eq!(i.delivery_seen, [DeliveryState::Opened].into());
}

#[test]
fn given_a_pending_invitation_when_reminded_then_once_per_link() {
    let i = invitation(&[sent(&["editor"])]);
    let reminded = invitation::remind(&i, at(1));
    assert_eq!(reminded, vec![InvitationEvent::InvitationReminded { expires_at: at(24) }]);
    let i = invitation(&[sent(&["editor"]), reminded[0].clone()]);
    assert!(invitation::remind(&i, at(2)).is_empty(), "one reminder per link");
    let i = invitation(&[sent(&["editor"]), reminded[0].clone(), resent(2, at(3))]);
    assert_eq!(invitation::remind(&i, at(4)).len(), 1, "a new link may be reminded again");
}

#[test]
fn given_a_lapsed_or_closed_invitation_when_reminded_then_nothing() {
    let i = invitation(&[sent(&["editor"])]);
    assert!(invitation::remind(&i, at(24)).is_empty(), "past its deadline");
    let i = invitation(&[sent(&["editor"]), InvitationEvent::InvitationDeclined {}]);
    assert!(invitation::remind(&i, at(1)).is_empty(), "declined");
}

// ===========================================================================
// Accounts
// ===========================================================================

#[test]
fn given_no_account_when_opening_then_account_opened() {
    let name = AccountName::parse("Acme").unwrap();
    let number = CustomerNumber::parse("C-0042").unwrap();
    let r = account::open(ACCOUNT, name, number, AccountSettings::with_seats(3), None).unwrap();
    assert_eq!(r, opened_account(3));
    let a = account(&r);
    assert_eq!(a.id, ACCOUNT);
    assert!(a.members.is_empty());
    assert_eq!(a.settings.invitation_lifetime_hours, 24);
    assert_eq!(a.settings.daily_invitation_quota, 50);
}

#[test]
fn given_zero_seats_when_opening_then_invalid_seats() {
    let r = account::open(
        ACCOUNT,
        AccountName::parse("Acme").unwrap(),
        CustomerNumber::parse("C-0042").unwrap(),
        AccountSettings::with_seats(0),
        None,
    );
    assert_eq!(code(r), "invalid_seats");
}

#[test]
fn given_a_default_lifetime_out_of_bounds_when_opening_then_invalid_expiry() {
    let mut settings = AccountSettings::with_seats(3);
    settings.invitation_lifetime_hours = 0;
    let r = account::open(
        ACCOUNT,
        AccountName::parse("Acme").unwrap(),
        CustomerNumber::parse("C-0042").unwrap(),
        settings,
        None,
    );
    assert_eq!(code(r), "invalid_expiry");
}

#[test]
fn given_an_open_account_when_opening_it_again_then_account_exists() {
    let existing = account(&opened_account(3));
    let r = account::open(
        ACCOUNT,
        AccountName::parse("Acme").unwrap(),
        CustomerNumber::parse("C-0042").unwrap(),
        AccountSettings::with_seats(3),
        Some(&existing),
    );
    assert_eq!(code(r), "account_exists");
}

#[test]
fn given_no_account_opened_when_folding_other_events_then_no_account() {
    let e = [AccountEvent::MemberJoined { user_id: BOB, invitation_id: INV, access: access(&["owner"]) }];
    assert_eq!(Account::from_events(&e), None);
}

// --- custom roles ----------------------------------------------------------

#[test]
fn given_an_admin_when_defining_a_custom_role_then_role_defined() {
    let a = account(&team(20));
    let ps = perms(&[Permission::AccountRead, Permission::InvitationsRead]);
    let r = account::define_role(&a, &caller(&a, ADMIN), role("support"), ps.clone()).unwrap();
    assert_eq!(r, vec![AccountEvent::RoleDefined { role: role("support"), permissions: ps.clone() }]);
    let after = account(&[team(20), r].concat());
    assert_eq!(after.roles.permissions(&role("support")), Some(ps));
}

#[test]
fn given_a_built_in_name_when_defining_a_role_then_role_exists() {
    let a = account(&team(20));
    for name in RoleName::BUILT_IN {
        let r = account::define_role(&a, &caller(&a, OWNER), role(name), perms(&[Permission::AccountRead]));
        assert_eq!(code(r), "role_exists", "{name}");
    }
}

#[test]
fn given_an_existing_custom_role_when_defining_it_again_then_role_exists() {
    let a = account(&with_role(team(20), "support", &[Permission::AccountRead]));
    let r = account::define_role(&a, &caller(&a, ADMIN), role("Support"), perms(&[Permission::MembersRead]));
    assert_eq!(code(r), "role_exists");
}

#[test]
fn given_permissions_the_caller_lacks_when_defining_a_role_then_exceeds_own_rights() {
    let e = with_role(team(20), "rolesmith", &[Permission::AccountRead, Permission::RolesManage]);
    let a = account(&with_member(e, RECRUITER, &["rolesmith"]));
    let c = caller(&a, RECRUITER);
    let r = account::define_role(&a, &c, role("support"), perms(&[Permission::AccountRead, Permission::MembersManage]));
    assert_eq!(code(r), "exceeds_own_rights");
    assert!(account::define_role(&a, &c, role("support"), perms(&[Permission::AccountRead])).is_ok());
}

#[test]
fn given_owners_manage_when_defining_a_role_then_exceeds_own_rights_even_for_an_owner() {
    let a = account(&team(20));
    let r = account::define_role(&a, &caller(&a, OWNER), role("co-owner"), perms(&[Permission::OwnersManage]));
    assert_eq!(code(r), "exceeds_own_rights");
}

#[test]
fn given_a_member_without_roles_manage_when_defining_a_role_then_forbidden() {
    let a = account(&team(20));
    for who in [EDITOR, VIEWER, STRANGER] {
        let r = account::define_role(&a, &caller(&a, who), role("support"), perms(&[Permission::AccountRead]));
        assert_eq!(code(r), "forbidden", "{who}");
    }
}

#[test]
fn given_a_custom_role_when_changing_it_then_role_changed_and_unchanged_gives_no_event() {
    let events = with_role(team(20), "support", &[Permission::AccountRead]);
    let a = account(&events);
    let c = caller(&a, ADMIN);
    assert_eq!(account::change_role(&a, &c, role("support"), perms(&[Permission::AccountRead])), Ok(vec![]));
    let new = perms(&[Permission::AccountRead, Permission::MembersRead]);
    let r = account::change_role(&a, &c, role("support"), new.clone()).unwrap();
    assert_eq!(r, vec![AccountEvent::RoleChanged { role: role("support"), permissions: new.clone() }]);
    assert_eq!(account(&[events, r].concat()).roles.permissions(&role("support")), Some(new));
}

#[test]
fn given_a_role_change_when_it_exceeds_the_caller_or_targets_a_built_in_or_missing_role_then_refused() {
    let a = account(&with_role(team(20), "support", &[Permission::AccountRead]));
    let c = caller(&a, ADMIN);
    assert_eq!(
        code(account::change_role(&a, &c, role("support"), perms(&[Permission::OwnersManage]))),
        "exceeds_own_rights"
    );
    assert_eq!(code(account::change_role(&a, &c, role("admin"), perms(&[Permission::AccountRead]))), "built_in_role");
    assert_eq!(code(account::change_role(&a, &c, role("ghost"), perms(&[Permission::AccountRead]))), "role_not_found");
    assert_eq!(
        code(account::change_role(&a, &caller(&a, EDITOR), role("support"), perms(&[Permission::AccountRead]))),
        "forbidden"
    );
}

#[test]
fn given_a_custom_role_held_by_members_when_deleted_then_taken_from_every_member() {
    let e = with_role(team(20), "support", &[Permission::AccountRead, Permission::InvitationsRead]);
    let e = with_member(e, BOB, &["support", "viewer"]);
    let e = with_member(e, RECRUITER, &["support"]);
    let a = account(&e);
    let r = account::delete_role(&a, &caller(&a, ADMIN), role("support")).unwrap();
    assert_eq!(r, vec![AccountEvent::RoleDeleted { role: role("support") }]);
    let after = account(&[e, r].concat());
    assert_eq!(after.roles.permissions(&role("support")), None);
    assert_eq!(after.members[&BOB].access, access(&["viewer"]));
    assert_eq!(after.members[&RECRUITER].access, access(&[]));
    assert!(after.members[&RECRUITER].access.is_restricted());
    assert_eq!(after.members[&ADMIN].access, access(&["admin"]));
}

#[test]
fn given_a_built_in_or_missing_role_when_deleting_then_refused() {
    let a = account(&team(20));
    let c = caller(&a, OWNER);
    assert_eq!(code(account::delete_role(&a, &c, role("viewer"))), "built_in_role");
    assert_eq!(code(account::delete_role(&a, &c, role("ghost"))), "role_not_found");
    let a = account(&with_role(team(20), "support", &[Permission::AccountRead]));
    assert_eq!(code(account::delete_role(&a, &caller(&a, VIEWER), role("support"))), "forbidden");
}

// --- members ---------------------------------------------------------------

#[test]
fn given_an_admin_when_changing_a_members_access_under_the_ceiling_then_member_access_changed() {
    let events = team(20);
    let a = account(&events);
    let r = account::change_member_access(&a, &caller(&a, ADMIN), VIEWER, access(&["editor"])).unwrap();
    assert_eq!(r, vec![AccountEvent::MemberAccessChanged { user_id: VIEWER, access: access(&["editor"]) }]);
    assert_eq!(account(&[events, r].concat()).members[&VIEWER].access, access(&["editor"]));
}

#[test]
fn given_the_same_access_when_changing_a_member_then_no_event() {
    let a = account(&team(20));
    assert_eq!(account::change_member_access(&a, &caller(&a, ADMIN), VIEWER, access(&["viewer"])), Ok(vec![]));
}

#[test]
fn given_an_admin_when_granting_owner_to_a_member_then_exceeds_own_rights() {
    let a = account(&team(20));
    let r = account::change_member_access(&a, &caller(&a, ADMIN), VIEWER, access(&["owner"]));
    assert_eq!(code(r), "exceeds_own_rights");
    assert!(account::change_member_access(&a, &caller(&a, OWNER), VIEWER, access(&["owner"])).is_ok());
}

#[test]
fn given_an_admin_when_editing_an_owner_then_exceeds_own_rights() {
    let a = account(&team(20));
    let c = caller(&a, ADMIN);
    assert_eq!(code(account::change_member_access(&a, &c, OWNER, access(&["viewer"]))), "exceeds_own_rights");
    assert_eq!(code(account::deactivate_member(&a, &c, OWNER)), "exceeds_own_rights");
    assert_eq!(code(account::remove_member(&a, &c, OWNER)), "exceeds_own_rights");
}

#[test]
fn given_a_member_with_rights_above_the_caller_when_reactivating_them_then_exceeds_own_rights() {
    let e = deactivated(with_member(team(20), OWNER2, &["owner"]), OWNER2);
    let a = account(&e);
    assert_eq!(code(account::reactivate_member(&a, &caller(&a, ADMIN), OWNER2, 0)), "exceeds_own_rights");
}

#[test]
fn given_a_member_change_when_the_caller_lacks_members_manage_or_the_target_is_unknown_then_refused() {
    let a = account(&team(20));
    assert_eq!(code(account::change_member_access(&a, &caller(&a, EDITOR), VIEWER, access(&["editor"]))), "forbidden");
    assert_eq!(
        code(account::change_member_access(&a, &caller(&a, ADMIN), STRANGER, access(&["editor"]))),
        "member_not_found"
    );
    assert_eq!(code(account::change_member_access(&a, &caller(&a, ADMIN), VIEWER, access(&["ghost"]))), "unknown_role");
    assert_eq!(code(account::deactivate_member(&a, &caller(&a, ADMIN), STRANGER)), "member_not_found");
    assert_eq!(code(account::remove_member(&a, &caller(&a, ADMIN), STRANGER)), "member_not_found");
    assert_eq!(code(account::reactivate_member(&a, &caller(&a, ADMIN), STRANGER, 0)), "member_not_found");
}

#[test]
fn given_the_last_active_owner_when_demoting_them_then_last_owner() {
    let a = account(&team(20));
    let r = account::change_member_access(&a, &caller(&a, OWNER), OWNER, access(&["admin"]));
    assert_eq!(code(r), "last_owner");
}

#[test]
fn given_the_last_active_owner_when_removing_or_deactivating_them_then_last_owner() {
    let a = account(&team(20));
    let c = caller(&a, OWNER);
    assert_eq!(code(account::remove_member(&a, &c, OWNER)), "last_owner");
    assert_eq!(code(account::deactivate_member(&a, &c, OWNER)), "last_owner");
}

#[test]
fn given_the_last_active_owner_when_cancelling_their_own_membership_then_last_owner() {
    let a = account(&team(20));
    assert_eq!(code(account::cancel_membership(&a, OWNER)), "last_owner");
}

#[test]
fn given_a_second_owner_who_is_deactivated_then_the_first_is_still_the_last_active_owner() {
    let a = account(&deactivated(with_member(team(20), OWNER2, &["owner"]), OWNER2));
    assert_eq!(code(account::cancel_membership(&a, OWNER)), "last_owner");
    assert_eq!(code(account::remove_member(&a, &caller(&a, OWNER), OWNER)), "last_owner");
}

#[test]
fn given_a_second_active_owner_when_an_owner_leaves_or_is_demoted_then_allowed() {
    let a = account(&with_member(team(20), OWNER2, &["owner"]));
    let c = caller(&a, OWNER2);
    assert_eq!(account::cancel_membership(&a, OWNER), Ok(vec![AccountEvent::MembershipCancelled { user_id: OWNER }]));
    assert_eq!(account::remove_member(&a, &c, OWNER), Ok(vec![AccountEvent::MemberRemoved { user_id: OWNER }]));
    assert_eq!(account::deactivate_member(&a, &c, OWNER), Ok(vec![AccountEvent::MemberDeactivated { user_id: OWNER }]));
    assert_eq!(
        account::change_member_access(&a, &c, OWNER, access(&["admin"])),
        Ok(vec![AccountEvent::MemberAccessChanged { user_id: OWNER, access: access(&["admin"]) }])
    );
}

#[test]
fn given_an_admin_when_deactivating_a_member_then_member_deactivated_and_twice_gives_no_event() {
    let events = team(20);
    let a = account(&events);
    let r = account::deactivate_member(&a, &caller(&a, ADMIN), VIEWER).unwrap();
    assert_eq!(r, vec![AccountEvent::MemberDeactivated { user_id: VIEWER }]);
    let after = account(&[events, r].concat());
    assert_eq!(after.members[&VIEWER].status, MemberStatus::Deactivated);
    assert_eq!(after.access_of(&Actor::User(VIEWER)), None);
    assert_eq!(account::deactivate_member(&after, &caller(&after, ADMIN), VIEWER), Ok(vec![]));
}

#[test]
fn given_a_deactivated_member_and_a_free_seat_when_reactivating_then_member_reactivated() {
    let events = deactivated(team(4), VIEWER);
    let a = account(&events);
    let r = account::reactivate_member(&a, &caller(&a, ADMIN), VIEWER, 0).unwrap();
    assert_eq!(r, vec![AccountEvent::MemberReactivated { user_id: VIEWER }]);
    let after = account(&[events, r].concat());
    assert_eq!(after.members[&VIEWER].status, MemberStatus::Active);
    assert_eq!(after.active_members(), 4);
}

#[test]
fn given_no_free_seat_when_reactivating_then_seat_limit_reached() {
    // 3 active + 1 pending invitation fill the 4 seats the viewer left.
    let a = account(&deactivated(team(4), VIEWER));
    assert_eq!(code(account::reactivate_member(&a, &caller(&a, ADMIN), VIEWER, 1)), "seat_limit_reached");
}

#[test]
fn given_an_active_member_when_reactivating_then_no_event() {
    let a = account(&team(4));
    assert_eq!(account::reactivate_member(&a, &caller(&a, ADMIN), VIEWER, 0), Ok(vec![]));
}

#[test]
fn given_an_admin_when_removing_a_member_then_member_removed_and_gone() {
    let events = team(20);
    let a = account(&events);
    let r = account::remove_member(&a, &caller(&a, ADMIN), EDITOR).unwrap();
    assert_eq!(r, vec![AccountEvent::MemberRemoved { user_id: EDITOR }]);
    let after = account(&[events, r].concat());
    assert!(!after.members.contains_key(&EDITOR));
    assert_eq!(code(account::remove_member(&after, &caller(&after, ADMIN), EDITOR)), "member_not_found");
}

#[test]
fn given_a_member_when_cancelling_their_membership_then_membership_cancelled_and_gone() {
    let events = team(20);
    let a = account(&events);
    let r = account::cancel_membership(&a, VIEWER).unwrap();
    assert_eq!(r, vec![AccountEvent::MembershipCancelled { user_id: VIEWER }]);
    let after = account(&[events, r].concat());
    assert!(!after.members.contains_key(&VIEWER));
    assert_eq!(after.active_members(), 3);
}

#[test]
fn given_a_non_member_when_cancelling_membership_then_member_not_found() {
    let a = account(&team(20));
    assert_eq!(code(account::cancel_membership(&a, STRANGER)), "member_not_found");
}

// ===========================================================================
// Users
// ===========================================================================

fn hash(s: &str) -> PasswordHash {
    PasswordHash::parse(&format!("$argon2id$v=19$m=19456,t=2,p=1${s}$hash")).unwrap()
}

fn registered() -> Vec<UserEvent> {
    user::register(BOB, PERSON, bob_email(), PersonName::parse("Bob").unwrap(), hash("salt"), false).unwrap()
}

#[test]
fn given_a_free_email_when_registering_then_user_registered() {
    let r = registered();
    assert_eq!(
        r,
        vec![UserEvent::UserRegistered {
            user_id: BOB,
            person_id: PERSON,
            personal: Personal::Known { email: bob_email(), name: Some(PersonName::parse("Bob").unwrap()) },
            password_hash: hash("salt"),
        }]
    );
    let u = User::from_events(&r).unwrap();
    assert!(u.active);
    assert_eq!(u.personal.email(), Some(&bob_email()));
}

#[test]
fn given_a_taken_email_when_registering_then_email_taken() {
    let r = user::register(BOB, PERSON, bob_email(), PersonName::parse("Bob").unwrap(), hash("salt"), true);
    assert_eq!(code(r), "email_taken");
}

#[test]
fn given_an_active_user_when_logging_in_then_user_logged_in() {
    let u = User::from_events(&registered()).unwrap();
    assert_eq!(user::log_in(&u), Ok(vec![UserEvent::UserLoggedIn {}]));
}

#[test]
fn given_a_deactivated_user_when_logging_in_or_changing_password_then_refused() {
    let events = [registered(), vec![UserEvent::UserDeactivated {}]].concat();
    let u = User::from_events(&events).unwrap();
    assert!(!u.active);
    assert_eq!(code(user::log_in(&u)), "invalid_credentials");
    assert_eq!(code(user::change_password(&u, hash("other"))), "user_deactivated");
    assert_eq!(user::deactivate(&u), Ok(vec![]));
}

#[test]
fn given_an_active_user_when_changing_password_then_the_new_hash_is_kept() {
    let events = registered();
    let u = User::from_events(&events).unwrap();
    let r = user::change_password(&u, hash("pepper")).unwrap();
    assert_eq!(r, vec![UserEvent::UserPasswordChanged { password_hash: hash("pepper") }]);
    assert_eq!(User::from_events(&[events, r].concat()).unwrap().password_hash, hash("pepper"));
    assert_eq!(user::deactivate(&u), Ok(vec![UserEvent::UserDeactivated {}]));
}

#[test]
fn given_a_clear_password_when_parsing_a_hash_then_invalid_password_hash() {
    for bad in ["correct horse battery staple", "", "$argon2i$v=19$m=19456,t=2,p=1$salt$hash", "$argon2id$"] {
        assert_eq!(code(PasswordHash::parse(bad)), "invalid_password_hash", "{bad:?}");
    }
    assert!(serde_json::from_str::<PasswordHash>("\"hunter2\"").is_err());
}

#[test]
fn given_an_argon2id_phc_string_when_parsing_a_hash_then_accepted_and_never_printed() {
    let phc = "$argon2id$v=19$m=19456,t=2,p=1$salt$hash";
    let h = PasswordHash::parse(phc).unwrap();
    assert_eq!(h.as_str(), phc);
    assert_eq!(format!("{h:?}"), "PasswordHash(..)");
}

// ===========================================================================
// Events: encoding round trip and upcasting
// ===========================================================================

/// Fails to compile when a variant is added, so the example list below must
/// be extended with it.
fn account_variant(e: &AccountEvent) -> &'static str {
    match e {
        AccountEvent::AccountOpened { .. } => "AccountOpened",
        AccountEvent::AccountSettingsChanged { .. } => "AccountSettingsChanged",
        AccountEvent::AccountDeactivated {} => "AccountDeactivated",
        AccountEvent::AccountReactivated {} => "AccountReactivated",
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

fn invitation_variant(e: &InvitationEvent) -> &'static str {
    match e {
        InvitationEvent::InvitationSent { .. } => "InvitationSent",
        InvitationEvent::InvitationUpdated { .. } => "InvitationUpdated",
        InvitationEvent::InvitationResent { .. } => "InvitationResent",
        InvitationEvent::InvitationDeliveryRecorded { .. } => "InvitationDeliveryRecorded",
        InvitationEvent::InvitationReminded { .. } => "InvitationReminded",
        InvitationEvent::InvitationAccepted { .. } => "InvitationAccepted",
        InvitationEvent::InvitationDeclined {} => "InvitationDeclined",
        InvitationEvent::InvitationExpired {} => "InvitationExpired",
        InvitationEvent::InvitationRevoked { .. } => "InvitationRevoked",
    }
}

fn user_variant(e: &UserEvent) -> &'static str {
    match e {
        UserEvent::UserRegistered { .. } => "UserRegistered",
        UserEvent::UserLoggedIn {} => "UserLoggedIn",
        UserEvent::UserPasswordChanged { .. } => "UserPasswordChanged",
        UserEvent::UserDeactivated {} => "UserDeactivated",
    }
}

fn rich_access() -> Access {
    let mut a = access(&["editor", "support"]);
    a.features.insert(FeatureName::parse("reports").unwrap(), Level::Manage);
    a.features.insert(FeatureName::parse("export").unwrap(), Level::View);
    a.sites = SiteAccess::Only(BTreeMap::from([
        (SiteId::parse("shop").unwrap(), SourceScope::All),
        (SiteId::parse("blog").unwrap(), SourceScope::Only([SourceId::parse("rss").unwrap()].into())),
    ]));
    a
}

fn every_event() -> Vec<Event> {
    let mut settings = AccountSettings::with_seats(9);
    settings.allowed_email_domains = ["example.com".to_string(), "example.org".to_string()].into();
    let account_events = vec![
        opened_account(5).remove(0),
        AccountEvent::AccountSettingsChanged { settings },
        AccountEvent::AccountDeactivated {},
        AccountEvent::AccountReactivated {},
        AccountEvent::ApiKeyCreated {
            key_id: ApiKeyId(Uuid::from_u128(0x501)),
            name: "CI".into(),
            permissions: perms(&[Permission::InvitationsCreate]),
            secret_hash: "ab".repeat(32),
            created_by: Actor::User(OWNER),
        },
        AccountEvent::ApiKeyRevoked { key_id: ApiKeyId(Uuid::from_u128(0x501)) },
        AccountEvent::RoleDefined { role: role("support"), permissions: perms(&[Permission::AccountRead]) },
        AccountEvent::RoleChanged { role: role("support"), permissions: perms(&Permission::ALL[..9]) },
        AccountEvent::RoleDeleted { role: role("support") },
        AccountEvent::MemberJoined { user_id: BOB, invitation_id: INV, access: rich_access() },
        AccountEvent::MemberAccessChanged {
            user_id: BOB,
            access: Access { sites: SiteAccess::All, ..access(&["viewer"]) },
        },
        AccountEvent::MemberDeactivated { user_id: BOB },
        AccountEvent::MemberReactivated { user_id: BOB },
        AccountEvent::MemberRemoved { user_id: BOB },
        AccountEvent::MembershipCancelled { user_id: BOB },
        AccountEvent::InvitationRenewalRequested { invitation_id: INV, invited_by: Actor::User(OWNER) },
    ];
    let mut erased = sent_by(Actor::Operator, &["owner"]);
    if let InvitationEvent::InvitationSent { personal, channel, .. } = &mut erased {
        *personal = Personal::Erased;
        *channel = Channel::Cli;
    }
    let mut nameless = sent_by(Actor::ApiKey(ApiKeyId(Uuid::from_u128(0xC0FFEE))), &[]);
    if let InvitationEvent::InvitationSent { personal, access, channel, .. } = &mut nameless {
        *personal = Personal::Known { email: bob_email(), name: None };
        *access = rich_access();
        *channel = Channel::ApiKey;
    }
    let invitation_events = vec![
        sent(&["editor"]),
        erased,
        nameless,
        InvitationEvent::InvitationUpdated {
            access: rich_access(),
            expires_at: at(48),
            updated_by: Actor::User(OWNER),
        },
        InvitationEvent::InvitationResent {
            link_nonce: nonce(0xFF),
            expires_at: at(72),
            resent_by: Actor::User(ADMIN),
            send_copy_to_me: true,
        },
        InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Delivered, detail: None },
        InvitationEvent::InvitationDeliveryRecorded { state: DeliveryState::Failed, detail: Some("timeout".into()) },
        InvitationEvent::InvitationReminded { expires_at: at(72) },
        accepted(&["editor"]),
        InvitationEvent::InvitationDeclined {},
        InvitationEvent::InvitationExpired {},
        revoked(),
        InvitationEvent::InvitationRevoked { revoked_by: Actor::System, reason: RevokeReason::PersonErased },
    ];
    let user_events = vec![
        registered().remove(0),
        UserEvent::UserRegistered {
            user_id: BOB,
            person_id: PERSON,
            personal: Personal::Erased,
            password_hash: hash("x"),
        },
        UserEvent::UserLoggedIn {},
        UserEvent::UserPasswordChanged { password_hash: hash("new") },
        UserEvent::UserDeactivated {},
    ];
    let mut all = Vec::new();
    all.extend(account_events.into_iter().map(|e| Event::Account(ACCOUNT, e)));
    all.extend(invitation_events.into_iter().map(|e| Event::Invitation(INV, e)));
    all.extend(user_events.into_iter().map(|e| Event::User(BOB, e)));
    all
}

#[test]
fn given_every_event_variant_when_encoded_and_decoded_then_equal() {
    let events = every_event();
    let mut seen = BTreeSet::new();
    for e in &events {
        let variant = match e {
            Event::Account(_, a) => account_variant(a),
            Event::Invitation(_, i) => invitation_variant(i),
            Event::User(_, u) => user_variant(u),
        };
        assert_eq!(e.event_type(), variant);
        seen.insert(variant);
        let payload = e.payload();
        assert!(payload.is_object(), "{e:?}: payload {payload}");
        assert!(payload.get("type").is_none(), "{e:?}: the payload carries no type tag");
        let back = Event::decode(&e.stream(), e.event_type(), 1, payload);
        assert_eq!(back.as_ref(), Ok(e), "{e:?}");
    }
    // Every variant of the three enums is exercised.
    assert_eq!(seen.len(), 16 + 9 + 4, "{seen:?}");
}

#[test]
fn given_events_then_they_name_their_stream_and_person() {
    assert_eq!(Event::Account(ACCOUNT, opened_account(1).remove(0)).stream(), format!("account-{}", ACCOUNT.0));
    assert_eq!(Event::Invitation(INV, revoked()).stream(), format!("invitation-{}", INV.0));
    assert_eq!(Event::User(BOB, UserEvent::UserLoggedIn {}).stream(), format!("user-{}", BOB.0));
    assert_eq!(Event::Invitation(INV, sent(&["viewer"])).person(), Some(PERSON));
    assert_eq!(Event::User(BOB, registered().remove(0)).person(), Some(PERSON));
    assert_eq!(Event::Invitation(INV, revoked()).person(), None);
    // The personal data sits under the field the store seals.
    assert!(Event::Invitation(INV, sent(&["viewer"])).payload().get(event::PERSONAL_FIELD).is_some());
    assert!(Event::User(BOB, registered().remove(0)).payload().get(event::PERSONAL_FIELD).is_some());
}

#[test]
fn given_an_unknown_schema_version_when_upcasting_then_unknown_schema_version() {
    let e = Event::Invitation(INV, revoked());
    for version in [0, 2, 99, -1] {
        assert_eq!(code(event::upcast(e.event_type(), version, e.payload())), "unknown_schema_version", "{version}");
        assert_eq!(code(Event::decode(&e.stream(), e.event_type(), version, e.payload())), "unknown_schema_version");
    }
    assert_eq!(event::upcast(e.event_type(), 1, e.payload()), Ok(e.payload()));
}

#[test]
fn given_a_malformed_stored_event_when_decoding_then_invalid_event() {
    let e = Event::Invitation(INV, revoked());
    // Unknown stream kind, unparsable id, a type from another aggregate, a bad payload.
    assert_eq!(code(Event::decode(&format!("widget-{}", INV.0), e.event_type(), 1, e.payload())), "invalid_event");
    assert_eq!(code(Event::decode("invitation-42", e.event_type(), 1, e.payload())), "invalid_event");
    assert_eq!(code(Event::decode(&e.stream(), "MemberRemoved", 1, e.payload())), "invalid_event");
    assert_eq!(
        code(Event::decode(&e.stream(), e.event_type(), 1, serde_json::json!({"reason": "bored"}))),
        "invalid_event"
    );
    // A payload holding a value its type would refuse is refused too.
    let mut p = Event::User(BOB, UserEvent::UserPasswordChanged { password_hash: hash("x") }).payload();
    p["password_hash"] = serde_json::json!("hunter2");
    assert_eq!(code(Event::decode(&format!("user-{}", BOB.0), "UserPasswordChanged", 1, p)), "invalid_event");
}

// ===========================================================================
// Account deactivation
// ===========================================================================

#[test]
fn given_a_deactivated_account_when_inviting_accepting_or_managing_then_account_deactivated() {
    let events = and(team(20), AccountEvent::AccountDeactivated {});
    let a = account(&events);
    assert!(!a.active);
    let r = invitation::invite(&a, &caller(&a, OWNER), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0());
    assert_eq!(code(r), "account_deactivated");
    let i = invitation(&[sent(&["editor"])]);
    let r = invitation::accept(&a, &i, &token(INV, 1), &key(), &bob(), at(1));
    assert_eq!(code(r), "account_deactivated");
    let r = account::define_role(&a, &caller(&a, OWNER), role("support"), perms(&[Permission::AccountRead]));
    assert_eq!(code(r), "account_deactivated");
}

#[test]
fn given_an_account_when_the_operator_deactivates_and_reactivates_then_it_works_again() {
    let a = account(&team(20));
    let operator = Caller::of(&a, Actor::Operator);
    let off = account::set_account_active(&a, &operator, false).unwrap();
    assert_eq!(off, vec![AccountEvent::AccountDeactivated {}]);
    let a = account(&and(team(20), off[0].clone()));
    assert_eq!(account::set_account_active(&a, &operator, false).unwrap(), vec![]);
    let on = account::set_account_active(&a, &operator, true).unwrap();
    assert_eq!(on, vec![AccountEvent::AccountReactivated {}]);
    let a = account(&and(and(team(20), AccountEvent::AccountDeactivated {}), on[0].clone()));
    assert!(invitation::invite(&a, &caller(&a, OWNER), invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0())
        .is_ok());
}

#[test]
fn given_an_owner_when_deactivating_the_account_then_forbidden() {
    let a = account(&team(20));
    assert_eq!(code(account::set_account_active(&a, &caller(&a, OWNER), false)), "forbidden");
}

// ===========================================================================
// Metadata, redirects, allowed domains, deleted roles on pending invitations
// ===========================================================================

#[test]
fn given_metadata_that_is_no_object_or_too_large_when_inviting_then_invalid_metadata() {
    let a = account(&team(20));
    for bad in [serde_json::json!([1, 2]), serde_json::json!({ "x": "y".repeat(5000) })] {
        let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
        cmd.metadata = Some(bad);
        assert_eq!(code(invitation::invite(&a, &caller(&a, OWNER), cmd, &no_facts(), t0())), "invalid_metadata");
    }
    let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
    cmd.metadata = Some(serde_json::json!({ "team": "sales" }));
    let events = invitation::invite(&a, &caller(&a, OWNER), cmd, &no_facts(), t0()).unwrap();
    assert!(matches!(&events[0], InvitationEvent::InvitationSent { metadata: Some(m), .. } if m["team"] == "sales"));
}

#[test]
fn given_a_redirect_url_when_not_allowed_then_refused_and_when_allowed_then_kept() {
    let mut settings = AccountSettings::with_seats(20);
    settings.allowed_redirect_urls = ["https://app.example.com/welcome".to_string()].into();
    let a = account(&and(team(20), AccountEvent::AccountSettingsChanged { settings }));
    let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
    cmd.redirect_url = Some("https://evil.example.net/".into());
    assert_eq!(code(invitation::invite(&a, &caller(&a, OWNER), cmd, &no_facts(), t0())), "redirect_not_allowed");
    let mut cmd = invite_cmd("bob@example.com", &["viewer"]);
    cmd.redirect_url = Some("https://app.example.com/welcome".into());
    let events = invitation::invite(&a, &caller(&a, OWNER), cmd, &no_facts(), t0()).unwrap();
    assert_eq!(invitation(&events).redirect_url.as_deref(), Some("https://app.example.com/welcome"));
}

#[test]
fn given_allowed_domains_in_any_spelling_when_set_then_normalised_like_emails() {
    let s = AccountSettings::with_seats(5).with_allowed_email_domains(["Example.COM", " bücher.de "]).unwrap();
    assert_eq!(s.allowed_email_domains, ["example.com".to_string(), "xn--bcher-kva.de".to_string()].into());
    assert_eq!(
        AccountSettings::with_seats(5).with_allowed_email_domains(["not a domain"]).unwrap_err().code(),
        "invalid_email_domain"
    );
}

#[test]
fn given_a_pending_invitation_with_a_deleted_role_when_dropping_it_then_updated_without_it() {
    let i = invitation(&[sent(&["editor", "support"])]);
    let events = invitation::drop_role(&i, &role("support"), Actor::User(OWNER));
    assert_eq!(
        events,
        vec![InvitationEvent::InvitationUpdated {
            access: access(&["editor"]),
            expires_at: at(24),
            updated_by: Actor::User(OWNER)
        }]
    );
    assert!(invitation::drop_role(&i, &role("billing"), Actor::User(OWNER)).is_empty());
    let accepted_one = invitation(&[
        sent(&["support"]),
        InvitationEvent::InvitationRevoked { revoked_by: Actor::User(OWNER), reason: RevokeReason::ByAdmin },
    ]);
    assert!(invitation::drop_role(&accepted_one, &role("support"), Actor::User(OWNER)).is_empty());
}

// ===========================================================================
// API keys
// ===========================================================================

#[test]
fn given_an_api_key_when_it_invites_then_it_acts_within_its_permissions_only() {
    let a = account(&team(20));
    let key = ApiKeyId(Uuid::from_u128(0x777));
    let created = account::create_api_key(
        &a,
        &caller(&a, OWNER),
        key,
        "CI".into(),
        perms(&[Permission::AccountRead, Permission::InvitationsCreate]),
        "ab".repeat(32),
    )
    .unwrap();
    let a = account(&and(team(20), created[0].clone()));
    let as_key = Caller::of(&a, Actor::ApiKey(key));
    assert!(as_key.access.is_some());
    // It may invite viewers (account.read is all it holds beyond inviting)...
    let ok = invitation::invite(&a, &as_key, invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0()).unwrap();
    assert!(matches!(&ok[0], InvitationEvent::InvitationSent { invited_by: Actor::ApiKey(k), .. } if *k == key));
    // ...but not grant what it lacks.
    assert_eq!(
        code(invitation::invite(&a, &as_key, invite_cmd("bob@example.com", &["editor"]), &no_facts(), t0())),
        "exceeds_own_rights"
    );
    // Nobody can be given a key's reserved role.
    let mut cmd = invite_cmd("bob@example.com", &[]);
    cmd.access.roles.insert(admit_domain::access::api_key_role(&key));
    assert_eq!(code(invitation::invite(&a, &caller(&a, OWNER), cmd, &no_facts(), t0())), "unknown_role");
    // Revoked, it can do nothing.
    let revoked = account::revoke_api_key(&a, &caller(&a, OWNER), key).unwrap();
    let a = account(&and(and(team(20), created[0].clone()), revoked[0].clone()));
    let as_key = Caller::of(&a, Actor::ApiKey(key));
    assert_eq!(
        code(invitation::invite(&a, &as_key, invite_cmd("bob@example.com", &["viewer"]), &no_facts(), t0())),
        "forbidden"
    );
}

#[test]
fn given_an_admin_when_creating_a_key_with_more_than_they_hold_then_refused() {
    let a = account(&team(20));
    let r = account::create_api_key(
        &a,
        &caller(&a, ADMIN),
        ApiKeyId(Uuid::from_u128(1)),
        "x".into(),
        perms(&[Permission::OwnersManage]),
        "h".into(),
    );
    assert_eq!(code(r), "exceeds_own_rights");
    let r = account::create_api_key(
        &a,
        &caller(&a, EDITOR),
        ApiKeyId(Uuid::from_u128(1)),
        "x".into(),
        perms(&[Permission::AccountRead]),
        "h".into(),
    );
    assert_eq!(code(r), "forbidden");
    let r = account::define_role(&a, &caller(&a, OWNER), role("key-abc"), perms(&[Permission::AccountRead]));
    assert_eq!(code(r), "invalid_role_name");
}

#[test]
fn given_settings_when_an_admin_changes_seats_then_forbidden_but_the_operator_may() {
    let a = account(&team(20));
    let mut s = a.settings.clone();
    s.seat_limit = 99;
    assert_eq!(code(account::change_settings(&a, &caller(&a, ADMIN), s.clone())), "forbidden");
    assert_eq!(account::change_settings(&a, &Caller::of(&a, Actor::Operator), s.clone()).unwrap().len(), 1);
    let mut t = a.settings.clone();
    t.daily_invitation_quota = 10;
    assert_eq!(account::change_settings(&a, &caller(&a, ADMIN), t).unwrap().len(), 1);
    assert!(account::change_settings(&a, &caller(&a, ADMIN), a.settings.clone()).unwrap().is_empty());
}

#[test]
fn given_every_event_variant_then_event_types_lists_exactly_their_names() {
    let from_examples: std::collections::BTreeSet<&str> = every_event().iter().map(|e| e.event_type()).collect();
    let listed: std::collections::BTreeSet<&str> = admit_domain::event::EVENT_TYPES.iter().copied().collect();
    assert_eq!(from_examples, listed);
    assert_eq!(listed.len(), admit_domain::event::EVENT_TYPES.len(), "no name twice");
}
