//! Schemathesis (PyPI) against `/openapi.json`, signed in as an account's
//! owner: no request it generates, valid or not, gets a 5xx, an undocumented
//! status, a content type or a body that breaks the documented schema.
//!
//! Bounded for CI (`ADMIT_SCHEMATHESIS_MAX_EXAMPLES` examples per operation,
//! default 15, and `ADMIT_SCHEMATHESIS_MAX_TIME` seconds, default 90); a
//! long run raises both. `ADMIT_SCHEMATHESIS_SEED` picks the seed (default
//! fixed, so CI is reproducible), `ADMIT_TEST_SCHEMATHESIS` the CLI.

mod common;

use common::*;
use std::process::Command;

/// The schemathesis CLI: `ADMIT_TEST_SCHEMATHESIS`, or `schemathesis` on the PATH.
fn schemathesis() -> String {
    std::env::var("ADMIT_TEST_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.into())
}

/// Seeds an account with members of every role, a custom role, pending,
/// revoked and accepted invitations and an API key; returns the account,
/// the owner's session and the ids the generated requests are pinned to.
async fn seed(app: &TestApp) -> (Team, String, String) {
    let team = app.team("ST-1").await;
    let owner = team.sessions["owner"].as_str();
    let mut pending = String::new();
    for i in 0..3 {
        let (id, _) = app.invite(owner, &team.account, &format!("pending{i}@st.example.com"), &["viewer"]).await;
        pending = id;
    }
    let (revoked, _) = app.invite(owner, &team.account, "revoked@st.example.com", &["editor"]).await;
    let gone =
        app.call("DELETE", &format!("/v1/accounts/{}/invitations/{revoked}", team.account), Some(owner), None).await;
    assert!(gone.status < 300, "{gone:?}");
    let key = app
        .post(
            &format!("/v1/accounts/{}/api-keys", team.account),
            Some(owner),
            serde_json::json!({ "name": "ci", "permissions": ["invitations.read"] }),
        )
        .await;
    assert_eq!(key.status, 201, "{key:?}");
    let editor = team.ids["editor"].clone();
    (team, pending, editor)
}

/// The configuration file: every generated request is signed in as the
/// owner (the operator route with the operator token) and aimed at the
/// seeded account, invitation, member and role.
fn config(dir: &std::path::Path, owner: &str, account: &str, invitation: &str, member: &str) -> std::path::PathBuf {
    let path = dir.join("schemathesis.toml");
    let text = format!(
        r#"headers = {{ Authorization = "Bearer {owner}" }}

[parameters]
"path.account" = "{account}"
"path.id" = "{invitation}"
"path.user" = "{member}"
"path.role" = "support"

[generation]
allow-x00 = true

# The operator route takes the operator token, not a session.
[[operations]]
include-name = "POST /v1/accounts"
headers = {{ Authorization = "Bearer {OPERATOR}" }}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    let (team, invitation, member) = seed(&app).await;
    let dir = temp_dir("schemathesis");
    let owner = team.sessions["owner"].clone();
    let config = config(&dir, &owner, &team.account, &invitation, &member);
    let (base, work) = (app.base.clone(), dir.clone());
    let run = tokio::task::spawn_blocking(move || {
        Command::new(schemathesis())
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(format!("{base}/openapi.json"))
            .args(["--url", &base])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            // Signing out would end the session the rest of the run uses.
            .args(["--exclude-path", "/v1/sessions/current"])
            .args(["--max-examples", &setting("ADMIT_SCHEMATHESIS_MAX_EXAMPLES", "15")])
            .args(["--max-time", &setting("ADMIT_SCHEMATHESIS_MAX_TIME", "90")])
            .args(["--seed", &setting("ADMIT_SCHEMATHESIS_SEED", "20261123")])
            .args(["--request-timeout", "10", "--workers", "1", "--no-color", "--generation-database", "none"])
            .args(["--report", "junit", "--report-dir"])
            .arg(work.join("report"))
            .current_dir(&work)
            .output()
    })
    .await
    .unwrap()
    .expect("the schemathesis CLI (scripts/test installs it)");
    let output = format!("{}\n{}", String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "schemathesis failed ({}):\n{output}", run.status);
    // The warnings and the summary (phases, operations, test cases) stay
    // in the test's log; the whole output next to the report.
    std::fs::write(dir.join("output.txt"), &output).unwrap();
    let lines: Vec<&str> = output.lines().collect();
    eprintln!(
        "{}\n(all of it: {})",
        lines[lines.len().saturating_sub(80)..].join("\n"),
        dir.join("output.txt").display()
    );
    // A run that tested nothing would pass too: make sure it exercised the API.
    assert!(output.contains("passed") || output.contains("Passed"), "{output}");
}
