//! The log, read and decoded ahead of a rebuild by another thread, so
//! reading and decoding (most of a rebuild's CPU) run beside applying and
//! writing instead of between them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use admit_ledger::scan::LogScan;
use admit_ledger::{Database, GlobalCursor, RecordedEvent};
use tokio::sync::mpsc;

use crate::codec::Sealed;
use crate::{Codec, Envelope, Result};

/// A decoded batch of the log and the cursor after it.
pub(crate) type Batch = Result<(Vec<Envelope>, GlobalCursor)>;

/// Batches read ahead (bounds the memory the feed holds).
const AHEAD: usize = 2;

/// The log's decoded batches, in order, and the way back for the spent
/// ones. A batch is freed by the thread that read and decoded it: freed by
/// the rebuild's own thread, its thousands of strings and boxes went back
/// to another thread's heap one by one, about a twentieth of the applying
/// thread's time, while the reading thread had time to spare.
#[derive(Debug)]
pub(crate) struct Feed {
    batches: mpsc::Receiver<Batch>,
    spent: std::sync::mpsc::Sender<Vec<Envelope>>,
}

impl Feed {
    /// The next batch; None after the last one (or after an error).
    pub(crate) async fn recv(&mut self) -> Option<Batch> {
        self.batches.recv().await
    }

    /// Hands back a batch the rebuild is done with, to be freed by the
    /// reader (or here, when the reader has finished).
    pub(crate) fn spent(&self, events: Vec<Envelope>) {
        let _ = self.spent.send(events);
    }
}

/// Frees the batches handed back so far.
fn free_spent(spent: &std::sync::mpsc::Receiver<Vec<Envelope>>) {
    spent.try_iter().for_each(drop);
}

/// Starts reading the whole log in batches of `size` events, in log order;
/// the receiver ends after the last batch, or after an error. Dropping the
/// receiver stops the reading.
///
/// A SQLite file is read and decoded by a thread of its own through
/// [`LogScan`]. PostgreSQL's log is read by a task streaming one binary
/// copy of the gap-safe global order
/// ([`LogCopy`](admit_ledger::copy_scan::LogCopy)) and decoded by another;
/// an in-memory SQLite database's is paged through.
pub(crate) fn spawn(db: &Database, size: usize) -> Feed {
    let (out, batches) = mpsc::channel(AHEAD);
    let (spent, spent_batches) = std::sync::mpsc::channel();
    let feed = Feed { batches, spent };
    let mut spent_batches = Some(spent_batches);
    if let Some(path) = db.sqlite_file() {
        let (sender, spent) = (out.clone(), spent_batches.take());
        let started = std::thread::Builder::new()
            .name("admit-rebuild-feed".into())
            .spawn(move || scan(path, size, sender, spent.expect("taken once")));
        if started.is_ok() {
            return feed;
        }
        // The receiver of spent batches went with the closure: batches are
        // freed by the rebuild.
    }
    // Reading and decoding are two tasks, so that the next batch arrives
    // (and the server produces it) while the last one is decoded.
    let (read_out, mut read) = mpsc::channel(AHEAD);
    tokio::spawn(read_log(db.clone(), size, read_out));
    let db = db.clone();
    tokio::spawn(async move {
        let mut decoding = Duration::ZERO;
        while let Some(events) = read.recv().await {
            if let Some(spent) = &spent_batches {
                free_spent(spent);
            }
            let batch = async {
                let events: Vec<RecordedEvent> = events?;
                let cursor = events.last().map(GlobalCursor::after).unwrap_or(GlobalCursor::START);
                let t = Instant::now();
                let decoded = Codec::decode_all(&db, &events).await?;
                decoding += t.elapsed();
                Ok((decoded, cursor))
            };
            let batch = batch.await;
            let failed = batch.is_err();
            if out.send(batch).await.is_err() || failed {
                return;
            }
        }
        tracing::debug!(?decoding, "rebuild feed: the log decoded");
    });
    feed
}

/// Reads the log in batches of `size` into `out` until it is all read
/// (then `out` closes), or until an error (sent) or the receiver is gone.
/// PostgreSQL streams it as one binary copy; an in-memory SQLite database
/// is paged through.
async fn read_log(db: Database, size: usize, out: mpsc::Sender<admit_ledger::Result<Vec<RecordedEvent>>>) {
    let started = Instant::now();
    let mut copy = match db.copy_log().await {
        Ok(copy) => copy,
        Err(e) => {
            let _ = out.send(Err(e)).await;
            return;
        }
    };
    let mut after = GlobalCursor::START;
    loop {
        let events = match &mut copy {
            Some(log) => log.next_batch(size).await,
            None => db.read_all_payloads(after, size as i64).await,
        };
        match &events {
            Ok(batch) if batch.is_empty() => break,
            Ok(batch) => after = batch.last().map(GlobalCursor::after).unwrap_or(after),
            Err(_) => {}
        }
        let failed = events.is_err();
        if out.send(events).await.is_err() || failed {
            return;
        }
    }
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild feed: the log read");
}

/// The SQLite reader thread's loop.
fn scan(path: PathBuf, size: usize, out: mpsc::Sender<Batch>, spent: std::sync::mpsc::Receiver<Vec<Envelope>>) {
    let mut log = match LogScan::open(&path) {
        Ok(log) => log,
        Err(e) => {
            let _ = out.blocking_send(Err(e.into()));
            return;
        }
    };
    let mut after = 0;
    loop {
        free_spent(&spent);
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
    let sealed = Sealed::locate(events);
    let keys = log.person_keys(&sealed.people())?;
    Codec::decode_located_batch(events, &sealed, &keys)
}
