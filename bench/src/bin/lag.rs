//! The relay and mail lag probe (`bench/lag.sh` runs it): appends
//! invitations at a steady rate on PostgreSQL while `admit worker relay` and
//! `admit worker mailer` run as in production, reads the topic as a consumer
//! and receives the mail as the SMTP server, and prints how long after its
//! append each event was on the broker and each invitation email was
//! accepted by SMTP (p50, p99, max).
//!
//! Append time is the event's `recorded_at` (taken just before its
//! transaction commits). "On the broker" is when this probe's consumer got
//! it (fetch wait 5 ms): an upper bound of the broker's own time. "Accepted
//! by SMTP" is when this probe's SMTP server answered 250 to the message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use admit_api::commands::{InviteRequest, OpenAccount};
use admit_api::{Admit, RequestContext, Secrets};
use admit_domain::access::Access;
use admit_domain::ids::AccountId;
use admit_domain::password::PasswordPolicy;
use admit_domain::values::{AccountName, CustomerNumber, EmailAddress, RoleName};
use admit_ledger::Database;
use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Parser;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Options of the probe.
#[derive(Parser, Debug)]
struct Options {
    /// PostgreSQL database the workers use.
    #[arg(long)]
    database_url: String,
    /// The workers' master secret (64 hex characters).
    #[arg(long, env = "ADMIT_SECRET_KEY", hide_env_values = true)]
    secret_key: String,
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// Topic the relay publishes to.
    #[arg(long, default_value = "admit.events")]
    topic: String,
    /// Port of this probe's SMTP server (the mailer's ADMIT_SMTP_URL).
    #[arg(long)]
    smtp_port: u16,
    /// Invitations per second (the mailer adds about one event per invitation).
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// Seconds of steady load.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Accounts the invitations spread over.
    #[arg(long, default_value_t = 64)]
    accounts: usize,
}

/// When each thing arrived, by key (event id or Message-ID).
type Arrivals = Arc<Mutex<HashMap<String, DateTime<Utc>>>>;

