//! Reservations, invitation sends and person keys, on SQLite and PostgreSQL.

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

#[tokio::test]
async fn live_reservations_and_sends_count_what_the_two_single_counts_count() {
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
        let both = tx.live_reservations_and_sends("pending", "a", now, account, "user:x", since).await.unwrap();
        assert_eq!(both, (2, 2), "{url}");
        let live = tx.count_live_reservations("pending", "a", now).await.unwrap();
        let sent = tx.sends_since(account, "user:x", since).await.unwrap();
        assert_eq!(both, (live, sent), "{url}");
        let none = tx.live_reservations_and_sends("pending", "c", now, Uuid::now_v7(), "user:x", since).await.unwrap();
        assert_eq!(none, (0, 0), "{url}");
    }
}

#[tokio::test]
async fn reservation_pair_finds_each_of_the_two_claims_of_one_key() {
    for (url, db) in fresh_databases().await {
        let mut tx = db.begin().await.unwrap();
        assert!(tx.reserve("user_email", "", "h1", "u1", None).await.unwrap());
        assert!(tx.reserve("pending", "acct", "h1", "i1", None).await.unwrap());
        assert!(tx.reserve("pending", "other", "h2", "i2", None).await.unwrap());
        let (user, pending) = tx.reservation_pair("h1", ("user_email", ""), ("pending", "acct")).await.unwrap();
        assert_eq!(user.map(|r| r.holder).as_deref(), Some("u1"), "{url}");
        assert_eq!(pending, tx.reservation("pending", "acct", "h1").await.unwrap(), "{url}");
        assert!(pending.is_some(), "{url}");
        let (user, pending) = tx.reservation_pair("h2", ("user_email", ""), ("pending", "acct")).await.unwrap();
        assert_eq!((user, pending), (None, None), "{url}: h2 is only claimed in another scope");
        let (user, pending) = tx.reservation_pair("h2", ("user_email", ""), ("pending", "other")).await.unwrap();
        assert_eq!((user.is_some(), pending.map(|r| r.holder)), (false, Some("i2".to_string())), "{url}");
    }
}
