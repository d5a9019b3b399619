//! Tamper evidence: recompute every stream's hash chain from stored bytes.

use futures::TryStreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::hash::GENESIS;
use crate::log::{EventRow, PG_COLUMNS, SQLITE_COLUMNS};
use crate::{Database, RecordedEvent, Result};

/// An event whose stored bytes do not match its hash (or whose version
/// breaks the stream's sequence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Global position of the event.
    pub position: i64,
    /// The event's id.
    pub event_id: Uuid,
    /// Its stream.
    pub stream_id: String,
    /// Its version in the stream.
    pub stream_version: i64,
    /// What is wrong.
    pub problem: String,
}

/// The outcome of [`Database::verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Streams walked.
    pub streams: u64,
    /// Events checked.
    pub events: u64,
    /// Problems found, in stream order (at most 100 are kept).
    pub mismatches: Vec<Mismatch>,
}

impl VerifyReport {
    /// True when no event failed.
    pub fn is_ok(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// The first event that failed, if any.
    pub fn first_mismatch(&self) -> Option<&Mismatch> {
        self.mismatches.first()
    }
}

const KEPT: usize = 100;

/// Every stream head: its last version and hash.
const HEADS: &str = "SELECT stream_id, version, last_hash FROM streams";

impl Database {
    /// Walks every stream in version order, recomputing each hash from the
    /// stored bytes and the previous hash, and checks the stream heads.
    /// Streams the log: memory does not grow with its size.
    pub async fn verify(&self) -> Result<VerifyReport> {
        // One snapshot for the events and the heads: a live service keeps
        // appending, and heads read later than the events would look
        // tampered.
        let mut walk = ChainWalk::default();
        let heads: Vec<(String, i64, Vec<u8>)> = match self {
            Database::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *tx).await?;
                let sql = format!("SELECT {PG_COLUMNS} FROM events ORDER BY stream_id, stream_version");
                let mut rows = sqlx::query_as::<_, EventRow>(&sql).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    walk.check(RecordedEvent::try_from(row)?);
                }
                drop(rows);
                sqlx::query_as(HEADS).fetch_all(&mut *tx).await?
            }
            Database::Sqlite { reader, .. } => {
                // A read transaction in WAL mode sees one snapshot throughout.
                let mut tx = reader.begin().await?;
                let sql = format!("SELECT {SQLITE_COLUMNS} FROM events ORDER BY stream_id, stream_version");
                let mut rows = sqlx::query_as::<_, EventRow>(&sql).fetch(&mut *tx);
                while let Some(row) = rows.try_next().await? {
                    walk.check(RecordedEvent::try_from(row)?);
                }
                drop(rows);
                sqlx::query_as(HEADS).fetch_all(&mut *tx).await?
            }
        };
        let mut report = walk.report;
        for (stream, version, last_hash) in heads {
            match walk.tails.get(&stream) {
                Some((v, h)) if *v == version && *h == last_hash => {}
                _ => report.mismatches.push(Mismatch {
                    position: 0,
                    event_id: Uuid::nil(),
                    stream_id: stream.clone(),
                    stream_version: version,
                    problem: "stream head does not match its last event".into(),
                }),
            }
        }
        report.mismatches.truncate(KEPT);
        Ok(report)
    }
}

#[derive(Default)]
struct ChainWalk {
    report: VerifyReport,
    stream: Option<String>,
    version: i64,
    previous: Vec<u8>,
    /// Last version and hash of each stream, to check the stream heads.
    tails: std::collections::HashMap<String, (i64, Vec<u8>)>,
}

impl ChainWalk {
    fn check(&mut self, event: RecordedEvent) {
        if self.stream.as_deref() != Some(event.stream_id.as_str()) {
            self.stream = Some(event.stream_id.clone());
            self.report.streams += 1;
            self.version = 0;
            self.previous = GENESIS.to_vec();
        }
        self.report.events += 1;
        let mut problem = None;
        if event.stream_version != self.version + 1 {
            problem = Some(format!("version {} follows {}", event.stream_version, self.version));
        } else if event.expected_hash(&self.previous)[..] != event.hash[..] {
            problem = Some("stored bytes do not match the event's hash".to_string());
        }
        if let Some(problem) = problem {
            if self.report.mismatches.len() < KEPT {
                self.report.mismatches.push(Mismatch {
                    position: event.position,
                    event_id: event.event_id,
                    stream_id: event.stream_id.clone(),
                    stream_version: event.stream_version,
                    problem,
                });
            }
        }
        self.version = event.stream_version;
        // Chain on the stored hash so one bad event is reported once, not
        // once for itself and again for every event after it.
        self.previous = event.hash.clone();
        self.tails.insert(event.stream_id, (event.stream_version, event.hash));
    }
}
