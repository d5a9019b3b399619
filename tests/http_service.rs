//! The service around the routes: OpenAPI covers every route, health and
//! readiness, metrics, request ids, Idempotency-Key, sign-in throttling,
//! links that ignore the Host header.

mod common;

use common::*;
use serde_json::json;

/// The routes of DESIGN.md's table that this server serves over JSON and
/// CSV (the HTML accept page, `GET /invite/{token}`, is not an API route).
const CONTRACT: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("post", "/v1/sessions"),
    ("delete", "/v1/sessions/current"),
    ("get", "/v1/me"),
    ("post", "/v1/accounts/{account}/invitations"),
    ("post", "/v1/accounts/{account}/invitations/bulk"),
    ("get", "/v1/accounts/{account}/invitations/bulk/template.csv"),
    ("get", "/v1/accounts/{account}/invitations.csv"),
    ("get", "/v1/accounts/{account}/members.csv"),
    ("get", "/v1/accounts/{account}/invitations"),
    ("get", "/v1/accounts/{account}/invitations/{id}"),
    ("patch", "/v1/accounts/{account}/invitations/{id}"),
    ("post", "/v1/accounts/{account}/invitations/{id}/resend"),
    ("delete", "/v1/accounts/{account}/invitations/{id}"),
    ("get", "/v1/invitations/preview"),
    ("post", "/v1/invitations/accept"),
    ("post", "/v1/invitations/decline"),
    ("get", "/v1/invitations/{id}/pixel.gif"),
    ("get", "/v1/accounts/{account}/members"),
    ("get", "/v1/accounts/{account}/members/{user}"),
    ("patch", "/v1/accounts/{account}/members/{user}"),
    ("delete", "/v1/accounts/{account}/members/{user}"),
    ("post", "/v1/accounts/{account}/members/{user}/deactivate"),
    ("post", "/v1/accounts/{account}/members/{user}/reactivate"),
    ("delete", "/v1/me/memberships/{account}"),
    ("get", "/v1/accounts/{account}/roles"),
    ("post", "/v1/accounts/{account}/roles"),
    ("patch", "/v1/accounts/{account}/roles/{role}"),
    ("delete", "/v1/accounts/{account}/roles/{role}"),
    ("get", "/v1/accounts/{account}/events"),
    ("get", "/v1/accounts/{account}"),
    ("patch", "/v1/accounts/{account}"),
    ("get", "/v1/accounts/{account}/api-keys"),
    ("post", "/v1/accounts/{account}/api-keys"),
    ("delete", "/v1/accounts/{account}/api-keys/{key}"),
];

#[tokio::test]
async fn openapi_documents_every_route_and_every_route_is_served() {
    let app = spawn_app(&admit_ledger::testing::fresh_sqlite_url()).await;
    let doc = app.get("/openapi.json", None).await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc.body["openapi"]);
    let paths = doc.body["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    for (method, path) in CONTRACT {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is missing from /openapi.json"
        );
    }
    // And everything documented answers (not the fallback 404 for unknown routes).
    for (method, path) in &documented {
        let concrete = path
            .replace("{account}", &uuid::Uuid::nil().to_string())
            .replace("{id}", &uuid::Uuid::nil().to_string())
            .replace("{user}", &uuid::Uuid::nil().to_string())
            .replace("{role}", "r")
            .replace("{key}", &uuid::Uuid::nil().to_string());
        let answer = app.call(&method.to_uppercase(), &concrete, None, None).await;
        assert!(
            !(answer.status == 404 && answer.body["detail"] == "route not found"),
            "{method} {path} is documented but not served"
        );
        assert_ne!(answer.status, 405, "{method} {path}");
    }
    let (_, ops) = paths.iter().next().unwrap();
    assert!(ops.as_object().unwrap().values().all(|op| op["responses"].is_object()));
}

