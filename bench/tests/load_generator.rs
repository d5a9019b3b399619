//! Keeps the HTTP load generator (`load`) working at CI size, on both
//! backends: against the API router served in-process on a random port, each
//! of its three mixes runs for a second with two clients, every request it
//! makes succeeds, and its table reports the kinds the mix is made of, the
//! server's CPU and, on PostgreSQL, the database's write transactions.

use std::collections::BTreeMap;
use std::process::Command;

use admit_api::http::{router, ApiContext, HttpConfig};
use admit_api::{Admit, Secrets};
use admit_domain::password::PasswordPolicy;
use admit_ledger::Database;

const OPERATOR: &str = "load-generator-test-operator";

/// Serves the router over a fresh database at `url`; returns its base URL.
async fn serve(url: &str) -> String {
    let admit = Admit::new(Database::connect(url).await.unwrap(), Secrets::from_master([42; 32]), PasswordPolicy::Nist);
    admit.prepare().await.unwrap();
    let config =
        HttpConfig { public_url: "http://admit.test".into(), app_url: None, operator_token: Some(OPERATOR.into()) };
    let app = router(ApiContext::new(admit, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    format!("http://{addr}")
}

/// One row of the generator's table: requests answered with success, and
/// errors.
#[derive(Debug)]
struct Row {
    ok: u64,
    errors: u64,
}

/// Runs `load` against `base` with `extra` options; its table by kind.
async fn run_load(base: &str, database_url: &str, extra: &[&str]) -> (BTreeMap<String, Row>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_load"));
    cmd.args(["--url", base, "--operator-token", OPERATOR, "--clients", "2", "--seconds", "1"])
        .args(["--server-pid", &std::process::id().to_string(), "--database-url", database_url])
        .args(extra);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "load failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut rows = BTreeMap::new();
    for line in stdout.lines() {
        let cells: Vec<&str> = line.split_whitespace().collect();
        // kind, req/s, p50, p95, p99, max, ok, errors
        if cells.len() == 8 && cells[0] != "kind" {
            let row = Row { ok: cells[6].parse().unwrap(), errors: cells[7].parse().unwrap() };
            rows.insert(cells[0].to_string(), row);
        }
    }
    (rows, stdout)
}

/// The number right after the first `label` in `stdout`.
fn number_after(stdout: &str, label: &str) -> Option<f64> {
    let rest = &stdout[stdout.find(label)? + label.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_runs_each_mix_on_both_backends() {
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let base = serve(&url).await;
        let mixes: [(&[&str], &[&str]); 3] = [
            (&[], &["invite"]),
            (&["--invites-only", "--accounts", "2"], &["invite"]),
            (&["--list-only", "--seed-invitations", "300"], &["list-one", "list-some", "list-all"]),
        ];
        for (options, kinds) in mixes {
            let (rows, stdout) = run_load(&base, &url, options).await;
            for kind in kinds {
                assert!(rows.get(*kind).is_some_and(|r| r.ok > 0), "{url} {options:?}: no {kind} answered\n{stdout}");
            }
            for (kind, row) in &rows {
                assert_eq!(row.errors, 0, "{url} {options:?}: {kind} failed\n{stdout}");
            }
            assert!(stdout.contains("server rss: idle"), "{url} {options:?}: no memory line\n{stdout}");
            // The server here is this test process, which answered every request.
            let server_cores = number_after(&stdout, "server ").expect("a cpu line");
            assert!(server_cores > 0.0, "{url} {options:?}: the server used no CPU\n{stdout}");
            let transactions = number_after(&stdout, "database: ");
            match url.starts_with("postgres") {
                // Every invitation is at least one write transaction of its own.
                true => assert!(
                    transactions.expect("a database line") >= rows.get("invite").map_or(0, |r| r.ok) as f64,
                    "{url} {options:?}: fewer write transactions than invitations\n{stdout}"
                ),
                false => assert_eq!(transactions, None, "{url}: SQLite has no transaction counter\n{stdout}"),
            }
        }
    }
}
