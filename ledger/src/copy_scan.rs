//! Reading the whole PostgreSQL log front to back for a rebuild, as one
//! binary `COPY ... TO STDOUT` instead of pages of rows.
//!
//! Paging through the log with `SELECT` made the server format every
//! value as text and sqlx decode every row through its generic row type,
//! columns looked up by name: for a million events 4.4 s of a 10.7-s
//! replay on two cores, half of it on the server. One binary `COPY`
//! streams the same columns as they are stored (integers, UUIDs and times
//! as their bytes), and [`LogCopy`] cuts it into events with a few bounds
//! checks per field.
//!
//! Like [`LogScan`](crate::scan::LogScan) on SQLite it reads what a
//! rebuild needs and nothing else: the hash and the metadata are left
//! empty in the events it returns. The statement's snapshot makes it
//! gap-safe as [`Database::read_all`] is: only events of transactions
//! older than the oldest one in flight when it started are streamed, so
//! reading on with `read_all` from the cursor after the last one misses
//! nothing.

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::StreamExt;
use sqlx::postgres::PgPoolCopyExt;
use uuid::Uuid;

use crate::{Database, LedgerError, Metadata, RecordedEvent, Result};

/// The log in global order, below the oldest transaction in flight.
const COPY: &str = "COPY (SELECT position, transaction_id, event_id, stream_id, stream_version, event_type, \
     schema_version, payload, recorded_at FROM events \
     WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY transaction_id, position) TO STDOUT (FORMAT binary)";

/// Columns per row of [`COPY`].
const FIELDS: i16 = 9;

/// What every binary `COPY` starts with.
const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC), in
/// microseconds: binary timestamps count from the latter.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary `COPY` of the log in progress, on a connection of its own
/// (see [`Database::copy_log`]), closed when the copy is dropped.
pub struct LogCopy {
    data: BoxStream<'static, sqlx::Result<bytes::Bytes>>,
    /// Received bytes from `start` on are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    header_read: bool,
    ended: bool,
}

impl std::fmt::Debug for LogCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCopy").field("ended", &self.ended).finish_non_exhaustive()
    }
}

/// Planner settings of the connection that copies the log, so that the
/// log is read in its global order through the index kept in that order
/// (`events_global_order`) and streams from its first row.
///
/// Left to itself, the planner may instead read the table in parallel and
/// sort it: it did for a million events whose table had no statistics yet
/// (never analysed, as on a server without autovacuum). That sort spilled
/// 260 MB to temporary files and took 1.24 s on three server processes
/// before the first row was sent, against 0.46 s on one through the index;
/// the rebuild waited for it. `enable_sort = off` only makes a sort the
/// last resort, so the copy still works if the index were missing.
const COPY_SETTINGS: [(&str, &str); 3] =
    [("enable_sort", "off"), ("max_parallel_workers_per_gather", "0"), ("jit", "off")];

impl Database {
    /// Starts streaming the whole log in global order (see the module
    /// comment); None on SQLite. The copy runs on a connection of its own,
    /// opened with [`COPY_SETTINGS`] and closed when the copy is dropped,
    /// so no pooled connection keeps those settings.
    pub async fn copy_log(&self) -> Result<Option<LogCopy>> {
        let Database::Postgres(pool) = self else { return Ok(None) };
        let options = (*pool.connect_options()).clone().options(COPY_SETTINGS);
        let copier = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options).await?;
        let data = copier.copy_out_raw(COPY).await?;
        Ok(Some(LogCopy { data, buf: Vec::new(), start: 0, header_read: false, ended: false }))
    }
}

fn corrupt(what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("binary copy of the log: {what}"))
}

/// A row being cut into fields; None from any method means the row is not
/// all received yet.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn int<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("took N bytes"))
    }

    /// The next field's bytes (a NULL is refused later: no column of the
    /// log is nullable).
    fn field(&mut self) -> Option<Option<&'a [u8]>> {
        let len = i32::from_be_bytes(self.int()?);
        if len < 0 {
            return Some(None);
        }
        self.take(len as usize).map(Some)
    }
}

