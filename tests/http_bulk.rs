//! Bulk invitations from CSV (and JSON): a 1,000-row file with 37 planted
//! errors of every kind, the dry run, all-or-nothing and the commit; the
//! CSV dialects spreadsheets produce; malformed and oversized files.

mod common;

use common::*;
use serde_json::json;

/// Sends a CSV body.
async fn csv(app: &TestApp, path: &str, bearer: &str, body: &str) -> Answer {
    app.raw("POST", path, Some(bearer), "text/csv; charset=utf-8", body.as_bytes().to_vec()).await
}

/// Pending invitations of the account, counted through the export.
async fn pending(app: &TestApp, account: &str, owner: &str) -> usize {
    let text = app
        .http
        .get(format!("{}/v1/accounts/{account}/invitations.csv", app.base))
        .bearer_auth(owner)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (_, records) = admit_api::http::csv::read(&text, 100_000).unwrap().unwrap();
    records.iter().skip(1).filter(|r| r.fields[3] == "pending").count()
}

#[tokio::test]
async fn a_thousand_rows_with_37_planted_errors() {
    for (url, app) in apps().await {
        // 1 owner + 5 members + 5 pending invitations hold 11 of 979 seats,
        // leaving 968; the owner sent 10 of a quota of 973, leaving 963.
        let (a, owner_link) = app.open_account("BULK-1", "owner@bulk.example.com", 979).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        for i in 0..5 {
            let (_, link) = app.invite(&owner, &a, &format!("member{i}@bulk.example.com"), &["viewer"]).await;
            app.accept_new(&link, &format!("Member {i}")).await;
        }
        for i in 0..5 {
            app.invite(&owner, &a, &format!("pending{i}@bulk.example.com"), &["viewer"]).await;
        }
        let quota = app
            .call("PATCH", &format!("/v1/accounts/{a}"), Some(&owner), Some(json!({ "daily_invitation_quota": 973 })))
            .await;
        assert_eq!(quota.status, 200, "{url}: {quota:?}");

        // The file: rows 1..=990 are ordinary rows with 27 errors planted
        // every 35 rows from row 10; rows 991..=995 exceed only the quota,
        // rows 996..=1000 would not fit the seats.
        let invalid =
            ["not-an-email", "missing-at.example.com", "a@", "@example.com", "a b@example.com", "x@y@z.example.com"];
        let kinds = ["invalid_email", "duplicate_in_file", "already_member", "already_invited", "unknown_role"];
        let mut counts = std::collections::HashMap::new();
        let mut expected: Vec<(usize, &str)> = Vec::new();
        let mut file = String::from("\u{feff}email,name,roles,expires_in\r\n");
        for row in 1..=1000usize {
            let plain = format!("user{row:04}@bulk.example.com");
            let planted = if (10..=920).contains(&row) && (row - 10) % 35 == 0 {
                let mut kind = kinds[((row - 10) / 35) % kinds.len()];
                // 6 invalid emails and 6 duplicates, 5 of each other kind.
                let n = counts.entry(kind).or_insert(0);
                let limit = if kind == "invalid_email" || kind == "duplicate_in_file" { 6 } else { 5 };
                if *n == limit {
                    kind = if counts.get("invalid_email").copied().unwrap_or(0) < 6 {
                        "invalid_email"
                    } else {
                        "duplicate_in_file"
                    };
                }
                *counts.entry(kind).or_insert(0) += 1;
                Some(kind)
            } else if row > 990 {
                Some(if row <= 995 { "daily_quota_exceeded" } else { "seat_limit_reached" })
            } else {
                None
            };
            let line = match planted {
                None if row % 7 == 0 => format!("{plain},\"Doe, Jane {row}\",\"editor;viewer\",48h\r\n"),
                None | Some("daily_quota_exceeded") | Some("seat_limit_reached") => {
                    format!("{plain},Person {row},viewer,\r\n")
                }
                Some("invalid_email") => {
                    format!("{},Bad {row},viewer,\r\n", invalid[counts["invalid_email"] % invalid.len()])
                }
                // The same address as three rows earlier, cased and spaced differently.
                Some("duplicate_in_file") => format!("  USER{:04}@Bulk.Example.COM ,Again,viewer,\r\n", row - 3),
                Some("already_member") => {
                    format!("member{}@bulk.example.com,Member,viewer,\r\n", counts["already_member"] - 1)
                }
                Some("already_invited") => {
                    format!("Pending{}@bulk.example.com,Pending,viewer,\r\n", counts["already_invited"] - 1)
                }
                Some("unknown_role") => format!("{plain},Ghost {row},\"viewer;ghost\",\r\n"),
                Some(other) => unreachable!("{other}"),
            };
            file.push_str(&line);
            if let Some(kind) = planted {
                expected.push((row, kind));
            }
        }
        file.push_str("\r\n\r\n");
        assert_eq!(expected.len(), 37);
        for kind in kinds.iter().chain(&["daily_quota_exceeded", "seat_limit_reached"]) {
            assert!(expected.iter().any(|(_, k)| k == kind), "no {kind} planted");
        }
        let path = format!("/v1/accounts/{a}/invitations/bulk");
        let failures = |answer: &Answer| -> Vec<(usize, String)> {
            answer.body["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["code"] != "ok")
                .map(|r| (r["row"].as_u64().unwrap() as usize, r["code"].as_str().unwrap().to_string()))
                .collect()
        };
        let expected: Vec<(usize, String)> = expected.into_iter().map(|(r, k)| (r, k.to_string())).collect();

        let dry = csv(&app, &format!("{path}?dry_run=true"), &owner, &file).await;
        assert_eq!(dry.status, 200, "{url}: {:?}", dry.body["detail"]);
        assert_eq!(failures(&dry), expected, "{url}: the dry run reports exactly the planted errors");
        assert_eq!(
            (dry.body["ok"].as_u64(), dry.body["failed"].as_u64(), dry.body["written"].as_bool()),
            (Some(963), Some(37), Some(false))
        );
        let row_10 = &dry.body["rows"][9];
        assert_eq!(row_10["line"], 11, "{url}: rows name their line (the header is line 1)");
        assert_eq!(pending(&app, &a, &owner).await, 5, "{url}: a dry run writes nothing");

        let all_or_nothing = csv(&app, &format!("{path}?all_or_nothing=true"), &owner, &file).await;
        assert_eq!(all_or_nothing.status, 200, "{url}");
        assert_eq!(failures(&all_or_nothing), expected, "{url}");
        assert_eq!(all_or_nothing.body["written"], false);
        assert!(all_or_nothing.body["rows"].as_array().unwrap().iter().all(|r| r["invitation_id"].is_null()));
        assert_eq!(pending(&app, &a, &owner).await, 5, "{url}: all-or-nothing with a failing row invites none");

        let commit = csv(&app, &path, &owner, &file).await;
        assert_eq!(commit.status, 200, "{url}");
        assert_eq!(failures(&commit), expected, "{url}");
        assert_eq!((commit.body["ok"].as_u64(), commit.body["written"].as_bool()), (Some(963), Some(true)));
        let made = commit.body["rows"].as_array().unwrap().iter().filter(|r| r["invitation_id"].is_string()).count();
        assert_eq!(made, 963);
        assert_eq!(pending(&app, &a, &owner).await, 5 + 963, "{url}: the commit invites exactly the 963 others");
        let one = app.get(&format!("/v1/accounts/{a}/invitations?q=user0007"), Some(&owner)).await;
        let item = &one.body["items"][0];
        assert_eq!((item["name"].as_str(), item["channel"].as_str()), (Some("Doe, Jane 7"), Some("bulk")), "{url}");
        assert_eq!(item["access"]["roles"], json!(["editor", "viewer"]), "{url}");
        let at = |k: &str| chrono::DateTime::parse_from_rfc3339(item[k].as_str().unwrap()).unwrap();
        assert_eq!((at("expires_at") - at("created_at")).num_hours(), 48, "{url}: expires_in 48h");
        assert_replay_matches(&app.admit, &url).await;
    }
}

#[tokio::test]
async fn csv_dialects_template_and_refusals() {
    for (url, app) in apps().await {
        let team = app.team("BULK-2").await;
        let (a, owner) = (team.account.clone(), team.sessions["owner"].clone());
        let path = format!("/v1/accounts/{a}/invitations/bulk");

        // The template is a valid file, and admins (not editors) get it.
        let template =
            app.http.get(format!("{}{path}/template.csv", app.base)).bearer_auth(&owner).send().await.unwrap();
        assert_eq!(template.status(), 200);
        assert!(template.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
        let template = template.text().await.unwrap();
        assert!(template.starts_with("email,name,roles,expires_in"), "{template}");
        let checked = csv(&app, &format!("{path}?dry_run=true"), &owner, &template).await;
        assert_eq!((checked.status, checked.body["failed"].as_u64()), (200, Some(0)), "{url}: {checked:?}");
        let editor = app.get(&format!("{path}/template.csv"), Some(&team.sessions["editor"])).await;
        assert_eq!(editor.status, 403);

        // Semicolons, any column order and case, quoted fields with
        // separators, quotes and line breaks, CRLF, BOM, blank lines.
        let semicolons = "\u{feff}Roles;EMAIL;Name\r\n\"editor;viewer\";semi1@example.com;\"Mustermann; Max\"\r\n\r\nviewer;semi2@example.com;\"Say \"\"hi\"\"\"\r\n;;\r\n\r\n";
        let r = csv(&app, &path, &owner, semicolons).await;
        assert_eq!(
            (r.status, r.body["ok"].as_u64(), r.body["failed"].as_u64()),
            (200, Some(2), Some(0)),
            "{url}: {r:?}"
        );
        assert_eq!(r.body["rows"][1]["line"], 4);
        let got = app.get(&format!("/v1/accounts/{a}/invitations?q=semi1"), Some(&owner)).await;
        assert_eq!(got.body["items"][0]["name"], "Mustermann; Max");
        let commas = "email,name\nlf1@example.com,\"two\nlines are not a name\"\nlf2@example.com,Plain\n";
        let r = csv(&app, &path, &owner, commas).await;
        assert_eq!(r.body["rows"][0]["code"], "invalid_name", "{url}: {r:?}");
        assert_eq!(r.body["rows"][1]["line"], 4, "{url}: a quoted line break moves the line count");

        // A bare JSON list works as well as {"items": [...]}.
        let r = app.post(&path, Some(&owner), json!([{ "email": "json1@example.com", "roles": ["viewer"] }])).await;
        assert_eq!((r.status, r.body["ok"].as_u64()), (200, Some(1)), "{url}: {r:?}");

        // Malformed files: 4xx problem+json naming the line.
        for (body, line) in [
            ("email,name\nok@example.com,Fine\nbad@example.com,\"never closed\nmore@example.com,x\n", "line 3"),
            ("email,name\nok@example.com,Fine\nbad@example.com,Jane \"JJ\" Doe\n", "line 3"),
            ("email,name\nok@example.com,Fine,extra\n", "line 2"),
            ("email,phone\nok@example.com,123\n", "line 1"),
            ("name\nJane\n", "line 1"),
            ("", "line 1"),
        ] {
            let r = csv(&app, &path, &owner, body).await;
            assert_eq!((r.status, r.body["code"].as_str()), (400, Some("malformed_csv")), "{url}: {body:?} {r:?}");
            assert!(r.content_type.starts_with("application/problem+json"));
            assert!(r.body["detail"].as_str().unwrap().contains(line), "{body:?}: {}", r.body["detail"]);
        }
        let latin1 =
            app.raw("POST", &path, Some(&owner), "text/csv", b"email,name\nz@example.com,J\xfcrgen\n".to_vec()).await;
        assert_eq!((latin1.status, latin1.body["code"].as_str()), (400, Some("malformed_csv")), "{latin1:?}");
        assert!(latin1.body["detail"].as_str().unwrap().contains("line 2"));
        let xml = app.raw("POST", &path, Some(&owner), "application/xml", b"<a/>".to_vec()).await;
        assert_eq!((xml.status, xml.body["code"].as_str()), (415, Some("unsupported_media_type")));

        // More than the body limit: 413 problem+json, not a bare error.
        let huge = format!("email,name\n{}", "x@example.com,Name\n".repeat(150_000));
        let r = csv(&app, &path, &owner, &huge).await;
        assert_eq!((r.status, r.body["code"].as_str()), (413, Some("payload_too_large")), "{url}: {r:?}");

        // More than 10,000 rows: refused whole, nothing written.
        let mut big = String::from("email\n");
        for i in 0..10_001 {
            big.push_str(&format!("b{i}@x.io\n"));
        }
        let r = csv(&app, &path, &owner, &big).await;
        assert_eq!((r.status, r.body["code"].as_str()), (413, Some("too_many_rows")), "{url}: {r:?}");
        assert!(r.body["detail"].as_str().unwrap().contains("10000"));
        let none = app.get(&format!("/v1/accounts/{a}/invitations?q=b10000@x.io"), Some(&owner)).await;
        assert_eq!(none.body["items"].as_array().unwrap().len(), 0);
    }
}
