//! Crash safety: `admit serve` and `admit worker relay` as real processes,
//! killed with SIGKILL mid-load and restarted. Every request answered 2xx is
//! in the log, the hash chains verify, a replay equals the live read models,
//! and the topic holds every event (a duplicate only ever being the same
//! event published again). The mailer's side (no invitation mailed twice
//! across kills) is `kafka_workers.rs`'s
//! `five_hundred_invitations_with_the_mailer_killed_twice_are_mailed_once_each`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::BaseConsumer;
use rdkafka::message::{Headers, Message};
use serde_json::json;

const SECRET: &str = "2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a";

/// `admit <args>` over `url` with the test key (the one `admit_on` uses).
fn admit_command(url: &str, data: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_admit"));
    c.args(args)
        .env("ADMIT_DATABASE_URL", url)
        .env("ADMIT_SECRET_KEY", SECRET)
        .env("ADMIT_DATA_DIR", data)
        .env("ADMIT_PUBLIC_URL", "http://admit.test")
        .env("ADMIT_OPERATOR_TOKEN", OPERATOR)
        .env("ADMIT_LOG", "warn")
        .env_remove("ADMIT_SMTP_URL")
        .env_remove("ADMIT_KAFKA_BROKERS");
    c
}

/// `admit serve` on `port` (embedded workers on: mail goes to the data folder).
fn serve(url: &str, data: &std::path::Path, port: u16) -> std::process::Child {
    admit_command(url, data, &["serve"])
        .env("ADMIT_BIND", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("the admit binary")
}

/// Polls `/readyz` until it answers 200 (bounded); fails if the server exits.
async fn ready(http: &reqwest::Client, base: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "admit serve exited before it was ready");
        assert!(Instant::now() < deadline, "admit serve never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the load's clients were told succeeded (2xx), and what they could
/// not finish because the server went away.
#[derive(Default)]
struct Acknowledged {
    invited: Mutex<Vec<String>>,
    accepted: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
    listed: AtomicUsize,
    total: AtomicUsize,
    /// Requests the server took and never answered (killed mid-request).
    interrupted: AtomicUsize,
    /// Connections refused while the server was down.
    unreachable: AtomicUsize,
    refused: Mutex<Vec<String>>,
}

impl Acknowledged {
    /// Counts one 2xx answer.
    fn ok(&self) {
        self.total.fetch_add(1, Ordering::SeqCst);
    }

    /// Notes a request that got no answer: cut off by a kill, or refused
    /// while the server was down.
    fn lost(&self, e: &reqwest::Error) {
        match e.is_connect() {
            true => self.unreachable.fetch_add(1, Ordering::SeqCst),
            false => self.interrupted.fetch_add(1, Ordering::SeqCst),
        };
    }
}

/// One client of the load: invites, accepts every third invitation,
/// revokes another third, and lists, until `stop`. A request the server
/// did not answer is noted and the client moves on (after a short pause,
/// while the server restarts).
async fn client(
    n: usize,
    base: String,
    owner: String,
    account: String,
    acked: Arc<Acknowledged>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let pause = || tokio::time::sleep(Duration::from_millis(50));
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let invite = http
            .post(format!("{base}/v1/accounts/{account}/invitations"))
            .bearer_auth(&owner)
            .json(&json!({ "email": format!("load-{n}-{i}@example.com"), "roles": ["viewer"] }))
            .send()
            .await;
        let body: serde_json::Value = match invite {
            Ok(r) if r.status() == 201 => match r.json().await {
                Ok(b) => b,
                Err(e) => {
                    acked.lost(&e);
                    continue;
                }
            },
            Ok(r) => {
                acked.refused.lock().unwrap().push(format!("invite {}", r.status()));
                continue;
            }
            Err(e) => {
                acked.lost(&e);
                pause().await;
                continue;
            }
        };
        let id = body["id"].as_str().unwrap().to_string();
        acked.invited.lock().unwrap().push(id.clone());
        acked.ok();
        match i % 3 {
            1 => {
                let token = token_of(&body["accept_url"]);
                let r = http
                    .post(format!("{base}/v1/invitations/accept"))
                    .json(&json!({ "token": token, "name": format!("Load {n} {i}"), "password": PASSWORD }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        acked.accepted.lock().unwrap().push(id);
                        acked.ok();
                    }
                    Ok(r) => acked.refused.lock().unwrap().push(format!("accept {}", r.status())),
                    Err(e) => acked.lost(&e),
                }
            }
            2 => {
                let r = http
                    .delete(format!("{base}/v1/accounts/{account}/invitations/{id}"))
                    .bearer_auth(&owner)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        acked.revoked.lock().unwrap().push(id);
                        acked.ok();
                    }
                    Ok(r) => acked.refused.lock().unwrap().push(format!("revoke {}", r.status())),
                    Err(e) => acked.lost(&e),
                }
            }
            _ => {}
        }
        let list =
            http.get(format!("{base}/v1/accounts/{account}/invitations?limit=20")).bearer_auth(&owner).send().await;
        match list {
            Ok(r) if r.status() == 200 => {
                acked.listed.fetch_add(1, Ordering::SeqCst);
                acked.ok();
            }
            Ok(r) => acked.refused.lock().unwrap().push(format!("list {}", r.status())),
            Err(e) => acked.lost(&e),
        }
    }
}

