//! Reading the whole SQLite log front to back for a rebuild, through a
//! direct binding (rusqlite) instead of sqlx.
//!
//! sqlx's SQLite driver runs every statement on a worker thread and hands
//! each row over a channel, copying every value of it: for a rebuild that
//! reads a million events that fetch alone costs more than the whole rest
//! of the replay. A [`LogScan`] is a read-only connection of its own to the
//! same file (WAL mode lets it read while the service writes), meant to be
//! driven from a thread of its own so reading and decoding the log use the
//! second core while the rebuild writes on the first.
//!
//! It reads what a rebuild needs and nothing else: the hash and the
//! metadata are left empty in the events it returns (`admit verify` checks
//! the hashes; no read model is built from the metadata).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use crate::personal::PersonKey;
use crate::{Database, LedgerError, Metadata, RecordedEvent, Result};

/// A read-only connection that pages through a SQLite log by position.
pub struct LogScan {
    conn: Connection,
}

impl std::fmt::Debug for LogScan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogScan").finish_non_exhaustive()
    }
}

impl Database {
    /// The file of a SQLite database (None on PostgreSQL, or for an
    /// in-memory SQLite database, which a second connection cannot see).
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let Database::Sqlite { reader, .. } = self else { return None };
        let path = reader.connect_options().get_filename().to_path_buf();
        let name = path.to_string_lossy();
        (!name.is_empty() && name != ":memory:" && !name.starts_with("file:")).then_some(path)
    }
}

fn sqlite(e: rusqlite::Error) -> LedgerError {
    LedgerError::Corrupt(format!("sqlite: {e}"))
}

impl LogScan {
    /// Opens the SQLite file at `path` read-only.
    pub fn open(path: &Path) -> Result<LogScan> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sqlite)?;
        Ok(LogScan { conn })
    }

    /// Up to `limit` events after position `after`, in log order.
    pub fn read_after(&mut self, after: i64, limit: usize) -> Result<Vec<RecordedEvent>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload, recorded_at \
                 FROM events WHERE position > ?1 ORDER BY position LIMIT ?2",
            )
            .map_err(sqlite)?;
        let mut rows = stmt.query((after, limit as i64)).map_err(sqlite)?;
        let mut out = Vec::with_capacity(limit);
        while let Some(row) = rows.next().map_err(sqlite)? {
            let position: i64 = row.get(0).map_err(sqlite)?;
            let corrupt = |what: &str| LedgerError::Corrupt(format!("{what} of the event at position {position}"));
            let id: [u8; 16] = row.get(1).map_err(|_| corrupt("event id"))?;
            let recorded = row.get_ref(7).map_err(sqlite)?.as_str().map_err(|_| corrupt("recorded_at"))?;
            out.push(RecordedEvent {
                position,
                transaction_id: 0,
                event_id: Uuid::from_bytes(id),
                stream_id: row.get(2).map_err(sqlite)?,
                stream_version: row.get(3).map_err(sqlite)?,
                event_type: row.get(4).map_err(sqlite)?,
                schema_version: row.get(5).map_err(sqlite)?,
                payload: row.get(6).map_err(sqlite)?,
                metadata: Metadata::default(),
                metadata_text: String::new(),
                recorded_at: parse_time(recorded).ok_or_else(|| corrupt("recorded_at"))?,
                hash: Vec::new(),
            });
        }
        Ok(out)
    }

    /// The keys of `people` that still exist (erased people are absent).
    pub fn person_keys(&mut self, people: &[Uuid]) -> Result<HashMap<Uuid, PersonKey>> {
        /// People per query.
        const CHUNK: usize = 500;
        let mut out = HashMap::with_capacity(people.len());
        for chunk in people.chunks(CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT person_id, key FROM person_keys WHERE person_id IN ({marks})");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(sqlite)?;
            let ids = chunk.iter().map(|p| &p.as_bytes()[..]);
            let mut rows = stmt.query(rusqlite::params_from_iter(ids)).map_err(sqlite)?;
            while let Some(row) = rows.next().map_err(sqlite)? {
                let (id, key): (Vec<u8>, Vec<u8>) = (row.get(0).map_err(sqlite)?, row.get(1).map_err(sqlite)?);
                if let (Ok(id), Some(key)) = (Uuid::from_slice(&id), PersonKey::from_slice(&key)) {
                    out.insert(id, key);
                }
            }
        }
        Ok(out)
    }
}

/// A time as sqlx writes it into SQLite (RFC 3339, e.g.
/// `2026-11-23T10:00:00.123456+00:00`).
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_times_sqlx_writes() {
        let t = DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap();
        let written = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false);
        assert_eq!(parse_time(&written), Some(t));
        assert_eq!(parse_time("yesterday"), None);
    }
}
