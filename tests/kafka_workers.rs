//! The workers as a Kafka deployment runs them: the relay publishes the log
//! to a real broker (tansu), and the mailer, expiry and analytics workers
//! consume the topic in their consumer groups; mail goes to a real SMTP
//! server (aiosmtpd).

mod common;

use std::time::{Duration, Instant};

use admit_workers::expiry::ExpiryConfig;
use admit_workers::mail::{Sender, Transport};
use admit_workers::mailer::MailerConfig;
use admit_workers::relay::{Relay, RelayConfig};
use admit_workers::topic::TopicConfig;
use admit_workers::Consumers;
use common::*;
use serde_json::json;

const TOPIC: &str = "admit.events";

fn relay_config(broker: &Broker) -> RelayConfig {
    RelayConfig {
        brokers: broker.addr.clone(),
        topic: TOPIC.into(),
        source: "admit.test".into(),
        delivery_timeout: Duration::from_secs(120),
        poll: Duration::from_millis(20),
    }
}

/// Consumer settings with a short session, so a restarted worker rejoins fast.
fn topic_config(broker: &Broker) -> TopicConfig {
    let mut t = TopicConfig::new(&broker.addr, TOPIC, "test");
    t.session_timeout = Duration::from_secs(3);
    t.wait = Duration::from_millis(100);
    t
}

fn mailer_config(smtp_port: u16) -> MailerConfig {
    MailerConfig {
        transport: Transport::smtp(&format!("smtp://127.0.0.1:{smtp_port}"), Duration::from_secs(10)).unwrap(),
        sender: Sender::parse("Admit <no-reply@admit.test>", None).unwrap(),
        public_url: "http://admit.test".into(),
        app_url: None,
        attempts: 5,
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        poll: Duration::from_millis(20),
        at_once: admit_workers::mailer::SENDING_AT_ONCE,
    }
}

/// Polls `check` until it gives a value, for at most `secs` seconds.
async fn until<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Kafka deployment in this process: a broker with the topic, an SMTP
/// server, the app on a fresh PostgreSQL database, the relay and every
/// consumer running in their groups.
struct Deployment {
    broker: Broker,
    sink: SmtpSink,
    app: TestApp,
    stop: tokio::sync::watch::Sender<bool>,
    relaying: tokio::task::JoinHandle<admit_workers::Result<()>>,
    consuming: tokio::task::JoinHandle<admit_workers::Result<()>>,
}

impl Deployment {
    async fn start() -> Deployment {
        let broker = Broker::with_topic(TOPIC, 3).await;
        let sink = SmtpSink::start().await;
        let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let relay = Relay::new(app.admit.db.clone(), relay_config(&broker)).unwrap();
        let relaying = tokio::spawn({
            let stopped = stopped.clone();
            async move { relay.run(stopped).await }
        });
        let consumers = Consumers::on_topic(
            app.admit.clone(),
            mailer_config(sink.port),
            ExpiryConfig::default(),
            &topic_config(&broker),
        )
        .unwrap();
        let consuming = tokio::spawn(consumers.run(stopped));
        Deployment { broker, sink, app, stop, relaying, consuming }
    }