/// Waits until `acked` counted `n` 2xx answers (bounded).
async fn until_acknowledged(acked: &Acknowledged, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while acked.total.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the load stalled at {} answers", acked.total.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_five_times_under_load_keeps_every_acknowledged_write() {
    const CLIENTS: usize = 6;
    const KILLS: usize = 5;
    const ANSWERS_BETWEEN_KILLS: usize = 40;
    let url = admit_ledger::testing::fresh_postgres_url().await;
    let data = temp_dir("crash");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = serve(&url, &data, port);
    ready(&http, &base, &mut server).await;

    let app = TestApp { base: base.clone(), http: http.clone(), admit: admit_on(&url).await };
    let (account, owner) = app.account_without_limits("CR-1", "owner@crash.example.com").await;

    let acked = Arc::new(Acknowledged::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| tokio::spawn(client(n, base.clone(), owner.clone(), account.clone(), acked.clone(), stop.clone())))
        .collect();

    // Kill on progress: after every ANSWERS_BETWEEN_KILLS more 2xx answers.
    for kill in 1..=KILLS {
        until_acknowledged(&acked, kill * ANSWERS_BETWEEN_KILLS).await;
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        server = serve(&url, &data, port);
        ready(&http, &base, &mut server).await;
    }
    // The restarted server keeps serving the load.
    until_acknowledged(&acked, (KILLS + 1) * ANSWERS_BETWEEN_KILLS).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }

    let invited = acked.invited.lock().unwrap().clone();
    let accepted = acked.accepted.lock().unwrap().clone();
    let revoked = acked.revoked.lock().unwrap().clone();
    let interrupted = acked.interrupted.load(Ordering::SeqCst);
    let unreachable = acked.unreachable.load(Ordering::SeqCst);
    eprintln!(
        "{KILLS} kills: {} answers 2xx ({} invited, {} accepted, {} revoked, {} lists), {interrupted} requests cut off, \
         {unreachable} connections refused while down, refused: {:?}",
        acked.total.load(Ordering::SeqCst),
        invited.len(),
        accepted.len(),
        revoked.len(),
        acked.listed.load(Ordering::SeqCst),
        acked.refused.lock().unwrap()
    );
    assert!(interrupted > 0, "the kills hit requests in flight");
    assert!(acked.refused.lock().unwrap().is_empty(), "no request was refused: {:?}", acked.refused.lock().unwrap());

    // Every invitation answered 201 is in the log and readable, in the state
    // its last 2xx answer left it.
    let admit_ledger::Database::Postgres(pool) = &app.admit.db else { unreachable!() };
    let logged: Vec<String> = sqlx::query_scalar("SELECT stream_id FROM events WHERE event_type = 'InvitationSent'")
        .fetch_all(pool)
        .await
        .unwrap();
    let logged: BTreeSet<String> = logged.into_iter().collect();
    let accepted_set: BTreeSet<&String> = accepted.iter().collect();
    let revoked_set: BTreeSet<&String> = revoked.iter().collect();
    for id in &invited {
        assert!(logged.contains(&format!("invitation-{id}")), "invitation {id} was answered 201 but is not in the log");
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        assert_eq!(inv.status, 200, "{id}: {inv:?}");
        let want = if accepted_set.contains(id) {
            "accepted"
        } else if revoked_set.contains(id) {
            "revoked"
        } else {
            "pending"
        };
        // An invitation whose accept or revoke was cut off may have moved on.
        if want != "pending" {
            assert_eq!(inv.body["status"], want, "{id}");
        }
    }

    // The hash chains verify and a full replay equals the live read models.
    server.kill().unwrap();
    server.wait().unwrap();
    let verify = admit_command(&url, &data, &["verify"]).output().unwrap();
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && said.starts_with("OK"),
        "admit verify: {said} {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_replay_matches(&app.admit, "after 5 SIGKILLs").await;
}

