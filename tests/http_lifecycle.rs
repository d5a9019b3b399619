//! The whole lifecycle through real HTTP, on both backends.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn operator_owner_editor_and_a_second_account() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("C-100", "owner@acme.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;

        let (invitation, link) = app.invite(&owner, &account, "Eddie@Example.com", &["editor"]).await;
        let preview = app.get(&format!("/v1/invitations/preview?token={link}"), None).await;
        assert_eq!(preview.status, 200, "{url}: {preview:?}");
        assert_eq!(preview.body["account_name"], "Account C-100");
        assert_eq!(preview.body["customer_number"], "C-100");
        assert_eq!(preview.body["inviter_name"], "Olga Owner");
        assert_eq!(preview.body["roles"], json!(["editor"]));
        assert_eq!(preview.body["email"], "eddie@example.com");
        assert_eq!(preview.body["user_exists"], false);

        let accepted = app
            .post(
                "/v1/invitations/accept",
                None,
                json!({ "token": link, "name": "Eddie Editor", "password": PASSWORD }),
            )
            .await;
        assert_eq!(accepted.status, 200, "{url}: {accepted:?}");
        assert_eq!(accepted.body["redirect_url"], "http://app.test/home");
        let eddie = accepted.body["user_id"].as_str().unwrap().to_string();

        let session =
            app.post("/v1/sessions", None, json!({ "email": "EDDIE@example.com", "password": PASSWORD })).await;
        assert_eq!(session.status, 201, "{url}: {session:?}");
        let eddie_session = session.body["token"].as_str().unwrap().to_string();

        let members = app.get(&format!("/v1/accounts/{account}/members"), Some(&owner)).await;
        assert_eq!(members.status, 200, "{url}: {members:?}");
        let listed =
            members.body["items"].as_array().unwrap().iter().find(|m| m["user_id"] == eddie.as_str()).cloned().unwrap();
        assert_eq!(listed["roles"], json!(["editor"]));
        assert_eq!(listed["email"], "eddie@example.com");
        assert!(listed["last_login_at"].is_string(), "{url}: last login recorded");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{invitation}"), Some(&owner)).await;
        assert_eq!(inv.body["status"], "accepted", "{url}");
        assert!(inv.body["accepted_at"].is_string());

        // A second account invites the same person, who accepts signed in.
        let (second, owner2_link) = app.open_account("C-200", "boss@other.example.com", 10).await;
        let (_, owner2) = app.accept_new(&owner2_link, "Bea Boss").await;
        let (_, link2) = app.invite(&owner2, &second, "eddie@example.com", &["viewer"]).await;
        let preview2 = app.get(&format!("/v1/invitations/preview?token={link2}"), None).await;
        assert_eq!(preview2.body["user_exists"], true, "{url}");
        let joined = app.post("/v1/invitations/accept", Some(&eddie_session), json!({ "token": link2 })).await;
        assert_eq!(joined.status, 200, "{url}: {joined:?}");
        assert_eq!(joined.body["account_id"], second.as_str());

        let me = app.get("/v1/me", Some(&eddie_session)).await;
        assert_eq!(me.status, 200, "{url}: {me:?}");
        let accounts: Vec<&str> =
            me.body["memberships"].as_array().unwrap().iter().map(|m| m["customer_number"].as_str().unwrap()).collect();
        assert_eq!(accounts, ["C-100", "C-200"], "{url}");
        assert_eq!(me.body["restricted"], false);

        // Signing out ends the session.
        let out = app.call("DELETE", "/v1/sessions/current", Some(&eddie_session), None).await;
        assert_eq!(out.status, 204, "{url}");
        assert_eq!(app.get("/v1/me", Some(&eddie_session)).await.status, 401, "{url}");
    }
}

