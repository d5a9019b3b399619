//! CSV exports of members and invitations: every row, the documented
//! columns, and cells that cannot run as spreadsheet formulas.

mod common;

use admit_api::http::csv::read;
use admit_api::http::exports::{INVITATION_COLUMNS, MEMBER_COLUMNS};
use common::*;
use serde_json::json;

async fn export(app: &TestApp, path: &str, bearer: &str) -> (u16, String, Vec<Vec<String>>) {
    let resp = app.http.get(format!("{}{path}", app.base)).bearer_auth(bearer).send().await.unwrap();
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    let records = if status == 200 {
        assert!(text.starts_with('\u{feff}'), "exports start with a byte-order mark for spreadsheets");
        read(&text, 100_000).unwrap().unwrap().1.into_iter().map(|r| r.fields).collect()
    } else {
        vec![]
    };
    (status, content_type, records)
}

#[tokio::test]
async fn exports_list_everything_with_documented_columns_and_neutralised_cells() {
    for (url, app) in apps().await {
        let team = app.team("EXP-1").await;
        let (a, owner) = (team.account.clone(), team.sessions["owner"].clone());
        // Hostile names: formulas, a leading @, + and -, and a separator.
        let hostile = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+1+1", "-2-2", "@SUM(A1)", "Doe, Jane"];
        let mut accepted_by_hostile = Vec::new();
        for (i, name) in hostile.iter().enumerate() {
            let (_, link) = app.invite(&owner, &a, &format!("hostile{i}@example.com"), &["viewer"]).await;
            if i != 1 {
                app.accept_new(&link, name).await;
                accepted_by_hostile.push(*name);
            }
        }
        let invited = app
            .post(
                &format!("/v1/accounts/{a}/invitations"),
                Some(&owner),
                json!({ "email": "pending@example.com", "name": "=1+2", "roles": ["editor", "viewer"] }),
            )
            .await;
        assert_eq!(invited.status, 201);
        // Enough invitations to need several pages of the stream (500 each).
        let items: Vec<_> =
            (0..520).map(|i| json!({ "email": format!("many{i}@example.com"), "roles": ["viewer"] })).collect();
        let quota = app
            .call("PATCH", &format!("/v1/accounts/{a}"), Some(&owner), Some(json!({ "daily_invitation_quota": 1000 })))
            .await;
        assert_eq!(quota.status, 200);
        let bulk =
            app.post(&format!("/v1/accounts/{a}/invitations/bulk"), Some(&owner), json!({ "items": items })).await;
        assert_eq!(bulk.status, 200, "{url}: {bulk:?}");
        let bulk_ok = bulk.body["ok"].as_u64().unwrap() as usize;

        let signed_in =
            app.post("/v1/sessions", None, json!({ "email": "viewer@exp-1.example.com", "password": PASSWORD })).await;
        assert_eq!(signed_in.status, 201);
        let (status, content_type, members) = export(&app, &format!("/v1/accounts/{a}/members.csv"), &owner).await;
        assert_eq!(status, 200, "{url}");
        assert!(content_type.starts_with("text/csv"), "{content_type}");
        assert_eq!(members[0], MEMBER_COLUMNS.map(String::from).to_vec(), "{url}: documented member columns");
        // owner + 5 team members + the accepted hostile invitees.
        assert_eq!(members.len() - 1, 6 + accepted_by_hostile.len(), "{url}: every member");
        let col = |name: &str, cols: &[&str]| cols.iter().position(|c| *c == name).unwrap();
        let names: Vec<&str> = members[1..].iter().map(|r| r[col("name", &MEMBER_COLUMNS)].as_str()).collect();
        assert!(names.contains(&"'=HYPERLINK(\"http://evil.example\",\"click\")"), "{url}: {names:?}");
        assert!(names.contains(&"'-2-2"));
        assert!(names.contains(&"'@SUM(A1)"));
        for row in &members[1..] {
            for cell in row {
                assert!(!cell.starts_with(['=', '+', '-', '@']), "{url}: a cell could run as a formula: {cell}");
            }
            assert_eq!(row[col("status", &MEMBER_COLUMNS)], "active");
            assert!(!row[col("joined_at", &MEMBER_COLUMNS)].is_empty());
        }
        let viewer = members.iter().find(|r| r[col("email", &MEMBER_COLUMNS)] == "viewer@exp-1.example.com").unwrap();
        assert_eq!(viewer[col("roles", &MEMBER_COLUMNS)], "viewer");
        assert!(viewer[col("last_login_at", &MEMBER_COLUMNS)].ends_with('Z'), "{url}: {viewer:?}");
        assert_eq!(
            viewer[col("invited_by", &MEMBER_COLUMNS)],
            "owner@exp-1.example.com",
            "{url}: the inviter by email"
        );

        let (status, _, invitations) = export(&app, &format!("/v1/accounts/{a}/invitations.csv"), &owner).await;
        assert_eq!(status, 200);
        assert_eq!(
            invitations[0],
            INVITATION_COLUMNS.map(String::from).to_vec(),
            "{url}: documented invitation columns"
        );
        // The owner's invitation, the team's 5, the hostile 5, one pending, the bulk rows.
        assert_eq!(invitations.len() - 1, 1 + 5 + hostile.len() + 1 + bulk_ok, "{url}: every invitation, across pages");
        let c = |name: &str| col(name, &INVITATION_COLUMNS);
        let pending = invitations.iter().find(|r| r[c("email")] == "pending@example.com").unwrap();
        assert_eq!(pending[c("name")], "'=1+2");
        assert_eq!(pending[c("status")], "pending");
        assert_eq!(pending[c("roles")], "editor;viewer");
        assert_eq!(pending[c("invited_by")], "owner@exp-1.example.com");
        assert!(pending[c("expires_at")].ends_with('Z'));
        let accepted = invitations.iter().find(|r| r[c("email")] == "hostile0@example.com").unwrap();
        assert_eq!(accepted[c("status")], "accepted");
        assert!(!accepted[c("accepted_at")].is_empty(), "{url}: {accepted:?}");
        let viewer_invitation = invitations.iter().find(|r| r[c("email")] == "viewer@exp-1.example.com").unwrap();
        assert!(viewer_invitation[c("last_login_at")].ends_with('Z'), "{url}: the last login of who accepted");
        let owner_row = invitations.iter().find(|r| r[c("email")] == "owner@exp-1.example.com").unwrap();
        assert_eq!(owner_row[c("invited_by")], "operator");
        for row in &invitations[1..] {
            assert_eq!(row.len(), INVITATION_COLUMNS.len());
            for cell in row {
                assert!(!cell.starts_with(['=', '+', '-', '@']), "{url}: {cell}");
            }
        }

        // Who may export: like the lists.
        assert_eq!(export(&app, &format!("/v1/accounts/{a}/invitations.csv"), &team.sessions["viewer"]).await.0, 403);
        assert_eq!(export(&app, &format!("/v1/accounts/{a}/members.csv"), &team.sessions["editor"]).await.0, 200);
        let other = app.team("EXP-2").await;
        assert_eq!(export(&app, &format!("/v1/accounts/{a}/members.csv"), &other.sessions["owner"]).await.0, 404);
        assert_eq!(app.get(&format!("/v1/accounts/{a}/members.csv"), None).await.status, 401);
    }
}