// ---------------------------------------------------------------------------
// The relay, killed while events are appended.
// ---------------------------------------------------------------------------

const TOPIC: &str = "admit.events";
const PARTITIONS: i32 = 3;

/// `admit worker relay` publishing `url`'s log to `broker`.
fn relay(url: &str, data: &std::path::Path, broker: &Broker) -> std::process::Child {
    admit_command(url, data, &["worker", "relay"])
        .env("ADMIT_KAFKA_BROKERS", &broker.addr)
        .env("ADMIT_KAFKA_TOPIC", TOPIC)
        .spawn()
        .expect("the admit binary")
}

/// One message on the topic: event id, stream, version, position header, payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Published {
    id: String,
    stream: String,
    version: i64,
    position: String,
    payload: Vec<u8>,
}

/// Reads what the topic has for about `wait`.
fn read(consumer: &BaseConsumer, wait: Duration, into: &mut Vec<Published>) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        let Some(m) = consumer.poll(Duration::from_millis(50)) else { continue };
        let m = m.unwrap();
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            for i in 0..h.count() {
                let header = h.get(i);
                headers.insert(
                    header.key.to_string(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).to_string(),
                );
            }
        }
        let payload = m.payload().unwrap().to_vec();
        let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        into.push(Published {
            id: headers["ce_id"].clone(),
            stream: body["stream_id"].as_str().unwrap().to_string(),
            version: body["stream_version"].as_i64().unwrap(),
            position: headers["admit_position"].clone(),
            payload,
        });
    }
}

