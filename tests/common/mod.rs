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
        metadata: None,
        redirect_url: None,
    }
}

/// Every cell of every table of the database as one text, to search for
/// things that must not be stored (tokens, passwords, erased emails).
pub async fn everything_stored(admit: &Admit) -> String {
    let mut out = String::new();
    match &admit.db {
        Database::Postgres(pool) => {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            for t in tables {
                let text: Option<String> =
                    sqlx::query_scalar(&format!("SELECT string_agg(t::text, E'\\n') FROM \"{t}\" t"))
                        .fetch_one(pool)
                        .await
                        .unwrap();
                out.push_str(&text.unwrap_or_default());
                out.push('\n');
            }
        }
        Database::Sqlite { reader, .. } => {
            let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(reader)
                .await
                .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                    .fetch_all(reader)
                    .await
                    .unwrap();
                let expr = cols.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\""))
                    .fetch_all(reader)
                    .await
                    .unwrap();
                out.push_str(&rows.join("\n"));
                out.push('\n');
            }
        }
    }
    out
}

/// Rebuilds every read model into fresh tables and asserts they equal the
/// live ones, table by table.
pub async fn assert_replay_matches(admit: &Admit, label: &str) {
    let prefix = "rebuild_";
    admit_projections::rebuild::rebuild_into(&admit.db, &admit.secrets.lookup, prefix).await.unwrap();
    let live = admit_projections::rebuild::dump(&admit.db, "").await.unwrap();
    let rebuilt = admit_projections::rebuild::dump(&admit.db, prefix).await.unwrap();
    for ((table, a), (_, b)) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "{label}: table {table} differs after replay");
    }
    admit_projections::rebuild::discard(&admit.db, prefix).await.unwrap();
}
