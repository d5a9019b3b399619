//! The security checks (issue 7, item 6) through HTTP, on SQLite and
//! PostgreSQL. `docs/security.md` maps every check to the test that proves
//! it; checks proven elsewhere are named there.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A signed-in member may only accept an invitation to their own email; the
/// link stays usable for the invited person.
#[tokio::test]
async fn a_session_of_another_email_cannot_accept() {
    for (url, app) in apps().await {
        let team = app.team("SEC-1").await;
        let (_, link) = app.invite(&team.sessions["owner"], &team.account, "bob@example.com", &["viewer"]).await;
        let stolen = app.post("/v1/invitations/accept", Some(&team.sessions["editor"]), json!({ "token": link })).await;
        assert_eq!((stolen.status, stolen.body["code"].as_str()), (403, Some("email_mismatch")), "{url}: {stolen:?}");
        let (bob, _) = app.accept_new(&link, "Bob Invited").await;
        let members =
            app.get(&format!("/v1/accounts/{}/members?q=bob", team.account), Some(&team.sessions["owner"])).await;
        assert_eq!(members.body["items"][0]["user_id"].as_str(), Some(bob.as_str()), "{url}");
    }
}

/// An admin cannot grant more than they hold: not by inviting, not by
/// widening a pending invitation with PATCH, not by changing a member.
#[tokio::test]
async fn admins_cannot_grant_above_their_own_rights() {
    for (url, app) in apps().await {
        let team = app.team("SEC-2").await;
        let (account, admin) = (&team.account, &team.sessions["admin"]);
        let invite = app
            .post(
                &format!("/v1/accounts/{account}/invitations"),
                Some(admin),
                json!({ "email": "boss@example.com", "roles": ["owner"] }),
            )
            .await;
        assert_eq!(
            (invite.status, invite.body["code"].as_str()),
            (403, Some("exceeds_own_rights")),
            "{url}: {invite:?}"
        );

        let (id, _) = app.invite(admin, account, "later@example.com", &["viewer"]).await;
        let path = format!("/v1/accounts/{account}/invitations/{id}");
        let widened = app.call("PATCH", &path, Some(admin), Some(json!({ "roles": ["owner"] }))).await;
        assert_eq!(
            (widened.status, widened.body["code"].as_str()),
            (403, Some("exceeds_own_rights")),
            "{url}: {widened:?}"
        );
        let unchanged = app.get(&path, Some(admin)).await;
        assert_eq!(unchanged.body["access"]["roles"], json!(["viewer"]), "{url}: the refused PATCH changed nothing");

        let viewer = &team.ids["viewer"];
        let promoted = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}/members/{viewer}"),
                Some(admin),
                Some(json!({ "roles": ["owner"] })),
            )
            .await;
        assert_eq!(
            (promoted.status, promoted.body["code"].as_str()),
            (403, Some("exceeds_own_rights")),
            "{url}: {promoted:?}"
        );
        let owner_id = &team.ids["owner"];
        let demoted = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}/members/{owner_id}"),
                Some(admin),
                Some(json!({ "roles": ["viewer"] })),
            )
            .await;
        assert_eq!(
            (demoted.status, demoted.body["code"].as_str()),
            (403, Some("exceeds_own_rights")),
            "{url}: {demoted:?}"
        );
    }
}

/// The role ceiling is checked again when the invitee accepts: an inviter
/// who has since lost the rights the invitation grants cannot let anyone in.
#[tokio::test]
async fn the_role_ceiling_is_checked_again_at_acceptance() {
    for (url, app) in apps().await {
        let team = app.team("SEC-3").await;
        let (account, admin_id) = (&team.account, &team.ids["admin"]);
        let (_, link) = app.invite(&team.sessions["admin"], account, "new-admin@example.com", &["admin"]).await;
        let demote = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}/members/{admin_id}?confirm=true"),
                Some(&team.sessions["owner"]),
                Some(json!({ "roles": ["viewer"] })),
            )
            .await;
        assert_eq!(demote.status, 200, "{url}: {demote:?}");
        let refused = app
            .post("/v1/invitations/accept", None, json!({ "token": link, "name": "New Admin", "password": PASSWORD }))
            .await;
        assert_eq!(
            (refused.status, refused.body["code"].as_str()),
            (403, Some("inviter_lacks_rights")),
            "{url}: {refused:?}"
        );
        let members =
            app.get(&format!("/v1/accounts/{account}/members?q=new-admin"), Some(&team.sessions["owner"])).await;
        assert_eq!(members.body["items"], json!([]), "{url}: nobody joined");
        let signed_in =
            app.post("/v1/sessions", None, json!({ "email": "new-admin@example.com", "password": PASSWORD })).await;
        assert_eq!(signed_in.status, 401, "{url}: no user was registered by the refused accept");
    }
}

