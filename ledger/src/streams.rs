//! Appending to several streams in one go: what one command (an account
//! and an invitation) or one batch of delivery records (many invitations)
//! writes. On PostgreSQL this takes five statements whatever the number of
//! streams, where one append per stream takes five each; round trips to
//! the server, not the statements' work, were most of what such a batch
//! cost (see docs/performance.md, "Relay and mail lag").

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::hash::GENESIS;
use crate::log::{chain_rows, metadata_text, storable_time};
use crate::{AppendOutcome, Conn, ExpectedVersion, LedgerError, Metadata, NewEvent, Result, Tx};

/// One stream's part of [`Tx::append_streams`]: like the arguments of
/// [`Tx::append`].
#[derive(Debug, Clone, Copy)]
pub struct StreamAppend<'a> {
    /// The stream appended to.
    pub stream: &'a str,
    /// The version it must be at.
    pub expected: ExpectedVersion,
    /// The events, in order.
    pub events: &'a [NewEvent],
}

impl Tx {
    /// Appends to each stream as [`Tx::append`] would, one after the
    /// other, with the same outcomes and errors, and the same metadata and
    /// time on every event.
    ///
    /// On PostgreSQL, when the streams are distinct and none of the
    /// appends is empty, it takes five statements in all: the retry check
    /// for every event id, the stream heads locked in stream order (so two
    /// such batches never wait on each other in a cycle), the check that
    /// this transaction comes after each stream's last writer, the heads
    /// moved, and the events inserted. Otherwise (SQLite, where there is no
    /// round trip to save; one stream; repeated streams) it appends one
    /// stream after the other.
    pub async fn append_streams(
        &mut self,
        appends: &[StreamAppend<'_>],
        metadata: &Metadata,
        recorded_at: DateTime<Utc>,
    ) -> Result<Vec<AppendOutcome>> {
        let distinct = appends.iter().map(|a| a.stream).collect::<BTreeSet<_>>().len() == appends.len();
        let batched = matches!(self.conn, Conn::Postgres(_))
            && appends.len() > 1
            && distinct
            && appends.iter().all(|a| !a.events.is_empty());
        if !batched {
            let mut outcomes = Vec::with_capacity(appends.len());
            for a in appends {
                outcomes.push(self.append(a.stream, a.expected, a.events, metadata, recorded_at).await?);
            }
            return Ok(outcomes);
        }
        let mut outcomes = self.already_appended(appends).await?;
        let todo: Vec<&StreamAppend<'_>> =
            appends.iter().zip(&outcomes).filter(|(_, o)| o.is_none()).map(|(a, _)| a).collect();
        if !todo.is_empty() {
            let appended = self.append_new(&todo, metadata, recorded_at).await?;
            let mut appended = appended.into_iter();
            for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                *outcome = appended.next();
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every append has its outcome")).collect())
    }

    /// For each append, its outcome when all its events are already stored
    /// (a retry); an error when only some of them are, or in another stream.
    async fn already_appended(&mut self, appends: &[StreamAppend<'_>]) -> Result<Vec<Option<AppendOutcome>>> {
        let Conn::Postgres(t) = &mut self.conn else { unreachable!("batched on PostgreSQL only") };
        let ids: Vec<Uuid> = appends.iter().flat_map(|a| a.events.iter().map(|e| e.event_id)).collect();
        let found: Vec<(Uuid, String, i64)> =
            sqlx::query_as("SELECT event_id, stream_id, stream_version FROM events WHERE event_id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut **t)
                .await?;
        let found: HashMap<Uuid, (String, i64)> = found.into_iter().map(|(id, s, v)| (id, (s, v))).collect();
        let mut outcomes = Vec::with_capacity(appends.len());
        for a in appends {
            let stored: Vec<&(String, i64)> = a.events.iter().filter_map(|e| found.get(&e.event_id)).collect();
            if stored.is_empty() {
                outcomes.push(None);
                continue;
            }
            if stored.len() != a.events.len() || stored.iter().any(|(s, _)| s != a.stream) {
                return Err(LedgerError::PartialDuplicate { stream: a.stream.to_string() });
            }
            let version = stored.iter().map(|(_, v)| *v).max().unwrap_or(0);
            outcomes.push(Some(AppendOutcome { version, already_appended: true }));
        }
        Ok(outcomes)
    }

    /// Appends events none of which is stored yet, to distinct streams.
    async fn append_new(
        &mut self,
        appends: &[&StreamAppend<'_>],
        metadata: &Metadata,
        recorded_at: DateTime<Utc>,
    ) -> Result<Vec<AppendOutcome>> {
        let Conn::Postgres(t) = &mut self.conn else { unreachable!("batched on PostgreSQL only") };
        let streams: Vec<&str> = appends.iter().map(|a| a.stream).collect();
        let heads: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
            "SELECT stream_id, version, last_hash FROM streams WHERE stream_id = ANY($1) ORDER BY stream_id FOR UPDATE",
        )
        .bind(&streams)
        .fetch_all(&mut **t)
        .await?;
        let heads: HashMap<String, (i64, Vec<u8>)> = heads.into_iter().map(|(s, v, h)| (s, (v, h))).collect();

        // As `ensure_after_the_streams_last_writer`, for every stream at once.
        let existing: Vec<&str> = streams.iter().copied().filter(|s| heads.contains_key(*s)).collect();
        if !existing.is_empty() {
            let behind: Option<String> = sqlx::query_scalar(
                "SELECT u.stream_id FROM unnest($1::text[]) AS u(stream_id) \
                 WHERE (SELECT e.transaction_id > pg_current_xact_id() FROM events e \
                        WHERE e.stream_id = u.stream_id ORDER BY e.stream_version DESC LIMIT 1) \
                 LIMIT 1",
            )
            .bind(&existing)
            .fetch_optional(&mut **t)
            .await?;
            if let Some(stream) = behind {
                let actual = heads.get(&stream).map_or(0, |(v, _)| *v);
                return Err(LedgerError::Conflict {
                    stream,
                    expected: "a transaction after the stream's last writer".into(),
                    actual,
                });
            }
        }

        let recorded_at = storable_time(recorded_at);
        let metadata_text = metadata_text(metadata)?;
        let mut rows = Vec::new();
        let mut outcomes = Vec::with_capacity(appends.len());
        // Heads to move: (stream, from version, to version, hash), and new ones.
        let (mut moved, mut created) = (Heads::default(), Heads::default());
        for a in appends {
            let head = heads.get(a.stream);
            let current = head.map_or(0, |(v, _)| *v);
            if let ExpectedVersion::Exact(v) = a.expected {
                if v != current {
                    return Err(LedgerError::Conflict {
                        stream: a.stream.to_string(),
                        expected: a.expected.to_string(),
                        actual: current,
                    });
                }
            }
            let previous = head.map_or_else(|| GENESIS.to_vec(), |(_, h)| h.clone());
            let (chained, last_hash) = chain_rows(a.stream, current, previous, a.events, &metadata_text, recorded_at);
            rows.extend(chained.into_iter().map(|(version, event, hash)| (a.stream, version, event, hash)));
            let version = current + a.events.len() as i64;
            let heads = if head.is_some() { &mut moved } else { &mut created };
            heads.push(a.stream, current, version, last_hash);
            outcomes.push(AppendOutcome { version, already_appended: false });
        }

        if !moved.streams.is_empty() {
            let done: Vec<String> = sqlx::query_scalar(
                "UPDATE streams SET version = u.version, last_hash = u.last_hash \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bytea[]) AS u(stream_id, from_version, version, last_hash) \
                 WHERE streams.stream_id = u.stream_id AND streams.version = u.from_version RETURNING streams.stream_id",
            )
            .bind(&moved.streams)
            .bind(&moved.from)
            .bind(&moved.to)
            .bind(&moved.hashes)
            .fetch_all(&mut **t)
            .await?;
            moved.all_in(done)?;
        }
        if !created.streams.is_empty() {
            let done: Vec<String> = sqlx::query_scalar(
                "INSERT INTO streams (stream_id, version, last_hash) \
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[]) \
                 ON CONFLICT (stream_id) DO NOTHING RETURNING stream_id",
            )
            .bind(&created.streams)
            .bind(&created.to)
            .bind(&created.hashes)
            .fetch_all(&mut **t)
            .await?;
            created.all_in(done)?;
        }

        self.insert_events(&rows, &metadata_text, recorded_at, "events not stored yet").await?;
        Ok(outcomes)
    }
}

/// Stream heads to write, as columns (bound as arrays).
#[derive(Default)]
struct Heads<'a> {
    streams: Vec<&'a str>,
    from: Vec<i64>,
    to: Vec<i64>,
    hashes: Vec<Vec<u8>>,
}

impl<'a> Heads<'a> {
    fn push(&mut self, stream: &'a str, from: i64, to: i64, hash: Vec<u8>) {
        self.streams.push(stream);
        self.from.push(from);
        self.to.push(to);
        self.hashes.push(hash);
    }

    /// A conflict on the first stream whose head was not written (another
    /// transaction moved or created it first).
    fn all_in(&self, written: Vec<String>) -> Result<()> {
        if written.len() == self.streams.len() {
            return Ok(());
        }
        let written: BTreeSet<String> = written.into_iter().collect();
        let stream = self.streams.iter().find(|s| !written.contains(**s)).copied().unwrap_or_default();
        Err(LedgerError::Conflict { stream: stream.to_string(), expected: "its head unmoved".into(), actual: -1 })
    }
}
