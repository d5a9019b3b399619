//! Rebuilding read models from the log, and checking a rebuild against the
//! live tables.

use admit_ledger::personal::LookupKey;
use admit_ledger::{on_db, on_db_write, on_tx, Database, GlobalCursor};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::schema::{self, TABLES};
use crate::bulk::BulkProjector;
use crate::{Codec, Envelope, Result};

/// Name of the projector that writes every read model.
pub const PROJECTOR: &str = "read_models";

/// Prefix of the tables a rebuild writes before it swaps them in.
pub const REBUILD_PREFIX: &str = "rebuild_";

/// Events projected per transaction during a rebuild.
const BATCH: i64 = 10_000;

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Events applied.
    pub events: u64,
    /// Where it stopped.
    pub cursor: GlobalCursor,
}

/// Creates the live read-model tables when missing, and rebuilds them from
/// the log when their description (`schema::TABLES`) changed since they
/// were built — an upgrade that adds a column needs no manual `admit
/// replay`. The description in force is kept in `read_model_schema`.
pub async fn ensure_live_tables(db: &Database, lookup: &LookupKey) -> Result<()> {
    let description = schema::description(db.backend());
    let mut tx = db.begin().await?;
    on_tx!(tx, c => sqlx::query(
        "CREATE TABLE IF NOT EXISTS read_model_schema (id INTEGER PRIMARY KEY, description TEXT NOT NULL)",
    )
    .execute(&mut *c)
    .await
    .map(|_| ())?);
    let built: Option<String> = on_tx!(tx, c => sqlx::query_scalar("SELECT description FROM read_model_schema WHERE id = 1")
        .fetch_optional(&mut *c)
        .await?);
    let has_tables = on_tx!(tx, c => sqlx::query_scalar::<_, i64>(match db.backend() {
        admit_ledger::Backend::Postgres => "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'invitations' AND table_schema = current_schema()",
        admit_ledger::Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'invitations'",
    })
    .fetch_one(&mut *c)
    .await?) > 0;
    schema::create(&mut tx, "").await?;
    tx.commit().await?;
    if built.as_deref() != Some(description.as_str()) {
        if has_tables {
            tracing::info!("the read-model description changed: rebuilding the read models from the log");
            replay(db, lookup).await?;
        }
        on_db_write!(db, p => sqlx::query(
            "INSERT INTO read_model_schema (id, description) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET description = excluded.description",
        )
        .bind(&description)
        .execute(p)
        .await
        .map(|_| ())?);
    }
    Ok(())
}

/// Projects the whole log into fresh tables under `prefix`, streaming it in
/// batches (memory does not grow with the log), recording the projector's
/// checkpoint with each batch's writes. The last stretch runs with writers
/// held off, so the result reflects every event committed when it returns.
pub async fn rebuild_into(db: &Database, lookup: &LookupKey, prefix: &str) -> Result<Rebuilt> {
    rebuild(db, lookup, prefix, false).await
}

/// Rebuilds every read model from the log and swaps the result in place of
/// the live tables. The swap and the catch-up before it run in one
/// transaction with writers held off, so no write is lost in between.
pub async fn replay(db: &Database, lookup: &LookupKey) -> Result<Rebuilt> {
    rebuild(db, lookup, REBUILD_PREFIX, true).await
}

