//! Reservations, invitation sends and person keys, on SQLite and PostgreSQL.

use admit_ledger::reservations::{InviteeClaims, InviteeLookup};
use admit_ledger::testing::fresh_databases;
use chrono::{Duration, Utc};
use uuid::Uuid;

#[tokio::test]
async fn person_for_email_makes_one_person_per_email_and_finds_them_again() {
    for (url, db) in fresh_databases().await {
        let now = Utc::now();
        let mut tx = db.begin().await.unwrap();
        let (made, key) = tx.person_for_email("hash-a", now).await.unwrap();
        let (found, again) = tx.person_for_email("hash-a", now).await.unwrap();
        let (other, _) = tx.person_for_email("hash-b", now).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(made, found, "{url}");
        assert!(key == again, "{url}: the same key");
        assert_ne!(made, other, "{url}");
        let mut tx = db.begin().await.unwrap();
        let (later, later_key) = tx.person_for_email("hash-a", now).await.unwrap();
        assert!(later == made && later_key == key, "{url}: committed, then found by a later transaction");
        let keys = tx.person_keys(&[made, other]).await.unwrap();
        assert_eq!(keys.len(), 2, "{url}");
    }
}

/// The lookup of invitee `key` in account `account` (scope "a") by "user:x".
fn lookup<'a>(key: &'a str, scope: &'a str, account: Uuid, now: chrono::DateTime<Utc>) -> InviteeLookup<'a> {
    InviteeLookup {
        key,
        user: ("user_email", ""),
        pending: ("pending", scope),
        now,
        account,
        inviter: "user:x",
        since: now - Duration::days(1),
    }
}

#[tokio::test]
async fn invitee_claims_count_what_the_single_counts_count() {
    for (url, db) in fresh_databases().await {
        let now = Utc::now();
        let account = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        assert!(tx.reserve("pending", "a", "k1", "i1", Some(now + Duration::hours(1))).await.unwrap());
        assert!(tx.reserve("pending", "a", "k2", "i2", None).await.unwrap());
        assert!(tx.reserve("pending", "a", "k3", "i3", Some(now - Duration::hours(1))).await.unwrap(), "lapsed");
        assert!(tx.reserve("pending", "b", "k1", "i4", None).await.unwrap(), "another scope");
        assert!(tx.reserve("other", "a", "k9", "i5", None).await.unwrap(), "another kind");
        tx.record_send(account, "user:x", Uuid::now_v7(), now).await.unwrap();
        tx.record_send(account, "user:x", Uuid::now_v7(), now - Duration::minutes(5)).await.unwrap();
        tx.record_send(account, "user:x", Uuid::now_v7(), now - Duration::days(2)).await.unwrap();
        tx.record_send(account, "user:y", Uuid::now_v7(), now).await.unwrap();
        tx.record_send(Uuid::now_v7(), "user:x", Uuid::now_v7(), now).await.unwrap();
        let since = now - Duration::days(1);
        let claims = tx.invitee_claims(&lookup("k1", "a", account, now)).await.unwrap();
        assert_eq!((claims.live_in_scope, claims.sent_since), (2, 2), "{url}");
        let live = tx.count_live_reservations("pending", "a", now).await.unwrap();
        let sent = tx.sends_since(account, "user:x", since).await.unwrap();
        assert_eq!((claims.live_in_scope, claims.sent_since), (live, sent), "{url}");
        let none = tx.invitee_claims(&lookup("k7", "c", Uuid::now_v7(), now)).await.unwrap();
        assert_eq!(none, InviteeClaims::default(), "{url}: no claim, nothing counted");
    }
}