/// One row's fields, as received.
type Row<'a> = [Option<&'a [u8]>; FIELDS as usize];

impl LogCopy {
    /// The next events of the log, at most `size` of them, in log order;
    /// empty once the log is all read.
    pub async fn next_batch(&mut self, size: usize) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::with_capacity(size);
        while out.len() < size && !self.ended {
            match self.parse()? {
                Some(Some(event)) => out.push(event),
                Some(None) => {
                    // The trailer: read the copy to its end, where the
                    // server reports whether the statement succeeded.
                    while let Some(chunk) = self.data.next().await {
                        chunk?;
                    }
                    self.ended = true;
                }
                None => match self.data.next().await {
                    Some(chunk) => {
                        self.buf.drain(..self.start);
                        self.start = 0;
                        self.buf.extend_from_slice(&chunk?);
                    }
                    None => return Err(corrupt("it ended without its trailer")),
                },
            }
        }
        Ok(out)
    }

    /// The next event from the received bytes: None when more bytes are
    /// needed, Some(None) at the trailer.
    fn parse(&mut self) -> Result<Option<Option<RecordedEvent>>> {
        let mut f = Fields { bytes: &self.buf[self.start..], at: 0 };
        if !self.header_read {
            let Some(signature) = f.take(SIGNATURE.len()) else { return Ok(None) };
            if signature != SIGNATURE {
                return Err(corrupt("no COPY signature"));
            }
            let Some(_flags) = f.int::<4>() else { return Ok(None) };
            let Some(extension) = f.int::<4>() else { return Ok(None) };
            if f.take(u32::from_be_bytes(extension) as usize).is_none() {
                return Ok(None);
            }
            self.header_read = true;
            self.start += f.at;
            f = Fields { bytes: &self.buf[self.start..], at: 0 };
        }
        let Some(count) = f.int::<2>().map(i16::from_be_bytes) else { return Ok(None) };
        if count == -1 {
            self.start += f.at;
            return Ok(Some(None));
        }
        if count != FIELDS {
            return Err(corrupt(&format!("{count} fields in a row, not {FIELDS}")));
        }
        let mut row: Row<'_> = [None; FIELDS as usize];
        for field in &mut row {
            let Some(value) = f.field() else { return Ok(None) };
            *field = value;
        }
        let event = event(&row)?;
        self.start += f.at;
        Ok(Some(Some(event)))
    }
}

fn event(row: &Row<'_>) -> Result<RecordedEvent> {
    let [position, transaction_id, event_id, stream_id, stream_version, event_type, schema_version, payload, recorded_at] =
        row.map(|f| f.ok_or_else(|| corrupt("a NULL in the log")));
    let micros = i64::from_be_bytes(fixed(recorded_at?)?);
    let recorded_at = micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(DateTime::<Utc>::from_timestamp_micros)
        .ok_or_else(|| corrupt("a time out of range"))?;
    Ok(RecordedEvent {
        position: i64::from_be_bytes(fixed(position?)?),
        transaction_id: u64::from_be_bytes(fixed(transaction_id?)?),
        event_id: Uuid::from_bytes(fixed(event_id?)?),
        stream_id: text(stream_id?)?,
        stream_version: i64::from_be_bytes(fixed(stream_version?)?),
        event_type: text(event_type?)?,
        schema_version: i32::from_be_bytes(fixed(schema_version?)?),
        payload: text(payload?)?,
        metadata: Metadata::default(),
        metadata_text: String::new(),
        recorded_at,
        hash: Vec::new(),
    })
}

fn fixed<const N: usize>(bytes: &[u8]) -> Result<[u8; N]> {
    bytes.try_into().map_err(|_| corrupt(&format!("a field of {} bytes, not {N}", bytes.len())))
}

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| corrupt("text that is not UTF-8"))
}