/// Removing or deactivating a member revokes the invitations they sent
/// that are still pending, with reason `inviter_removed`, visible in the list.
#[tokio::test]
async fn removing_or_deactivating_an_inviter_revokes_their_pending_invitations() {
    for (url, app) in apps().await {
        let team = app.team("SEC-4").await;
        let (account, owner) = (&team.account, &team.sessions["owner"]);
        let (kept, _) = app.invite(owner, account, "kept@example.com", &["viewer"]).await;
        let (by_admin, _) = app.invite(&team.sessions["admin"], account, "from-admin@example.com", &["viewer"]).await;
        let (by_support, support_link) =
            app.invite(&team.sessions["support"], account, "from-support@example.com", &["viewer"]).await;

        let admin_id = &team.ids["admin"];
        let deactivated =
            app.post(&format!("/v1/accounts/{account}/members/{admin_id}/deactivate"), Some(owner), json!({})).await;
        assert_eq!(deactivated.status, 200, "{url}: {deactivated:?}");
        let support_id = &team.ids["support"];
        let removed =
            app.call("DELETE", &format!("/v1/accounts/{account}/members/{support_id}"), Some(owner), None).await;
        assert!(removed.status == 200 || removed.status == 204, "{url}: {removed:?}");

        let listed = app.get(&format!("/v1/accounts/{account}/invitations?status=revoked"), Some(owner)).await;
        let revoked: Vec<(String, String)> = listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["id"].as_str().unwrap().to_string(), i["revoke_reason"].as_str().unwrap_or("").to_string()))
            .collect();
        assert!(revoked.contains(&(by_admin.clone(), "inviter_removed".into())), "{url}: {revoked:?}");
        assert!(revoked.contains(&(by_support.clone(), "inviter_removed".into())), "{url}: {revoked:?}");
        assert!(!revoked.iter().any(|(id, _)| id == &kept), "{url}: the owner's invitation stays pending");
        let late = app
            .post(
                "/v1/invitations/accept",
                None,
                json!({ "token": support_link, "name": "Too Late", "password": PASSWORD }),
            )
            .await;
        assert_eq!((late.status, late.body["code"].as_str()), (410, Some("invitation_revoked")), "{url}: {late:?}");
    }
}

/// There is no public sign-up: the only way to become a user is to accept
/// a link, which registers exactly the invited email. Nobody can claim an
/// invited person's user before they accept, nor register another email
/// with their own link.
#[tokio::test]
async fn nobody_can_claim_an_invited_persons_user() {
    for (url, app) in apps().await {
        let openapi = app.get("/openapi.json", None).await;
        let paths: Vec<&String> = openapi.body["paths"].as_object().unwrap().keys().collect();
        for path in &paths {
            assert!(
                !path.contains("register") && !path.contains("signup") && path.as_str() != "/v1/users",
                "{url}: {path}"
            );
        }
        let team = app.team("SEC-5").await;
        let owner = &team.sessions["owner"];
        let (_, victim_link) = app.invite(owner, &team.account, "victim@example.com", &["viewer"]).await;
        let (_, eve_link) = app.invite(owner, &team.account, "eve@example.com", &["viewer"]).await;

        // Eve's own link registers Eve's email, whatever she sends.
        let smuggled = app
            .post(
                "/v1/invitations/accept",
                None,
                json!({ "token": eve_link, "name": "Eve", "password": PASSWORD, "email": "victim@example.com" }),
            )
            .await;
        assert_eq!(
            (smuggled.status, smuggled.body["code"].as_str()),
            (400, Some("invalid_body")),
            "{url}: {smuggled:?}"
        );
        app.accept_new(&eve_link, "Eve").await;
        let as_victim =
            app.post("/v1/sessions", None, json!({ "email": "victim@example.com", "password": PASSWORD })).await;
        assert_eq!(as_victim.status, 401, "{url}: no user exists for the invited email yet");
        let me = app.post("/v1/sessions", None, json!({ "email": "eve@example.com", "password": PASSWORD })).await;
        assert_eq!(me.status, 201, "{url}: {me:?}");

        // The victim's link still registers the victim.
        app.accept_new(&victim_link, "Victor Victim").await;
        let victim =
            app.post("/v1/sessions", None, json!({ "email": "victim@example.com", "password": PASSWORD })).await;
        assert_eq!(victim.status, 201, "{url}: {victim:?}");
    }
}

