//! Shared set-up for the end-to-end tests: an `Admit` per fresh database,
//! and the steps that open an account with a signed-in owner.
#![allow(dead_code)]

mod faulty_smtp;
#[allow(unused_imports)]
pub use faulty_smtp::*;

use admit_api::commands::{InviteRequest, OpenAccount};
use admit_api::{Admit, RequestContext, Secrets};
use admit_domain::access::Access;
use admit_domain::ids::{AccountId, Actor, UserId};
use admit_domain::invitation::Channel;
use admit_domain::password::PasswordPolicy;
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, PersonName, RoleName};
use admit_ledger::Database;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A password the default (NIST) policy accepts.
pub const PASSWORD: &str = "violet kettle under seventeen clouds";

/// The application over a migrated database at `url`, with a fixed key.
pub async fn admit_on(url: &str) -> Admit {
    let db = Database::connect(url).await.expect("connect");
    let admit = Admit::new(db, Secrets::from_master([42; 32]), PasswordPolicy::Nist);
    admit.prepare().await.expect("prepare");
    admit
}

/// One `Admit` per backend: SQLite, then PostgreSQL.
pub async fn admits() -> Vec<(String, Admit)> {
    let mut out = Vec::new();
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let admit = admit_on(&url).await;
        out.push((url, admit));
    }
    out
}

/// An Admit on a fresh PostgreSQL database.
pub async fn admit_on_postgres() -> Admit {
    admit_on(&admit_ledger::testing::fresh_postgres_url().await).await
}

pub fn email(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

pub fn name(s: &str) -> PersonName {
    PersonName::parse(s).unwrap()
}

pub fn role(s: &str) -> RoleName {
    RoleName::parse(s).unwrap()
}

/// The context of a signed-in user.
pub fn as_user(user: UserId) -> RequestContext {
    RequestContext::new(Actor::User(user), Channel::Session)
}

/// Opens an account with `seats` and has its owner accept; returns the
/// account and the owner.
pub async fn account_with_owner(admit: &Admit, customer_number: &str, seats: u32) -> (AccountId, UserId) {
    let opened = admit
        .open_account(
            &RequestContext::cli(),
            OpenAccount {
                name: AccountName::parse("Acme").unwrap(),
                customer_number: CustomerNumber::parse(customer_number).unwrap(),
                seats,
                owner_email: email(&format!("owner-{customer_number}@example.com")),
                owner_name: Some(name("Olga Owner")),
            },
        )
        .await
        .expect("open account");
    let owner = admit
        .accept_as_new_user(opened.owner_invitation.token.as_str(), name("Olga Owner"), PASSWORD)
        .await
        .expect("owner accepts");
    (opened.account_id, owner)
}

/// An invitation request for `to` with `roles`.
pub fn invite(to: &str, roles: &[&str]) -> InviteRequest {
    InviteRequest {
        email: email(to),
        name: None,
        access: Access::roles(roles.iter().map(|r| role(r))),
        expires_in: None,
        metadata: None,
        redirect_url: None,
    }
}

/// Every cell of every table of the database as one text, to search for
/// things that must not be stored (tokens, passwords, erased emails).
pub async fn everything_stored(admit: &Admit) -> String {
    let mut out = String::new();
    match &admit.db {
        Database::Postgres(pool) => {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            for t in tables {
                let text: Option<String> =
                    sqlx::query_scalar(&format!("SELECT string_agg(t::text, E'\\n') FROM \"{t}\" t"))
                        .fetch_one(pool)
                        .await
                        .unwrap();
                out.push_str(&text.unwrap_or_default());
                out.push('\n');
            }
        }
        Database::Sqlite { reader, .. } => {
            let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(reader)
                .await
                .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                    .fetch_all(reader)
                    .await
                    .unwrap();
                let expr = cols.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {expr} FROM \"{t}\"")).fetch_all(reader).await.unwrap();
                out.push_str(&rows.join("\n"));
                out.push('\n');
            }
        }
    }
    out
}

/// Rebuilds every read model into fresh tables and asserts they equal the
/// live ones, table by table.
///
/// It rebuilds twice: as `admit replay` does, and with batches of 7 events
/// and at most 3 rows per table in memory, so that rows are written out,
/// dropped and read back again all the time.
pub async fn assert_replay_matches(admit: &Admit, label: &str) {
    use admit_projections::rebuild::RebuildOptions;
    let tight = RebuildOptions { resident_rows: 3, batch: 7 };
    for (options, how) in [(RebuildOptions::default(), "default"), (tight, "tight memory")] {
        assert_rebuild_matches(admit, &format!("{label} ({how})"), options).await;
    }
}

