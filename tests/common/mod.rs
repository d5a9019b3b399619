//! Shared set-up for the end-to-end tests: an `Admit` per fresh database,
//! and the steps that open an account with a signed-in owner.
#![allow(dead_code)]

use admit_api::commands::{InviteRequest, OpenAccount};
use admit_api::{Admit, RequestContext, Secrets};
use admit_domain::access::Access;
use admit_domain::ids::{AccountId, Actor, UserId};
use admit_domain::invitation::Channel;
use admit_domain::password::PasswordPolicy;
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, PersonName, RoleName};
use admit_ledger::Database;

/// A password the default (NIST) policy accepts.
pub const PASSWORD: &str = "violet kettle under seventeen clouds";

/// The application over a migrated database at `url`, with a fixed key.
pub async fn admit_on(url: &str) -> Admit {
    let db = Database::connect(url).await.expect("connect");
    let admit = Admit::new(db, Secrets::from_master([42; 32]), PasswordPolicy::Nist);
    admit.prepare().await.expect("prepare");
    admit
}

/// One `Admit` per backend: SQLite, then PostgreSQL.
pub async fn admits() -> Vec<(String, Admit)> {
    let mut out = Vec::new();
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let admit = admit_on(&url).await;
        out.push((url, admit));
    }
    out
}

/// An Admit on a fresh PostgreSQL database.
pub async fn admit_on_postgres() -> Admit {
    admit_on(&admit_ledger::testing::fresh_postgres_url().await).await
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

pub fn name(s: &str) -> PersonName {
    PersonName::parse(s).unwrap()
}

pub fn role(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}

/// The context of a signed-in user.
pub fn as_user(user: UserId) -> RequestContext {
    RequestContext::new(Actor::User(user), Channel::Session)
}

/// Opens an account with `seats` and has its owner accept; returns the
/// account and the owner.
pub async fn account_with_owner(admit: &Admit, customer_number: &str, seats: u32) -> (AccountId, UserId) {
    let opened = admit
        .open_account(
            &RequestContext::cli(),
            OpenAccount {
                name: AccountName::parse("Acme").unwrap(),
                customer_number: CustomerNumber::parse(customer_number).unwrap(),
                seats,
                owner_email: email(&format!("owner-{customer_number}@example.com")),
                owner_name: Some(name("Olga Owner")),
            },
        )
        .await
        .expect("open account");
    let owner = admit
        .accept_as_new_user(opened.owner_invitation.token.as_str(), name("Olga Owner"), PASSWORD)
        .await
        .expect("owner accepts");
    (opened.account_id, owner)
}

/// An invitation request for `to` with `roles`.
pub fn invite(to: &str, roles: &[&str]) -> InviteRequest {
    InviteRequest {
        email: email(to),
        name: None,
        access: Access::roles(roles.iter().map(|r| role(r))),
        expires_in_hours: None,
    }
}