    /// Stops the relay and the consumers; both must end without an error.
    async fn shut_down(self) {
        self.stop.send(true).unwrap();
        self.relaying.await.unwrap().unwrap();
        self.consuming.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invite_mail_click_accept_through_the_topic() {
    let deployment = Deployment::start().await;
    let (sink, app) = (&deployment.sink, &deployment.app);

    let (account, owner_link) = app.open_account("KW-1", "owner@kw.example.com", 10).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    let (id, _) = app.invite(&owner, &account, "ivy@example.com", &["viewer"]).await;

    let mail = until(90, "the invitation email at the SMTP server", || async {
        to(&messages(&sink.dir), "ivy@example.com").into_iter().next()
    })
    .await;
    let token = link_in(&mail);
    // The server keeps the message before its answer reaches the mailer:
    // wait for `delivered` before the invitee clicks.
    until(30, "delivered", || async {
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        (inv.body["delivery_state"] == "delivered").then_some(())
    })
    .await;
    assert_eq!(app.get(&format!("/v1/invitations/preview?token={token}"), None).await.status, 200);
    let accepted =
        app.post("/v1/invitations/accept", None, json!({ "token": token, "name": "Ivy", "password": PASSWORD })).await;
    assert_eq!(accepted.status, 200, "{accepted:?}");
    let members = app.get(&format!("/v1/accounts/{account}/members"), Some(&owner)).await;
    assert!(members.body.to_string().contains("ivy@example.com"), "the member appears: {}", members.body);

    let history = until(30, "the delivery history", || async {
        let inv = app.get(&format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner)).await;
        let states: Vec<String> = inv.body["delivery_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["state"].as_str().unwrap().to_string())
            .collect();
        (states.contains(&"delivered".to_string()) && inv.body["status"] == "accepted").then_some((states, inv.body))
    })
    .await;
    assert_eq!(history.0, ["processed", "delivered", "clicked"], "{}", history.1);
    assert_eq!(history.1["status"], "accepted");

    // The analytics consumer counted the same day from the topic.
    let funnel = until(30, "the funnel", || async {
        let f = app.get(&format!("/v1/accounts/{account}/analytics/funnel"), Some(&owner)).await;
        (f.body["total"]["accepted"] == 2 && f.body["total"]["delivered"] == 1).then_some(f.body)
    })
    .await;
    assert_eq!(funnel["total"]["invited"], 2, "{funnel}");
    assert_eq!(funnel["total"]["clicked"], 1, "{funnel}");

    deployment.shut_down().await;
}

/// `admit worker mailer` as its own process, consuming the topic.
fn mailer_process(url: &str, broker: &Broker, smtp_port: u16, data: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_admit"))
        .args(["worker", "mailer"])
        .env("ADMIT_DATABASE_URL", url)
        .env("ADMIT_SECRET_KEY", "2a".repeat(32))
        .env("ADMIT_DATA_DIR", data)
        .env("ADMIT_PUBLIC_URL", "http://admit.test")
        .env("ADMIT_KAFKA_BROKERS", &broker.addr)
        .env("ADMIT_KAFKA_TOPIC", TOPIC)
        .env("ADMIT_KAFKA_SESSION_TIMEOUT_MS", "3000")
        .env("ADMIT_SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
        .env("ADMIT_MAIL_BACKOFF_MS", "50")
        .env("ADMIT_LOG", "warn")
        .spawn()
        .expect("the admit binary")
}

/// The Message-ID of each invitation email to `bulk-*` invitees, by recipient.
fn invitation_mails(dir: &std::path::Path) -> Vec<(String, String)> {
    messages(dir)
        .iter()
        .filter_map(|m| {
            let to = m.lines().find(|l| l.to_lowercase().starts_with("to:"))?.to_string();
            let id = m.lines().find(|l| l.to_lowercase().starts_with("message-id:"))?.to_string();
            to.contains("bulk-").then_some((to, id))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_invitations_with_the_mailer_killed_twice_are_mailed_once_each() {
    const N: usize = 500;
    let broker = Broker::with_topic(TOPIC, 3).await;
    let sink = SmtpSink::start().await;
    let url = admit_ledger::testing::fresh_postgres_url().await;
    let app = spawn_app(&url).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay = Relay::new(app.admit.db.clone(), relay_config(&broker)).unwrap();
    let relaying = tokio::spawn(async move { relay.run(stopped).await });

    let (account, owner_link) = app.open_account("KW-2", "owner@kw2.example.com", 1000).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    let raised = app
        .call(
            "PATCH",
            &format!("/v1/accounts/{account}"),
            Some(&owner),
            Some(json!({ "daily_invitation_quota": 1000 })),
        )
        .await;
    assert_eq!(raised.status, 200, "{raised:?}");

    let data = temp_dir("kw2");
    let mut mailer = mailer_process(&url, &broker, sink.port, &data);
    let inviting = {
        let (base, http, owner, account) = (app.base.clone(), app.http.clone(), owner.clone(), account.clone());
        tokio::spawn(async move {
            for chunk in (0..N).collect::<Vec<_>>().chunks(10) {
                let calls = chunk.iter().map(|i| {
                    http.post(format!("{base}/v1/accounts/{account}/invitations"))
                        .bearer_auth(&owner)
                        .json(&json!({ "email": format!("bulk-{i}@example.com"), "roles": ["viewer"] }))
                        .send()
                });
                for r in futures::future::join_all(calls).await {
                    assert_eq!(r.unwrap().status(), 201);
                }
            }
        })
    };
    // Kill the mailer (SIGKILL) twice mid-way, restarting it each time.
    for at in [N / 5, N / 2] {
        until(180, &format!("{at} emails"), || async { (invitation_mails(&sink.dir).len() >= at).then_some(()) }).await;
        mailer.kill().unwrap();
        mailer.wait().unwrap();
        mailer = mailer_process(&url, &broker, sink.port, &data);
    }
    inviting.await.unwrap();
    let mails = until(240, "every invitation email", || async {
        let mails = invitation_mails(&sink.dir);
        let people: std::collections::BTreeSet<&String> = mails.iter().map(|(to, _)| to).collect();
        (people.len() == N).then_some(mails)
    })
    .await;
    // Give a straggling duplicate the time to show up before counting.
    let settled = until(60, "all invitations delivered", || async {
        let list = app.get(&format!("/v1/accounts/{account}/invitations?status=pending&limit=100"), Some(&owner)).await;
        let items = list.body["items"].as_array().cloned().unwrap_or_default();
        items.iter().all(|i| i["delivery_state"] == "delivered").then_some(())
    });
    settled.await;
    mailer.kill().unwrap();
    mailer.wait().unwrap();
    let mails_after = invitation_mails(&sink.dir);
    // Exactly one email per invitation, as receivers count them: each
    // invitation has one Message-ID. The one window SMTP cannot close (a
    // kill after the server accepted a message and before the mailer noted
    // it) can resend the messages in flight with the same Message-ID: at
    // most as many as the mailer sends at once, per kill, and receivers
    // drop them by their id.
    let mut ids_by_person: std::collections::BTreeMap<&String, std::collections::BTreeSet<&String>> =
        Default::default();
    for (to, id) in &mails_after {
        ids_by_person.entry(to).or_default().insert(id);
    }
    assert_eq!(ids_by_person.len(), N, "every invitee got the invitation");
    assert!(ids_by_person.values().all(|ids| ids.len() == 1), "one Message-ID per invitation");
    let duplicates = mails_after.len() - N;
    let in_flight = admit_workers::mailer::SENDING_AT_ONCE;
    assert!(duplicates <= 2 * in_flight, "{duplicates} same-id resends after 2 kills (first count {})", mails.len());
    eprintln!(
        "{N} invitations, 2 kills: {} messages at the SMTP server, {duplicates} same-Message-ID resends",
        mails_after.len()
    );
    stop.send(true).unwrap();
    relaying.await.unwrap().unwrap();
}

/// The broker frozen for 15 s (longer than the consumers' session) while
/// the relay and the consumers run and invitations keep coming: once it
/// thaws every invitee gets the invitation exactly once (the consumer group
/// re-forms, nothing is skipped, nothing is sent twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_frozen_under_the_consumers_loses_and_doubles_no_email() {
    const BEFORE: usize = 10;
    const DURING: usize = 20;
    let deployment = Deployment::start().await;
    let (broker, sink, app) = (&deployment.broker, &deployment.sink, &deployment.app);
    let (account, owner) = app.account_without_limits("KW-3", "owner@kw3.example.com").await;
    let mailed = |n: usize| {
        let dir = sink.dir.clone();
        async move { (invitation_mails(&dir).len() >= n).then_some(()) }
    };
    for i in 0..BEFORE {
        app.invite(&owner, &account, &format!("bulk-{i}@example.com"), &["viewer"]).await;
    }
    until(90, "the emails before the freeze", || mailed(BEFORE)).await;

    broker.freeze();
    for i in BEFORE..BEFORE + DURING {
        app.invite(&owner, &account, &format!("bulk-{i}@example.com"), &["viewer"]).await;
    }
    // The outage itself (not a wait for something): past the 3 s session.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(invitation_mails(&sink.dir).len(), BEFORE, "nothing moves while the broker is frozen");
    broker.thaw();

    until(120, "every email after the thaw", || mailed(BEFORE + DURING)).await;
    let mails = invitation_mails(&sink.dir);
    let people: std::collections::BTreeSet<&String> = mails.iter().map(|(to, _)| to).collect();
    let ids: std::collections::BTreeSet<&String> = mails.iter().map(|(_, id)| id).collect();
    assert_eq!(
        (mails.len(), people.len(), ids.len()),
        (BEFORE + DURING, BEFORE + DURING, BEFORE + DURING),
        "{mails:#?}"
    );
    deployment.shut_down().await;
}