async fn assert_rebuild_matches(admit: &Admit, label: &str, options: admit_projections::rebuild::RebuildOptions) {
    let prefix = "rebuild_";
    admit_projections::rebuild::rebuild_into_with(&admit.db, &admit.secrets.lookup, prefix, options).await.unwrap();
    let live = admit_projections::rebuild::dump(&admit.db, "").await.unwrap();
    let rebuilt = admit_projections::rebuild::dump(&admit.db, prefix).await.unwrap();
    for ((table, a), (_, b)) in live.iter().zip(&rebuilt) {
        // Only the rows that differ, so a failure reads.
        let only_live: Vec<_> = a.iter().filter(|r| !b.contains(r)).collect();
        let only_rebuilt: Vec<_> = b.iter().filter(|r| !a.contains(r)).collect();
        assert!(
            only_live.is_empty() && only_rebuilt.is_empty() && a.len() == b.len(),
            "{label}: table {table} differs after replay ({} live rows, {} rebuilt)\nonly live: {only_live:?}\nonly rebuilt: {only_rebuilt:?}",
            a.len(),
            b.len()
        );
    }
    admit_projections::rebuild::discard(&admit.db, prefix).await.unwrap();
}

/// The operator secret of test servers.
pub const OPERATOR: &str = "operator-secret-for-tests";

/// A server on a random port over its own fresh database.
pub struct TestApp {
    /// `http://127.0.0.1:port`.
    pub base: String,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The application behind it (for the clock and direct checks).
    pub admit: Admit,
}

/// An answer: status, JSON body (Null when none), content type.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub content_type: String,
}

/// Starts `admit serve`'s router in-process on 127.0.0.1:0 over `url`.
pub async fn spawn_app(url: &str) -> TestApp {
    use admit_api::http::{router, ApiContext, HttpConfig};
    let admit = admit_on(url).await;
    let config = HttpConfig {
        public_url: "http://admit.test".into(),
        app_url: Some("http://app.test/home".into()),
        operator_token: Some(OPERATOR.into()),
    };
    let app = router(ApiContext::new(admit.clone(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>()).await.unwrap();
    });
    TestApp { base: format!("http://{addr}"), http: reqwest::Client::new(), admit }
}

/// One app per backend: SQLite, then PostgreSQL.
pub async fn apps() -> Vec<(String, TestApp)> {
    let mut out = Vec::new();
    for url in [admit_ledger::testing::fresh_sqlite_url(), admit_ledger::testing::fresh_postgres_url().await] {
        let app = spawn_app(&url).await;
        out.push((url, app));
    }
    out
}

impl TestApp {
    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        answer(resp).await
    }

    /// Sends a raw body with a content type (for malformed-input tests).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req =
            self.http.request(method, format!("{}{path}", self.base)).header("content-type", content_type).body(body);
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        self.call("GET", path, bearer, None).await
    }

    pub async fn post(&self, path: &str, bearer: Option<&str>, body: serde_json::Value) -> Answer {
        self.call("POST", path, bearer, Some(body)).await
    }

    /// Opens an account through the operator API; returns (account id, owner link token).
    pub async fn open_account(&self, number: &str, owner_email: &str, seats: u32) -> (String, String) {
        let a = self
            .post(
                "/v1/accounts",
                Some(OPERATOR),
                serde_json::json!({ "name": format!("Account {number}"), "customer_number": number, "owner_email": owner_email, "seats": seats }),
            )
            .await;
        assert_eq!(a.status, 201, "{a:?}");
        (a.body["account_id"].as_str().unwrap().to_string(), token_of(&a.body["accept_url"]))
    }

    /// Opens an account whose seats and daily quota never bite (for load
    /// and fault tests); returns the account id and the owner's session.
    pub async fn account_without_limits(&self, number: &str, owner_email: &str) -> (String, String) {
        let (account, owner_link) = self.open_account(number, owner_email, 100_000).await;
        let (_, owner) = self.accept_new(&owner_link, "Olga Owner").await;
        let raised = self
            .call(
                "PATCH",
                &format!("/v1/accounts/{account}"),
                Some(&owner),
                Some(serde_json::json!({ "daily_invitation_quota": 100_000 })),
            )
            .await;
        assert_eq!(raised.status, 200, "{raised:?}");
        (account, owner)
    }

    /// Accepts as a new user; returns (user id, session token).
    pub async fn accept_new(&self, token: &str, name: &str) -> (String, String) {
        let a = self
            .post(
                "/v1/invitations/accept",
                None,
                serde_json::json!({ "token": token, "name": name, "password": PASSWORD }),
            )
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        (a.body["user_id"].as_str().unwrap().to_string(), a.body["session_token"].as_str().unwrap().to_string())
    }

    /// Invites `email` with `roles` as `bearer`; returns the link token.
    pub async fn invite(&self, bearer: &str, account: &str, email: &str, roles: &[&str]) -> (String, String) {
        let a = self
            .post(
                &format!("/v1/accounts/{account}/invitations"),
                Some(bearer),
                serde_json::json!({ "email": email, "roles": roles }),
            )
            .await;
        assert_eq!(a.status, 201, "{a:?}");
        (a.body["id"].as_str().unwrap().to_string(), token_of(&a.body["accept_url"]))
    }

    /// An account with an owner and members of every built-in role, plus
    /// a custom-role member; returns the account id and each one's session.
    pub async fn team(&self, number: &str) -> Team {
        let (account, owner_link) = self.open_account(number, &format!("owner@{number}.example.com"), 50).await;
        let (owner_id, owner) = self.accept_new(&owner_link, "Olga Owner").await;
        let role = self
            .post(
                &format!("/v1/accounts/{account}/roles"),
                Some(&owner),
                serde_json::json!({ "name": "support", "permissions": ["account.read", "invitations.read", "invitations.create", "members.read"] }),
            )
            .await;
        assert_eq!(role.status, 201, "{role:?}");
        let mut sessions = std::collections::BTreeMap::new();
        let mut ids = std::collections::BTreeMap::new();
        for r in ["admin", "editor", "viewer", "support", "auditor"] {
            let (_, link) = self.invite(&owner, &account, &format!("{r}@{number}.example.com"), &[r]).await;
            let (id, session) = self.accept_new(&link, &format!("Member {r}")).await;
            sessions.insert(r.to_string(), session);
            ids.insert(r.to_string(), id);
        }
        sessions.insert("owner".into(), owner);
        ids.insert("owner".into(), owner_id);
        Team { account, sessions, ids }
    }
}

