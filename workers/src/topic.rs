//! The Kafka side of the feed: a consumer in a consumer group reading the
//! topic the relay fills, turning each message back into the event it
//! carries. An offset is stored only after the worker handled its batch
//! (`enable.auto.offset.store=false`); librdkafka commits the stored offsets
//! in the background every second and when the consumer closes, so a
//! commit never blocks a worker, and a crash or a rebalance redelivers at
//! most the last second of handled events: workers dedupe on the event id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use admit_ledger::{Database, Metadata, RecordedEvent};
use admit_projections::Envelope;
use chrono::{DateTime, Utc};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use uuid::Uuid;

use crate::relay::LogContext;
use crate::{Result, WorkerError};

/// Where and as whom to consume.
#[derive(Debug, Clone)]
pub struct TopicConfig {
    /// Kafka bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Topic the relay publishes to (default `admit.events`).
    pub topic: String,
    /// Consumer group: every worker kind has its own (`admit-mailer`, ...),
    /// so each kind sees every event once, shared among its instances.
    pub group: String,
    /// How long a silent member stays in the group (librdkafka
    /// `session.timeout.ms`); a killed worker's partitions move after this.
    pub session_timeout: Duration,
    /// How long one poll waits for the first message.
    pub wait: Duration,
}

impl TopicConfig {
    /// The consumer settings of `worker` on `brokers`/`topic`, with a
    /// 10-second session.
    pub fn new(brokers: &str, topic: &str, worker: &str) -> TopicConfig {
        TopicConfig {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            group: format!("admit-{worker}"),
            session_timeout: Duration::from_secs(10),
            wait: Duration::from_millis(200),
        }
    }
}

/// A worker's consumer of the topic.
pub struct TopicFeed {
    db: Database,
    consumer: StreamConsumer<LogContext>,
    config: TopicConfig,
    /// Highest offset polled per partition, not yet committed.
    polled: Mutex<BTreeMap<i32, i64>>,
    /// Open the personal data of the events (see [`TopicFeed::without_personal_data`]).
    personal: bool,
}

impl std::fmt::Debug for TopicFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicFeed").field("config", &self.config).finish()
    }
}

/// One message as the relay publishes it (see `relay::envelope`).
#[derive(Deserialize)]
struct Published {
    id: Uuid,
    #[serde(rename = "type")]
    event_type: String,
    schema_version: i32,
    stream_id: String,
    stream_version: i64,
    position: i64,
    recorded_at: DateTime<Utc>,
    metadata: serde_json::Value,
    data: serde_json::Value,
}

impl Published {
    fn into_recorded(self) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            transaction_id: 0,
            event_id: self.id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            event_type: self.event_type,
            schema_version: self.schema_version,
            payload: self.data.to_string(),
            metadata: serde_json::from_value::<Metadata>(self.metadata.clone()).unwrap_or_default(),
            metadata_text: self.metadata.to_string(),
            recorded_at: self.recorded_at,
            hash: Vec::new(),
        }
    }
}

impl TopicFeed {
    /// Joins `config.group` and subscribes to `config.topic`. Personal data
    /// in the messages is sealed; it is opened with the keys in `db`.
    pub fn new(db: Database, config: TopicConfig) -> Result<TopicFeed> {
        let session = config.session_timeout.as_millis().max(1000);
        let consumer: StreamConsumer<LogContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set("auto.commit.interval.ms", "1000")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 4).max(100).to_string())
            .set("enable.partition.eof", "false")
            .create_with_context(LogContext)
            .map_err(|e| WorkerError::Kafka(format!("consumer: {e}")))?;
        consumer.subscribe(&[config.topic.as_str()]).map_err(|e| WorkerError::Kafka(format!("subscribe: {e}")))?;
        Ok(TopicFeed { db, consumer, config, polled: Mutex::new(BTreeMap::new()), personal: true })
    }

    /// See [`Feed::without_personal_data`](crate::feed::Feed::without_personal_data).
    pub fn without_personal_data(self) -> TopicFeed {
        TopicFeed { personal: false, ..self }
    }

    /// Up to `limit` events: waits up to the configured time for the first,
    /// then takes what has already arrived.
    pub async fn poll(&self, limit: usize) -> Result<Vec<Envelope>> {
        let mut events = Vec::new();
        let mut wait = self.config.wait;
        while events.len() < limit {
            let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(WorkerError::Kafka(format!("receive: {e}"))),
                Ok(Ok(m)) => m,
            };
            wait = Duration::from_millis(5);
            {
                let mut polled = self.polled.lock().expect("feed lock");
                let top = polled.entry(message.partition()).or_insert(message.offset());
                *top = (*top).max(message.offset());
            }
            match message.payload().map(serde_json::from_slice::<Published>) {
                Some(Ok(p)) => events.push(p.into_recorded()),
                // Not an Admit event: skipped (and committed past), never fatal.
                _ => tracing::warn!(
                    partition = message.partition(),
                    offset = message.offset(),
                    "skipping a message that is not an event"
                ),
            }
        }
        crate::feed::decode(&self.db, &events, self.personal).await
    }

    /// Stores the offsets after everything polled so far, for the next
    /// background commit (never blocks).
    pub async fn commit(&self) -> Result<()> {
        let polled = std::mem::take(&mut *self.polled.lock().expect("feed lock"));
        if polled.is_empty() {
            return Ok(());
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in polled {
            list.add_partition_offset(&self.config.topic, partition, Offset::Offset(offset + 1))
                .map_err(|e| WorkerError::Kafka(format!("offsets: {e}")))?;
        }
        match self.consumer.store_offsets(&list) {
            Ok(()) => Ok(()),
            // A partition taken away by a rebalance: its new owner
            // redelivers from the last commit, and handlers dedupe.
            Err(e) => {
                tracing::warn!(error = %e, "offsets not stored (rebalance?)");
                Ok(())
            }
        }
    }
}
