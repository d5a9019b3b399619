//! The relay: publishes the log, in its gap-safe global order, to a Kafka
//! topic. Key = stream id (so each stream stays in order within its
//! partition), idempotent producer with `acks=all`, CloudEvents-style
//! headers (`ce_id`, `ce_type`, `ce_source`, `ce_time`, `ce_specversion`)
//! plus the log position. The checkpoint moves only after the broker
//! acknowledged every event of a batch, so a broker outage or a crash
//! republishes at most the unacknowledged tail (consumers dedupe on
//! `ce_id`, the event id); nothing is lost.
//!
//! Payloads are the stored ones: personal data stays sealed with each
//! person's key, so erasing a person erases them from the topic's readers too.

use std::time::Duration;

use admit_ledger::{Database, GlobalCursor, RecordedEvent};
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use crate::feed::LogFeed;
use crate::{Result, WorkerError};

/// Where and how to publish.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Kafka bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic (default `admit.events`).
    pub topic: String,
    /// `ce_source` of every event.
    pub source: String,
    /// How long one event may wait for the broker before the batch is retried.
    pub delivery_timeout: Duration,
    /// How often to look for new events when idle.
    pub poll: Duration,
}

/// The relay worker.
pub struct Relay {
    feed: LogFeed,
    producer: FutureProducer<LogContext>,
    config: RelayConfig,
    /// Where the last saved checkpoint is (read from the database once,
    /// then kept here: only this relay moves it).
    cursor: std::sync::Mutex<Option<GlobalCursor>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("config", &self.config).finish()
    }
}

/// The JSON value published for one event.
pub fn envelope(e: &RecordedEvent) -> serde_json::Value {
    json!({
        "id": e.event_id,
        "type": e.event_type,
        "schema_version": e.schema_version,
        "stream_id": e.stream_id,
        "stream_version": e.stream_version,
        "position": e.position,
        "recorded_at": e.recorded_at,
        "metadata": serde_json::from_str::<serde_json::Value>(&e.metadata_text).unwrap_or_default(),
        "data": serde_json::from_str::<serde_json::Value>(&e.payload).unwrap_or_default(),
    })
}

impl Relay {
    /// A relay publishing `db`'s log.
    pub fn new(db: Database, config: RelayConfig) -> Result<Relay> {
        let producer: FutureProducer<LogContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .create_with_context(LogContext)
            .map_err(|e| WorkerError::Kafka(format!("producer: {e}")))?;
        Ok(Relay { feed: LogFeed::new(db, "relay"), producer, config, cursor: std::sync::Mutex::new(None) })
    }

    /// Publishes until `shutdown` turns true.
    pub async fn run(&self, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        crate::feed::poll_until_shutdown("relay", self.config.poll, shutdown, || self.run_once()).await
    }

    /// Publishes the events available now, waiting for the broker's
    /// acknowledgement of all of them before moving the checkpoint.
    /// Returns how many it published.
    pub async fn run_once(&self) -> Result<usize> {
        let known = *self.cursor.lock().expect("relay cursor");
        let cursor = match known {
            Some(c) => c,
            None => self.feed.checkpoint().await?,
        };
        let batch = self.feed.next_raw(cursor, 1000).await?;
        let Some(last) = batch.last() else {
            return Ok(0);
        };
        let bodies: Vec<(String, String)> =
            batch.iter().map(|e| (e.stream_id.clone(), envelope(e).to_string())).collect();
        let sends = batch.iter().zip(&bodies).map(|(e, (key, body))| {
            let time = e.recorded_at.to_rfc3339();
            let id = e.event_id.to_string();
            let position = e.position.to_string();
            let headers = OwnedHeaders::new()
                .insert(Header { key: "ce_id", value: Some(id.as_str()) })
                .insert(Header { key: "ce_type", value: Some(e.event_type.as_str()) })
                .insert(Header { key: "ce_source", value: Some(self.config.source.as_str()) })
                .insert(Header { key: "ce_time", value: Some(time.as_str()) })
                .insert(Header { key: "ce_specversion", value: Some("1.0") })
                .insert(Header { key: "content-type", value: Some("application/json") })
                .insert(Header { key: "admit_position", value: Some(position.as_str()) });
            let record = FutureRecord::to(&self.config.topic).key(key.as_str()).payload(body.as_str()).headers(headers);
            self.producer.send(record, self.config.delivery_timeout)
        });
        for outcome in futures::future::join_all(sends).await {
            if let Err((e, _)) = outcome {
                return Err(WorkerError::Kafka(format!("delivery: {e}")));
            }
        }
        let next = GlobalCursor::after(last);
        self.feed.save(next).await?;
        *self.cursor.lock().expect("relay cursor") = Some(next);
        Ok(batch.len())
    }
}

/// Sends librdkafka's own log lines to tracing (producer and consumers).
#[derive(Clone, Copy)]
pub struct LogContext;

impl rdkafka::ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }
}

impl rdkafka::consumer::ConsumerContext for LogContext {}

impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}