/// Names, account names and mail subjects with CR, LF or NUL are refused
/// (or, for a template subject, stripped) before they could reach a mail
/// header.
#[tokio::test]
async fn line_breaks_and_nul_never_reach_a_mail_header() {
    for (url, app) in apps().await {
        let team = app.team("SEC-6").await;
        let (account, owner) = (&team.account, &team.sessions["owner"]);
        for (n, evil) in
            ["Eve\r\nBcc: all@example.com", "Eve\nBcc: all@example.com", "Eve\0", "Eve\u{2028}Bcc: x@example.com"]
                .into_iter()
                .enumerate()
        {
            let invite = app
                .post(
                    &format!("/v1/accounts/{account}/invitations"),
                    Some(owner),
                    json!({ "email": "eve@example.com", "name": evil, "roles": ["viewer"] }),
                )
                .await;
            assert_eq!(invite.status, 422, "{url}: invite name {evil:?}: {invite:?}");
            assert_eq!(invite.body["errors"][0]["field"], "name", "{url}: {invite:?}");

            let opened = app
                .post(
                    "/v1/accounts",
                    Some(OPERATOR),
                    json!({ "name": evil, "customer_number": "SEC-6B", "owner_email": "o@example.com" }),
                )
                .await;
            assert_eq!(opened.status, 422, "{url}: account name {evil:?}: {opened:?}");

            let (_, link) = app.invite(owner, account, &format!("n{n}@example.com"), &["viewer"]).await;
            let accept = app
                .post("/v1/invitations/accept", None, json!({ "token": link, "name": evil, "password": PASSWORD }))
                .await;
            assert_eq!(
                (accept.status, accept.body["errors"][0]["field"].as_str()),
                (422, Some("name")),
                "{url}: {accept:?}"
            );

            let email = app
                .post(
                    &format!("/v1/accounts/{account}/invitations"),
                    Some(owner),
                    json!({ "email": format!("x@example.com{evil}"), "roles": ["viewer"] }),
                )
                .await;
            assert_eq!(email.status, 422, "{url}: email {evil:?}: {email:?}");
        }
        let template = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}"),
                Some(owner),
                Some(json!({ "mail_templates": { "invitation": { "subject": "Join {{account_name}}\r\nBcc: all@example.com", "text": "Open {{accept_url}}" } } })),
            )
            .await;
        let subject = template.body["mail_templates"]["invitation"]["subject"].as_str().unwrap_or_default().to_string();
        assert!(
            template.status == 422 || (template.status == 200 && !subject.contains('\r') && !subject.contains('\n')),
            "{url}: {template:?}"
        );
    }
}