#[tokio::test]
async fn invitee_claims_find_each_of_the_two_claims_of_one_key() {
    for (url, db) in fresh_databases().await {
        let now = Utc::now();
        let account = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        assert!(tx.reserve("user_email", "", "h1", "u1", None).await.unwrap());
        assert!(tx.reserve("pending", "acct", "h1", "i1", None).await.unwrap());
        assert!(tx.reserve("pending", "other", "h2", "i2", None).await.unwrap());
        tx.record_send(account, "user:x", Uuid::now_v7(), now).await.unwrap();
        let claims = tx.invitee_claims(&lookup("h1", "acct", account, now)).await.unwrap();
        assert_eq!(claims.user.map(|r| r.holder).as_deref(), Some("u1"), "{url}");
        assert_eq!(claims.pending, tx.reservation("pending", "acct", "h1").await.unwrap(), "{url}");
        assert!(claims.pending.is_some(), "{url}");
        assert_eq!((claims.live_in_scope, claims.sent_since), (1, 1), "{url}: counted beside two claims");
        let claims = tx.invitee_claims(&lookup("h2", "acct", account, now)).await.unwrap();
        assert_eq!((claims.user, claims.pending), (None, None), "{url}: h2 is only claimed in another scope");
        assert_eq!((claims.live_in_scope, claims.sent_since), (1, 1), "{url}: counted without a claim");
        let claims = tx.invitee_claims(&lookup("h2", "other", account, now)).await.unwrap();
        assert_eq!((claims.user.is_some(), claims.pending.map(|r| r.holder)), (false, Some("i2".to_string())), "{url}");
    }
}

#[tokio::test]
async fn invitee_claims_and_person_find_what_the_two_lookups_find() {
    for (url, db) in fresh_databases().await {
        let now = Utc::now();
        let account = Uuid::now_v7();
        let mut tx = db.begin().await.unwrap();
        assert!(tx.reserve("user_email", "", "h1", "u1", None).await.unwrap());
        assert!(tx.reserve("pending", "acct", "h1", "i1", Some(now + Duration::hours(1))).await.unwrap());
        assert!(tx.reserve("pending", "acct", "h2", "i2", None).await.unwrap());
        tx.record_send(account, "user:x", Uuid::now_v7(), now).await.unwrap();
        let (claims, (made, key)) = tx.invitee_claims_and_person(&lookup("h1", "acct", account, now)).await.unwrap();
        assert_eq!(claims, tx.invitee_claims(&lookup("h1", "acct", account, now)).await.unwrap(), "{url}");
        assert_eq!((claims.live_in_scope, claims.sent_since), (2, 1), "{url}");
        assert_eq!(claims.user.map(|r| r.holder).as_deref(), Some("u1"), "{url}");
        let (found, found_key) = tx.person_for_email("h1", now).await.unwrap();
        assert!(found == made && found_key == key, "{url}: the person made is the one person_for_email finds");
        let (_, (again, again_key)) = tx.invitee_claims_and_person(&lookup("h1", "acct", account, now)).await.unwrap();
        assert!(again == made && again_key == key, "{url}: a second lookup finds the person, makes none");
        let (none, (other, _)) = tx.invitee_claims_and_person(&lookup("h9", "c", Uuid::now_v7(), now)).await.unwrap();
        assert_eq!(none, InviteeClaims::default(), "{url}: no claim, nothing counted");
        assert_ne!(other, made, "{url}: another email, another person");
        tx.commit().await.unwrap();
        let mut tx = db.begin().await.unwrap();
        let (_, (later, later_key)) = tx.invitee_claims_and_person(&lookup("h1", "x", account, now)).await.unwrap();
        assert!(later == made && later_key == key, "{url}: committed, then found by a later transaction");
        assert_eq!(tx.person_keys(&[made, other]).await.unwrap().len(), 2, "{url}");
    }
}

/// Two transactions make the same new person at once: the second waits on
/// the first's row, finds it once the first commits (its statement's
/// snapshot began before that commit, so the fallback lookup finds it),
/// and both name one person.
#[tokio::test]
async fn invitee_claims_and_person_meet_a_person_made_at_the_same_moment() {
    let (url, db) = admit_ledger::testing::fresh_postgres().await;
    let admit_ledger::Database::Postgres(pool) = &db else { panic!("postgres expected") };
    let now = Utc::now();
    let account = Uuid::now_v7();
    let mut first = db.begin().await.unwrap();
    let (_, (made, key)) = first.invitee_claims_and_person(&lookup("hz", "a", account, now)).await.unwrap();
    let second = {
        let db = db.clone();
        tokio::spawn(async move {
            let mut tx = db.begin().await.unwrap();
            let found = tx.invitee_claims_and_person(&lookup("hz", "b", account, now)).await.unwrap().1;
            tx.commit().await.unwrap();
            found
        })
    };
    // The second waits on the first's uncommitted person row.
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    first.commit().await.unwrap();
    let (found, found_key) = second.await.unwrap();
    assert!(found == made && found_key == key, "{url}: the second finds the person the first made");
}
