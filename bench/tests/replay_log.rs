//! Keeps the replay benchmark working at CI size: a small generated log
//! replays without a decoding or projection error, its hash chains verify,
//! and the rebuilt read models hold what the log says happened.

use admit_api::{Admit, Secrets};
use admit_bench::replay_log::{generate, LogShape};
use admit_domain::password::PasswordPolicy;
use admit_ledger::{on_db, Database};

async fn count(db: &Database, sql: &str) -> i64 {
    on_db!(db, p => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_generated_log_replays_and_verifies() {
    let url = admit_ledger::testing::fresh_sqlite_url();
    let db = Database::connect(&url).await.unwrap();
    let secrets = Secrets::from_master([42; 32]);
    Admit::new(db.clone(), secrets.clone(), PasswordPolicy::Nist).prepare().await.unwrap();
    let hash = admit_domain::user::PasswordHash::parse(
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA",
    )
    .unwrap();
    let shape = LogShape { events: 2_000, accounts: 20, events_per_transaction: 500, seed: 7 };
    let log = generate(&db, &secrets.lookup, hash, &shape, |_| {}).await.unwrap();
    assert!(log.events >= 2_000, "{log:?}");
    for t in [
        "AccountOpened",
        "InvitationSent",
        "InvitationDeliveryRecorded",
        "InvitationAccepted",
        "MemberJoined",
        "UserRegistered",
        "UserLoggedIn",
    ] {
        assert!(log.by_type.get(t).is_some_and(|n| *n > 0), "no {t} in {:?}", log.by_type);
    }

    let rebuilt = admit_projections::rebuild::replay(&db, &secrets.lookup).await.unwrap();
    assert_eq!(rebuilt.events, log.events);
    let report = db.verify().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.first_mismatch());
    assert_eq!(report.events, log.events);

    assert_eq!(count(&db, "SELECT COUNT(*) FROM accounts").await, 20);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM invitations").await as u64, log.invitations);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users").await as u64, log.users);
    let accepted = log.by_type["InvitationAccepted"] as i64;
    assert_eq!(count(&db, "SELECT COUNT(*) FROM invitations WHERE status = 'accepted'").await, accepted);
    // Every member joined through an accepted invitation; some left since.
    let members = count(&db, "SELECT COUNT(*) FROM members").await;
    assert!(members > 0 && members <= accepted, "{members} members, {accepted} accepted");
    // Sealed personal data opened with the ledger's keys.
    assert_eq!(count(&db, "SELECT COUNT(*) FROM users WHERE email IS NULL").await, 0);
}