#[tokio::test]
async fn health_metrics_request_ids_idempotency_throttle_and_links() {
    for (url, app) in apps().await {
        assert_eq!(app.get("/healthz", None).await.status, 200);
        let ready = app.get("/readyz", None).await;
        assert_eq!((ready.status, ready.body["status"].as_str()), (200, Some("ready")), "{url}");

        // Request ids: echoed when sane, generated otherwise.
        let r = app.http.get(format!("{}/healthz", app.base)).header("x-request-id", "abc-123").send().await.unwrap();
        assert_eq!(r.headers()["x-request-id"], "abc-123");
        let r = app.http.get(format!("{}/healthz", app.base)).header("x-request-id", "bad id!").send().await.unwrap();
        assert_ne!(r.headers()["x-request-id"], "bad id!");

        // Links use the configured public URL, whatever the Host header says.
        let resp = app
            .http
            .post(format!("{}/v1/accounts", app.base))
            .header("host", "evil.example")
            .header("x-forwarded-host", "evil.example")
            .bearer_auth(OPERATOR)
            .json(&json!({ "name": "Links", "customer_number": "L-1", "owner_email": "o@links.example.com" }))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["accept_url"].as_str().unwrap().starts_with("http://admit.test/invite/"), "{url}: {body}");
        let owner = app.accept_new(&token_of(&body["accept_url"]), "Olga").await.1;
        let account = body["account_id"].as_str().unwrap().to_string();

        // Idempotency-Key: the retry gets the first answer and invites once.
        let send = |key: &'static str, email: &'static str| {
            app.http
                .post(format!("{}/v1/accounts/{account}/invitations", app.base))
                .bearer_auth(&owner)
                .header("idempotency-key", key)
                .json(&json!({ "email": email, "roles": ["viewer"] }))
                .send()
        };
        let first = send("k-1", "idem@example.com").await.unwrap();
        assert_eq!(first.status().as_u16(), 201);
        let first: serde_json::Value = first.json().await.unwrap();
        let retry = send("k-1", "idem@example.com").await.unwrap();
        assert_eq!(retry.status().as_u16(), 201, "{url}");
        assert_eq!(retry.headers()["idempotent-replayed"], "true");
        let retry: serde_json::Value = retry.json().await.unwrap();
        assert_eq!(first["id"], retry["id"], "{url}: the retry returns the first answer");
        let other_body = send("k-1", "different@example.com").await.unwrap();
        assert_eq!(other_body.status().as_u16(), 400, "{url}: same key, other request");
        let listed = app.get(&format!("/v1/accounts/{account}/invitations?q=idem"), Some(&owner)).await;
        assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "{url}: invited once");

        // Metrics count requests by route template and events appended.
        let metrics = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains(r#"route="/v1/accounts/{account}/invitations""#), "{url}");
        assert!(metrics.contains("admit_http_request_duration_seconds_bucket"), "{url}");
        assert!(!metrics.contains(&account), "{url}: no concrete ids in labels");
        let appended = metrics.lines().find(|l| l.starts_with("admit_events_appended_total ")).unwrap();
        assert!(appended.split(' ').nth(1).unwrap().parse::<u64>().unwrap() >= 4, "{url}: {appended}");

        // Failed sign-ins are throttled; unknown and known emails answer alike.
        let unknown = app
            .post("/v1/sessions", None, json!({ "email": "nobody@example.com", "password": "wrong wrong wrong" }))
            .await;
        let known = app
            .post("/v1/sessions", None, json!({ "email": "o@links.example.com", "password": "wrong wrong wrong" }))
            .await;
        assert_eq!((unknown.status, &unknown.body["detail"]), (known.status, &known.body["detail"]), "{url}");
        for _ in 0..5 {
            app.post("/v1/sessions", None, json!({ "email": "o@links.example.com", "password": "wrong wrong wrong" }))
                .await;
        }
        let blocked =
            app.post("/v1/sessions", None, json!({ "email": "o@links.example.com", "password": PASSWORD })).await;
        assert_eq!((blocked.status, blocked.body["code"].as_str()), (429, Some("too_many_attempts")), "{url}");
    }
}