/// SIGKILLs the relay after the broker acknowledged a batch and before the
/// relay recorded its checkpoint: the checkpoint table is locked against
/// writes (a table lock takes no transaction id, so the gap-safe reads go
/// on), the relay publishes, is acknowledged and waits on the lock; then it
/// is killed, its pending checkpoint write is cancelled with its connection
/// (as a crash would lose it), and the lock is released.
async fn kill_before_checkpoint(pool: &sqlx::PgPool, relaying: &mut std::process::Child) {
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE worker_checkpoints IN EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let blocked = loop {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' \
             AND query LIKE 'INSERT INTO worker_checkpoints%'",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        if !pids.is_empty() {
            break pids;
        }
        assert!(Instant::now() < deadline, "the relay never reached its checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    relaying.kill().unwrap(); // SIGKILL
    relaying.wait().unwrap();
    for pid in blocked {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(pool).await.unwrap();
    }
    lock.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_killed_four_times_publishes_every_event_and_only_republishes_duplicates() {
    const KILLS: usize = 4;
    const MESSAGES_BETWEEN_KILLS: usize = 30;
    let broker = Broker::with_topic(TOPIC, PARTITIONS).await;
    let url = admit_ledger::testing::fresh_postgres_url().await;
    let data = temp_dir("relay-crash");
    let app = spawn_app(&url).await;
    let (account, owner) = app.account_without_limits("CR-2", "owner@relay-crash.example.com").await;

    // Events keep being appended the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let appending = tokio::spawn({
        let (base, http, owner, account, stop) =
            (app.base.clone(), app.http.clone(), owner.clone(), account.clone(), stop.clone());
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let r = http
                    .post(format!("{base}/v1/accounts/{account}/invitations"))
                    .bearer_auth(&owner)
                    .json(&json!({ "email": format!("relay-{n}@example.com"), "roles": ["viewer"] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                if n % 4 == 0 {
                    let id = r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
                    let r = http
                        .delete(format!("{base}/v1/accounts/{account}/invitations/{id}"))
                        .bearer_auth(&owner)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
                n += 1;
            }
            n
        }
    });

    let consumer = broker.reader(TOPIC, PARTITIONS);

    // Kill on progress: after every MESSAGES_BETWEEN_KILLS more messages;
    // every other kill lands in the window between the broker's
    // acknowledgement and the checkpoint (see `kill_before_checkpoint`).
    let admit_ledger::Database::Postgres(pool) = &app.admit.db else { unreachable!() };
    let mut relaying = relay(&url, &data, &broker);
    let mut seen: Vec<Published> = Vec::new();
    for kill in 1..=KILLS {
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.len() < kill * MESSAGES_BETWEEN_KILLS {
            assert!(Instant::now() < deadline, "the relay stalled at {} messages", seen.len());
            assert!(relaying.try_wait().unwrap().is_none(), "the relay exited by itself");
            read(&consumer, Duration::from_millis(100), &mut seen);
        }
        if kill % 2 == 0 {
            kill_before_checkpoint(pool, &mut relaying).await;
        } else {
            relaying.kill().unwrap(); // SIGKILL
            relaying.wait().unwrap();
        }
        relaying = relay(&url, &data, &broker);
    }
    stop.store(true, Ordering::SeqCst);
    let appended = appending.await.unwrap();

    let expected: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT event_id, position FROM events ORDER BY position").fetch_all(pool).await.unwrap();
    let wanted: BTreeSet<String> = expected.iter().map(|(id, _)| id.to_string()).collect();
    // Read until every event arrived and nothing more came for 2 s (a late
    // duplicate would show up).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let before = seen.len();
        read(&consumer, Duration::from_secs(2), &mut seen);
        let ids: BTreeSet<&String> = seen.iter().map(|p| &p.id).collect();
        if ids.len() >= wanted.len() && seen.len() == before {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of {} events reached the topic", ids.len(), wanted.len());
    }
    relaying.kill().unwrap();
    relaying.wait().unwrap();

    let ids: BTreeSet<String> = seen.iter().map(|p| p.id.clone()).collect();
    assert_eq!(ids, wanted, "every event of the log on the topic, nothing else");
    // A duplicate is the same event published again: same position, same bytes.
    let mut first: BTreeMap<&str, &Published> = BTreeMap::new();
    for p in &seen {
        let earlier = *first.entry(&p.id).or_insert(p);
        assert_eq!(earlier, p, "event {} published twice with different contents", p.id);
    }
    let by_position: BTreeMap<&str, &str> = seen.iter().map(|p| (p.position.as_str(), p.id.as_str())).collect();
    assert_eq!(by_position.len(), ids.len(), "one event per position");
    // Taking each event's first copy, every stream is in order.
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut once = BTreeSet::new();
    for p in seen.iter().filter(|p| once.insert(p.id.clone())) {
        let prev = last.insert(&p.stream, p.version).unwrap_or(0);
        assert_eq!(p.version, prev + 1, "stream {} out of order", p.stream);
    }
    let duplicates = seen.len() - ids.len();
    assert!(duplicates >= KILLS / 2, "each kill before the checkpoint republished its batch ({duplicates})");
    eprintln!("relay killed {KILLS} times while {appended} invitations were made: {} events, {} messages, {duplicates} re-publications", ids.len(), seen.len());
    assert!(appended > 0);
}