/// After accepting, invitees are sent only to the invitation's allowed
/// redirect URL or the configured app URL, never to one taken from the
/// request.
#[tokio::test]
async fn redirects_after_accept_go_only_to_configured_urls() {
    for (url, app) in apps().await {
        let team = app.team("SEC-7").await;
        let (account, owner) = (&team.account, &team.sessions["owner"]);
        let invitations = format!("/v1/accounts/{account}/invitations");
        let evil = app
            .post(
                &invitations,
                Some(owner),
                json!({ "email": "r1@example.com", "roles": ["viewer"], "redirect_url": "https://evil.example/steal" }),
            )
            .await;
        assert_eq!(evil.status, 422, "{url}: {evil:?}");
        let settings = app
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}"),
                Some(owner),
                Some(json!({ "allowed_redirect_urls": ["https://app.example.com/welcome"] })),
            )
            .await;
        assert_eq!(settings.status, 200, "{url}: {settings:?}");
        for near_miss in [
            "https://app.example.com.evil.example/welcome",
            "https://app.example.com/welcome/../../evil",
            "//evil.example",
            "javascript:alert(1)",
        ] {
            let r = app
                .post(
                    &invitations,
                    Some(owner),
                    json!({ "email": "r2@example.com", "roles": ["viewer"], "redirect_url": near_miss }),
                )
                .await;
            assert_eq!(r.status, 422, "{url}: {near_miss}: {r:?}");
        }
        let allowed = app
            .post(&invitations, Some(owner), json!({ "email": "r3@example.com", "roles": ["viewer"], "redirect_url": "https://app.example.com/welcome" }))
            .await;
        assert_eq!(allowed.status, 201, "{url}: {allowed:?}");
        let accepted = app
            .post(
                "/v1/invitations/accept",
                None,
                json!({ "token": token_of(&allowed.body["accept_url"]), "name": "R Three", "password": PASSWORD }),
            )
            .await;
        assert_eq!(accepted.body["redirect_url"], "https://app.example.com/welcome", "{url}");
        let (_, plain) = app.invite(owner, account, "r4@example.com", &["viewer"]).await;
        let accepted = app
            .http
            .post(format!("{}/v1/invitations/accept?redirect_url=https://evil.example", app.base))
            .header("referer", "https://evil.example/")
            .json(&json!({ "token": plain, "name": "R Four", "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = accepted.json().await.unwrap();
        assert_eq!(
            body["redirect_url"], "http://app.test/home",
            "{url}: the configured app URL, whatever the request says"
        );
    }
}

/// Links that are not valid are throttled per client address on the
/// preview, accept, decline and the accept page together; once blocked,
/// even a valid link answers 429, so a guesser learns nothing.
#[tokio::test]
async fn link_guessing_is_throttled_per_address() {
    for (url, app) in apps().await {
        let team = app.team("SEC-8").await;
        let (_, good) = app.invite(&team.sessions["owner"], &team.account, "good@example.com", &["viewer"]).await;
        let mut forged = good.clone().into_bytes();
        forged[60] = if forged[60] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        for i in 0..20 {
            let r = match i % 4 {
                0 => app.get(&format!("/v1/invitations/preview?token={forged}"), None).await,
                1 => {
                    app.post(
                        "/v1/invitations/accept",
                        None,
                        json!({ "token": forged, "name": "Guess", "password": PASSWORD }),
                    )
                    .await
                }
                2 => app.post("/v1/invitations/decline", None, json!({ "token": forged })).await,
                _ => {
                    // The accept page answers HTML: its status is what tells.
                    let page = app.http.get(format!("{}/invite/{forged}", app.base)).send().await.unwrap();
                    assert_eq!(page.status().as_u16(), 404, "{url}: attempt {i}: the page");
                    continue;
                }
            };
            assert_eq!((r.status, r.body["code"].as_str()), (404, Some("invalid_token")), "{url}: attempt {i}: {r:?}");
        }
        let blocked = app.get(&format!("/v1/invitations/preview?token={good}"), None).await;
        assert_eq!(
            (blocked.status, blocked.body["code"].as_str()),
            (429, Some("too_many_attempts")),
            "{url}: {blocked:?}"
        );
        let accept = app
            .post("/v1/invitations/accept", None, json!({ "token": good, "name": "Good", "password": PASSWORD }))
            .await;
        assert_eq!(accept.status, 429, "{url}: {accept:?}");
        let page = app.http.get(format!("{}/invite/{good}", app.base)).send().await.unwrap();
        assert_eq!(page.status().as_u16(), 429, "{url}");
        let pending =
            app.get(&format!("/v1/accounts/{}/invitations?q=good", team.account), Some(&team.sessions["owner"])).await;
        assert_eq!(pending.body["items"][0]["status"], "pending", "{url}: a blocked address changes nothing");
    }
}

/// Sign-in answers an unknown email exactly like a known email with a wrong
/// password: same status and body, and the same argon2 work (the unknown
/// path is not measurably faster). Failures are throttled per email.
#[tokio::test]
async fn unknown_and_known_emails_answer_alike() {
    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    app.team("SEC-9").await; // owner@SEC-9.example.com exists now
    let attempt = |email: String| {
        let app = &app;
        async move {
            let started = Instant::now();
            let r =
                app.post("/v1/sessions", None, json!({ "email": email, "password": "not the password at all" })).await;
            (started.elapsed(), r)
        }
    };
    let (mut known_times, mut unknown_times) = (Vec::new(), Vec::new());
    let mut bodies = Vec::new();
    for i in 0..4 {
        let (t, known) = attempt("owner@SEC-9.example.com".into()).await;
        known_times.push(t);
        let (u, unknown) = attempt(format!("nobody-{i}@example.com")).await;
        unknown_times.push(u);
        let mut k = known.body.clone();
        let mut n = unknown.body.clone();
        k.as_object_mut().unwrap().remove("instance");
        n.as_object_mut().unwrap().remove("instance");
        assert_eq!((known.status, &k), (unknown.status, &n), "bodies differ");
        bodies.push(known.status);
    }
    assert!(bodies.iter().all(|s| *s == 401), "{bodies:?}");
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (known, unknown) = (median(&mut known_times), median(&mut unknown_times));
    // argon2 takes tens of milliseconds; a path that skipped it would answer
    // in about one. Half the known time leaves room for a noisy machine.
    assert!(unknown * 2 >= known, "unknown emails answer faster ({unknown:?} vs {known:?}): argon2 skipped?");
    assert!(known * 2 >= unknown, "known emails answer faster ({known:?} vs {unknown:?})");
}

/// Every accept page, live or dead, forbids framing, scripts and referrers
/// (the token is in its URL) and is never cached.
#[tokio::test]
async fn accept_pages_send_the_security_headers() {
    for (url, app) in apps().await {
        let team = app.team("SEC-10").await;
        let (_, live) = app.invite(&team.sessions["owner"], &team.account, "page@example.com", &["viewer"]).await;
        for token in [live.as_str(), "not-a-token"] {
            let page = app.http.get(format!("{}/invite/{token}", app.base)).send().await.unwrap();
            let h = page.headers();
            let csp = h["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
            assert!(!csp.contains("script-src") || csp.contains("script-src 'none'"), "{url}: {csp}");
            assert_eq!(h["referrer-policy"], "no-referrer", "{url}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
            assert!(h["cache-control"].to_str().unwrap().contains("no-store"), "{url}");
        }
    }
}

/// No link token, session token or password appears in the events, the
/// read models, the Kafka topic (payloads, keys, headers) or the server's
/// logs (debug level, workers included) after a full lifecycle through a
/// real `admit serve` on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_log_the_topic_or_the_server_logs() {
    use rdkafka::message::{Headers, Message};

    let url = admit_ledger::testing::fresh_postgres_url().await;
    let data = temp_dir("secrets");
    let logs = data.join("server.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_admit"))
        .arg("serve")
        .env("ADMIT_DATA_DIR", &data)
        .env("ADMIT_DATABASE_URL", &url)
        .env("ADMIT_SECRET_KEY", "2a".repeat(32))
        .env("ADMIT_BIND", format!("127.0.0.1:{port}"))
        .env("ADMIT_PUBLIC_URL", "http://admit.test")
        .env("ADMIT_OPERATOR_TOKEN", OPERATOR)
        .env("ADMIT_LOG", "debug")
        .env("ADMIT_EXPIRY_TICK_MS", "100")
        .stdout(std::fs::File::create(data.join("server.out")).unwrap())
        .stderr(std::fs::File::create(&logs).unwrap())
        .spawn()
        .unwrap();
    let app =
        TestApp { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new(), admit: admit_on(&url).await };
    let ready_by = Instant::now() + Duration::from_secs(60);
    while app.http.get(format!("{}/readyz", app.base)).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        assert!(Instant::now() < ready_by, "admit serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The whole lifecycle, keeping every secret it hands out.
    let mut secrets: Vec<String> = vec![PASSWORD.into(), OPERATOR.into()];
    let (account, owner_link) = app.open_account("SEC-11", "owner@sec-11.example.com", 20).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    secrets.extend([owner_link, owner.clone()]);
    let wrong = "a wrong password typed by mistake";
    let failed =
        app.post("/v1/sessions", None, json!({ "email": "owner@sec-11.example.com", "password": wrong })).await;
    assert_eq!(failed.status, 401);
    secrets.push(wrong.into());
    let second =
        app.post("/v1/sessions", None, json!({ "email": "owner@sec-11.example.com", "password": PASSWORD })).await;
    secrets.push(second.body["token"].as_str().unwrap().to_string());
    let (id, first_link) = app.invite(&owner, &account, "bea@example.com", &["editor"]).await;
    let resent = app.post(&format!("/v1/accounts/{account}/invitations/{id}/resend"), Some(&owner), json!({})).await;
    assert_eq!(resent.status, 200, "{resent:?}");
    let link = token_of(&resent.body["accept_url"]);
    let preview = app.get(&format!("/v1/invitations/preview?token={link}"), None).await;
    assert_eq!(preview.status, 200, "{preview:?}");
    let bea_password = "a different passphrase for bea";
    let accepted = app
        .post("/v1/invitations/accept", None, json!({ "token": link, "name": "Bea", "password": bea_password }))
        .await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    secrets.extend([
        first_link,
        link,
        bea_password.into(),
        accepted.body["session_token"].as_str().unwrap().to_string(),
    ]);
    let key = app
        .post(
            &format!("/v1/accounts/{account}/api-keys"),
            Some(&owner),
            json!({ "name": "ci", "permissions": ["invitations.read"] }),
        )
        .await;
    assert_eq!(key.status, 201, "{key:?}");
    let api_key = key.body["secret"].as_str().unwrap().to_string();
    assert_eq!(app.get(&format!("/v1/accounts/{account}/invitations"), Some(&api_key)).await.status, 200);
    secrets.push(api_key);
    app.call("DELETE", "/v1/sessions/current", Some(&owner), None).await;
    // The embedded mailer has welcomed Bea (the workers logged their work).
    let mailed_by = Instant::now() + Duration::from_secs(30);
    while to(&messages(&data.join("mail")), "bea@example.com").is_empty() {
        assert!(Instant::now() < mailed_by, "the embedded mailer did not send");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The topic: relay the whole log and read it back.
    let broker = Broker::with_topic("admit.events", 1).await;
    let relay = admit_workers::relay::Relay::new(
        app.admit.db.clone(),
        admit_workers::relay::RelayConfig {
            brokers: broker.addr.clone(),
            topic: "admit.events".into(),
            source: "admit.test".into(),
            delivery_timeout: Duration::from_secs(30),
            poll: Duration::from_millis(50),
        },
    )
    .unwrap();
    let events: i64 = match &app.admit.db {
        admit_ledger::Database::Postgres(p) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(p).await.unwrap()
        }
        _ => unreachable!(),
    };
    let consumer = broker.reader("admit.events", 1);
    let mut topic = String::new();
    let mut read = 0;
    let relayed_by = Instant::now() + Duration::from_secs(60);
    while read < events {
        assert!(Instant::now() < relayed_by, "only {read} of {events} events on the topic");
        relay.run_once().await.unwrap();
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            topic.push_str(&String::from_utf8_lossy(m.payload().unwrap_or_default()));
            topic.push_str(&String::from_utf8_lossy(m.key().unwrap_or_default()));
            if let Some(h) = m.headers() {
                for header in h.iter() {
                    topic.push_str(&String::from_utf8_lossy(header.value.unwrap_or_default()));
                }
            }
            read += 1;
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let stored = everything_stored(&app.admit).await;
    let logged = std::fs::read_to_string(&logs).unwrap() + &std::fs::read_to_string(data.join("server.out")).unwrap();
    assert!(logged.len() > 1000, "the server logged at debug level: {} bytes", logged.len());
    for secret in &secrets {
        assert!(!stored.contains(secret.as_str()), "stored in the database: {secret}");
        assert!(!topic.contains(secret.as_str()), "published on the topic: {secret}");
        assert!(!logged.contains(secret.as_str()), "written to the logs: {secret}");
    }
    assert!(!topic.contains("bea@example.com"), "emails travel sealed on the topic");
}

/// Link tokens are the invitation id, 128 random bits of nonce and a
/// 128-bit MAC: 40 links have 40 different nonces and MACs, and the nonce
/// bits are balanced like random ones (a counter or a constant would not
/// be). Their comparison is constant time by construction (`subtle`, see
/// `domain/src/token.rs`); every one-character change fails to verify
/// (`tampering_with_any_character_fails_verification`).
#[tokio::test]
async fn link_tokens_carry_128_random_bits_and_a_128_bit_mac() {
    use base64::Engine;
    let app = spawn_app(&admit_ledger::testing::fresh_sqlite_url()).await;
    let team = app.team("SEC-12").await;
    let (mut nonces, mut macs) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut ones = 0u32;
    for i in 0..40 {
        let (id, token) =
            app.invite(&team.sessions["owner"], &team.account, &format!("t{i}@example.com"), &["viewer"]).await;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token).unwrap();
        assert_eq!(raw.len(), 48, "id, nonce and MAC of 16 bytes each");
        assert_eq!(uuid::Uuid::from_slice(&raw[..16]).unwrap().to_string(), id);
        ones += raw[16..32].iter().map(|b| b.count_ones()).sum::<u32>();
        nonces.insert(raw[16..32].to_vec());
        macs.insert(raw[32..].to_vec());
    }
    assert_eq!((nonces.len(), macs.len()), (40, 40));
    let share = f64::from(ones) / (40.0 * 128.0);
    assert!((0.45..0.55).contains(&share), "nonce bits are not balanced: {share}");
}
