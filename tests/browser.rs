//! The invitee's web flow in a real browser: headless Chromium driven by
//! chromedriver over the W3C WebDriver protocol (plain HTTP with reqwest).
//! An emailed link (from the mailer's folder) opens the accept page; the
//! new-user form is filled, first wrongly, then rightly; a visitor signed in
//! as someone else switches; an existing user signs in and accepts a second
//! invitation; an expired link shows the expired page and requests a new
//! invitation. A screenshot of each page is saved under
//! `target/screenshots/` (the path is printed).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use admit_workers::mail::{Sender, Transport};
use admit_workers::mailer::{Mailer, MailerConfig};
use base64::Engine;
use common::*;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver runs in its own process group with the browsers it
        // started: end the whole group, so no browser outlives the test.
        let _ = Command::new("kill").arg("-TERM").arg("--").arg(format!("-{}", self.child.id())).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let exe = std::env::var("ADMIT_TEST_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(&exe)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {exe} ({e}); scripts/test installs chromium and chromium-driver"));
        let driver = Driver { child, base: format!("http://127.0.0.1:{port}") };
        // Wait (bounded) until it answers /status as ready.
        let http = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/status", driver.base)).send().await {
                if r.json::<Value>().await.map(|v| v["value"]["ready"] == true).unwrap_or(false) {
                    return driver;
                }
            }
            assert!(std::time::Instant::now() < deadline, "chromedriver never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    session: String,
    shots: PathBuf,
    shot: usize,
}

