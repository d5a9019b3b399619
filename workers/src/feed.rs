//! The events a worker consumes, with a durable checkpoint per worker.
//!
//! One interface, two sources: [`LogFeed`] tails the log itself (gap-safe
//! global order; embedded mode), [`crate::topic::TopicFeed`] consumes the
//! Kafka topic the relay fills, in a consumer group. Either way a worker
//! commits only after it has handled a batch, so a restart resumes where it
//! stopped and redelivers at most the unfinished batch (handlers are
//! idempotent on event id).

use std::sync::Mutex;

use admit_ledger::{on_db, on_db_write, Database, GlobalCursor, RecordedEvent};
use admit_projections::{Codec, Envelope};
use chrono::Utc;

use crate::topic::TopicFeed;
use crate::Result;

/// Where a worker's events come from.
#[derive(Debug)]
pub enum Feed {
    /// The log, tailed directly (embedded mode).
    Log {
        /// The log reader with its checkpoint.
        log: LogFeed,
        /// Where the last polled batch ends, and where the checkpoint is.
        cursors: Mutex<Cursors>,
    },
    /// The Kafka topic, in a consumer group.
    Topic(TopicFeed),
}

impl Feed {
    /// The log of `db`, with `worker`'s checkpoint.
    pub fn log(db: Database, worker: &str) -> Feed {
        Feed::Log { log: LogFeed::new(db, worker), cursors: Mutex::new(Cursors::default()) }
    }

    /// The next events after the last commit (at most `limit`; none when
    /// nothing is waiting). Polling again without a commit may hand out the
    /// same events again.
    pub async fn poll(&self, limit: usize) -> Result<Vec<Envelope>> {
        match self {
            Feed::Log { log, cursors } => {
                let saved = cursors.lock().expect("feed lock").saved;
                let after = match saved {
                    Some(c) => c,
                    None => log.checkpoint().await?,
                };
                let batch = log.next(after, limit as i64).await?;
                let mut cursors = cursors.lock().expect("feed lock");
                cursors.saved = Some(after);
                cursors.polled = batch.last().map(|(c, _)| *c);
                Ok(batch.into_iter().map(|(_, e)| e).collect())
            }
            Feed::Topic(topic) => topic.poll(limit).await,
        }
    }

    /// Records that every event polled so far is handled.
    pub async fn commit(&self) -> Result<()> {
        match self {
            Feed::Log { log, cursors } => {
                let polled = cursors.lock().expect("feed lock").polled.take();
                let Some(c) = polled else { return Ok(()) };
                log.save(c).await?;
                cursors.lock().expect("feed lock").saved = Some(c);
                Ok(())
            }
            Feed::Topic(topic) => topic.commit().await,
        }
    }

    /// The same feed, handing out events with their personal data left
    /// sealed: every person reads as [`Personal::Erased`](admit_domain::personal::Personal::Erased).
    /// For the workers that never use an email or a name (expiry,
    /// analytics): a batch then costs no query for the people's keys and
    /// no decryption.
    pub fn without_personal_data(self) -> Feed {
        match self {
            Feed::Log { log, cursors } => Feed::Log { log: LogFeed { personal: false, ..log }, cursors },
            Feed::Topic(topic) => Feed::Topic(topic.without_personal_data()),
        }
    }
}

/// A log feed's two positions.
///
/// The checkpoint is read from the database once and then kept here, as
/// the relay keeps its own: only this worker moves it, and reading it back
/// before every batch was a statement per batch per worker (a worker polls
/// again at once while it finds events, so under load that is about one
/// statement per few events appended). A second process running the same
/// worker on the same database (two embedded servers) therefore follows
/// its own position; the handlers are idempotent on event id, so the
/// overlap costs work, never a double effect.
#[derive(Debug, Default)]
pub struct Cursors {
    /// Where the last polled batch ends (saved by [`Feed::commit`]).
    polled: Option<GlobalCursor>,
    /// The checkpoint as last read or saved; None until the first poll.
    saved: Option<GlobalCursor>,
}

/// A worker's view of the log.
#[derive(Debug, Clone)]
pub struct LogFeed {
    db: Database,
    worker: String,
    /// Open the personal data of the events (see [`Feed::without_personal_data`]).
    personal: bool,
}

impl LogFeed {
    /// The feed of `worker` (its name keys the checkpoint).
    pub fn new(db: Database, worker: &str) -> LogFeed {
        LogFeed { db, worker: worker.to_string(), personal: true }
    }

    /// Where the worker stopped last (the start of the log the first time).
    pub async fn checkpoint(&self) -> Result<GlobalCursor> {
        let row: Option<(String, i64)> = on_db!(&self.db, p => sqlx::query_as(
            "SELECT transaction_id, position FROM worker_checkpoints WHERE worker = $1",
        )
        .bind(&self.worker)
        .fetch_optional(p)
        .await?);
        Ok(match row {
            Some((tx, position)) => GlobalCursor { transaction_id: tx.parse().unwrap_or(0), position },
            None => GlobalCursor::START,
        })
    }

    /// The next events after `after`, decoded, with the cursor after each.
    pub async fn next(&self, after: GlobalCursor, limit: i64) -> Result<Vec<(GlobalCursor, Envelope)>> {
        let batch = self.db.read_all(after, limit).await?;
        let decoded = decode(&self.db, &batch, self.personal).await?;
        Ok(batch.iter().map(GlobalCursor::after).zip(decoded).collect())
    }

    /// The next stored events after `after`, as they are in the log
    /// (personal data still sealed), for publishing.
    pub async fn next_raw(&self, after: GlobalCursor, limit: i64) -> Result<Vec<admit_ledger::RecordedEvent>> {
        Ok(self.db.read_all(after, limit).await?)
    }

    /// Records that everything up to `cursor` is handled.
    pub async fn save(&self, cursor: GlobalCursor) -> Result<()> {
        on_db_write!(&self.db, p => sqlx::query(
            "INSERT INTO worker_checkpoints (worker, transaction_id, position, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (worker) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position, \
             updated_at = excluded.updated_at",
        )
        .bind(&self.worker)
        .bind(cursor.transaction_id.to_string())
        .bind(cursor.position)
        .bind(Utc::now())
        .execute(p)
        .await
        .map(|_| ())?);
        Ok(())
    }
}

/// Decodes a batch of either feed, opening its personal data with the keys
/// in `db` when `personal` (see [`Feed::without_personal_data`]).
pub(crate) async fn decode(db: &Database, events: &[RecordedEvent], personal: bool) -> Result<Vec<Envelope>> {
    Ok(match personal {
        true => Codec::decode_all(db, events).await?,
        false => Codec::decode_batch(events, &Default::default())?,
    })
}

/// Runs `round` until `shutdown` turns true: again at once while rounds find
/// work (return more than 0), otherwise after `idle` (or at shutdown). A
/// failed round is logged and retried after `idle`; the worker never dies
/// of a passing outage.
pub async fn poll_until_shutdown<F, Fut>(
    worker: &str,
    idle: std::time::Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut round: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        match round().await {
            Ok(0) => {}
            Ok(_) => continue,
            Err(e) => tracing::warn!(worker, error = %e, "round failed; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(idle) => {}
            _ = shutdown.changed() => {}
        }
    }
}
