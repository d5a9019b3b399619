//! Appending to streams and reading streams and the global order.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::hash::{self, HashedFields, GENESIS};
use crate::{on_db, on_tx, Conn, Database, LedgerError, Result, Tx};

/// An event ready to be appended: the domain has already serialised it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id (UUID v7). Appending the same id twice is a no-op.
    pub event_id: Uuid,
    /// Type name, e.g. `InvitationSent`.
    pub event_type: String,
    /// Version of the payload's schema, for upcasting old events on read.
    pub schema_version: i32,
    /// JSON payload text, stored byte for byte.
    pub payload: String,
}

/// Who did it and in answer to what: stored with every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Who caused the event (`user:<id>`, `operator`, `worker:expiry`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Groups every event caused by one original request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event or message that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// The HTTP request id, when the event came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must be at exactly this version; 0 means "must not exist".
    Exact(i64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Where a reader of the global order stands: the last event it has seen.
///
/// Ordered by `(transaction_id, position)`. On PostgreSQL positions come
/// from a sequence and commit out of order; ordering by the committing
/// transaction first, and reading only below the oldest transaction still in
/// flight, guarantees that nothing ever appears behind the cursor. On SQLite
/// (one writer) `transaction_id` is always 0 and the order is the position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GlobalCursor {
    /// Transaction id (xid8) of the last event seen.
    pub transaction_id: u64,
    /// Position of the last event seen.
    pub position: i64,
}

impl GlobalCursor {
    /// Before the first event.
    pub const START: GlobalCursor = GlobalCursor { transaction_id: 0, position: 0 };

    /// The cursor just after `event`.
    pub fn after(event: &RecordedEvent) -> GlobalCursor {
        GlobalCursor { transaction_id: event.transaction_id, position: event.position }
    }
}

impl PartialOrd for GlobalCursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GlobalCursor {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.transaction_id, self.position).cmp(&(other.transaction_id, other.position))
    }
}

/// An event as stored in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position (unique, increasing within a transaction).
    pub position: i64,
    /// Id of the transaction that wrote it (0 on SQLite).
    pub transaction_id: u64,
    /// Unique event id (UUID v7).
    pub event_id: Uuid,
    /// Stream the event belongs to.
    pub stream_id: String,
    /// Version of the event within its stream, from 1.
    pub stream_version: i64,
    /// Type name.
    pub event_type: String,
    /// Schema version of the payload.
    pub schema_version: i32,
    /// JSON payload text.
    pub payload: String,
    /// Who and why.
    pub metadata: Metadata,
    /// Metadata exactly as stored (covered by the hash).
    pub metadata_text: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 chained to the previous event of the stream.
    pub hash: Vec<u8>,
}

impl RecordedEvent {
    /// The hash this event should carry given the previous hash of its stream.
    pub fn expected_hash(&self, previous: &[u8]) -> [u8; 32] {
        hash::chain(
            previous,
            &HashedFields {
                stream_id: &self.stream_id,
                stream_version: self.stream_version,
                event_id: self.event_id,
                event_type: &self.event_type,
                schema_version: self.schema_version,
                payload: &self.payload,
                metadata: &self.metadata_text,
                recorded_at: self.recorded_at,
            },
        )
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Version of the stream after the append.
    pub version: i64,
    /// True when every event id was already in the log: a retried append
    /// that changed nothing.
    pub already_appended: bool,
}

/// The row shape shared by both backends; select it with
/// [`event_columns`] and convert with `RecordedEvent::try_from`.
#[derive(sqlx::FromRow)]
pub struct EventRow {
    position: i64,
    transaction_id: String,
    event_id: Uuid,
    stream_id: String,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
    hash: Vec<u8>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = LedgerError;

    fn try_from(row: EventRow) -> Result<RecordedEvent> {
        let metadata = serde_json::from_str(&row.metadata)
            .map_err(|e| LedgerError::Corrupt(format!("metadata of event {}: {e}", row.event_id)))?;
        let transaction_id =
            row.transaction_id.parse().map_err(|e| LedgerError::Corrupt(format!("transaction id: {e}")))?;
        Ok(RecordedEvent {
            position: row.position,
            transaction_id,
            event_id: row.event_id,
            stream_id: row.stream_id,
            stream_version: row.stream_version,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload,
            metadata,
            metadata_text: row.metadata,
            recorded_at: row.recorded_at,
            hash: row.hash,
        })
    }
}

/// Columns selected for [`EventRow`], per backend.
pub(crate) const PG_COLUMNS: &str = "position, transaction_id::text AS transaction_id, event_id, stream_id, \
     stream_version, event_type, schema_version, payload, metadata, recorded_at, hash";
pub(crate) const SQLITE_COLUMNS: &str = "position, CAST(transaction_id AS TEXT) AS transaction_id, event_id, \
     stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at, hash";

/// The column list that makes an [`EventRow`] on `backend` (for queries
/// over the events table written elsewhere, e.g. an account's events).
pub fn event_columns(backend: crate::Backend) -> &'static str {
    columns(backend == crate::Backend::Postgres)
}

