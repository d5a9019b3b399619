//! A whole lifecycle on both backends: nothing secret is stored, personal
//! data is sealed, erasure leaves no clear trace yet `verify` passes, and a
//! replay (full or as of a past moment) agrees with the live read models.

mod common;

use admit_domain::ids::Actor;
use admit_domain::invitation::DeliveryState;
use admit_projections::as_of::{accounts_as_of, Moment};
use common::*;

#[tokio::test]
async fn secrets_stay_out_and_erasure_leaves_no_clear_trace() {
    for (url, admit) in admits().await {
        let (account, owner) = account_with_owner(&admit, "LIFE-1", 20).await;
        let ctx = as_user(owner);
        let mut tokens = Vec::new();

        let mut req = invite("Alice@Example.com", &["editor"]);
        req.name = Some(name("Alice Liddell"));
        let first = admit.invite(&ctx, account, req).await.unwrap();
        tokens.push(first.token.as_str().to_string());
        admit.record_delivery(first.invitation_id, DeliveryState::Delivered, None).await.unwrap();
        let resent = admit.resend(&ctx, account, first.invitation_id, false).await.unwrap();
        tokens.push(resent.token.as_str().to_string());
        // The old link died with the resend.
        let err = admit.accept_as_new_user(&tokens[0], name("Alice Liddell"), PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), "invalid_token", "{url}");
        let alice = admit.accept_as_new_user(&tokens[1], name("Alice Liddell"), PASSWORD).await.unwrap();
        admit.log_in(&email("alice@example.com"), PASSWORD).await.unwrap();

        let bob = admit.invite(&ctx, account, invite("bob@example.com", &["viewer"])).await.unwrap();
        tokens.push(bob.token.as_str().to_string());
        admit.revoke(&ctx, account, bob.invitation_id).await.unwrap();
        let carol = admit.invite(&ctx, account, invite("carol@example.com", &["viewer"])).await.unwrap();
        tokens.push(carol.token.as_str().to_string());
        admit.decline(carol.token.as_str()).await.unwrap();
        // Declined and revoked invitations never block a fresh one.
        admit.invite(&ctx, account, invite("carol@example.com", &["viewer"])).await.unwrap();
        admit.invite(&ctx, account, invite("bob@example.com", &["viewer"])).await.unwrap();

        let stored = everything_stored(&admit).await;
        for t in &tokens {
            assert!(!stored.contains(t.as_str()), "{url}: a link token is stored");
        }
        assert!(!stored.contains(PASSWORD), "{url}: a password is stored in clear");
        assert!(stored.contains("$argon2id$"), "{url}: passwords are argon2id hashes");
        let events = everything_stored_in_events(&admit).await;
        assert!(!events.contains("alice@example.com"), "{url}: clear email in an event");
        assert!(!events.contains("Alice Liddell"), "{url}: clear name in an event");
        assert!(stored.contains("alice@example.com"), "{url}: the read model shows the email");

        assert_replay_matches(&admit, &url).await;
        let erased = admit.erase(&email("ALICE@example.com")).await.unwrap();
        assert!(erased.is_some(), "{url}");
        let stored = everything_stored(&admit).await;
        assert!(!stored.contains("alice@example.com"), "{url}: email left after erase");
        assert!(!stored.contains("Alice Liddell"), "{url}: name left after erase");
        assert!(stored.contains("bob@example.com"), "{url}: erasure touched someone else");
        assert!(admit.db.verify().await.unwrap().is_ok(), "{url}: verify fails after erase");
        assert_replay_matches(&admit, &url).await;

        // Replays show the person as erased; the membership itself remains.
        let views = accounts_as_of(&admit.db, Moment::Position(i64::MAX)).await.unwrap();
        let member = views[0].members.iter().find(|m| m.user_id == alice).unwrap();
        assert_eq!(member.email, None, "{url}");
        assert_eq!(member.name, None, "{url}");
        let err = admit.log_in(&email("alice@example.com"), PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), "invalid_credentials", "{url}");
        let _ = Actor::Operator;
    }
}

async fn everything_stored_in_events(admit: &admit_api::Admit) -> String {
    let mut out = String::new();
    let mut cursor = admit_ledger::GlobalCursor::START;
    loop {
        let batch = admit.db.read_all(cursor, 1000).await.unwrap();
        let Some(last) = batch.last() else { return out };
        cursor = admit_ledger::GlobalCursor::after(last);
        for e in batch {
            out.push_str(&e.payload);
            out.push_str(&e.metadata_text);
        }
    }
}

#[tokio::test]
async fn replay_as_of_shows_who_had_access_then_and_why() {
    for (url, admit) in admits().await {
        let (account, owner) = account_with_owner(&admit, "ASOF-1", 20).await;
        let issued = admit.invite(&as_user(owner), account, invite("dora@example.com", &["editor"])).await.unwrap();
        let before_accept = admit.db.read_stream(&issued.invitation_id.stream()).await.unwrap()[0].position;
        let dora = admit.accept_as_new_user(issued.token.as_str(), name("Dora Explorer"), PASSWORD).await.unwrap();
        admit.remove_member(&as_user(owner), account, dora).await.unwrap();

        let then = accounts_as_of(&admit.db, Moment::Position(before_accept)).await.unwrap();
        assert_eq!(then.len(), 1, "{url}");
        assert_eq!(then[0].members.len(), 1, "{url}: only the owner then");
        let inv = then[0].invitations.iter().find(|i| i.invitation_id == issued.invitation_id).unwrap();
        assert_eq!(inv.status, "pending", "{url}");

        let later = accounts_as_of(&admit.db, Moment::Time(chrono::Utc::now())).await.unwrap();
        assert!(later[0].members.iter().all(|m| m.user_id != dora), "{url}: removed by now");
        let inv = later[0].invitations.iter().find(|i| i.invitation_id == issued.invitation_id).unwrap();
        assert_eq!(inv.status, "accepted", "{url}");

        // Between the acceptance and the removal Dora was a member, through
        // the invitation the owner sent.
        let joined = admit.db.read_stream(&account.stream()).await.unwrap();
        let joined_at =
            joined.iter().find(|e| e.event_type == "MemberJoined" && e.stream_version > 2).unwrap().position;
        let during = accounts_as_of(&admit.db, Moment::Position(joined_at)).await.unwrap();
        let m = during[0].members.iter().find(|m| m.user_id == dora).expect("member then");
        assert_eq!(m.invitation_id, Some(issued.invitation_id), "{url}");
        assert_eq!(m.invited_by.as_deref(), Some(format!("user:{owner}").as_str()), "{url}");
        assert_eq!(m.email.as_deref(), Some("dora@example.com"), "{url}");
    }
}