async fn rebuild(db: &Database, lookup: &LookupKey, prefix: &str, swap: bool) -> Result<Rebuilt> {
    let cache_before = sqlite_cache_size(db, None).await?;
    let mut tx = db.begin().await?;
    schema::drop(&mut tx, prefix).await?;
    schema::create_tables(&mut tx, prefix).await?;
    tx.commit().await?;

    // Events are projected a batch at a time in memory and written with a
    // few multi-row statements (see `bulk`); the next batch is read and
    // decoded while the current one is written.
    let mut bulk = BulkProjector::new(prefix, lookup.clone());
    let mut cursor = GlobalCursor::START;
    let mut events = 0u64;
    // Bulk of the log: gap-safe batches, one transaction each, writers free.
    let started = Instant::now();
    let (mut writing, mut reading) = (Duration::ZERO, Duration::ZERO);
    let mut next = read_batch(db, cursor).await?;
    while let Some((decoded, after)) = next.take() {
        let write = async {
            let t = Instant::now();
            let mut tx = db.begin().await?;
            if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
                // A batch lost in a crash is simply rebuilt again: no need
                // to wait for its WAL flush (the swap commits durably).
                sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut **t).await?;
            }
            bulk.apply_all(&mut tx, &decoded).await?;
            record_checkpoint(&mut tx, prefix, after).await?;
            tx.commit().await?;
            Ok::<_, crate::ProjectionError>(t.elapsed())
        };
        let read = async {
            let t = Instant::now();
            read_batch(db, after).await.map(|r| (r, t.elapsed()))
        };
        let (written, read) = futures::join!(write, read);
        writing += written?;
        let (read, took) = read?;
        reading += took;
        next = read;
        cursor = after;
        events += decoded.len() as u64;
    }
    tracing::debug!(?writing, ?reading, elapsed = ?started.elapsed(), events, "rebuild: bulk of the log projected");
    let started = Instant::now();
    // The tail: hold writers off, catch up on what committed meanwhile.
    let mut tx = db.begin().await?;
    tx.lock_log().await?;
    loop {
        let batch = tx.read_all_committed(cursor, BATCH).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let decoded = Codec::decode_all_in(&mut tx, &batch).await?;
        bulk.apply_all(&mut tx, &decoded).await?;
        events += decoded.len() as u64;
    }
    record_checkpoint(&mut tx, prefix, cursor).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: tail projected");
    let started = Instant::now();
    if swap {
        // The rebuilt tables take the live ones' place by name (no copy),
        // then get the live tables' indexes.
        schema::drop(&mut tx, "").await?;
        for table in TABLES.iter().chain(std::iter::once(&schema::CHECKPOINTS)) {
            let rename = format!("ALTER TABLE {prefix}{0} RENAME TO {0}", table.name);
            admit_ledger::on_tx!(&mut tx, c => sqlx::query(&rename).execute(&mut *c).await.map(|_| ())?);
        }
        schema::create(&mut tx, "").await?;
    } else {
        schema::create(&mut tx, prefix).await?;
    }
    tx.commit().await?;
    sqlite_cache_size(db, cache_before).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: swapped in");
    Ok(Rebuilt { events, cursor })
}

/// Pages SQLite's writer connection keeps in memory while rebuilding.
const REBUILD_CACHE_KIB: i64 = 64 * 1024;

/// On SQLite, sets the writer connection's page cache (`PRAGMA
/// cache_size`) to `restore`, or when None enlarges it for a rebuild (the
/// default 2 MiB re-reads the rebuilt tables' pages for every batch);
/// returns the size it replaced. Nothing on PostgreSQL.
async fn sqlite_cache_size(db: &Database, restore: Option<i64>) -> Result<Option<i64>> {
    let Database::Sqlite { writer, .. } = db else { return Ok(None) };
    let before: i64 = sqlx::query_scalar("PRAGMA cache_size").fetch_one(writer).await?;
    let size = restore.unwrap_or(-REBUILD_CACHE_KIB);
    sqlx::query(&format!("PRAGMA cache_size = {size}")).execute(writer).await?;
    Ok(Some(before))
}

/// The next batch of the log after `after`, decoded, with the cursor after
/// it; None at the end of the log.
async fn read_batch(db: &Database, after: GlobalCursor) -> Result<Option<(Vec<Envelope>, GlobalCursor)>> {
    let batch = db.read_all(after, BATCH).await?;
    let Some(last) = batch.last() else { return Ok(None) };
    let cursor = GlobalCursor::after(last);
    Ok(Some((Codec::decode_all(db, &batch).await?, cursor)))
}

async fn record_checkpoint(tx: &mut admit_ledger::Tx, prefix: &str, cursor: GlobalCursor) -> Result<()> {
    let sql = format!(
        "INSERT INTO {prefix}projector_checkpoints (projector, transaction_id, position, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projector) DO UPDATE SET transaction_id = excluded.transaction_id, position = excluded.position, \
         updated_at = excluded.updated_at"
    );
    admit_ledger::on_tx!(tx, c => sqlx::query(&sql)
        .bind(PROJECTOR)
        .bind(cursor.transaction_id.to_string())
        .bind(cursor.position)
        .bind(Utc::now())
        .execute(&mut *c)
        .await
        .map(|_| ())?);
    Ok(())
}

/// Every row of every read model under `prefix`, as text cells, per table.
pub async fn dump(db: &Database, prefix: &str) -> Result<Vec<(String, Vec<Vec<Option<String>>>)>> {
    let backend = db.backend();
    let mut out = Vec::new();
    for table in TABLES {
        let sql = table.dump_sql(backend, prefix);
        let rows = on_db!(db, p => {
            use sqlx::Row;
            let rows = sqlx::query(&sql).fetch_all(p).await?;
            rows.iter()
                .map(|r| (0..r.len()).map(|i| r.try_get::<Option<String>, _>(i)).collect::<Result<Vec<_>, _>>())
                .collect::<Result<Vec<_>, _>>()?
        });
        out.push((table.name.to_string(), rows));
    }
    Ok(out)
}

/// Drops the tables of a rebuild that was only checked, not swapped in (a
/// leftover copy would keep personal data that erasure scrubs elsewhere).
pub async fn discard(db: &Database, prefix: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    schema::drop(&mut tx, prefix).await?;
    tx.commit().await?;
    Ok(())
}
