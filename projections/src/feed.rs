//! The log, read and decoded ahead of a rebuild by another thread, so
//! reading and decoding (most of a rebuild's CPU) run beside applying and
//! writing instead of between them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use admit_ledger::scan::LogScan;
use admit_ledger::{Database, GlobalCursor, RecordedEvent};
use tokio::sync::mpsc;

use crate::{Codec, Envelope, Result};

/// A decoded batch of the log and the cursor after it.
pub(crate) type Batch = Result<(Vec<Envelope>, GlobalCursor)>;

/// Batches read ahead (bounds the memory the feed holds).
const AHEAD: usize = 2;

/// Starts reading the whole log in batches of `size` events, in log order;
/// the receiver ends after the last batch, or after an error. Dropping the
/// receiver stops the reading.
///
/// A SQLite file is read by a thread of its own through [`LogScan`];
/// PostgreSQL by a task streaming one binary copy of the gap-safe global
/// order ([`LogCopy`](admit_ledger::copy_scan::LogCopy)); an in-memory
/// SQLite database by a task paging through it.
pub(crate) fn spawn(db: &Database, size: usize) -> mpsc::Receiver<Batch> {
    let (out, batches) = mpsc::channel(AHEAD);
    if let Some(path) = db.sqlite_file() {
        let sender = out.clone();
        let started = std::thread::Builder::new().name("admit-rebuild-feed".into()).spawn(move || scan(path, size, sender));
        if started.is_ok() {
            return batches;
        }
    }
    let db = db.clone();
    tokio::spawn(async move {
        let (mut reading, mut decoding) = (Duration::ZERO, Duration::ZERO);
        let mut after = GlobalCursor::START;
        // PostgreSQL streams the log as one binary copy; an in-memory
        // SQLite database is paged through.
        let mut copy = match db.copy_log().await {
            Ok(copy) => copy,
            Err(e) => {
                let _ = out.send(Err(e.into())).await;
                return;
            }
        };
        loop {
            let batch = async {
                let t = Instant::now();
                let events = match &mut copy {
                    Some(log) => log.next_batch(size).await?,
                    None => db.read_all_payloads(after, size as i64).await?,
                };
                reading += t.elapsed();
                let Some(cursor) = events.last().map(GlobalCursor::after) else { return Ok(None) };
                let t = Instant::now();
                let decoded = Codec::decode_all(&db, &events).await?;
                decoding += t.elapsed();
                Ok(Some((decoded, cursor)))
            };
            match batch.await {
                Ok(None) => {
                    tracing::debug!(?reading, ?decoding, "rebuild feed: the log read and decoded");
                    return;
                }
                Ok(Some(batch)) => {
                    after = batch.1;
                    if out.send(Ok(batch)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = out.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    batches
}

/// The SQLite reader thread's loop.
fn scan(path: PathBuf, size: usize, out: mpsc::Sender<Batch>) {
    let mut log = match LogScan::open(&path) {
        Ok(log) => log,
        Err(e) => {
            let _ = out.blocking_send(Err(e.into()));
            return;
        }
    };
    let mut after = 0;
    loop {
        let batch = log.read_after(after, size).map_err(Into::into).and_then(|events| {
            let Some(cursor) = events.last().map(GlobalCursor::after) else { return Ok(None) };
            Ok(Some((decode(&mut log, &events)?, cursor)))
        });
        match batch {
            Ok(None) => return,
            Ok(Some(batch)) => {
                after = batch.1.position;
                if out.blocking_send(Ok(batch)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = out.blocking_send(Err(e));
                return;
            }
        }
    }
}

fn decode(log: &mut LogScan, events: &[RecordedEvent]) -> Result<Vec<Envelope>> {
    let keys = log.person_keys(&Codec::people(events))?;
    Codec::decode_batch(events, &keys)
}
