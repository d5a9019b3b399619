//! Malformed requests of every kind get a 4xx problem+json with a stable
//! code, never a 500, and change nothing.

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn malformed_requests_get_problem_json() {
    for (url, app) in apps().await {
        let (a, owner_link) = app.open_account("BAD-1", "owner@bad.example.com", 10).await;
        let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
        let (inv, link) = app.invite(&owner, &a, "someone@example.com", &["viewer"]).await;
        let o = Some(owner.as_str());
        let inv_path = format!("/v1/accounts/{a}/invitations");
        let big = vec![b' '; 3 * 1024 * 1024];
        let many: Vec<_> = (0..10_001).map(|i| json!({ "email": format!("u{i}@example.com") })).collect();

        // (method, path, bearer, content type, body, expected status, expected code)
        #[rustfmt::skip]
        type Case<'a> = (&'a str, String, Option<&'a str>, &'a str, Vec<u8>, u16, &'a str);
        let cases: Vec<Case> = vec![
            ("POST", "/v1/sessions".into(), None, "application/json", b"{".to_vec(), 400, "malformed_json"),
            ("POST", "/v1/sessions".into(), None, "application/json", br#"{"email": 1, "password": "x"}"#.to_vec(), 400, "invalid_body"),
            ("POST", "/v1/sessions".into(), None, "application/json", br#"{"email": "a@b.co", "password": "x", "admin": true}"#.to_vec(), 400, "invalid_body"),
            ("POST", "/v1/sessions".into(), None, "application/json", br#"{"email": "a@b.co"}"#.to_vec(), 400, "invalid_body"),
            ("POST", "/v1/sessions".into(), None, "text/plain", b"email=a".to_vec(), 415, "unsupported_media_type"),
            ("POST", "/v1/sessions".into(), None, "application/json", br#"{"email": "not an email", "password": "x"}"#.to_vec(), 401, "invalid_credentials"),
            ("POST", "/v1/sessions".into(), None, "application/json", b"[]".to_vec(), 400, "invalid_body"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "nope"}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x@example.com\r\nBcc: y@example.com"}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x1@example.com", "roles": ["ghost"]}"#.to_vec(), 422, "unknown_role"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x2@example.com", "roles": ["Bad Role!"]}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x3@example.com", "expires_in_hours": 0}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x4@example.com", "expires_in_hours": -5}"#.to_vec(), 400, "invalid_body"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x5@example.com", "metadata": [1]}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", format!(r#"{{"email": "x6@example.com", "metadata": {{"a": "{}"}}}}"#, "z".repeat(5000)).into_bytes(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x7@example.com", "redirect_url": "https://evil.example"}"#.to_vec(), 422, "validation_failed"),
            ("POST", inv_path.clone(), o, "application/json", br#"{"email": "x8@example.com", "features": {"reports": "godlike"}}"#.to_vec(), 400, "invalid_body"),
            ("POST", inv_path.clone(), o, "application/json", big.clone(), 413, "payload_too_large"),
            ("POST", format!("{inv_path}/bulk"), o, "application/json", serde_json::to_vec(&json!({ "items": many })).unwrap(), 413, "too_many_rows"),
            ("GET", format!("{inv_path}?limit=0"), o, "application/json", vec![], 400, "invalid_limit"),
            ("GET", format!("{inv_path}?limit=abc"), o, "application/json", vec![], 400, "invalid_query"),
            ("GET", format!("{inv_path}?cursor=garbage!"), o, "application/json", vec![], 400, "invalid_cursor"),
            // A well-formed cursor of 5000 BC: PostgreSQL refused the time (was a 503).
            ("GET", format!("{inv_path}?cursor=LTIyMDAwMDAwMDAwMDAwMDAwMHwwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDA"), o, "application/json", vec![], 400, "invalid_cursor"),
            ("GET", format!("/v1/accounts/{a}/members?cursor=LTIyMDAwMDAwMDAwMDAwMDAwMHwwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDA"), o, "application/json", vec![], 400, "invalid_cursor"),
            ("GET", format!("{inv_path}?status=bogus"), o, "application/json", vec![], 400, "invalid_status"),
            ("GET", format!("{inv_path}?colour=red"), o, "application/json", vec![], 400, "invalid_query"),
            ("GET", "/v1/accounts/not-a-uuid/invitations".into(), o, "application/json", vec![], 404, "not_found"),
            ("GET", format!("{inv_path}/not-a-uuid"), o, "application/json", vec![], 404, "not_found"),
            ("GET", format!("{inv_path}/{}", uuid::Uuid::nil()), o, "application/json", vec![], 404, "not_found"),
            ("GET", "/v1/invitations/preview?token=short".into(), None, "application/json", vec![], 422, "validation_failed"),
            ("GET", "/v1/invitations/preview".into(), None, "application/json", vec![], 400, "invalid_query"),
            ("POST", "/v1/invitations/accept".into(), None, "application/json", br#"{"token": "garbage"}"#.to_vec(), 422, "validation_failed"),
            ("POST", "/v1/invitations/accept".into(), None, "application/json", format!(r#"{{"token": "{link}"}}"#).into_bytes(), 422, "validation_failed"),
            ("POST", "/v1/invitations/accept".into(), None, "application/json", format!(r#"{{"token": "{link}", "name": "N", "password": "short"}}"#).into_bytes(), 422, "validation_failed"),
            ("POST", "/v1/invitations/decline".into(), None, "application/json", b"{}".to_vec(), 400, "invalid_body"),
            ("POST", "/v1/accounts".into(), None, "application/json", br#"{"name": "A", "customer_number": "1", "owner_email": "a@b.co"}"#.to_vec(), 401, "unauthenticated"),
            ("POST", "/v1/accounts".into(), Some("wrong"), "application/json", br#"{"name": "A", "customer_number": "1", "owner_email": "a@b.co"}"#.to_vec(), 401, "unauthenticated"),
            ("POST", "/v1/accounts".into(), Some(OPERATOR), "application/json", br#"{"name": "A", "customer_number": "no spaces allowed", "owner_email": "a@b.co"}"#.to_vec(), 422, "validation_failed"),
            ("DELETE", format!("/v1/me/memberships/{a}?confirmation=bogus"), o, "application/json", vec![], 400, "invalid_confirmation"),
            ("PATCH", format!("/v1/accounts/{a}/roles/anything"), o, "application/json", br#"{"permissions": ["launch.missiles"]}"#.to_vec(), 400, "invalid_body"),
            ("GET", format!("/v1/accounts/{a}/events?cursor=x"), o, "application/json", vec![], 400, "invalid_cursor"),
            ("GET", "/v1/nothing-here".into(), None, "application/json", vec![], 404, "not_found"),
            ("GET", "/v1/me".into(), Some("ses_forged"), "application/json", vec![], 401, "unauthenticated"),
            ("PATCH", format!("{inv_path}/{inv}"), o, "application/json", br#"{"roles": "viewer"}"#.to_vec(), 400, "invalid_body"),
        ];
        assert!(cases.len() >= 30);
        let mut failures = Vec::new();
        for (method, path, bearer, content_type, body, status, code) in cases {
            let answer = app.raw(method, &path, bearer, content_type, body).await;
            let ok = answer.status == status
                && answer.body["code"] == code
                && answer.content_type.starts_with("application/problem+json");
            if !ok {
                failures.push(format!(
                    "{method} {path}: {} {} ({}) expected {status} {code}",
                    answer.status, answer.body, answer.content_type
                ));
            }
        }
        assert!(failures.is_empty(), "{url}:\n{}", failures.join("\n"));

        // Nothing was invited by the bad requests.
        let listed = app.get(&format!("{inv_path}?limit=100"), o).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 2, "{url}: owner's and someone's only");
        // The idempotency key is checked too.
        let long_key = "k".repeat(300);
        let resp = app
            .http
            .post(format!("{}/v1/sessions", app.base))
            .header("idempotency-key", long_key)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{url}");
    }
}
