//! The accept page over plain HTTP (the browser test drives the same
//! pages in Chromium): what it shows, its headers, CSRF, every form, every
//! dead-link page and the rate-limited "request a new invitation".

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::json;

/// A cookie-keeping client that does not follow redirects.
struct Visitor<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let start = self.html.find("name=\"csrf\" value=\"").expect("a form with a CSRF field")
            + "name=\"csrf\" value=\"".len();
        self.html[start..].split('"').next().unwrap().to_string()
    }
}

impl<'a> Visitor<'a> {
    fn new(app: &'a TestApp) -> Visitor<'a> {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Visitor { app, http, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn keep(&mut self, resp: reqwest::Response) -> Page {
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (kv, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            if v.is_empty() || attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), v.to_string());
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Page { status, headers, html: resp.text().await.unwrap() }
    }

    async fn open(&mut self, token: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}/invite/{token}", self.app.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(resp).await
    }

    async fn submit(&mut self, token: &str, fields: &[(&str, &str)]) -> Page {
        let resp = self
            .http
            .post(format!("{}/invite/{token}", self.app.base))
            .header("cookie", self.cookie_header())
            .form(fields)
            .send()
            .await
            .unwrap();
        self.keep(resp).await
    }
}

async fn status_of(app: &TestApp, owner: &str, account: &str, id: &str) -> serde_json::Value {
    app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(owner)).await.body
}

