//! Who may call what: every account route against owner, admin, editor,
//! viewer, a custom role, an auditor, a user of another account and an
//! anonymous caller, as one table.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn the_authorization_matrix() {
    for (url, app) in apps().await {
        let team = app.team("AUTHZ").await;
        let other = app.team("OTHER").await.sessions["owner"].clone();
        let a = team.account.clone();
        let owner = team.sessions["owner"].clone();
        let viewer_id = team.ids["viewer"].clone();
        let (pending, _) = app.invite(&owner, &a, "pending@example.com", &["viewer"]).await;
        let (_, target_link) = app.invite(&owner, &a, "target@example.com", &["viewer"]).await;
        let (target_id, _) = app.accept_new(&target_link, "Tara Target").await;

        // caller columns: owner admin editor viewer support auditor other anonymous
        let callers = ["owner", "admin", "editor", "viewer", "support", "auditor", "other", "anonymous"];
        #[rustfmt::skip]
        let table: Vec<(&str, String, Option<serde_json::Value>, [u16; 8])> = vec![
            ("GET", format!("/v1/accounts/{a}/invitations"), None,                          [200, 200, 200, 403, 200, 200, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/invitations"), Some(json!({"roles": ["viewer"]})), [201, 201, 403, 403, 201, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/invitations"), Some(json!({"roles": ["owner"]})),  [201, 403, 403, 403, 403, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/invitations/bulk"), Some(json!({"items": []})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/invitations/bulk/template.csv"), None,       [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/invitations.csv"), None,                      [200, 200, 200, 403, 200, 200, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/members.csv"), None,                          [200, 200, 200, 403, 200, 200, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/invitations/{pending}"), None,                [200, 200, 200, 403, 200, 200, 404, 401]),
            ("PATCH", format!("/v1/accounts/{a}/invitations/{pending}"), Some(json!({"expires_in_hours": 48})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/invitations/{pending}/resend"), Some(json!({})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/members"), None,                              [200, 200, 200, 403, 200, 200, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/members/{viewer_id}"), None,                  [200, 200, 200, 403, 200, 200, 404, 401]),
            ("PATCH", format!("/v1/accounts/{a}/members/{viewer_id}"), Some(json!({"roles": ["viewer"]})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/roles"), None,                                [200, 200, 200, 200, 200, 200, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/roles"), Some(json!({"permissions": ["account.read"]})), [201, 201, 403, 403, 403, 403, 404, 401]),
            ("PATCH", format!("/v1/accounts/{a}/roles/support?confirm=true"), Some(json!({"permissions": ["account.read", "invitations.read", "invitations.create", "members.read"]})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/events"), None,                               [200, 200, 403, 403, 403, 200, 404, 401]),
            ("GET", "/v1/me".to_string(), None,                                             [200, 200, 200, 200, 200, 200, 200, 401]),
            ("DELETE", format!("/v1/me/memberships/{a}"), None,                             [202, 202, 202, 202, 202, 202, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/invitations/{pending}/pixel.gif"), None,      [404, 404, 404, 404, 404, 404, 404, 404]),
            ("GET", format!("/v1/accounts/{a}"), None,                                      [200, 200, 200, 200, 200, 200, 404, 401]),
            ("PATCH", format!("/v1/accounts/{a}"), Some(json!({"daily_invitation_quota": 50})), [200, 200, 403, 403, 403, 403, 404, 401]),
            ("GET", format!("/v1/accounts/{a}/api-keys"), None,                             [200, 200, 403, 403, 403, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/api-keys"), Some(json!({"name": "k", "permissions": ["account.read"]})), [201, 201, 403, 403, 403, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/members/{target_id}/deactivate"), None,      [200, 200, 403, 403, 403, 403, 404, 401]),
            ("POST", format!("/v1/accounts/{a}/members/{target_id}/reactivate"), None,      [200, 200, 403, 403, 403, 403, 404, 401]),
            ("DELETE", format!("/v1/accounts/{a}/invitations/{{fresh}}"), None,             [204, 204, 403, 403, 403, 403, 404, 401]),
            ("DELETE", format!("/v1/accounts/{a}/members/{{fresh_member}}"), None,          [204, 204, 403, 403, 403, 403, 404, 401]),
            ("DELETE", format!("/v1/accounts/{a}/roles/{{fresh_role}}?confirm=true"), None, [204, 204, 403, 403, 403, 403, 404, 401]),
            ("DELETE", format!("/v1/accounts/{a}/api-keys/{{fresh_key}}"), None,            [204, 204, 403, 403, 403, 403, 404, 401]),
        ];
        let mut failures = Vec::new();
        for (n, (method, path, body, expected)) in table.iter().enumerate() {
            for (i, caller) in callers.iter().enumerate() {
                let token = match *caller {
                    "anonymous" => None,
                    "other" => Some(other.clone()),
                    c => Some(team.sessions[c].clone()),
                };
                // Bodies that create things get a fresh email or name per call.
                let body = body.clone().map(|mut b| {
                    if path.ends_with("/invitations") {
                        b["email"] = json!(format!("row{n}-{caller}@example.com"));
                    }
                    if path.ends_with("/roles") {
                        b["name"] = json!(format!("r{n}-{caller}"));
                    }
                    b
                });
                // Routes that consume an invitation get a fresh one per call.
                let mut path = path.clone();
                if path.contains("{fresh}") {
                    let (fresh, _) =
                        app.invite(&owner, &a, &format!("fresh{n}-{caller}@example.com"), &["viewer"]).await;
                    path = path.replace("{fresh}", &fresh);
                }
                if path.contains("{fresh_member}") {
                    let (_, link) =
                        app.invite(&owner, &a, &format!("member{n}-{caller}@example.com"), &["viewer"]).await;
                    let (member, _) = app.accept_new(&link, "Fresh Member").await;
                    path = path.replace("{fresh_member}", &member);
                }
                if path.contains("{fresh_role}") {
                    let name = format!("gone{n}-{caller}");
                    let r = app
                        .post(
                            &format!("/v1/accounts/{a}/roles"),
                            Some(&owner),
                            json!({"name": name, "permissions": ["account.read"]}),
                        )
                        .await;
                    assert_eq!(r.status, 201);
                    path = path.replace("{fresh_role}", &name);
                }
                if path.contains("{fresh_key}") {
                    let k = app
                        .post(
                            &format!("/v1/accounts/{a}/api-keys"),
                            Some(&owner),
                            json!({"name": "k", "permissions": ["account.read"]}),
                        )
                        .await;
                    path = path.replace("{fresh_key}", k.body["id"].as_str().unwrap());
                }
                let answer = app.call(method, &path, token.as_deref(), body).await;
                let path = &path;
                if answer.status != expected[i] {
                    failures.push(format!(
                        "{method} {path} as {caller}: {} (expected {}) {}",
                        answer.status, expected[i], answer.body
                    ));
                }
                if answer.status >= 400 {
                    assert!(answer.content_type.starts_with("application/problem+json"), "{method} {path} as {caller}");
                }
            }
        }
        assert!(failures.is_empty(), "{url}:\n{}", failures.join("\n"));
    }
}

/// `who` invites `email` as a viewer into `account` through `app`.
async fn invite_viewer(app: &TestApp, account: &str, who: &str, email: &str) -> Answer {
    let body = json!({ "email": email, "roles": ["viewer"] });
    app.post(&format!("/v1/accounts/{account}/invitations"), Some(who), body).await
}

/// The owner of `team` gives its member `who` the one role `role` through `app`.
async fn set_roles(app: &TestApp, team: &Team, who: &str, role: &str) -> Answer {
    let path = format!("/v1/accounts/{}/members/{}", team.account, team.ids[who]);
    app.call("PATCH", &path, Some(&team.sessions["owner"]), Some(json!({ "roles": [role] }))).await
}

/// `POST .../invitations` lets a request through on the account state the
/// process keeps and checks it again inside the command; what another
/// process changed in the meantime must answer as a fresh check would.
/// Two servers share one database: `here` keeps the account's state from
/// earlier requests, `there` changes who may invite.
#[tokio::test]
async fn inviting_on_a_kept_account_state_answers_as_the_current_state_does() {
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let (here, there) = (spawn_app(&url).await, spawn_app(&url).await);
        let team = there.team("KEPT-HTTP").await;
        let a = team.account.clone();
        // `here` folds and keeps the account with every member in it.
        for r in ["owner", "admin", "support"] {
            let made = invite_viewer(&here, &a, &team.sessions[r], &format!("kept-{r}@example.com")).await;
            assert_eq!(made.status, 201, "{url}: {r}: {made:?}");
        }

        // Removed there: no member here either (404, as for any non-member).
        let removed = there
            .call(
                "DELETE",
                &format!("/v1/accounts/{a}/members/{}", team.ids["support"]),
                Some(&team.sessions["owner"]),
                None,
            )
            .await;
        assert_eq!(removed.status, 204, "{url}: {removed:?}");
        let refused = invite_viewer(&here, &a, &team.sessions["support"], "late-support@example.com").await;
        assert_eq!((refused.status, refused.body["code"].as_str()), (404, Some("not_found")), "{url}: {refused:?}");

        // Made a viewer there: may not invite here (403).
        let demoted = set_roles(&there, &team, "admin", "viewer").await;
        assert_eq!(demoted.status, 200, "{url}: {demoted:?}");
        let refused = invite_viewer(&here, &a, &team.sessions["admin"], "late-admin@example.com").await;
        assert_eq!((refused.status, refused.body["code"].as_str()), (403, Some("forbidden")), "{url}: {refused:?}");

        // Made an admin there: may invite here at once.
        let promoted = set_roles(&there, &team, "viewer", "admin").await;
        assert_eq!(promoted.status, 200, "{url}: {promoted:?}");
        let made = invite_viewer(&here, &a, &team.sessions["viewer"], "new-admin@example.com").await;
        assert_eq!(made.status, 201, "{url}: {made:?}");
        let listed = here.get(&format!("/v1/accounts/{a}/invitations?q=late-"), Some(&team.sessions["owner"])).await;
        assert_eq!(listed.body["items"], json!([]), "{url}: no refused invitation was written");
    }
}