fn columns(db_is_pg: bool) -> &'static str {
    if db_is_pg {
        PG_COLUMNS
    } else {
        SQLITE_COLUMNS
    }
}

/// Truncates a time to what both backends store exactly (microseconds), so
/// the hash computed at append equals the hash recomputed on read.
pub fn storable_time(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Pushes `VALUES (...), ...` of chained event rows (stream, version,
/// event, hash), in the column order of the `events` insert, onto a query
/// builder of either backend (a macro: the binds' types differ per backend).
macro_rules! push_event_values {
    ($builder:expr, $rows:expr, $metadata_text:expr, $recorded_at:expr) => {
        $builder.push_values($rows, |mut b, (stream, version, event, hash)| {
            b.push_bind(event.event_id)
                .push_bind(*stream)
                .push_bind(*version)
                .push_bind(&event.event_type)
                .push_bind(event.schema_version)
                .push_bind(&event.payload)
                .push_bind($metadata_text)
                .push_bind($recorded_at)
                .push_bind(hash.to_vec());
        })
    };
}

/// Rows per `INSERT` of events: 9 parameters each, under PostgreSQL's
/// 65,535 parameters per statement.
const ROWS_PER_INSERT: usize = 7_000;

/// The metadata as it is stored (and hashed) with every event of an append.
pub(crate) fn metadata_text(metadata: &Metadata) -> Result<String> {
    serde_json::to_string(metadata).map_err(|e| LedgerError::Corrupt(format!("metadata: {e}")))
}

/// An event of an append as it is stored: its stream version, the event,
/// and its hash in the chain.
pub(crate) type ChainedRow<'e> = (i64, &'e NewEvent, [u8; 32]);

/// `events` numbered after `current` and each hashed onto the one before,
/// starting from `previous` (the stream head's hash); with the last hash,
/// the stream's new head.
pub(crate) fn chain_rows<'e>(
    stream: &str,
    current: i64,
    mut previous: Vec<u8>,
    events: &'e [NewEvent],
    metadata_text: &str,
    recorded_at: DateTime<Utc>,
) -> (Vec<ChainedRow<'e>>, Vec<u8>) {
    let mut rows = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let version = current + 1 + i as i64;
        let hash = hash::chain(
            &previous,
            &HashedFields {
                stream_id: stream,
                stream_version: version,
                event_id: event.event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                metadata: metadata_text,
                recorded_at,
            },
        );
        previous = hash.to_vec();
        rows.push((version, event, hash));
    }
    (rows, previous)
}

impl Tx {
    /// Current version of `stream` (None when it has no events). With
    /// `lock`, PostgreSQL holds the stream's row until commit, so commands
    /// on one stream run one after another instead of conflicting.
    pub async fn stream_version(&mut self, stream: &str, lock: bool) -> Result<Option<i64>> {
        let head = self.stream_head(stream, lock).await?;
        Ok(head.map(|(v, _)| v))
    }

    async fn stream_head(&mut self, stream: &str, lock: bool) -> Result<Option<(i64, Vec<u8>)>> {
        let row: Option<(i64, Vec<u8>)> = match &mut self.conn {
            Conn::Postgres(t) => {
                let sql = if lock {
                    "SELECT version, last_hash FROM streams WHERE stream_id = $1 FOR UPDATE"
                } else {
                    "SELECT version, last_hash FROM streams WHERE stream_id = $1"
                };
                sqlx::query_as(sql).bind(stream).fetch_optional(&mut **t).await?
            }
            Conn::Sqlite(t) => {
                sqlx::query_as("SELECT version, last_hash FROM streams WHERE stream_id = $1")
                    .bind(stream)
                    .fetch_optional(&mut **t)
                    .await?
            }
        };
        Ok(row)
    }

