//! Cross-stream invariants under 50 concurrent commands on PostgreSQL.

mod common;

use std::sync::Arc;

use admit_domain::ids::UserId;
use common::*;

/// Counts outcomes by error code ("ok" for success).
fn tally<T>(results: Vec<Result<T, admit_api::Error>>) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for r in results {
        let code = match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.code().to_string(),
        };
        *out.entry(code).or_insert(0) += 1;
    }
    out
}

async fn count(admit: &admit_api::Admit, sql: &str) -> i64 {
    let admit_ledger::Database::Postgres(pool) = &admit.db else { panic!("postgres expected") };
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_registrations_of_one_email_in_any_case_make_one_user() {
    let admit = Arc::new(admit_on_postgres().await);
    let spellings = ["same@example.com", "SAME@example.com", "Same@Example.COM", " same@EXAMPLE.com "];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let admit = admit.clone();
            let spelled = spellings[i % spellings.len()];
            tokio::spawn(async move { admit.register(email(spelled), name("Sam Same"), PASSWORD).await })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    let t = tally(results);
    assert_eq!(t.get("ok"), Some(&1), "{t:?}");
    assert_eq!(t.get("email_taken"), Some(&49), "{t:?}");
    assert_eq!(count(&admit, "SELECT COUNT(*) FROM users").await, 1);
    assert_eq!(count(&admit, "SELECT COUNT(*) FROM events WHERE event_type = 'UserRegistered'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_free_seats_take_exactly_ten_of_fifty_concurrent_invitations() {
    let admit = Arc::new(admit_on_postgres().await);
    // The owner takes one of the 11 seats: 10 are free.
    let (account, owner) = account_with_owner(&admit, "SEATS-1", 11).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let admit = admit.clone();
            tokio::spawn(async move {
                admit.invite(&as_user(owner), account, invite(&format!("p{i}@example.com"), &["viewer"])).await
            })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    let t = tally(results);
    assert_eq!(t.get("ok"), Some(&10), "{t:?}");
    assert_eq!(t.get("seat_limit_reached"), Some(&40), "{t:?}");
    assert_eq!(count(&admit, "SELECT COUNT(*) FROM invitations WHERE status = 'pending'").await, 10);
}

/// Twenty accounts invite one new email at the same moment: each invitation
/// is made, and all of them name one person (the statement that looks up
/// the claims also makes the person; `Tx::invitee_claims_and_person`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_accounts_inviting_one_new_email_at_once_invite_one_person() {
    let admit = Arc::new(admit_on_postgres().await);
    let mut accounts = Vec::new();
    for n in 0..20 {
        accounts.push(account_with_owner(&admit, &format!("SHARED-{n}"), 5).await);
    }
    let tasks: Vec<_> = accounts
        .into_iter()
        .map(|(account, owner)| {
            let admit = admit.clone();
            tokio::spawn(async move {
                admit.invite(&as_user(owner), account, invite("shared@example.com", &["viewer"])).await
            })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    let t = tally(results);
    assert_eq!(t.get("ok"), Some(&20), "{t:?}");
    let shared = "FROM invitations WHERE email = 'shared@example.com'";
    assert_eq!(count(&admit, &format!("SELECT COUNT(*) {shared}")).await, 20);
    assert_eq!(count(&admit, &format!("SELECT COUNT(DISTINCT person_id) {shared}")).await, 1);
    assert_eq!(
        count(&admit, "SELECT COUNT(*) FROM person_keys WHERE person_id IN (SELECT person_id FROM invitations WHERE email = 'shared@example.com')").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_with_quota_fifty_gets_exactly_fifty_of_eighty() {
    let admit = Arc::new(admit_on_postgres().await);
    let (account, owner) = account_with_owner(&admit, "QUOTA-1", 500).await;
    let tasks: Vec<_> = (0..80)
        .map(|i| {
            let admit = admit.clone();
            tokio::spawn(async move {
                admit.invite(&as_user(owner), account, invite(&format!("q{i}@example.com"), &["viewer"])).await
            })
        })
        .collect();
    let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    let t = tally(results);
    assert_eq!(t.get("ok"), Some(&50), "{t:?}");
    assert_eq!(t.get("daily_quota_exceeded"), Some(&30), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_token_accepted_twenty_times_at_once_joins_one_member() {
    let admit = Arc::new(admit_on_postgres().await);
    let (account, owner) = account_with_owner(&admit, "TOKEN-1", 10).await;
    let issued = admit.invite(&as_user(owner), account, invite("once@example.com", &["editor"])).await.unwrap();
    let token = issued.token.as_str().to_string();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let admit = admit.clone();
            let token = token.clone();
            tokio::spawn(async move { admit.accept_as_new_user(&token, name("Once Only"), PASSWORD).await })
        })
        .collect();
    let results: Vec<Result<UserId, _>> =
        futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
    let t = tally(results);
    assert_eq!(t.get("ok"), Some(&1), "{t:?}");
    assert_eq!(t.values().sum::<usize>(), 20);
    assert!(t.keys().all(|k| ["ok", "invitation_used", "email_taken"].contains(&k.as_str())), "{t:?}");
    // The owner and the one new member.
    assert_eq!(count(&admit, "SELECT COUNT(*) FROM members").await, 2);
    assert_eq!(count(&admit, "SELECT COUNT(*) FROM events WHERE event_type = 'MemberJoined'").await, 2);
}

/// Each `Admit` keeps the account states it folded between requests; two
/// processes on one database must still see each other's changes at once,
/// both when authorising (outside a transaction) and when a command checks
/// the seat limit (inside one).
#[tokio::test]
async fn a_kept_account_state_never_hides_another_processs_change() {
    use admit_domain::account::MemberStatus;
    for (url, first) in admits().await {
        let second = admit_on(&url).await;
        let (account, owner) = account_with_owner(&first, "KEPT-1", 3).await;
        let ctx = as_user(owner);
        let alice_link = first.invite(&ctx, account, invite("alice@example.com", &["viewer"])).await.unwrap();
        let alice = first.accept_as_new_user(alice_link.token.as_str(), name("Alice"), PASSWORD).await.unwrap();

        // The second process folds and keeps the account with Alice active,
        // then the first deactivates her: the second sees it.
        assert_eq!(
            second.account_snapshot(account).await.unwrap().members[&alice].status,
            MemberStatus::Active,
            "{url}"
        );
        first.deactivate_member(&ctx, account, alice).await.unwrap();
        assert_eq!(
            second.account_snapshot(account).await.unwrap().members[&alice].status,
            MemberStatus::Deactivated,
            "{url}"
        );

        // The second keeps her deactivated (one seat taken); the first
        // reactivates her (two taken). Of the second's next two
        // invitations only one fits in the three seats.
        first.reactivate_member(&ctx, account, alice).await.unwrap();
        second.invite(&ctx, account, invite("bob@example.com", &["viewer"])).await.unwrap();
        let err = second.invite(&ctx, account, invite("carol@example.com", &["viewer"])).await.unwrap_err();
        assert_eq!(err.code(), "seat_limit_reached", "{url}");

        // Removed from the account by the first, Alice is no member to the second.
        first.remove_member(&ctx, account, alice).await.unwrap();
        assert!(!second.account_snapshot(account).await.unwrap().members.contains_key(&alice), "{url}");
        second.invite(&ctx, account, invite("carol@example.com", &["viewer"])).await.unwrap();
    }
}
