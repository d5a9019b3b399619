//! The relay against a real Kafka-protocol broker (tansu): every event of
//! the log on the topic exactly once, keyed by stream, in order per stream,
//! with CloudEvents headers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use admit_workers::relay::{Relay, RelayConfig};
use common::*;
use rdkafka::message::{Headers, Message};

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_topic_once_in_stream_order() {
    let topic = "admit.events";
    let broker = Broker::with_topic(topic, PARTITIONS).await;

    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    let (account, owner_link) = app.open_account("K-1", "owner@kafka.example.com", 50).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    for i in 0..10 {
        let (id, _) = app.invite(&owner, &account, &format!("k{i}@example.com"), &["viewer"]).await;
        if i % 3 == 0 {
            app.call("DELETE", &format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner), None).await;
        }
    }
    let admit_ledger::Database::Postgres(pool) = &app.admit.db else { unreachable!() };
    let expected: Vec<(uuid::Uuid, String, i64)> =
        sqlx::query_as("SELECT event_id, stream_id, stream_version FROM events ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();

    let config = RelayConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        source: "admit.test".into(),
        delivery_timeout: Duration::from_secs(30),
        poll: Duration::from_millis(50),
    };
    let relay = Relay::new(app.admit.db.clone(), config.clone()).unwrap();
    let consumer = broker.reader(topic, PARTITIONS);

    let mut seen: Vec<(String, String, i64, BTreeMap<String, String>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while seen.len() < expected.len() {
        assert!(Instant::now() < deadline, "only {} of {} events reached the topic", seen.len(), expected.len());
        relay.run_once().await.unwrap();
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
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
            let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            assert_eq!(key, body["stream_id"].as_str().unwrap(), "key = stream id");
            seen.push((headers["ce_id"].clone(), key, body["stream_version"].as_i64().unwrap(), headers));
        }
    }
    // A second relay (a restart) publishes nothing again.
    let again = Relay::new(app.admit.db.clone(), config).unwrap();
    assert_eq!(again.run_once().await.unwrap(), 0);
    assert!(consumer.poll(Duration::from_millis(500)).is_none(), "nothing published twice");

    let ids: BTreeSet<&str> = seen.iter().map(|(id, ..)| id.as_str()).collect();
    assert_eq!(ids.len(), seen.len(), "no event twice");
    let wanted: BTreeSet<String> = expected.iter().map(|(id, ..)| id.to_string()).collect();
    assert_eq!(ids, wanted.iter().map(String::as_str).collect(), "every event of the log");
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, stream, version, headers) in &seen {
        let prev = last.insert(stream, *version).unwrap_or(0);
        assert_eq!(*version, prev + 1, "stream {stream} out of order");
        for h in ["ce_type", "ce_source", "ce_time", "ce_specversion", "admit_position"] {
            assert!(headers.contains_key(h), "header {h}");
        }
        assert_eq!(headers["ce_specversion"], "1.0");
    }
    // Personal data travels sealed.
    let raw = format!("{seen:?}");
    assert!(!raw.contains("k1@example.com"));
}

/// Sends a signal to the broker process (`STOP` freezes it, `CONT` resumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_gone_for_thirty_seconds_loses_and_reorders_nothing() {
    let topic = "admit.events";
    let broker = Broker::with_topic(topic, PARTITIONS).await;
    let app = spawn_app(&admit_ledger::testing::fresh_postgres_url().await).await;
    let (account, owner_link) = app.open_account("K-2", "owner@kafka2.example.com", 500).await;
    let (_, owner) = app.accept_new(&owner_link, "Olga Owner").await;
    let raised = app
        .call(
            "PATCH",
            &format!("/v1/accounts/{account}"),
            Some(&owner),
            Some(serde_json::json!({ "daily_invitation_quota": 1000 })),
        )
        .await;
    assert_eq!(raised.status, 200, "{raised:?}");

    let config = RelayConfig {
        brokers: broker.addr.clone(),
        topic: topic.into(),
        source: "admit.test".into(),
        delivery_timeout: Duration::from_secs(300),
        poll: Duration::from_millis(50),
    };
    let relay = Relay::new(app.admit.db.clone(), config).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relaying = tokio::spawn(async move { relay.run(stopped).await });

    // Invitations keep coming while the broker is frozen for 30 s.
    app.invite(&owner, &account, "before@example.com", &["viewer"]).await;
    broker.freeze();
    let outage = Instant::now();
    let mut n = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        let (id, _) = app.invite(&owner, &account, &format!("during{n}@example.com"), &["viewer"]).await;
        if n % 4 == 0 {
            app.call("DELETE", &format!("/v1/accounts/{account}/invitations/{id}"), Some(&owner), None).await;
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    broker.thaw();
    app.invite(&owner, &account, "after@example.com", &["viewer"]).await;

    let admit_ledger::Database::Postgres(pool) = &app.admit.db else { unreachable!() };
    let expected: Vec<(uuid::Uuid, String, i64, i64)> =
        sqlx::query_as("SELECT event_id, stream_id, stream_version, position FROM events ORDER BY position")
            .fetch_all(pool)
            .await
            .unwrap();
    let consumer = broker.reader(topic, PARTITIONS);
    let mut seen: Vec<(String, String, i64, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut quiet_since = Instant::now();
    // Read until every event arrived and nothing more came for 2 s (a
    // duplicate published late would show up).
    while seen.len() < expected.len() || quiet_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline, "only {} of {} events reached the topic", seen.len(), expected.len());
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let body: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            seen.push((
                body["id"].as_str().unwrap().to_string(),
                body["stream_id"].as_str().unwrap().to_string(),
                body["stream_version"].as_i64().unwrap(),
                body["position"].as_i64().unwrap(),
            ));
            quiet_since = Instant::now();
        }
    }
    stop.send(true).unwrap();
    relaying.await.unwrap().unwrap();

    assert!(n >= 20, "invitations kept coming during the outage ({n})");
    let positions: BTreeSet<i64> = seen.iter().map(|s| s.3).collect();
    assert_eq!(positions.len(), seen.len(), "each position exactly once on the topic");
    assert_eq!(positions, expected.iter().map(|e| e.3).collect(), "every position of the log");
    let ids: BTreeSet<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        ids,
        expected.iter().map(|e| e.0.to_string()).collect::<BTreeSet<_>>().iter().map(String::as_str).collect()
    );
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, stream, version, _) in &seen {
        let prev = last.insert(stream, *version).unwrap_or(0);
        assert_eq!(*version, prev + 1, "stream {stream} out of order");
    }
}