#[tokio::test]
async fn dead_links_resend_revoke_expiry_and_single_use() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("C-300", "owner@links.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;

        // Resend kills the old link.
        let (id, old) = app.invite(&owner, &account, "r@example.com", &["viewer"]).await;
        let resent = app
            .post(
                &format!("/v1/accounts/{account}/invitations/{id}/resend"),
                Some(&owner),
                json!({ "send_copy_to_me": true }),
            )
            .await;
        assert_eq!(resent.status, 200, "{url}: {resent:?}");
        let new = token_of(&resent.body["accept_url"]);
        assert_eq!(resent.body["resend_count"], 1);
        let a =
            app.post("/v1/invitations/accept", None, json!({ "token": old, "name": "R", "password": PASSWORD })).await;
        assert_eq!((a.status, a.body["code"].as_str()), (404, Some("invalid_token")), "{url}: {a:?}");
        assert!(a.content_type.starts_with("application/problem+json"));

        // A used link is refused; so is updating the accepted invitation.
        app.accept_new(&new, "Rita").await;
        let again = app
            .post("/v1/invitations/accept", None, json!({ "token": new, "name": "Rita", "password": PASSWORD }))
            .await;
        assert_eq!((again.status, again.body["code"].as_str()), (409, Some("invitation_used")), "{url}: {again:?}");
        let patch = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}/invitations/{id}"),
                Some(&owner),
                Some(json!({ "roles": ["editor"] })),
            )
            .await;
        assert_eq!((patch.status, patch.body["code"].as_str()), (409, Some("invitation_used")), "{url}: {patch:?}");

        // Revoking kills the link.
        let (id, link) = app.invite(&owner, &account, "v@example.com", &["viewer"]).await;
        let del = app.call("DELETE", &format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner), None).await;
        assert_eq!(del.status, 204, "{url}");
        let a =
            app.post("/v1/invitations/accept", None, json!({ "token": link, "name": "V", "password": PASSWORD })).await;
        assert_eq!((a.status, a.body["code"].as_str()), (410, Some("invitation_revoked")), "{url}: {a:?}");

        // An expired link is refused on its own, whatever the expiry worker did.
        let (_, link) = app.invite(&owner, &account, "x@example.com", &["viewer"]).await;
        app.admit.clock.advance(chrono::Duration::hours(25));
        let a =
            app.post("/v1/invitations/accept", None, json!({ "token": link, "name": "X", "password": PASSWORD })).await;
        assert_eq!((a.status, a.body["code"].as_str()), (410, Some("invitation_expired")), "{url}: {a:?}");
        let p = app.get(&format!("/v1/invitations/preview?token={link}"), None).await;
        assert_eq!(p.body["code"], "invitation_expired", "{url}");

        // Declining.
        let (id, link) = app.invite(&owner, &account, "d@example.com", &["viewer"]).await;
        let d = app.post("/v1/invitations/decline", None, json!({ "token": link })).await;
        assert_eq!((d.status, d.body["status"].as_str()), (200, Some("declined")), "{url}: {d:?}");
        let listed = app.get(&format!("/v1/accounts/{account}/invitations?status=declined"), Some(&owner)).await;
        assert_eq!(listed.body["items"][0]["id"], id.as_str(), "{url}");
    }
}

#[tokio::test]
async fn deleting_a_custom_role_takes_it_from_invitations_and_members() {
    for (url, app) in apps().await {
        let team = app.team("C-400").await;
        let owner = &team.sessions["owner"];
        let account = &team.account;
        let (pending, _) = app.invite(owner, account, "p@example.com", &["viewer", "support"]).await;

        let first = app.call("DELETE", &format!("/v1/accounts/{account}/roles/support"), Some(owner), None).await;
        assert_eq!(first.status, 409, "{url}: {first:?}");
        assert_eq!(first.body["code"], "confirmation_required");
        assert_eq!(first.body["affected_invitations"], 1);
        assert_eq!(first.body["affected_members"], 1);

        let done =
            app.call("DELETE", &format!("/v1/accounts/{account}/roles/support?confirm=true"), Some(owner), None).await;
        assert_eq!(done.status, 204, "{url}: {done:?}");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{pending}"), Some(owner)).await;
        assert_eq!(inv.body["access"]["roles"], json!(["viewer"]), "{url}");
        let member = app.get(&format!("/v1/accounts/{account}/members/{}", team.ids["support"]), Some(owner)).await;
        assert_eq!(member.body["roles"], json!([]), "{url}");
        assert_eq!(member.body["restricted"], true, "{url}");
        let roles = app.get(&format!("/v1/accounts/{account}/roles"), Some(owner)).await;
        assert!(roles.body["items"].as_array().unwrap().iter().all(|r| r["name"] != "support"), "{url}");
    }
}