/// Runs `mailer` until the invitation's delivery state is `state`. Workers
/// read the gap-safe order, which waits for transactions in flight anywhere
/// on the PostgreSQL server (other tests'), so this polls, bounded.
pub async fn mail_until(
    app: &TestApp,
    mailer: &admit_workers::mailer::Mailer,
    owner: &str,
    account: &str,
    id: &str,
    state: &str,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        mailer.run_once().await.unwrap();
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(owner)).await.body;
        if inv["delivery_state"] == state {
            return inv;
        }
        assert!(Instant::now() < deadline, "delivery never reached {state}: {inv}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An account with a member of every kind.
pub struct Team {
    pub account: String,
    pub sessions: std::collections::BTreeMap<String, String>,
    pub ids: std::collections::BTreeMap<String, String>,
}

/// The link token at the end of an accept URL.
pub fn token_of(url: &serde_json::Value) -> String {
    url.as_str().unwrap().rsplit_once("/invite/").unwrap().1.to_string()
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = resp.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, body, content_type }
}

// ---------------------------------------------------------------------------
// Real services the worker tests start on loopback: a Kafka-protocol broker
// (tansu) and an SMTP server that keeps what it receives (aiosmtpd).
// ---------------------------------------------------------------------------

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("admit-{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every stored message under `dir` (recursively), quoted-printable soft
/// line breaks undone.
pub fn messages(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = std::fs::read_to_string(&p) {
                out.push(text.replace("=\r\n", "").replace("=\n", "").replace("=3D", "="));
            }
        }
    }
    out
}

pub fn to(messages: &[String], rcpt: &str) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.lines().any(|l| l.to_lowercase().starts_with("to:") && l.contains(rcpt)))
        .cloned()
        .collect()
}

pub fn link_in(message: &str) -> String {
    let start = message.find("http://admit.test/invite/").expect("an accept link") + "http://admit.test/invite/".len();
    message[start..start + 64].to_string()
}

/// The tansu broker binary: `ADMIT_TEST_TANSU`, or `tansu` on the PATH.
pub fn tansu() -> String {
    std::env::var("ADMIT_TEST_TANSU").unwrap_or_else(|_| "tansu".into())
}

pub struct Broker {
    pub child: std::process::Child,
    pub addr: String,
}

impl Broker {
    pub async fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &format!("tcp://{addr}"),
                "--advertised-listener-url",
                &format!("tcp://{addr}"),
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the tansu broker (scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(Instant::now() < deadline, "tansu did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Broker { child, addr }
    }
}

impl Broker {
    /// A broker with `topic` created with `partitions` partitions (with
    /// tansu's own command: rdkafka's admin call times out against it).
    pub async fn with_topic(topic: &str, partitions: i32) -> Broker {
        let broker = Broker::start().await;
        let created = std::process::Command::new(tansu())
            .args(["topic", "create", topic, "--broker", &format!("tcp://{}", broker.addr)])
            .args(["--partitions", &partitions.to_string()])
            .output()
            .unwrap();
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        broker
    }
}

impl Broker {
    /// Freezes the broker (SIGSTOP): connections stay open but nothing
    /// answers, as a broker that hangs or a partition that cuts it off.
    /// (A restart would lose tansu's in-memory topic.)
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// A consumer of every partition of `topic` from its beginning (no
    /// group to join, nothing committed): what the tests read the topic with.
    pub fn reader(&self, topic: &str, partitions: i32) -> rdkafka::consumer::BaseConsumer {
        use rdkafka::consumer::Consumer;
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", "admit-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        consumer
    }

    /// Lets a frozen broker go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SMTP server that keeps what it receives (aiosmtpd), on loopback.
pub struct SmtpSink {
    pub child: std::process::Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        SmtpSink::start_on(port).await
    }

    /// An SMTP server on `port` (a test may let the mailer fail on it first).
    pub async fn start_on(port: u16) -> SmtpSink {
        let dir = temp_dir("smtp");
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(dir.join("maildir"))
            .spawn()
            .expect("python3 with aiosmtpd (scripts/test installs it)");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "the SMTP sink did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SmtpSink { child, port, dir }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