    /// PostgreSQL's global order is by transaction id. A transaction that
    /// took its id before the stream's last writer (it held another lock,
    /// then waited for this stream) would sort before that writer's events
    /// while following them in the stream, and readers of the global order
    /// (the relay, a rebuild) would see the stream out of order. Such a
    /// transaction gives way with a retryable `Conflict`; the command runs
    /// again under a new, later id. (Found by the crash-safety test: a
    /// rebuild disagreed with the live read model.)
    ///
    /// A statement of its own, after the head is locked: a subquery in the
    /// locking statement would read with that statement's snapshot, taken
    /// before the writer we waited for committed, and miss its events.
    async fn ensure_after_the_streams_last_writer(&mut self, stream: &str, current: i64) -> Result<()> {
        let Conn::Postgres(t) = &mut self.conn else { return Ok(()) };
        let behind: Option<bool> = sqlx::query_scalar(
            "SELECT transaction_id > pg_current_xact_id() FROM events WHERE stream_id = $1 \
             ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_optional(&mut **t)
        .await?;
        if behind == Some(true) {
            return Err(LedgerError::Conflict {
                stream: stream.to_string(),
                expected: "a transaction after the stream's last writer".into(),
                actual: current,
            });
        }
        Ok(())
    }

    /// Reads every event of `stream` in version order, inside this
    /// transaction (sees its own uncommitted appends).
    pub async fn read_stream(&mut self, stream: &str) -> Result<Vec<RecordedEvent>> {
        let is_pg = matches!(self.conn, Conn::Postgres(_));
        let sql = format!("SELECT {} FROM events WHERE stream_id = $1 ORDER BY stream_version", columns(is_pg));
        let rows: Vec<EventRow> = on_tx!(self, c => sqlx::query_as(&sql).bind(stream).fetch_all(&mut *c).await?);
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Appends `events` to `stream` if it is at `expected`, as one
    /// multi-row insert, chaining each event's hash to the previous one.
    ///
    /// A version mismatch is [`LedgerError::Conflict`] and writes nothing
    /// (the caller rolls the transaction back). If every event id is
    /// already in the log the append is a no-op reported as
    /// `already_appended`, so a retry after a lost acknowledgement is safe.
    pub async fn append(
        &mut self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
        recorded_at: DateTime<Utc>,
    ) -> Result<AppendOutcome> {
        if events.is_empty() {
            let version = self.stream_version(stream, false).await?.unwrap_or(0);
            return Ok(AppendOutcome { version, already_appended: false });
        }
        let recorded_at = storable_time(recorded_at);
        let metadata_text = metadata_text(metadata)?;
        // An append that must open the stream (every new invitation,
        // account and user) claims its head with the insert instead of
        // first looking for it: one statement fewer while the command holds
        // its locks. A stream that has no head holds no events, so there is
        // no retry to recognise and no earlier writer to order after. When
        // the head exists (or a transaction in flight just made it, which
        // the insert waited for), the general path below recognises a retry
        // or reports the conflict.
        if expected == ExpectedVersion::Exact(0) {
            if let Some(outcome) =
                self.append_after(stream, None, events, &metadata_text, recorded_at, expected).await?
            {
                return Ok(outcome);
            }
        }
        let head = self.stream_head(stream, true).await?;
        let current = head.as_ref().map_or(0, |(v, _)| *v);
        // A retry finds its events stored in their stream, so a stream
        // that has no head yet holds none of them: an append that opens a
        // stream skips the lookup. An event id stored in another stream
        // then fails the insert as a conflict, and the transaction stores
        // nothing.
        if head.is_some() {
            if let Some(outcome) = self.existing_append(stream, events).await? {
                return Ok(outcome);
            }
            self.ensure_after_the_streams_last_writer(stream, current).await?;
        }
        if let ExpectedVersion::Exact(v) = expected {
            if v != current {
                return Err(LedgerError::Conflict {
                    stream: stream.to_string(),
                    expected: expected.to_string(),
                    actual: current,
                });
            }
        }
        match self.append_after(stream, head, events, &metadata_text, recorded_at, expected).await? {
            Some(outcome) => Ok(outcome),
            None => {
                let actual = self.stream_version(stream, false).await?.unwrap_or(0);
                Err(LedgerError::Conflict { stream: stream.to_string(), expected: expected.to_string(), actual })
            }
        }
    }

    /// Chains `events` after `head` (the stream's version and last hash;
    /// None for a stream without events), moves the head and inserts them.
    /// None, with nothing written, when the head was no longer `head`.
    async fn append_after(
        &mut self,
        stream: &str,
        head: Option<(i64, Vec<u8>)>,
        events: &[NewEvent],
        metadata_text: &str,
        recorded_at: DateTime<Utc>,
        expected: ExpectedVersion,
    ) -> Result<Option<AppendOutcome>> {
        let from = head.as_ref().map(|(v, _)| *v);
        let (current, previous_hash) = head.unwrap_or((0, GENESIS.to_vec()));
        let (rows, last_hash) = chain_rows(stream, current, previous_hash, events, metadata_text, recorded_at);
        let version = current + events.len() as i64;
        let rows: Vec<_> = rows.into_iter().map(|(version, event, hash)| (stream, version, event, hash)).collect();
        if matches!(self.conn, Conn::Postgres(_)) && rows.len() < ROWS_PER_INSERT {
            let moved = self.move_head_and_insert(from, version, &last_hash, &rows, metadata_text, recorded_at).await;
            return match moved {
                Ok(true) => {
                    self.count_appended(rows.len() as u64);
                    Ok(Some(AppendOutcome { version, already_appended: false }))
                }
                Ok(false) => Ok(None),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(LedgerError::Conflict {
                    stream: stream.to_string(),
                    expected: expected.to_string(),
                    actual: -1,
                }),
                Err(e) => Err(e.into()),
            };
        }
        if !self.move_head(stream, from, version, &last_hash).await? {
            return Ok(None);
        }
        self.insert_events(&rows, metadata_text, recorded_at, &expected.to_string()).await?;
        Ok(Some(AppendOutcome { version, already_appended: false }))
    }

    /// PostgreSQL: [`move_head`](Tx::move_head) and
    /// [`insert_events`](Tx::insert_events) in one statement (a
    /// data-modifying CTE), the events inserted only when the head moved.
    /// An append is the last thing most commands write before their read
    /// models, and each round trip while a command holds its locks costs
    /// both processes a send and a wake-up; apart, the two were two of the
    /// fourteen statements of an invitation (docs/performance.md, "The
    /// eleventh round"). False, with nothing written, when someone else
    /// moved the head first.
    async fn move_head_and_insert(
        &mut self,
        from: Option<i64>,
        to: i64,
        hash: &[u8],
        rows: &[(&str, i64, &NewEvent, [u8; 32])],
        metadata_text: &str,
        recorded_at: DateTime<Utc>,
    ) -> std::result::Result<bool, sqlx::Error> {
        let Conn::Postgres(t) = &mut self.conn else { unreachable!("PostgreSQL only") };
        let stream = rows[0].0;
        let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new("WITH head AS (");
        match from {
            None => q
                .push("INSERT INTO streams (stream_id, version, last_hash) VALUES (")
                .push_bind(stream)
                .push(", ")
                .push_bind(to)
                .push(", ")
                .push_bind(hash)
                .push(") ON CONFLICT (stream_id) DO NOTHING RETURNING 1"),
            Some(v) => q
                .push("UPDATE streams SET version = ")
                .push_bind(to)
                .push(", last_hash = ")
                .push_bind(hash)
                .push(" WHERE stream_id = ")
                .push_bind(stream)
                .push(" AND version = ")
                .push_bind(v)
                .push(" RETURNING 1"),
        };
        q.push(
            "), stored AS (INSERT INTO events (event_id, stream_id, stream_version, event_type, \
             schema_version, payload, metadata, recorded_at, hash) SELECT * FROM (",
        );
        push_event_values!(q, rows, metadata_text, recorded_at);
        q.push(") AS v WHERE EXISTS (SELECT 1 FROM head) RETURNING 1) SELECT EXISTS (SELECT 1 FROM head)");
        q.build_query_scalar::<bool>().fetch_one(&mut **t).await
    }

    /// Inserts chained events (stream, version, event, hash) with one
    /// multi-row `INSERT` per [`ROWS_PER_INSERT`], all with the same metadata
    /// and time, and counts them. An event id or stream version stored
    /// meanwhile is a `Conflict` on the first row's stream, `expected` being
    /// what the caller expected of it.
    pub(crate) async fn insert_events(
        &mut self,
        rows: &[(&str, i64, &NewEvent, [u8; 32])],
        metadata_text: &str,
        recorded_at: DateTime<Utc>,
        expected: &str,
    ) -> Result<()> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let result = on_tx!(self, c => {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO events (event_id, stream_id, stream_version, event_type, \
                     schema_version, payload, metadata, recorded_at, hash) ",
                );
                push_event_values!(insert, chunk, metadata_text, recorded_at);
                insert.build().execute(&mut *c).await.map(|_| ())
            });
            match result {
                Ok(()) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(LedgerError::Conflict {
                        stream: chunk[0].0.to_string(),
                        expected: expected.to_string(),
                        actual: -1,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.count_appended(rows.len() as u64);
        Ok(())
    }

    /// Moves the stream head from `from` (None: create it) to `to`.
    /// Returns false when someone else moved it first.
    async fn move_head(&mut self, stream: &str, from: Option<i64>, to: i64, hash: &[u8]) -> Result<bool> {
        let affected = on_tx!(self, c => match from {
            None => sqlx::query(
                "INSERT INTO streams (stream_id, version, last_hash) VALUES ($1, $2, $3) \
                 ON CONFLICT (stream_id) DO NOTHING",
            )
            .bind(stream)
            .bind(to)
            .bind(hash)
            .execute(&mut *c)
            .await?
            .rows_affected(),
            Some(v) => sqlx::query(
                "UPDATE streams SET version = $1, last_hash = $2 WHERE stream_id = $3 AND version = $4",
            )
            .bind(to)
            .bind(hash)
            .bind(stream)
            .bind(v)
            .execute(&mut *c)
            .await?
            .rows_affected(),
        });
        Ok(affected == 1)
    }

    /// When the events of this append are already stored (a retry), the
    /// outcome of the first attempt; an error when only some are.
    async fn existing_append(&mut self, stream: &str, events: &[NewEvent]) -> Result<Option<AppendOutcome>> {
        let ids = events.iter().map(|e| e.event_id);
        let found: Vec<(Uuid, String, i64)> = on_tx!(self, c => {
            crate::database::ids_in("SELECT event_id, stream_id, stream_version FROM events WHERE event_id IN", ids)
                .build_query_as()
                .fetch_all(&mut *c)
                .await?
        });
        if found.is_empty() {
            return Ok(None);
        }
        if found.len() != events.len() || found.iter().any(|(_, s, _)| s != stream) {
            return Err(LedgerError::PartialDuplicate { stream: stream.to_string() });
        }
        let version = found.iter().map(|(_, _, v)| *v).max().unwrap_or(0);
        Ok(Some(AppendOutcome { version, already_appended: true }))
    }
}

impl Tx {
    /// Reads up to `limit` committed events after `after` in the global
    /// order, without waiting for transactions in flight elsewhere.
    ///
    /// Only gap-free when no writer can be in flight: after
    /// [`Tx::lock_log`], or in a snapshot transaction
    /// ([`Database::begin_snapshot`]) that reads one fixed state.
    pub async fn read_all_committed(&mut self, after: GlobalCursor, limit: i64) -> Result<Vec<RecordedEvent>> {
        let rows: Vec<EventRow> = match &mut self.conn {
            Conn::Postgres(t) => {
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM events WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                     ORDER BY events.transaction_id, events.position LIMIT $3"
                );
                sqlx::query_as(&sql)
                    .bind(after.transaction_id.to_string())
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(&mut **t)
                    .await?
            }
            Conn::Sqlite(t) => {
                let sql = format!("SELECT {SQLITE_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
                sqlx::query_as(&sql).bind(after.position).bind(limit).fetch_all(&mut **t).await?
            }
        };
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Holds off every writer until this transaction ends, after waiting
    /// for those in flight (PostgreSQL `SHARE` lock on the log; SQLite
    /// write transactions are already exclusive).
    pub async fn lock_log(&mut self) -> Result<()> {
        if let Conn::Postgres(t) = &mut self.conn {
            sqlx::query("LOCK TABLE events IN SHARE MODE").execute(&mut **t).await?;
        }
        Ok(())
    }
}

impl Database {
    /// Appends in a transaction of its own (see [`Tx::append`]).
    pub async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        metadata: &Metadata,
    ) -> Result<AppendOutcome> {
        let mut tx = self.begin().await?;
        let outcome = tx.append(stream, expected, events, metadata, Utc::now()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Reads every committed event of `stream` in version order.
    pub async fn read_stream(&self, stream: &str) -> Result<Vec<RecordedEvent>> {
        let is_pg = matches!(self, Database::Postgres(_));
        let sql = format!("SELECT {} FROM events WHERE stream_id = $1 ORDER BY stream_version", columns(is_pg));
        let rows: Vec<EventRow> = on_db!(self, p => sqlx::query_as(&sql).bind(stream).fetch_all(p).await?);
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Reads every committed event of each of `streams`, by stream and then
    /// version, in one statement (a consistent snapshot of them all): the
    /// mailer reads a batch's invitations this way.
    pub async fn read_streams(&self, streams: &[String]) -> Result<Vec<RecordedEvent>> {
        if streams.is_empty() {
            return Ok(vec![]);
        }
        let rows: Vec<EventRow> = match self {
            Database::Postgres(pool) => {
                let sql = format!(
                    "SELECT {PG_COLUMNS} FROM events WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version"
                );
                sqlx::query_as(&sql).bind(streams).fetch_all(pool).await?
            }
            Database::Sqlite { reader, .. } => {
                let mut q =
                    sqlx::QueryBuilder::new(format!("SELECT {SQLITE_COLUMNS} FROM events WHERE stream_id IN ("));
                let mut list = q.separated(", ");
                for s in streams {
                    list.push_bind(s);
                }
                q.push(") ORDER BY stream_id, stream_version");
                q.build_query_as().fetch_all(reader).await?
            }
        };
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// Reads up to `limit` events of the global order after `after`.
    ///
    /// Gap-safe: on PostgreSQL only events of transactions older than the
    /// oldest one still in flight are returned, so an event committed later
    /// always sorts after the returned ones. Page by passing
    /// [`GlobalCursor::after`] of the last event returned.
    pub async fn read_all(&self, after: GlobalCursor, limit: i64) -> Result<Vec<RecordedEvent>> {
        self.read_all_columns(after, limit, PG_COLUMNS, SQLITE_COLUMNS).await
    }

    /// [`read_all`](Database::read_all) without the metadata and the hash
    /// (left empty): what a rebuild reads, a third less to send and no
    /// metadata to parse per event.
    pub async fn read_all_payloads(&self, after: GlobalCursor, limit: i64) -> Result<Vec<RecordedEvent>> {
        const PG: &str = "position, transaction_id::text AS transaction_id, event_id, stream_id, stream_version, \
             event_type, schema_version, payload, '{}' AS metadata, recorded_at, ''::bytea AS hash";
        const SQLITE: &str = "position, CAST(transaction_id AS TEXT) AS transaction_id, event_id, stream_id, \
             stream_version, event_type, schema_version, payload, '{}' AS metadata, recorded_at, X'' AS hash";
        let mut events = self.read_all_columns(after, limit, PG, SQLITE).await?;
        for e in &mut events {
            e.metadata_text.clear();
        }
        Ok(events)
    }

    async fn read_all_columns(
        &self,
        after: GlobalCursor,
        limit: i64,
        pg: &str,
        sqlite: &str,
    ) -> Result<Vec<RecordedEvent>> {
        let rows: Vec<EventRow> = match self {
            Database::Postgres(pool) => {
                let sql = format!(
                    "SELECT {pg} FROM events \
                     WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                       AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY events.transaction_id, events.position LIMIT $3"
                );
                sqlx::query_as(&sql)
                    .bind(after.transaction_id.to_string())
                    .bind(after.position)
                    .bind(limit)
                    .fetch_all(pool)
                    .await?
            }
            Database::Sqlite { reader, .. } => {
                let sql = format!("SELECT {sqlite} FROM events WHERE position > $1 ORDER BY position LIMIT $2");
                sqlx::query_as(&sql).bind(after.position).bind(limit).fetch_all(reader).await?
            }
        };
        rows.into_iter().map(RecordedEvent::try_from).collect()
    }

    /// The cursor after the last event readable now (for "from now on" tails).
    pub async fn head(&self) -> Result<GlobalCursor> {
        let row: Option<(String, i64)> = match self {
            Database::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT transaction_id::text, position FROM events \
                     WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                     ORDER BY events.transaction_id DESC, events.position DESC LIMIT 1",
                )
                .fetch_optional(pool)
                .await?
            }
            Database::Sqlite { reader, .. } => {
                sqlx::query_as("SELECT '0', position FROM events ORDER BY position DESC LIMIT 1")
                    .fetch_optional(reader)
                    .await?
            }
        };
        match row {
            None => Ok(GlobalCursor::START),
            Some((tx, position)) => Ok(GlobalCursor {
                transaction_id: tx.parse().map_err(|e| LedgerError::Corrupt(format!("transaction id: {e}")))?,
                position,
            }),
        }
    }
}