#[tokio::test]
async fn api_keys_settings_and_the_wrong_person() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("C-500", "owner@keys.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;

        // An API key with a chosen set of permissions, shown once.
        let key = app
            .post(
                &format!("/v1/accounts/{account}/api-keys"),
                Some(&owner),
                json!({ "name": "CI", "permissions": ["account.read", "invitations.read", "invitations.create"] }),
            )
            .await;
        assert_eq!(key.status, 201, "{url}: {key:?}");
        let secret = key.body["secret"].as_str().unwrap().to_string();
        assert!(secret.starts_with("key_"));
        let listed = app.get(&format!("/v1/accounts/{account}/api-keys"), Some(&owner)).await;
        assert!(listed.body["items"][0].get("secret").is_none(), "{url}: the secret is shown once");
        let stored = everything_stored(&app.admit).await;
        assert!(!stored.contains(&secret), "{url}: the key is stored only hashed");

        let by_key = app
            .post(
                &format!("/v1/accounts/{account}/invitations"),
                Some(&secret),
                json!({ "email": "k@example.com", "roles": ["viewer"] }),
            )
            .await;
        assert_eq!(by_key.status, 201, "{url}: {by_key:?}");
        assert_eq!(by_key.body["channel"], "api_key");
        assert!(by_key.body["invited_by"].as_str().unwrap().starts_with("api_key:"));
        let too_much = app
            .post(
                &format!("/v1/accounts/{account}/invitations"),
                Some(&secret),
                json!({ "email": "k2@example.com", "roles": ["editor"] }),
            )
            .await;
        assert_eq!((too_much.status, too_much.body["code"].as_str()), (403, Some("exceeds_own_rights")), "{url}");
        let elsewhere = app.get("/v1/me", Some(&secret)).await;
        assert_eq!(elsewhere.status, 401, "{url}: a key is no user session");

        let key_id = key.body["id"].as_str().unwrap();
        assert_eq!(
            app.call("DELETE", &format!("/v1/accounts/{account}/api-keys/{key_id}"), Some(&owner), None).await.status,
            204
        );
        let after = app.get(&format!("/v1/accounts/{account}/invitations"), Some(&secret)).await;
        assert_eq!(after.status, 401, "{url}: a revoked key stops working");

        // Allowed domains and redirects.
        let set = app
            .call("PATCH", &format!("/v1/accounts/{account}"), Some(&owner), Some(json!({ "allowed_email_domains": ["Example.COM"], "allowed_redirect_urls": ["https://app.example.com/welcome"] })))
            .await;
        assert_eq!(set.status, 200, "{url}: {set:?}");
        assert_eq!(set.body["allowed_email_domains"], json!(["example.com"]));
        let outside = app
            .post(&format!("/v1/accounts/{account}/invitations"), Some(&owner), json!({ "email": "x@elsewhere.org" }))
            .await;
        assert_eq!(outside.body["code"], "email_domain_not_allowed", "{url}");
        let with_redirect = app
            .post(&format!("/v1/accounts/{account}/invitations"), Some(&owner), json!({ "email": "m@example.com", "roles": ["viewer"], "metadata": { "team": "sales" }, "redirect_url": "https://app.example.com/welcome" }))
            .await;
        assert_eq!(with_redirect.status, 201, "{url}: {with_redirect:?}");
        assert_eq!(with_redirect.body["metadata"]["team"], "sales");
        let seats =
            app.call("PATCH", &format!("/v1/accounts/{account}"), Some(&owner), Some(json!({ "seats": 500 }))).await;
        assert_eq!(seats.status, 400, "{url}: seats are not a setting owners change");

        // Someone signed in with another email gets email_mismatch; the link stays usable.
        let (_, other_link) = app.invite(&owner, &account, "other@example.com", &["viewer"]).await;
        let (_, other_session) = app.accept_new(&other_link, "Otto Other").await;
        let link = token_of(&with_redirect.body["accept_url"]);
        let wrong = app.post("/v1/invitations/accept", Some(&other_session), json!({ "token": link })).await;
        assert_eq!((wrong.status, wrong.body["code"].as_str()), (403, Some("email_mismatch")), "{url}: {wrong:?}");
        let right = app
            .post("/v1/invitations/accept", None, json!({ "token": link, "name": "Mia", "password": PASSWORD }))
            .await;
        assert_eq!(right.status, 200, "{url}: {right:?}");
        assert_eq!(right.body["redirect_url"], "https://app.example.com/welcome");
    }
}