#[tokio::test]
async fn the_accept_page_shows_the_invitation_and_registers_a_new_user() {
    for (url, app) in apps().await {
        let (a, owner_link) = app.open_account("C-7781", "owner@pages.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let invited = app
            .post(
                &format!("/v1/accounts/{a}/invitations"),
                Some(&owner),
                json!({ "email": "new@pages.example.com", "name": "<b>Neo</b>", "roles": ["editor", "viewer"] }),
            )
            .await;
        let (id, token) = (invited.body["id"].as_str().unwrap().to_string(), token_of(&invited.body["accept_url"]));

        let mut v = Visitor::new(&app);
        let page = v.open(&token).await;
        assert_eq!(page.status, 200, "{url}");
        for shown in [
            "Account C-7781",
            "C-7781",
            "Olga Owner (owner@pages.example.com)",
            "editor, viewer",
            "new@pages.example.com",
            "Valid until",
        ] {
            assert!(page.html.contains(shown), "{url}: the page shows {shown}");
        }
        assert!(page.html.contains("name=\"viewport\""));
        assert!(
            page.html.contains("<label for=\"password\">") && page.html.contains("aria-describedby=\"password-hint\"")
        );
        assert!(page.html.contains("at least 15 characters"), "the password policy is stated");
        assert!(
            page.html.contains("value=\"&lt;b&gt;Neo&lt;/b&gt;\""),
            "{url}: the invited name is prefilled, escaped"
        );
        assert!(!page.html.contains("<script"));
        let csp = page.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(page.headers["referrer-policy"], "no-referrer");
        assert_eq!(page.headers["cache-control"], "no-store");
        assert!(v.cookies.contains_key("admit_csrf"));

        // Opening (twice) records the clicks and changes nothing else.
        v.open(&token).await;
        let inv = status_of(&app, &owner, &a, &id).await;
        assert_eq!(
            (inv["status"].as_str(), inv["delivery_state"].as_str()),
            (Some("pending"), Some("clicked")),
            "{url}"
        );
        assert_eq!(inv["clicks"], 2, "{url}: {inv}");

        // CSRF: no cookie, a wrong token, or another link's token: refused, nothing happens.
        let csrf = page.csrf();
        let mut stranger = Visitor::new(&app);
        let r = stranger
            .submit(&token, &[("action", "register"), ("csrf", &csrf), ("name", "Eve"), ("password", PASSWORD)])
            .await;
        assert_eq!(r.status, 403, "{url}: no cookie");
        let r = v
            .submit(&token, &[("action", "register"), ("csrf", "0000"), ("name", "Eve"), ("password", PASSWORD)])
            .await;
        assert_eq!(r.status, 403, "{url}: wrong token");
        let (_, other_token) = app.invite(&owner, &a, "other@pages.example.com", &["viewer"]).await;
        let r = v
            .submit(&other_token, &[("action", "register"), ("csrf", &csrf), ("name", "Eve"), ("password", PASSWORD)])
            .await;
        assert_eq!(r.status, 403, "{url}: a token is tied to its link");
        assert_eq!(status_of(&app, &owner, &a, &id).await["status"], "pending");

        // Field errors next to their field, the typed name kept.
        let r = v.submit(&token, &[("action", "register"), ("csrf", &csrf), ("name", ""), ("password", "")]).await;
        assert_eq!(r.status, 422);
        assert!(
            r.html.contains("id=\"name-error\">Please enter your name.")
                && r.html.contains("id=\"password-error\">Please choose a password."),
            "{}",
            r.html
        );
        let r = v
            .submit(&token, &[("action", "register"), ("csrf", &csrf), ("name", "Ada Lovelace"), ("password", "short")])
            .await;
        assert_eq!(r.status, 422, "{url}");
        assert!(r.html.contains("value=\"Ada Lovelace\""), "the typed name is kept");
        assert!(r.html.contains("id=\"password-error\"") && r.html.contains("aria-invalid=\"true\""));
        assert!(!r.html.contains("value=\"short\""), "a password is never echoed");
        assert_eq!(status_of(&app, &owner, &a, &id).await["status"], "pending");

        // Success: a confirmation linking to ADMIT_APP_URL, and a session.
        let r = v
            .submit(
                &token,
                &[("action", "register"), ("csrf", &csrf), ("name", "Ada Lovelace"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status, 200, "{url}: {}", r.html);
        assert!(
            r.html.contains("Welcome to Account C-7781") && r.html.contains("href=\"http://app.test/home\""),
            "{}",
            r.html
        );
        assert!(v.cookies.contains_key("admit_session"));
        assert_eq!(status_of(&app, &owner, &a, &id).await["status"], "accepted");

        // The used link says so; the form cannot be replayed.
        let used = v.open(&token).await;
        assert_eq!(used.status, 409);
        assert!(used.html.contains("already used"));
        let r =
            v.submit(&token, &[("action", "register"), ("csrf", &csrf), ("name", "Ada"), ("password", PASSWORD)]).await;
        assert_eq!(r.status, 409);

        // Signed in as Ada, another invitation (for someone else) is not hers.
        let mismatch = v.open(&other_token).await;
        assert_eq!(mismatch.status, 200);
        assert!(
            mismatch
                .html
                .contains("You are signed in as <strong>new@pages.example.com</strong>, but this invitation is for"),
            "{}",
            mismatch.html
        );
        assert!(!mismatch.html.contains("value=\"decline\""), "{url}: no decline offered to someone else");
        let csrf2 = mismatch.csrf();
        let r = v.submit(&other_token, &[("action", "accept"), ("csrf", &csrf2)]).await;
        assert_eq!(r.status, 403, "{url}: email mismatch consumes nothing");
        let r = v.submit(&other_token, &[("action", "switch_account"), ("csrf", &csrf2)]).await;
        assert_eq!(r.status, 303);
        assert!(!v.cookies.contains_key("admit_session"), "switching signs out");
        let fresh = v.open(&other_token).await;
        assert!(fresh.html.contains("Create your user"), "{url}");
    }
}

#[tokio::test]
async fn existing_users_sign_in_and_dead_links_explain_themselves() {
    for (url, app) in apps().await {
        let (a, owner_link) = app.open_account("C-7782", "owner@dead.example.com", 20).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (b, other_link) = app.open_account("C-7783", "sam@dead.example.com", 20).await;
        let _ = b;
        app.accept_new(&other_link, "Sam Existing").await;

        // An existing user signs in on the page and accepts.
        let (id, token) = app.invite(&owner, &a, "sam@dead.example.com", &["viewer"]).await;
        let mut v = Visitor::new(&app);
        let page = v.open(&token).await;
        assert!(
            page.html.contains("Sign in to accept") && page.html.contains("autocomplete=\"current-password\""),
            "{url}"
        );
        let csrf = page.csrf();
        let r =
            v.submit(&token, &[("action", "log_in"), ("csrf", &csrf), ("password", "not the password at all")]).await;
        assert_eq!(r.status, 401);
        assert!(r.html.contains("That password is not correct."));
        assert_eq!(status_of(&app, &owner, &a, &id).await["status"], "pending");
        let r = v.submit(&token, &[("action", "log_in"), ("csrf", &csrf), ("password", PASSWORD)]).await;
        assert_eq!(r.status, 200, "{url}: {}", r.html);
        assert!(r.html.contains("Welcome to Account C-7782"));
        assert_eq!(status_of(&app, &owner, &a, &id).await["status"], "accepted");

        // Revoked, declined, invalid.
        let (rid, rtoken) = app.invite(&owner, &a, "revoked@dead.example.com", &["viewer"]).await;
        assert_eq!(
            app.call("DELETE", &format!("/v1/accounts/{a}/invitations/{rid}"), Some(&owner), None).await.status,
            204
        );
        let r = v.open(&rtoken).await;
        assert_eq!(r.status, 410);
        assert!(r.html.contains("withdrawn"));
        let (_, dtoken) = app.invite(&owner, &a, "decline@dead.example.com", &["viewer"]).await;
        let page = v.open(&dtoken).await;
        let r = v.submit(&dtoken, &[("action", "decline"), ("csrf", &page.csrf())]).await;
        assert_eq!(r.status, 200);
        assert_eq!(v.open(&dtoken).await.status, 410);
        let last = if token.ends_with('x') { "y" } else { "x" };
        let tampered = format!("{}{last}", &token[..token.len() - 1]);
        for bad in ["garbage", "AAAA", "%FF%FE", &tampered] {
            let r = v.open(bad).await;
            assert_eq!(r.status, 404, "{url}: {bad}");
            assert!(r.html.contains("not valid"));
        }
        // A resent invitation's old link is dead, the new one works.
        let (sid, stoken) = app.invite(&owner, &a, "resent@dead.example.com", &["viewer"]).await;
        let resent = app.post(&format!("/v1/accounts/{a}/invitations/{sid}/resend"), Some(&owner), json!({})).await;
        assert_eq!(v.open(&stoken).await.status, 404);
        assert_eq!(v.open(&token_of(&resent.body["accept_url"])).await.status, 200);

        // Expired: a page with a rate-limited "request a new invitation".
        let (eid, etoken) = app.invite(&owner, &a, "late@dead.example.com", &["viewer"]).await;
        app.admit.clock.advance(chrono::Duration::hours(25));
        let expired = v.open(&etoken).await;
        assert_eq!(expired.status, 410, "{url}");
        assert!(expired.html.contains("has expired") && expired.html.contains("Request a new invitation"));
        let delivery = status_of(&app, &owner, &a, &eid).await;
        assert!(delivery["delivery_state"].is_null(), "{url}: an expired link records no click");
        let csrf = expired.csrf();
        let r = v.submit(&etoken, &[("action", "request_renewal"), ("csrf", &csrf)]).await;
        assert_eq!(r.status, 200, "{url}: {}", r.html);
        assert!(r.html.contains("We asked for a new invitation"));
        let again = v.submit(&etoken, &[("action", "request_renewal"), ("csrf", &csrf)]).await;
        assert_eq!(again.status, 429, "{url}: once per day");
        let events = app.get(&format!("/v1/accounts/{a}/events?type=InvitationRenewalRequested"), Some(&owner)).await;
        let items = events.body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{url}: {}", events.body);
        assert_eq!(items[0]["data"]["invitation_id"], eid);
        app.admit.clock.advance(chrono::Duration::hours(25));
        assert_eq!(
            v.submit(&etoken, &[("action", "request_renewal"), ("csrf", &csrf)]).await.status,
            200,
            "{url}: allowed again a day later"
        );
        // A live link cannot ask for renewal.
        let (_, live) = app.invite(&owner, &a, "live@dead.example.com", &["viewer"]).await;
        let page = v.open(&live).await;
        assert_eq!(v.submit(&live, &[("action", "request_renewal"), ("csrf", &page.csrf())]).await.status, 409);
        assert_replay_matches(&app.admit, &url).await;
    }
}