impl Browser {
    async fn open(driver: &Driver, shots: PathBuf) -> Browser {
        let http = reqwest::Client::new();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": std::env::var("ADMIT_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
                // A phone-sized window: the page must be readable there.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=412,915"]
            }
        } } });
        let r: Value =
            http.post(format!("{}/session", driver.base)).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = r["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {r}")).to_string();
        std::fs::create_dir_all(&shots).unwrap();
        Browser { http, session: format!("{}/session/{session}", driver.base), shots, shot: 0 }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        req = req.json(&body.unwrap_or_else(|| json!({})));
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(v["value"]["error"].is_null(), "webdriver {path}: {v}");
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn find(&self, css: &str) -> String {
        let v =
            self.call(reqwest::Method::POST, "/element", Some(json!({ "using": "css selector", "value": css }))).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/clear"), None).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text }))).await;
    }

    /// Clicks a submit button and waits (bounded) until the next page
    /// replaced this one: the old document's root goes stale.
    async fn submit(&self, css: &str) {
        let root = self.find("html").await;
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/click"), None).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v: Value = self
                .http
                .get(format!("{}/element/{root}/name", self.session))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["value"]["error"] == "stale element reference" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the form never led to a new page");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The new document is there once its root can be found.
        self.find("html").await;
    }

    async fn source(&self) -> String {
        self.http.get(format!("{}/source", self.session)).send().await.unwrap().json::<Value>().await.unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn title(&self) -> String {
        self.http.get(format!("{}/title", self.session)).send().await.unwrap().json::<Value>().await.unwrap()["value"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn value_of(&self, css: &str) -> String {
        let el = self.find(css).await;
        let v: Value = self
            .http
            .get(format!("{}/element/{el}/property/value", self.session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].as_str().unwrap_or_default().to_string()
    }

    /// Saves a PNG screenshot of the current page.
    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let v: Value =
            self.http.get(format!("{}/screenshot", self.session)).send().await.unwrap().json().await.unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(v["value"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        self.shot += 1;
        let path = self.shots.join(format!("{:02}-{name}.png", self.shot));
        std::fs::write(&path, png).unwrap();
        path
    }

    async fn quit(mut self) {
        let _ = self.http.delete(&self.session).send().await;
        self.session.clear();
    }
}

impl Drop for Browser {
    /// Ends the browser session even when the test failed half-way (a
    /// plain blocking HTTP DELETE: no runtime is needed in `drop`).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(rest) = self.session.strip_prefix("http://") else { return };
        let Some((host, path)) = rest.split_once('/') else { return };
        if let Ok(mut stream) = std::net::TcpStream::connect(host) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = stream.read_to_end(&mut Vec::new());
        }
    }
}

/// Every stored message under `dir`, quoted-printable soft breaks undone.
fn messages(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            out.push(text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="));
        }
    }
    out
}

/// Runs the mailer until `rcpt` has an invitation email; returns its link.
async fn emailed_link(app: &TestApp, mailer: &Mailer, dir: &Path, rcpt: &str) -> String {
    let prefix = format!("{}/invite/", app.base);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        mailer.run_once().await.unwrap();
        let found = messages(dir).into_iter().find(|m| {
            m.lines().any(|l| l.to_lowercase().starts_with("to:") && l.contains(rcpt)) && m.contains(&prefix)
        });
        if let Some(m) = found {
            let start = m.find(&prefix).unwrap();
            let token: String = m[start + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            return format!("{prefix}{token}");
        }
        assert!(std::time::Instant::now() < deadline, "no invitation email for {rcpt}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn invitees_accept_in_a_real_browser() {
    let driver = Driver::start().await;
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("..").join("screenshots");
    for (url, app) in apps().await {
        let backend = if url.starts_with("sqlite") { "sqlite" } else { "postgres" };
        let mail_dir = std::env::temp_dir().join(format!("admit-browser-mail-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&mail_dir).unwrap();
        let mailer = Mailer::new(
            app.admit.clone(),
            MailerConfig {
                transport: Transport::folder(&mail_dir).unwrap(),
                sender: Sender::parse("Admit <no-reply@admit.test>", None).unwrap(),
                public_url: app.base.clone(),
                app_url: Some("http://app.test/home".into()),
                attempts: 1,
                backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(20),
                poll: Duration::from_millis(50),
                at_once: admit_workers::mailer::SENDING_AT_ONCE,
            },
        )
        .unwrap();
        let shots = root.join(format!("browser-{backend}"));
        let _ = std::fs::remove_dir_all(&shots);
        let mut b = Browser::open(&driver, shots.clone()).await;

        let (a, owner_link) = app.open_account("C-9001", "owner@browser.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;

        // 1. A new user: the emailed link, the form (wrong, then right), the confirmation.
        let (neo_id, _) = app.invite(&owner, &a, "neo@browser.example.com", &["editor"]).await;
        let link = emailed_link(&app, &mailer, &mail_dir, "neo@browser.example.com").await;
        b.go(&link).await;
        assert!(b.title().await.contains("Invitation to Account C-9001"), "{url}");
        let html = b.source().await;
        assert!(
            html.contains("Olga Owner")
                && html.contains("C-9001")
                && html.contains("editor")
                && html.contains("Valid until")
        );
        b.screenshot("new-user-form").await;
        b.type_into("#name", "Neo Anderson").await;
        b.type_into("#password", "short").await;
        b.submit("form button[type=submit]").await;
        assert!(b.source().await.contains("id=\"password-error\""), "{url}: the error is next to the field");
        assert_eq!(b.value_of("#name").await, "Neo Anderson", "{url}: the typed name is kept");
        b.screenshot("new-user-form-error").await;
        b.type_into("#password", PASSWORD).await;
        b.submit("form button[type=submit]").await;
        let html = b.source().await;
        assert!(html.contains("Welcome to Account C-9001") && html.contains("http://app.test/home"), "{url}: {html}");
        b.screenshot("confirmation").await;
        let inv = app.get(&format!("/v1/accounts/{a}/invitations/{neo_id}"), Some(&owner)).await;
        assert_eq!(inv.body["status"], "accepted", "{url}");

        // 2. Signed in as Neo, a link for someone else: told so, switch.
        app.invite(&owner, &a, "trinity@browser.example.com", &["viewer"]).await;
        let trinity_link = emailed_link(&app, &mailer, &mail_dir, "trinity@browser.example.com").await;
        b.go(&trinity_link).await;
        assert!(b.source().await.contains("You are signed in as <strong>neo@browser.example.com</strong>"), "{url}");
        b.screenshot("signed-in-as-someone-else").await;
        b.submit("form button[type=submit]").await;
        assert!(b.source().await.contains("Create your user"), "{url}: signed out, the new-user form");

        // 3. Neo, now an existing user, signs in and accepts a second invitation.
        let (b_account, b_owner_link) = app.open_account("C-9002", "boss@browser.example.com", 20).await;
        let (_, boss) = app.accept_new(&b_owner_link, "Bea Boss").await;
        let (second_id, _) = app.invite(&boss, &b_account, "neo@browser.example.com", &["viewer"]).await;
        let second = emailed_link(&app, &mailer, &mail_dir, "neo@browser.example.com").await;
        let second = if second == link {
            // The first email's link: find the newer one.
            emailed_link_other_than(&app, &mailer, &mail_dir, "neo@browser.example.com", &link).await
        } else {
            second
        };
        b.go(&second).await;
        let html = b.source().await;
        assert!(html.contains("Sign in to accept") && html.contains("Account C-9002"), "{url}: {html}");
        b.screenshot("existing-user-sign-in").await;
        b.type_into("#password", PASSWORD).await;
        b.submit("form button[type=submit]").await;
        assert!(b.source().await.contains("Welcome to Account C-9002"), "{url}");
        b.screenshot("second-confirmation").await;
        let inv = app.get(&format!("/v1/accounts/{b_account}/invitations/{second_id}"), Some(&boss)).await;
        assert_eq!(inv.body["status"], "accepted", "{url}");

        // 4. An expired link: the expired page, and a new invitation requested.
        app.invite(&owner, &a, "late@browser.example.com", &["viewer"]).await;
        let late = emailed_link(&app, &mailer, &mail_dir, "late@browser.example.com").await;
        app.admit.clock.advance(chrono::Duration::hours(25));
        b.go(&late).await;
        let html = b.source().await;
        assert!(
            html.contains("This invitation has expired") && html.contains("Request a new invitation"),
            "{url}: {html}"
        );
        b.screenshot("expired").await;
        b.submit("form button[type=submit]").await;
        assert!(b.source().await.contains("We asked for a new invitation"), "{url}");
        b.screenshot("renewal-requested").await;
        let events = app.get(&format!("/v1/accounts/{a}/events?type=InvitationRenewalRequested"), Some(&owner)).await;
        assert_eq!(events.body["items"].as_array().unwrap().len(), 1, "{url}");

        b.quit().await;
        let saved = std::fs::read_dir(&shots).unwrap().count();
        assert_eq!(saved, 8);
        println!("{url}: screenshots in {}", shots.canonicalize().unwrap().display());
    }
}

/// Like [`emailed_link`], for a recipient with several emails: the link
/// that is not `old`.
async fn emailed_link_other_than(app: &TestApp, mailer: &Mailer, dir: &Path, rcpt: &str, old: &str) -> String {
    let prefix = format!("{}/invite/", app.base);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        mailer.run_once().await.unwrap();
        for m in messages(dir) {
            if !m.lines().any(|l| l.to_lowercase().starts_with("to:") && l.contains(rcpt)) {
                continue;
            }
            let mut rest = m.as_str();
            while let Some(start) = rest.find(&prefix) {
                let token: String = rest[start + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect();
                let link = format!("{prefix}{token}");
                if link != old {
                    return link;
                }
                rest = &rest[start + prefix.len()..];
            }
        }
        assert!(std::time::Instant::now() < deadline, "no second invitation email for {rcpt}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