#[tokio::test]
async fn leaving_auditing_bulk_and_role_changes() {
    for (url, app) in apps().await {
        let team = app.team("C-600").await;
        let owner = team.sessions["owner"].clone();
        let a = team.account.clone();

        // Bulk JSON: valid rows invited, invalid ones reported with their row.
        let bulk = app
            .post(
                &format!("/v1/accounts/{a}/invitations/bulk"),
                Some(&owner),
                json!({ "items": [
                    { "email": "b1@example.com", "roles": ["viewer"] },
                    { "email": "not-an-email" },
                    { "email": "b1@example.com", "roles": ["viewer"] },
                    { "email": "b2@example.com", "roles": ["ghost"] },
                    { "email": "b3@example.com" }
                ] }),
            )
            .await;
        assert_eq!(bulk.status, 200, "{url}: {bulk:?}");
        let codes: Vec<&str> =
            bulk.body["rows"].as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap()).collect();
        assert_eq!(codes, ["ok", "invalid_email", "duplicate_in_file", "unknown_role", "ok"], "{url}");
        assert_eq!((bulk.body["ok"].as_u64(), bulk.body["failed"].as_u64()), (Some(2), Some(3)));
        let dry = app
            .post(
                &format!("/v1/accounts/{a}/invitations/bulk?dry_run=true"),
                Some(&owner),
                json!({ "items": [{ "email": "b9@example.com" }] }),
            )
            .await;
        assert_eq!((dry.body["ok"].as_u64(), dry.body["written"].as_bool()), (Some(1), Some(false)), "{url}");
        let searched = app.get(&format!("/v1/accounts/{a}/invitations?q=b9"), Some(&owner)).await;
        assert_eq!(searched.body["items"].as_array().unwrap().len(), 0, "{url}: a dry run writes nothing");

        // Paging walks every invitation once.
        let seen = ids_page_by_page(&app, &format!("/v1/accounts/{a}/invitations?limit=3"), &owner).await;
        let all = app.get(&format!("/v1/accounts/{a}/invitations?limit=100"), Some(&owner)).await;
        assert_eq!(seen.len(), all.body["items"].as_array().unwrap().len(), "{url}");
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{url}: no invitation twice");

        // A search pages in the same order as its one long page (on
        // PostgreSQL each search is planned for its own pattern).
        let search = format!("/v1/accounts/{a}/invitations?status=pending&q=EXAMPLE.com");
        let whole = app.get(&format!("{search}&limit=100"), Some(&owner)).await;
        let whole = ids(&whole);
        assert!(whole.len() >= 2, "{url}: the bulk's pending invitations are found: {whole:?}");
        assert_eq!(ids_page_by_page(&app, &format!("{search}&limit=1"), &owner).await, whole, "{url}");

        // Changing a role in use asks first.
        let patch = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{a}/roles/support"),
                Some(&owner),
                Some(json!({ "permissions": ["account.read"] })),
            )
            .await;
        assert_eq!((patch.status, patch.body["affected_members"].as_u64()), (409, Some(1)), "{url}: {patch:?}");
        let patch = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{a}/roles/support?confirm=true"),
                Some(&owner),
                Some(json!({ "permissions": ["account.read"] })),
            )
            .await;
        assert_eq!(patch.status, 200, "{url}");

        // The auditor reads raw events, filtered and paged.
        let auditor = &team.sessions["auditor"];
        let events = app.get(&format!("/v1/accounts/{a}/events?type=RoleChanged"), Some(auditor)).await;
        assert_eq!(events.status, 200, "{url}: {events:?}");
        let items = events.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{url}");
        assert_eq!(items[0]["data"]["permissions"], json!(["account.read"]));
        assert_eq!(items[0]["hash"].as_str().unwrap().len(), 64);
        let first = app.get(&format!("/v1/accounts/{a}/events?limit=2"), Some(auditor)).await;
        let next = first.body["next_cursor"].as_str().unwrap().to_string();
        let second = app.get(&format!("/v1/accounts/{a}/events?limit=2&cursor={next}"), Some(auditor)).await;
        assert!(second.body["items"][0]["position"].as_i64() > first.body["items"][1]["position"].as_i64(), "{url}");

        // Leaving takes two steps; the admins' account no longer lists the member.
        let viewer = &team.sessions["viewer"];
        let step1 = app.call("DELETE", &format!("/v1/me/memberships/{a}"), Some(viewer), None).await;
        assert_eq!(step1.status, 202, "{url}: {step1:?}");
        assert_eq!(
            app.get("/v1/me", Some(viewer)).await.body["memberships"].as_array().unwrap().len(),
            1,
            "{url}: not yet"
        );
        let confirmation = step1.body["confirmation"].as_str().unwrap();
        let step2 = app
            .call("DELETE", &format!("/v1/me/memberships/{a}?confirmation={confirmation}"), Some(viewer), None)
            .await;
        assert_eq!(step2.status, 204, "{url}: {step2:?}");
        let me = app.get("/v1/me", Some(viewer)).await;
        assert_eq!(me.body["memberships"].as_array().unwrap().len(), 0, "{url}");
        assert_eq!(me.body["restricted"], true);
        let gone = app.get(&format!("/v1/accounts/{a}/members/{}", team.ids["viewer"]), Some(&owner)).await;
        assert_eq!(gone.status, 404, "{url}");
    }
}

