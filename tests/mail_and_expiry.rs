//! The mailer against a folder and a real SMTP server (aiosmtpd), and the
//! expiry worker, in embedded mode (fed by the log).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use admit_workers::expiry::{Expiry, ExpiryConfig};
use admit_workers::mail::{Sender, Transport};
use admit_workers::mailer::{Mailer, MailerConfig};
use common::*;
use serde_json::json;

/// Runs `mailer` until the invitation's delivery reached `state`. Workers
/// read the gap-safe order, which waits for transactions in flight anywhere
/// on the PostgreSQL server (other tests'), so this polls, bounded.
async fn mail_until(app: &TestApp, mailer: &Mailer, owner: &str, account: &str, id: &str, state: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        mailer.run_once().await.unwrap();
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(owner)).await;
        if inv.body["delivery_state"] == state {
            return inv.body;
        }
        assert!(std::time::Instant::now() < deadline, "delivery never reached {state}: {}", inv.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("admit-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

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
    }
}

/// Every stored message under `dir` (recursively), quoted-printable soft
/// line breaks undone.
fn messages(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.push(text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="));
            }
        }
    }
    out
}

fn to(messages: &[String], rcpt: &str) -> Vec<String> {
    messages.iter().filter(|m| m.lines().any(|l| l.to_lowercase().starts_with("to:") && l.contains(rcpt))).cloned().collect()
}

fn link_in(message: &str) -> String {
    let start = message.find("http://admit.test/invite/").expect("an accept link") + "http://admit.test/invite/".len();
    message[start..start + 64].to_string()
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

        // Opening the email loads the pixel: `opened`, once; a forged
        // signature records nothing and gets the same image.
        let start = eve[0].find("http://admit.test/v1/invitations/").expect("a tracking pixel");
        let end = start + eve[0][start..].find('"').unwrap();
        let pixel = eve[0][start..end].replace("http://admit.test", &app.base).replace("&amp;", "&");
        for url in [pixel.clone(), pixel.clone(), format!("{}/v1/invitations/{id}/pixel.gif?sig=forged", app.base)] {
            let r = app.http.get(&url).send().await.unwrap();
            assert_eq!(r.headers()["content-type"], "image/gif");
        }
        // Visiting the link (the preview) is `clicked`, once; it consumes nothing.
        let token = link_in(&eve[0]);
        for _ in 0..2 {
            assert_eq!(app.get(&format!("/v1/invitations/preview?token={token}"), None).await.status, 200);
        }

        // The emailed link works.
        let accepted = app.post("/v1/invitations/accept", None, json!({ "token": token, "name": "Eve", "password": PASSWORD })).await;
        assert_eq!(accepted.status, 200, "{url}: {accepted:?}");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        let history: Vec<&str> = inv.body["delivery_history"].as_array().unwrap().iter().map(|h| h["state"].as_str().unwrap()).collect();
        assert_eq!(history, ["processed", "delivered", "opened", "clicked"], "{url}");
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

/// An SMTP server that keeps what it receives (aiosmtpd), on loopback.
struct SmtpSink {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    async fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir("smtp");
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("maildir"))
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the SMTP sink did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpSink { child, port, dir }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let reason = inv["delivery_history"].as_array().unwrap().last().unwrap()["detail"].as_str().unwrap().to_string();
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
        app.call("PATCH", &format!("/v1/accounts/{account}/invitations/{kept}"), Some(&owner), Some(json!({ "expires_in_hours": 72 }))).await;

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
        let a = app.post("/v1/invitations/accept", None, json!({ "token": link, "name": "L", "password": PASSWORD })).await;
        assert_eq!(a.body["code"], "invitation_expired", "{url}");
        assert_eq!(second.run_once().await.unwrap(), 0, "{url}: nothing twice");
    }
}
