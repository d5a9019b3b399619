//! The mailer against a folder and a real SMTP server (aiosmtpd), and the
//! expiry worker, in embedded mode (fed by the log).

mod common;

use std::time::Duration;

use admit_workers::expiry::{Expiry, ExpiryConfig};
use admit_workers::mail::{Sender, Transport};
use admit_workers::mailer::{Mailer, MailerConfig};
use common::*;
use serde_json::json;

fn config(transport: Transport, attempts: u32) -> MailerConfig {
    MailerConfig {
        transport,
        sender: Sender::parse("Admit <no-reply@admit.test>", Some("help@admit.test")).unwrap(),
        public_url: "http://admit.test".into(),
        app_url: None,
        attempts,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        poll: Duration::from_millis(50),
        at_once: admit_workers::mailer::SENDING_AT_ONCE,
    }
}

#[tokio::test]
async fn embedded_mail_folder_link_works_and_is_sent_once() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("M-1", "owner@mail.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (id, _) = app.invite(&owner, &account, "eve@example.com", &["editor"]).await;

        let dir = temp_dir("mail");
        let mailer = Mailer::new(app.admit.clone(), config(Transport::folder(&dir).unwrap(), 1)).unwrap();
        mail_until(&app, &mailer, &owner, &account, &id, "delivered").await;
        let all = messages(&dir);
        let eve = to(&all, "eve@example.com");
        assert_eq!(eve.len(), 1, "{url}: one invitation email");
        assert!(eve[0].contains("Olga Owner invited you to Account M-1 (M-1)"), "{url}: {}", eve[0]);
        assert!(eve[0].contains("Message-ID: <"), "{url}");
        // The owner had used their link before the mailer ran: no stale
        // invitation email, only the welcome.
        let owner_mail = to(&all, "owner@mail.example.com");
        assert_eq!(owner_mail.len(), 1, "{url}");
        assert!(owner_mail[0].contains("Subject: Welcome"), "{url}");

        // Opening the email loads the pixel: `opened`, then counted; a forged
        // signature records nothing and gets the same image.
        let start = eve[0].find("http://admit.test/v1/invitations/").expect("a tracking pixel");
        let end = start + eve[0][start..].find('"').unwrap();
        let pixel = eve[0][start..end].replace("http://admit.test", &app.base).replace("&amp;", "&");
        for url in [pixel.clone(), pixel.clone(), format!("{}/v1/invitations/{id}/pixel.gif?sig=forged", app.base)] {
            let r = app.http.get(&url).send().await.unwrap();
            assert_eq!(r.headers()["content-type"], "image/gif");
        }
        // Visiting the link (the preview) is `clicked`, then counted; it consumes nothing.
        let token = link_in(&eve[0]);
        for _ in 0..2 {
            assert_eq!(app.get(&format!("/v1/invitations/preview?token={token}"), None).await.status, 200);
        }

        // The emailed link works.
        let accepted = app
            .post("/v1/invitations/accept", None, json!({ "token": token, "name": "Eve", "password": PASSWORD }))
            .await;
        assert_eq!(accepted.status, 200, "{url}: {accepted:?}");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        let history: Vec<&str> =
            inv.body["delivery_history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect();
        assert_eq!(history, ["processed", "delivered", "opened", "opened", "clicked", "clicked"], "{url}");
        assert_eq!(
            (inv.body["opens"].as_i64(), inv.body["clicks"].as_i64()),
            (Some(2), Some(2)),
            "{url}: repeats counted"
        );
        assert_eq!(inv.body["delivery_state"], "clicked", "{url}");
        assert_eq!(inv.body["status"], "accepted");

        // Running again (a redelivery, a restart) sends nothing twice; the
        // welcome email of the new member goes out once.
        let again = Mailer::new(app.admit.clone(), config(Transport::folder(&dir).unwrap(), 1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while to(&messages(&dir), "eve@example.com").len() < 2 {
            assert!(std::time::Instant::now() < deadline, "{url}: no welcome email");
            again.run_once().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while again.run_once().await.unwrap() > 0 {}
        let all = messages(&dir);
        assert_eq!(to(&all, "eve@example.com").len(), 2, "{url}: invitation + welcome, no duplicate");

        // A member who leaves is reported to the account's admins.
        let eve = admit_domain::ids::UserId(accepted.body["user_id"].as_str().unwrap().parse().unwrap());
        app.admit.cancel_membership(eve, admit_domain::ids::AccountId(account.parse().unwrap())).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let notice = loop {
            again.run_once().await.unwrap();
            let owner_mail = to(&messages(&dir), "owner@mail.example.com");
            if let Some(m) = owner_mail.iter().find(|m| m.contains("Subject: Eve left Account M-1")) {
                break m.clone();
            }
            assert!(std::time::Instant::now() < deadline, "{url}: no departure notice");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(notice.contains("cancelled their access"), "{url}");
    }
}

#[tokio::test]
async fn smtp_delivery_and_failure_after_retries() {
    let sink = SmtpSink::start().await;
    for (n, (url, app)) in apps().await.into_iter().enumerate() {
        let sam = format!("sam{n}@example.com");
        let (account, owner_link) = app.open_account("S-1", "owner@smtp.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (id, _) = app.invite(&owner, &account, &sam, &["viewer"]).await;

        let smtp = Transport::smtp(&format!("smtp://127.0.0.1:{}", sink.port), Duration::from_secs(10)).unwrap();
        let mailer = Mailer::new(app.admit.clone(), config(smtp, 3)).unwrap();
        mail_until(&app, &mailer, &owner, &account, &id, "delivered").await;
        let got = to(&messages(&sink.dir), &sam);
        assert_eq!(got.len(), 1, "{url}: the SMTP server holds the invitation");
        let token = link_in(&got[0]);
        let preview = app.get(&format!("/v1/invitations/preview?token={token}"), None).await;
        assert_eq!(preview.status, 200, "{url}: the mailed link is the live one");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        assert!(inv.body["delivery_history"][1]["detail"].as_str().unwrap().starts_with("250"), "{url}: {}", inv.body);

        // A server that is not there: retried, then recorded as failed with the reason.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (id2, _) = app.invite(&owner, &account, "tom@example.com", &["viewer"]).await;
        let down = Transport::smtp(&format!("smtp://127.0.0.1:{closed}"), Duration::from_secs(2)).unwrap();
        let failing = Mailer::new(app.admit.clone(), config(down, 2)).unwrap();
        let inv = mail_until(&app, &failing, &owner, &account, &id2, "failed").await;
        let reason =
            inv["delivery_history"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().to_string();
        assert!(!reason.is_empty(), "{url}");
    }
}

#[tokio::test]
async fn the_expiry_worker_expires_due_invitations_across_restarts() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("E-1", "owner@expiry.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (due, link) = app.invite(&owner, &account, "late@example.com", &["viewer"]).await;
        let (kept, _) = app.invite(&owner, &account, "kept@example.com", &["viewer"]).await;
        app.call(
            "PATCH",
            &format!("/v1/accounts/{account}/invitations/{kept}"),
            Some(&owner),
            Some(json!({ "expires_in_hours": 72 })),
        )
        .await;

        let first = Expiry::new(app.admit.clone(), ExpiryConfig::default());
        assert_eq!(first.run_once().await.unwrap(), 0, "{url}: nothing is due yet");
        drop(first);

        app.admit.clock.advance(chrono::Duration::hours(25));
        // A new worker (a restart) still knows the deadlines it stored.
        let second = Expiry::new(app.admit.clone(), ExpiryConfig::default());
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut expired = 0;
        loop {
            expired += second.run_once().await.unwrap();
            let inv = app.get(&format!("/v1/accounts/{account}/invitations/{due}"), Some(&owner)).await;
            if inv.body["status"] == "expired" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{url}: never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(expired, 1, "{url}");
        let other = app.get(&format!("/v1/accounts/{account}/invitations/{kept}"), Some(&owner)).await;
        assert_eq!(other.body["status"], "pending", "{url}: its deadline moved to 72 hours");
        let a =
            app.post("/v1/invitations/accept", None, json!({ "token": link, "name": "L", "password": PASSWORD })).await;
        assert_eq!(a.body["code"], "invitation_expired", "{url}");
        assert_eq!(second.run_once().await.unwrap(), 0, "{url}: nothing twice");
    }
}

/// The status of an invitation, read from the read model directly (no
/// request touches the invitation).
async fn status_of(app: &TestApp, id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).unwrap();
    admit_ledger::on_db!(&app.admit.db, p => sqlx::query_scalar::<_, String>("SELECT status FROM invitations WHERE invitation_id = $1")
        .bind(id)
        .fetch_one(p)
        .await
        .unwrap())
}

#[tokio::test]
async fn a_three_second_link_expires_within_eight_seconds_even_across_a_worker_restart() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("E-3", "owner@short.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        for restart in [false, true] {
            let email = format!("brief-{restart}@example.com");
            let made = app
                .post(
                    &format!("/v1/accounts/{account}/invitations"),
                    Some(&owner),
                    json!({ "email": email, "expires_in_seconds": 3 }),
                )
                .await;
            assert_eq!(made.status, 201, "{url}: {made:?}");
            let sent_at = std::time::Instant::now();
            let id = made.body["id"].as_str().unwrap().to_string();

            let (stop, stopped) = tokio::sync::watch::channel(false);
            let worker = Expiry::new(app.admit.clone(), ExpiryConfig::default());
            let mut running = tokio::spawn(async move { worker.run(stopped).await });
            if restart {
                // Stop the worker after it has taken in the deadline, start a new one.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                stop.send(true).unwrap();
                running.await.unwrap().unwrap();
                let (_, stopped) = tokio::sync::watch::channel(false);
                let again = Expiry::new(app.admit.clone(), ExpiryConfig::default());
                running = tokio::spawn(async move { again.run(stopped).await });
            }
            while status_of(&app, &id).await != "expired" {
                assert!(
                    sent_at.elapsed() < Duration::from_secs(8),
                    "{url} (restart: {restart}): not expired within 8 s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            running.abort();
            assert!(sent_at.elapsed() >= Duration::from_secs(3), "{url}: expired before its deadline");
        }
    }
}

#[tokio::test]
async fn lifetimes_in_seconds_and_hours_are_bounded_and_exclusive() {
    let app = spawn_app(&admit_ledger::testing::fresh_sqlite_url()).await;
    let (account, owner_link) = app.open_account("E-4", "owner@bounds.example.com", 10).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    let path = format!("/v1/accounts/{account}/invitations");
    for (body, field, code) in [
        (json!({ "email": "a@example.com", "expires_in_seconds": 0 }), "expires_in_seconds", "invalid_expiry"),
        (json!({ "email": "a@example.com", "expires_in_seconds": 2_592_001 }), "expires_in_seconds", "invalid_expiry"),
        (json!({ "email": "a@example.com", "expires_in_hours": 721 }), "expires_in_hours", "invalid_expiry"),
        (
            json!({ "email": "a@example.com", "expires_in_hours": 1, "expires_in_seconds": 60 }),
            "expires_in_seconds",
            "conflicting_expiry",
        ),
    ] {
        let a = app.post(&path, Some(&owner), body.clone()).await;
        assert_eq!(a.status, 422, "{body}: {a:?}");
        assert_eq!(a.body["errors"][0]["field"], field, "{body}");
        assert_eq!(a.body["errors"][0]["code"], code, "{body}");
    }
    let ok = app.post(&path, Some(&owner), json!({ "email": "a@example.com", "expires_in_seconds": 90 })).await;
    assert_eq!(ok.status, 201, "{ok:?}");
    let sent: chrono::DateTime<chrono::Utc> = ok.body["created_at"].as_str().unwrap().parse().unwrap();
    let until: chrono::DateTime<chrono::Utc> = ok.body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((until - sent).num_seconds(), 90);
}

/// Runs the worker's rounds until `check` holds, bounded (workers read the
/// gap-safe order, which may lag behind other tests' transactions).
async fn rounds_until<F, Fut>(what: &str, mut round: F, mut check: impl FnMut() -> bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        round().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_reminder_a_day_before_the_deadline_of_long_links_only() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("R-1", "owner@remind.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let path = format!("/v1/accounts/{account}/invitations");
        let long = app.post(&path, Some(&owner), json!({ "email": "long@example.com", "expires_in_hours": 72 })).await;
        let short =
            app.post(&path, Some(&owner), json!({ "email": "short@example.com", "expires_in_hours": 48 })).await;
        let (long, short) =
            (long.body["id"].as_str().unwrap().to_string(), short.body["id"].as_str().unwrap().to_string());
        let dir = temp_dir("remind");
        let mailer = Mailer::new(app.admit.clone(), config(Transport::folder(&dir).unwrap(), 1)).unwrap();
        let expiry = Expiry::new(app.admit.clone(), ExpiryConfig::default());
        // Both invitation emails out; no reminder yet.
        rounds_until(
            "two invitation emails",
            || async {
                mailer.run_once().await.unwrap();
            },
            || to(&messages(&dir), "long@example.com").len() + to(&messages(&dir), "short@example.com").len() == 2,
        )
        .await;
        expiry.run_once().await.unwrap();

        // 47 hours later the 72-hour link is 25 hours from its deadline: not yet.
        app.admit.clock.advance(chrono::Duration::hours(47));
        expiry.run_once().await.unwrap();
        let inv = app.get(&format!("{path}/{long}"), Some(&owner)).await;
        assert!(inv.body["reminded_at"].is_null(), "{url}: too early: {}", inv.body);

        // At 49 hours it is due: one reminder, with the working link; the
        // 48-hour link gets none.
        app.admit.clock.advance(chrono::Duration::hours(2));
        let reminder = {
            let dir = dir.clone();
            move || to(&messages(&dir), "long@example.com").into_iter().find(|m| m.contains("Subject: Reminder"))
        };
        rounds_until(
            "the reminder email",
            || async {
                expiry.run_once().await.unwrap();
                mailer.run_once().await.unwrap();
            },
            || reminder().is_some(),
        )
        .await;
        let mail = reminder().unwrap();
        let token = link_in(&mail);
        assert_eq!(app.get(&format!("/v1/invitations/preview?token={token}"), None).await.status, 200, "{url}");
        let inv = app.get(&format!("{path}/{long}"), Some(&owner)).await;
        assert!(inv.body["reminded_at"].is_string(), "{url}: {}", inv.body);
        for _ in 0..3 {
            expiry.run_once().await.unwrap();
            mailer.run_once().await.unwrap();
        }
        let all = messages(&dir);
        assert_eq!(to(&all, "long@example.com").len(), 2, "{url}: the invitation and one reminder");
        assert_eq!(to(&all, "short@example.com").len(), 1, "{url}: a 48-hour link gets no reminder");
        let short_inv = app.get(&format!("{path}/{short}"), Some(&owner)).await;
        assert!(short_inv.body["reminded_at"].is_null(), "{url}: {}", short_inv.body);
    }
}

#[tokio::test]
async fn an_account_template_shapes_its_invitation_email() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("T-1", "owner@tpl.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let settings = format!("/v1/accounts/{account}");
        let bad = app
            .call("PATCH", &settings, Some(&owner), Some(json!({ "mail_templates": { "invitation": { "subject": "Hi {{nope}}", "text": "{{accept_url}}" } } })))
            .await;
        assert_eq!(bad.status, 422, "{url}: {bad:?}");
        assert_eq!(bad.body["errors"][0]["code"], "invalid_template", "{url}");
        assert_eq!(bad.body["errors"][0]["field"], "mail_templates.invitation.subject", "{url}");
        let template = json!({ "mail_templates": { "invitation": {
            "subject": "Join {{account_name}} <{{customer_number}}>",
            "text": "{{inviter}} wants you in as {{roles}}: {{accept_url}} (until {{expires_at}})",
            "html": "<p>{{inviter}} &mdash; <a href=\"{{accept_url}}\">join</a></p>"
        } } });
        let ok = app.call("PATCH", &settings, Some(&owner), Some(template)).await;
        assert_eq!(ok.status, 200, "{url}: {ok:?}");
        assert_eq!(ok.body["mail_templates"]["invitation"]["subject"], "Join {{account_name}} <{{customer_number}}>");
        app.invite(&owner, &account, "tia@example.com", &["editor"]).await;

        let dir = temp_dir("tpl");
        let mailer = Mailer::new(app.admit.clone(), config(Transport::folder(&dir).unwrap(), 1)).unwrap();
        rounds_until(
            "the templated email",
            || async {
                mailer.run_once().await.unwrap();
            },
            || !to(&messages(&dir), "tia@example.com").is_empty(),
        )
        .await;
        let mail = to(&messages(&dir), "tia@example.com").remove(0);
        assert!(mail.contains("Subject: Join Account T-1 <T-1>"), "{url}: {mail}");
        assert!(mail.contains("Olga Owner wants you in as editor: http://admit.test/invite/"), "{url}: {mail}");
        assert!(mail.contains("<p>Olga Owner &mdash; <a href="), "{url}: {mail}");
        assert!(mail.contains("pixel.gif?sig="), "{url}: the tracking pixel is added");

        // Back to Admit's own email.
        let reset =
            app.call("PATCH", &settings, Some(&owner), Some(json!({ "mail_templates": { "invitation": null } }))).await;
        assert_eq!(reset.body["mail_templates"], json!({}), "{url}");
    }
}

#[tokio::test]
async fn an_smtp_server_that_comes_back_gets_the_invitation() {
    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    let (account, owner_link) = app.open_account("S-2", "owner@back.example.com", 10).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    let (id, _) = app.invite(&owner, &account, "patient@example.com", &["viewer"]).await;
    // Nothing listens on the port yet; the mailer retries with backoff.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let smtp = Transport::smtp(&format!("smtp://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
    let mut cfg = config(smtp, 30);
    cfg.backoff = Duration::from_millis(100);
    cfg.max_backoff = Duration::from_millis(400);
    let mailer = Mailer::new(app.admit.clone(), cfg).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { mailer.run(stopped).await });
    // The first attempts fail while the server is down.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: Option<i32> = admit_ledger::on_db!(&app.admit.db, p => sqlx::query_scalar("SELECT attempts FROM mail_sends WHERE kind = 'invitation'")
            .fetch_optional(p)
            .await
            .unwrap());
        if n.unwrap_or(0) >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the mailer never tried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sink = SmtpSink::start_on(port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        if inv.body["delivery_state"] == "delivered" {
            break;
        }
        assert_ne!(inv.body["delivery_state"], "failed", "{}", inv.body);
        assert!(std::time::Instant::now() < deadline, "never delivered: {}", inv.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(to(&messages(&sink.dir), "patient@example.com").len(), 1);
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();
}

#[tokio::test]
async fn the_funnel_of_a_scripted_day_matches_the_counts_by_hand() {
    use admit_domain::ids::InvitationId;
    use admit_domain::invitation::DeliveryState;
    for (url, app) in apps().await {
        // The account and its owner come the day before the scripted day.
        let (account, owner_link) = app.open_account("F-1", "owner@funnel.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let now = app.admit.now();
        let day = now.date_naive() + chrono::Duration::days(1);
        let start = day.and_hms_opt(1, 0, 0).unwrap().and_utc();
        app.admit.clock.advance(start - now);

        let path = format!("/v1/accounts/{account}/invitations");
        let mut ids = std::collections::BTreeMap::new();
        let mut tokens = std::collections::BTreeMap::new();
        for who in ["a", "b", "c", "d", "e", "f"] {
            let made = app.post(&path, Some(&owner), json!({ "email": format!("{who}@example.com") })).await;
            assert_eq!(made.status, 201, "{url}: {made:?}");
            ids.insert(who, InvitationId(made.body["id"].as_str().unwrap().parse().unwrap()));
            tokens.insert(who, token_of(&made.body["accept_url"]));
        }
        // Delivered: a..e (a twice: counted once).
        for who in ["a", "a", "b", "c", "d", "e"] {
            app.admit.record_delivery(ids[who], DeliveryState::Delivered, None).await.unwrap();
        }
        // Opened: a, b, c (a twice); clicked: a, b (a twice).
        for who in ["a", "a", "b", "c"] {
            let sig = app.admit.pixel_signature(ids[who]);
            app.http
                .get(format!("{}/v1/invitations/{}/pixel.gif?sig={sig}", app.base, ids[who].0))
                .send()
                .await
                .unwrap();
        }
        for who in ["a", "a", "b"] {
            assert_eq!(app.get(&format!("/v1/invitations/preview?token={}", tokens[who]), None).await.status, 200);
        }
        // Accepted after 10, 30 and 60 minutes.
        let mut elapsed = 0;
        for (who, minutes) in [("a", 10), ("b", 30), ("c", 60)] {
            app.admit.clock.advance(chrono::Duration::minutes(minutes - elapsed));
            elapsed = minutes;
            app.accept_new(&tokens[who], &format!("Person {who}")).await;
        }
        // d expires (its deadline moved to 1 s, then passed), e is revoked, f waits.
        let moved = app
            .call("PATCH", &format!("{path}/{}", ids["d"].0), Some(&owner), Some(json!({ "expires_in_seconds": 1 })))
            .await;
        assert_eq!(moved.status, 200, "{url}: {moved:?}");
        app.admit.clock.advance(chrono::Duration::seconds(2));
        assert!(app.admit.expire(ids["d"]).await.unwrap(), "{url}");
        let revoked = app.call("DELETE", &format!("{path}/{}", ids["e"].0), Some(&owner), None).await;
        assert!(revoked.status < 300, "{url}: {revoked:?}");

        let analytics = admit_workers::analytics::Analytics::new(app.admit.db.clone(), Duration::from_millis(50));
        let d = day.format("%Y-%m-%d").to_string();
        let funnel_path = format!("/v1/accounts/{account}/analytics/funnel?from={d}&to={d}");
        let expected = json!({
            "invited": 6, "delivered": 5, "opened": 3, "clicked": 2, "accepted": 3, "expired": 1, "revoked": 1,
            "acceptance_rate": 0.5, "median_seconds_to_accept": 1800, "p90_seconds_to_accept": 3600,
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let funnel = loop {
            analytics.run_once().await.unwrap();
            let f = app.get(&funnel_path, Some(&owner)).await;
            assert_eq!(f.status, 200, "{url}: {f:?}");
            if f.body["total"] == expected || std::time::Instant::now() > deadline {
                break f.body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(funnel["total"], expected, "{url}: {funnel}");
        assert_eq!(funnel["days"].as_array().unwrap().len(), 1, "{url}");
        assert_eq!(funnel["days"][0]["day"], d, "{url}");
        // A redelivery of everything: a fresh analytics worker resumes from
        // the checkpoint table, so with its row deleted it reads the feed
        // from the start, and counts nothing twice.
        admit_ledger::on_db_write!(&app.admit.db, p => sqlx::query("DELETE FROM worker_checkpoints WHERE worker = 'analytics'").execute(p).await.map(|_| ()).unwrap());
        let analytics = admit_workers::analytics::Analytics::new(app.admit.db.clone(), Duration::from_millis(50));
        assert!(analytics.run_once().await.unwrap() > 0, "{url}: the fresh worker reads the feed from the start");
        while analytics.run_once().await.unwrap() > 0 {}
        let again = app.get(&funnel_path, Some(&owner)).await;
        assert_eq!(again.body["total"], expected, "{url}: redelivered events count once");
        // Counted again from nothing, one event and three events at a time:
        // an invitation's events then fall into different batches (sent in
        // one, delivered or opened twice in a later one) or share one.
        for events in [1, 3] {
            for sql in [
                "DELETE FROM analytics_seen",
                "DELETE FROM analytics_invitations",
                "DELETE FROM analytics_daily",
                "DELETE FROM analytics_acceptances",
                "DELETE FROM worker_checkpoints WHERE worker = 'analytics'",
            ] {
                admit_ledger::on_db_write!(&app.admit.db, p => sqlx::query(sql).execute(p).await.map(|_| ()).unwrap());
            }
            let analytics = admit_workers::analytics::Analytics::new(app.admit.db.clone(), Duration::from_millis(50))
                .batch_size(events);
            while analytics.run_once().await.unwrap() > 0 {}
            let again = app.get(&funnel_path, Some(&owner)).await;
            assert_eq!(again.body["total"], expected, "{url}: counted {events} event(s) at a time");
        }
        // The day before holds the owner's own invitation.
        let before = (day - chrono::Duration::days(1)).format("%Y-%m-%d");
        let earlier =
            app.get(&format!("/v1/accounts/{account}/analytics/funnel?from={before}&to={before}"), Some(&owner)).await;
        assert_eq!(
            (earlier.body["total"]["invited"].as_i64(), earlier.body["total"]["accepted"].as_i64()),
            (Some(1), Some(1)),
            "{url}"
        );
        // Bad ranges are refused clearly.
        for q in ["from=2026-13-01", "from=2026-02-01&to=2026-01-01", "from=2020-01-01&to=2026-01-01"] {
            let bad = app.get(&format!("/v1/accounts/{account}/analytics/funnel?{q}"), Some(&owner)).await;
            assert_eq!(
                (bad.status, bad.body["errors"][0]["code"].as_str()),
                (422, Some("invalid_date_range")),
                "{url}: {q}"
            );
        }
    }
}

#[tokio::test]
async fn a_renewal_request_is_mailed_to_the_inviter() {
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("N-1", "owner@renew.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (id, token) = app.invite(&owner, &account, "late@example.com", &["viewer"]).await;
        app.admit.clock.advance(chrono::Duration::hours(25));
        assert!(app.admit.expire(admit_domain::ids::InvitationId(id.parse().unwrap())).await.unwrap(), "{url}");
        app.admit.request_renewal(&token).await.unwrap();

        let dir = temp_dir("renew");
        let mailer = Mailer::new(app.admit.clone(), config(Transport::folder(&dir).unwrap(), 1)).unwrap();
        let notice = {
            let dir = dir.clone();
            move || {
                to(&messages(&dir), "owner@renew.example.com")
                    .into_iter()
                    .find(|m| m.contains("asks for a new invitation"))
            }
        };
        rounds_until(
            "the renewal notice",
            || async {
                mailer.run_once().await.unwrap();
            },
            || notice().is_some(),
        )
        .await;
        let mail = notice().unwrap();
        assert!(
            mail.contains("Subject: late@example.com asks for a new invitation to Account N-1 (N-1)"),
            "{url}: {mail}"
        );
        while mailer.run_once().await.unwrap() > 0 {}
        let notices =
            to(&messages(&dir), "owner@renew.example.com").into_iter().filter(|m| m.contains("asks for a new")).count();
        assert_eq!(notices, 1, "{url}: once");
    }
}

/// The expiry and analytics workers read the log without opening anyone's
/// personal data; the mailer, which writes to people, opens it.
#[tokio::test]
async fn only_the_mailer_opens_personal_data_in_the_feed() {
    use admit_domain::invitation::InvitationEvent;
    use admit_domain::personal::Personal;
    use admit_domain::Event;
    use admit_workers::feed::Feed;
    for (url, app) in apps().await {
        let (account, owner_link) = app.open_account("P-1", "owner@sealed.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        app.invite(&owner, &account, "pia@example.com", &["viewer"]).await;
        let sent_to = |events: &[admit_projections::Envelope]| -> Vec<Personal> {
            events
                .iter()
                .filter_map(|e| match &e.event {
                    Event::Invitation(_, InvitationEvent::InvitationSent { personal, .. }) => Some(personal.clone()),
                    _ => None,
                })
                .collect()
        };
        let opened = sent_to(&Feed::log(app.admit.db.clone(), "opened").poll(1000).await.unwrap());
        let sealed =
            sent_to(&Feed::log(app.admit.db.clone(), "sealed").without_personal_data().poll(1000).await.unwrap());
        assert_eq!(opened.len(), 2, "{url}: the owner's and Pia's invitations");
        assert!(opened.iter().any(|p| p.email().is_some_and(|e| e.as_str() == "pia@example.com")), "{url}: {opened:?}");
        assert_eq!(sealed, vec![Personal::Erased; 2], "{url}: nobody's data opened");
    }
}