/// The ids of a page's items, in order.
fn ids(page: &Answer) -> Vec<String> {
    page.body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect()
}

/// The ids of every item of a listing (`first` already has its `limit`),
/// following `next_cursor` to the last page.
async fn ids_page_by_page(app: &TestApp, first: &str, bearer: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut path = first.to_string();
    loop {
        let page = app.get(&path, Some(bearer)).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        seen.extend(ids(&page));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("{first}&cursor={c}"),
            None => return seen,
        }
    }
}

/// `POST .../invitations` answers from the row the invitation starts as,
/// without reading it back (docs/performance.md, "The twelfth round"):
/// the answer must be what a `GET` of it shows, field for field, plus its
/// link, for every part of an invitation and through both channels.
#[tokio::test]
async fn the_answer_to_an_invitation_is_what_reading_it_shows() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("C-650", "owner@answers.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let allowed = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}"),
                Some(&owner),
                Some(json!({ "allowed_redirect_urls": ["https://app.example.com/welcome"] })),
            )
            .await;
        assert_eq!(allowed.status, 200, "{url}: {allowed:?}");
        let key = app
            .post(
                &format!("/v1/accounts/{account}/api-keys"),
                Some(&owner),
                json!({ "name": "CRM", "permissions": ["invitations.read", "invitations.create"] }),
            )
            .await;
        assert_eq!(key.status, 201, "{url}: {key:?}");
        let secret = key.body["secret"].as_str().unwrap().to_string();

        let full = json!({
            "email": "Full.Name@Example.com",
            "name": "  Fay Full ",
            "roles": ["editor", "viewer"],
            "features": { "reports": "edit" },
            "sites": { "only": { "berlin": "all", "paris": { "only": ["web", "app"] } } },
            "expires_in_seconds": 7_777,
            "metadata": { "crm": { "id": 42, "tags": ["b", "a"] }, "note": "ü" },
            "redirect_url": "https://app.example.com/welcome"
        });
        let plain = json!({ "email": "plain@example.com" });
        for (bearer, body) in [(&owner, full), (&secret, plain)] {
            let made = app.post(&format!("/v1/accounts/{account}/invitations"), Some(bearer), body.clone()).await;
            assert_eq!(made.status, 201, "{url}: {made:?}");
            let mut answer = made.body.clone();
            let link = answer.as_object_mut().unwrap().remove("accept_url");
            assert!(
                link.is_some_and(|l| l.as_str().is_some_and(|l| l.starts_with("http://admit.test/invite/"))),
                "{url}: {made:?}"
            );
            let id = answer["id"].as_str().unwrap().to_string();
            let read = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
            assert_eq!(read.status, 200, "{url}: {read:?}");
            let mut shown = read.body.clone();
            shown.as_object_mut().unwrap().remove("delivery_history");
            assert_eq!(answer, shown, "{url}: the answer to {body} is what reading it shows");
            assert_eq!(answer["status"], "pending", "{url}");
        }
    }
}
