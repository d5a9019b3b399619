//! PostgreSQL restarted under load (issue 7, item 3): a private PostgreSQL
//! cluster (so the machine's shared one keeps serving the other tests) is
//! stopped and started again while clients keep inviting through a real
//! `admit serve`. During the outage every answer is a 503 problem+json
//! `database_unavailable` within the configured timeout, never a 500 or a
//! hang, and `/readyz` says so; afterwards the service recovers by itself
//! and every invitation that got a 201 is in the log.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// How long the server may wait for a connection (ADMIT_DATABASE_TIMEOUT_MS).
const TIMEOUT_MS: u64 = 1500;

/// A PostgreSQL cluster of this test's own, in a temporary folder, on a
/// free port, with trust authentication.
struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
}

/// The folder of PostgreSQL's server programs (`initdb`, `pg_ctl`).
fn postgres_bin() -> PathBuf {
    let base = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> =
        std::fs::read_dir(base).expect("PostgreSQL server programs").flatten().map(|e| e.path()).collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join("bin")
}

/// Runs a PostgreSQL program; as root it runs as `postgres`, which the
/// server requires.
fn pg(program: &str, args: &[&str]) -> std::process::Output {
    let bin = postgres_bin().join(program);
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false) || unsafe_is_root();
    let mut cmd = if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl PrivatePostgres {
    fn create() -> PrivatePostgres {
        let dir = std::env::temp_dir().join(format!("admit-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if unsafe_is_root() {
            let chown = Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).status().unwrap();
            assert!(chown.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let data = dir.join("data");
        let out = pg("initdb", &["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "--no-sync"]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let db = PrivatePostgres { dir, port };
        db.start();
        db
    }

    fn start(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.display());
        let out =
            pg("pg_ctl", &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &options, "-w", "start"]);
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn stop(&self) {
        let data = self.dir.join("data");
        let out = pg("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"]);
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = pg("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One answer seen by the load: status, problem code and latency.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    code: String,
    content_type: String,
    latency: Duration,
    during_outage: bool,
    invitation: Option<String>,
}

async fn ready(http: &reqwest::Client, base: &str) -> u16 {
    http.get(format!("{base}/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_gives_503_then_recovers() {
    let postgres = PrivatePostgres::create();
    let data = common::temp_dir("db-faults");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _server = Server(
        Command::new(env!("CARGO_BIN_EXE_admit"))
            .arg("serve")
            .env("ADMIT_DATA_DIR", &data)
            .env("ADMIT_DATABASE_URL", postgres.url())
            .env("ADMIT_DATABASE_TIMEOUT_MS", TIMEOUT_MS.to_string())
            .env("ADMIT_BIND", format!("127.0.0.1:{port}"))
            .env("ADMIT_PUBLIC_URL", "http://admit.test")
            .env("ADMIT_OPERATOR_TOKEN", common::OPERATOR)
            .env("ADMIT_LOG", "warn")
            .env("ADMIT_MAIL_DIR", data.join("mail"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready(&http, &base).await != 200 {
        assert!(Instant::now() < deadline, "admit serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let app =
        common::TestApp { base: base.clone(), http: http.clone(), admit: common::admit_on(&postgres.url()).await };
    let (account, owner) = app.account_without_limits("O-1", "owner@outage.example.com").await;

    // Eight clients invite until told to stop, recording every answer.
    let outage = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let counter = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (http, base, account, owner) = (http.clone(), base.clone(), account.clone(), owner.clone());
        let (outage, stop, seen, counter) = (outage.clone(), stop.clone(), seen.clone(), counter.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let during_outage = outage.load(Ordering::SeqCst);
                let started = Instant::now();
                let resp = http
                    .post(format!("{base}/v1/accounts/{account}/invitations"))
                    .bearer_auth(&owner)
                    .json(&json!({ "email": format!("person{n}@outage.example.com"), "roles": ["viewer"] }))
                    .send()
                    .await
                    .expect("every request gets an answer");
                let status = resp.status().as_u16();
                let content_type =
                    resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body: serde_json::Value = resp.json().await.unwrap_or(serde_json::Value::Null);
                seen.lock().unwrap().push(Seen {
                    status,
                    code: body["code"].as_str().unwrap_or("").to_string(),
                    content_type,
                    latency: started.elapsed(),
                    during_outage,
                    invitation: body["id"].as_str().map(str::to_string),
                });
            }
        }));
    }
    let count = |pred: &dyn Fn(&Seen) -> bool| seen.lock().unwrap().iter().filter(|s| pred(s)).count();
    let until = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    until("invitations before the outage", &|| count(&|s| s.status == 201) >= 50);

    outage.store(true, Ordering::SeqCst);
    postgres.stop();
    until("503 answers during the outage", &|| count(&|s| s.during_outage && s.status == 503) >= 16);
    let readiness = ready(&http, &base).await;
    assert_eq!(readiness, 503, "/readyz while PostgreSQL is down");
    postgres.start();
    let restarted = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&http, &base).await != 200 {
        assert!(Instant::now() < deadline, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered_in = restarted.elapsed();
    outage.store(false, Ordering::SeqCst);
    let before = count(&|s| !s.during_outage && s.status == 201);
    until("invitations after the restart", &|| count(&|s| !s.during_outage && s.status == 201) >= before + 50);
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    let limit = Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(2);
    for s in &seen {
        assert!(s.status == 201 || s.status == 503, "only 201 or 503, never {s:?}");
        if s.status == 503 {
            assert_eq!(
                (s.code.as_str(), s.content_type.as_str()),
                ("database_unavailable", "application/problem+json"),
                "{s:?}"
            );
        }
        assert!(s.latency <= limit, "an answer took {:?}, beyond the {TIMEOUT_MS} ms timeout: {s:?}", s.latency);
    }

    // Every 201 is in the log: each invitation reads back.
    let created: Vec<&String> = seen.iter().filter_map(|s| s.invitation.as_ref()).collect();
    for id in &created {
        let r = http
            .get(format!("{base}/v1/accounts/{account}/invitations/{id}"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "invitation {id} answered 201 but is not there");
    }
    let verify = Command::new(env!("CARGO_BIN_EXE_admit"))
        .arg("verify")
        .env("ADMIT_DATA_DIR", &data)
        .env("ADMIT_DATABASE_URL", postgres.url())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&verify.stdout).contains("OK"), "{verify:?}");
    eprintln!(
        "{} answers: {} created, {} refused with 503; /readyz recovered {recovered_in:?} after the start; slowest answer {:?}",
        seen.len(),
        created.len(),
        seen.iter().filter(|s| s.status == 503).count(),
        seen.iter().map(|s| s.latency).max().unwrap()
    );
}

/// Processes that start together on one fresh database (`serve` and the
/// workers) prepare it one at a time: four at once all succeed and leave
/// one set of tables (this failed with a duplicate key before preparation
/// took an advisory lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_preparing_one_database_at_once_do_not_collide() {
    for _ in 0..3 {
        let url = admit_ledger::testing::fresh_postgres_url().await;
        let mut starting = Vec::new();
        for _ in 0..4 {
            let url = url.clone();
            starting.push(tokio::spawn(async move {
                let db = admit_ledger::Database::connect(&url).await.unwrap();
                let admit = admit_api::Admit::new(
                    db,
                    admit_api::Secrets::from_master([42; 32]),
                    admit_domain::password::PasswordPolicy::Nist,
                );
                admit.prepare().await
            }));
        }
        for s in starting {
            s.await.unwrap().expect("prepare while others prepare");
        }
    }
}