#[tokio::main]
async fn main() -> Result<()> {
    let o = Options::parse();
    let mail: Arrivals = Arc::default();
    let topic: Arrivals = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", o.smtp_port)).await.context("SMTP port")?;
    tokio::spawn(receive_mail(listener, mail.clone()));
    tokio::spawn(read_topic(o.brokers.clone(), o.topic.clone(), topic.clone()));

    let db = Database::connect(&o.database_url).await?;
    let admit =
        Admit::new(db.clone(), Secrets::load(Some(&o.secret_key), std::path::Path::new("."))?, PasswordPolicy::Nist);
    admit.prepare().await?;
    let accounts = open_accounts(&admit, o.accounts).await?;
    warm_up(&admit, accounts[0], &topic, &mail).await?;

    // Steady load: one invitation every 1/rate s, never more than 256 in flight.
    let started = Utc::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let failures = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(o.rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = o.rate as u64 * o.seconds;
    for n in 0..total {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (admit, account, failures) = (admit.clone(), accounts[n as usize % accounts.len()], failures.clone());
        tokio::spawn(async move {
            let req = invitation(&format!("lag{n}@lag.example.com")).expect("a valid invitation");
            if admit.invite(&RequestContext::cli(), account, req).await.is_err() {
                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    let _ = in_flight.acquire_many(256).await?;
    let ended = Utc::now();

    // The appended events of the window, then wait (30 s at most) for them
    // on the topic and for their emails.
    let Database::Postgres(pool) = &db else { anyhow::bail!("the lag probe runs on PostgreSQL") };
    let events: Vec<(uuid::Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT event_id, event_type, recorded_at FROM events WHERE recorded_at >= $1 ORDER BY position",
    )
    .bind(started)
    .fetch_all(pool)
    .await?;
    let sent: Vec<&(uuid::Uuid, String, DateTime<Utc>)> = events.iter().filter(|e| e.1 == "InvitationSent").collect();
    let drain_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < drain_by {
        let on_topic = {
            let arrived = topic.lock().unwrap();
            events.iter().filter(|e| arrived.contains_key(&e.0.to_string())).count()
        };
        let mailed = {
            let arrived = mail.lock().unwrap();
            sent.iter().filter(|e| arrived.contains_key(&format!("<{}.invitation@admit>", e.0))).count()
        };
        if on_topic == events.len() && mailed == sent.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = (ended - started).num_milliseconds() as f64 / 1000.0;
    let in_window = events.iter().filter(|e| e.2 <= ended).count();
    println!(
        "machine: {} cores; {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        Utc::now().format("%F")
    );
    println!(
        "load: {} invitations in {window:.1} s ({} failed); {:.0} events/s appended (invitations and the mailer's records)",
        total,
        failures.load(std::sync::atomic::Ordering::Relaxed),
        in_window as f64 / window
    );
    let topic = topic.lock().unwrap().clone();
    let broker: Vec<Duration> = events.iter().filter_map(|(id, _, at)| lag(at, topic.get(&id.to_string()))).collect();
    report("append -> on the broker", &broker, events.len());
    let mail = mail.lock().unwrap().clone();
    let smtp: Vec<Duration> =
        sent.iter().filter_map(|(id, _, at)| lag(at, mail.get(&format!("<{id}.invitation@admit>")))).collect();
    report("append -> accepted by SMTP", &smtp, sent.len());
    Ok(())
}

/// One invitation through the whole pipeline before measuring, so the
/// figures are the steady state, not the workers' start (producer and
/// consumer-group set-up take seconds).
async fn warm_up(admit: &Admit, account: AccountId, topic: &Arrivals, mail: &Arrivals) -> Result<()> {
    let issued = admit.invite(&RequestContext::cli(), account, invitation("warm-up@lag.example.com")?).await?;
    let Database::Postgres(pool) = &admit.db else { anyhow::bail!("the lag probe runs on PostgreSQL") };
    let event: uuid::Uuid =
        sqlx::query_scalar("SELECT event_id FROM events WHERE stream_id = $1 AND event_type = 'InvitationSent'")
            .bind(format!("invitation-{}", issued.invitation_id.0))
            .fetch_one(pool)
            .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !topic.lock().unwrap().contains_key(&event.to_string())
        || !mail.lock().unwrap().contains_key(&format!("<{event}.invitation@admit>"))
    {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the pipeline did not carry one invitation in 120 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// An invitation of `email` as a viewer.
fn invitation(email: &str) -> Result<InviteRequest> {
    Ok(InviteRequest {
        email: EmailAddress::parse(email)?,
        name: None,
        access: Access::roles([RoleName::parse("viewer")?]),
        expires_in: None,
        metadata: None,
        redirect_url: None,
    })
}

/// Opens `n` accounts with room for any number of invitations.
async fn open_accounts(admit: &Admit, n: usize) -> Result<Vec<AccountId>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let opened = admit
            .open_account(
                &RequestContext::cli(),
                OpenAccount {
                    name: AccountName::parse(&format!("Lag {i}"))?,
                    customer_number: CustomerNumber::parse(&format!("LAG-{}-{i}", &run[..8]))?,
                    seats: 10_000_000,
                    owner_email: EmailAddress::parse(&format!("owner{i}@lag.example.com"))?,
                    owner_name: None,
                },
            )
            .await?;
        out.push(opened.account_id);
    }
    Ok(out)
}

fn lag(appended: &DateTime<Utc>, arrived: Option<&DateTime<Utc>>) -> Option<Duration> {
    arrived.map(|a| (*a - *appended).to_std().unwrap_or(Duration::ZERO))
}

/// Prints p50, p99 and max of `lags` (nearest rank) and how many arrived.
fn report(what: &str, lags: &[Duration], expected: usize) {
    let mut v = lags.to_vec();
    v.sort();
    let at = |q: f64| v.get(((q * v.len() as f64).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default();
    println!(
        "{what}: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} of {expected} arrived)",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        v.len()
    );
}

/// Reads the topic from its start, recording when each event id arrived.
async fn read_topic(brokers: String, topic: String, arrivals: Arrivals) {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", format!("admit-lag-probe-{}", uuid::Uuid::new_v4().simple()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "5")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    consumer.subscribe(&[&topic]).expect("subscribe");
    loop {
        let Ok(m) = consumer.recv().await else { continue };
        let now = Utc::now();
        let id =
            m.headers().and_then(|h| h.iter().find(|h| h.key == "ce_id").and_then(|h| h.value.map(<[u8]>::to_vec)));
        if let Some(id) = id {
            arrivals.lock().unwrap().entry(String::from_utf8_lossy(&id).to_string()).or_insert(now);
        }
    }
}

/// A minimal SMTP server that accepts everything and records when each
/// Message-ID was accepted (the 250 after the data).
async fn receive_mail(listener: tokio::net::TcpListener, arrivals: Arrivals) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 lag-probe ESMTP\r\n").await;
            let mut in_data = false;
            let mut message_id = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if in_data {
                    if line == "." {
                        in_data = false;
                        if let Some(id) = message_id.take() {
                            arrivals.lock().unwrap().entry(id).or_insert_with(Utc::now);
                        }
                        let _ = write.write_all(b"250 2.0.0 accepted\r\n").await;
                    } else if line.to_ascii_lowercase().starts_with("message-id:") {
                        message_id = Some(line[11..].trim().to_string());
                    }
                    continue;
                }
                let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                let answer: &[u8] = match verb.as_str() {
                    "EHLO" | "HELO" => b"250 lag-probe\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        break;
                    }
                    _ => b"250 ok\r\n",
                };
                let _ = write.write_all(answer).await;
            }
        });
    }
}
