//! Rebuilding read models from the log, and checking a rebuild against the
//! live tables.

use admit_ledger::personal::LookupKey;
use admit_ledger::{on_db, on_db_write, on_tx, Database, GlobalCursor};
use std::time::{Duration, Instant};

use chrono::Utc;

use crate::bulk::BulkProjector;
use crate::feed;
use crate::schema::{self, TABLES};
use crate::{Codec, Result};

/// Name of the projector that writes every read model.
pub const PROJECTOR: &str = "read_models";

/// Prefix of the tables a rebuild writes before it swaps them in.
pub const REBUILD_PREFIX: &str = "rebuild_";

/// How long a rebuild's transaction stays open before it commits (between
/// batches).
const COMMIT_EVERY: Duration = Duration::from_millis(250);

/// Events projected per batch during a rebuild, by default: 10,000 was a
/// few percent faster but held 20–30 MiB more of decoded events in flight.
const BATCH: i64 = 5_000;

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
    .await?)
        > 0;
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

/// How a rebuild runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildOptions {
    /// Rows per read model held in memory while rebuilding (see the bulk
    /// projector): memory is bounded by this, not by the log; a larger
    /// bound writes each row fewer times.
    pub resident_rows: usize,
    /// Events read, decoded and applied at a time.
    pub batch: usize,
}

impl Default for RebuildOptions {
    fn default() -> RebuildOptions {
        RebuildOptions { resident_rows: crate::bulk::DEFAULT_RESIDENT_ROWS, batch: BATCH as usize }
    }
}

/// Projects the whole log into fresh tables under `prefix`, streaming it in
/// batches. The last stretch runs with writers held off, so the result
/// reflects every event committed when it returns.
pub async fn rebuild_into(db: &Database, lookup: &LookupKey, prefix: &str) -> Result<Rebuilt> {
    rebuild(db, lookup, prefix, false, RebuildOptions::default()).await
}

/// [`rebuild_into`] with options.
pub async fn rebuild_into_with(
    db: &Database,
    lookup: &LookupKey,
    prefix: &str,
    options: RebuildOptions,
) -> Result<Rebuilt> {
    rebuild(db, lookup, prefix, false, options).await
}

/// Rebuilds every read model from the log and swaps the result in place of
/// the live tables. The swap and the catch-up before it run in one
/// transaction with writers held off, so no write is lost in between.
pub async fn replay(db: &Database, lookup: &LookupKey) -> Result<Rebuilt> {
    rebuild(db, lookup, REBUILD_PREFIX, true, RebuildOptions::default()).await
}

/// [`replay`] with options.
pub async fn replay_with(db: &Database, lookup: &LookupKey, options: RebuildOptions) -> Result<Rebuilt> {
    rebuild(db, lookup, REBUILD_PREFIX, true, options).await
}

async fn rebuild(
    db: &Database,
    lookup: &LookupKey,
    prefix: &str,
    swap: bool,
    options: RebuildOptions,
) -> Result<Rebuilt> {
    let settings_before = sqlite_settings(db, None).await?;
    let rebuilt = rebuild_with_settings(db, lookup, prefix, swap, options).await;
    if let Err(e) = &rebuilt {
        // What a failed rebuild wrote holds copies of personal data that
        // erasure does not reach (it scrubs the live tables): dropped.
        if let Err(dropping) = discard(db, prefix).await {
            tracing::warn!(error = %dropping, rebuild = %e, "a failed rebuild's tables could not be dropped");
        }
    }
    // The writer gets its own settings back whether or not the rebuild
    // succeeded: a failed one would otherwise leave the service's writes
    // with its page cache and checkpoint interval.
    let started = Instant::now();
    let restored = sqlite_settings(db, settings_before).await;
    let rebuilt = rebuilt?;
    restored?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: the writer's settings restored");
    Ok(rebuilt)
}

/// [`rebuild`] with the writer's settings already set for it.
async fn rebuild_with_settings(
    db: &Database,
    lookup: &LookupKey,
    prefix: &str,
    swap: bool,
    options: RebuildOptions,
) -> Result<Rebuilt> {
    let mut tx = db.begin().await?;
    schema::drop(&mut tx, prefix).await?;
    schema::create_tables(&mut tx, prefix).await?;
    tx.commit().await?;

    // The log is read and decoded on another thread (see `feed`) while this
    // one applies it; rows are kept in memory and written about once (see
    // `bulk`).
    let mut bulk = BulkProjector::new(prefix, lookup.clone(), options.resident_rows);
    bulk.write_aside(db).await?;
    let mut cursor = GlobalCursor::START;
    let mut events = 0u64;
    // Bulk of the log: gap-safe batches, writers free.
    let started = Instant::now();
    let (mut waiting, mut applying, mut committing) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut batches = feed::spawn(db, options.batch.max(1));
    // Batches share a transaction for up to `COMMIT_EVERY` (checked after
    // each batch): each commit costs (on SQLite it may checkpoint the WAL),
    // and writers of the service wait about that long, plus a batch, for
    // the rebuild's.
    let mut open: Option<(admit_ledger::Tx, Instant)> = None;
    loop {
        let t = Instant::now();
        let Some(batch) = batches.recv().await else { break };
        waiting += t.elapsed();
        let (decoded, after) = batch?;
        let t = Instant::now();
        let (mut tx, since) = match open.take() {
            Some(open) => open,
            None => (begin_batch(db).await?, Instant::now()),
        };
        bulk.apply_all(&mut tx, &decoded).await?;
        events += decoded.len() as u64;
        batches.spent(decoded);
        applying += t.elapsed();
        if since.elapsed() >= COMMIT_EVERY {
            let t = Instant::now();
            tx.commit().await?;
            committing += t.elapsed();
        } else {
            open = Some((tx, since));
        }
        cursor = after;
    }
    let t = Instant::now();
    let mut tx = match open {
        Some((tx, _)) => tx,
        None => begin_batch(db).await?,
    };
    bulk.finish_aside(&mut tx).await?;
    tx.commit().await?;
    let finishing = t.elapsed();
    tracing::debug!(?waiting, ?applying, ?committing, ?finishing, elapsed = ?started.elapsed(), events, "rebuild: bulk of the log projected");
    let started = Instant::now();
    index_aside(db, prefix).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: indexed aside");
    let started = Instant::now();
    // The tail: hold writers off, catch up on what committed meanwhile.
    let mut tx = db.begin().await?;
    tx.lock_log().await?;
    loop {
        let batch = tx.read_all_committed(cursor, options.batch.max(1) as i64).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let decoded = Codec::decode_all_in(&mut tx, &batch).await?;
        bulk.apply_all(&mut tx, &decoded).await?;
        events += decoded.len() as u64;
    }
    bulk.finish(&mut tx).await?;
    record_checkpoint(&mut tx, prefix, cursor).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: tail projected");
    let started = Instant::now();
    sort_in_small_runs(&mut tx).await?;
    if swap {
        // The rebuilt tables take the live ones' place by name (no copy),
        // and so do the indexes built aside (PostgreSQL); the live tables'
        // indexes are built now where they were not (SQLite).
        schema::drop(&mut tx, "").await?;
        for table in TABLES.iter().chain(std::iter::once(&schema::CHECKPOINTS)) {
            let rename = format!("ALTER TABLE {prefix}{0} RENAME TO {0}", table.name);
            admit_ledger::on_tx!(&mut tx, c => sqlx::query(&rename).execute(&mut *c).await.map(|_| ())?);
        }
        schema::rename_indexes(&mut tx, prefix, "").await?;
        schema::create(&mut tx, "").await?;
    } else {
        schema::create(&mut tx, prefix).await?;
    }
    tx.commit().await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: swapped in");
    // Freeing every row held (a million-event log: about a second) is
    // nobody's wait.
    let _ = std::thread::Builder::new().name("admit-rebuild-free".into()).spawn(move || drop(bulk));
    Ok(Rebuilt { events, cursor })
}

/// Indexes [`index_aside`] builds at once at most, whatever the cores: each
/// may take `maintenance_work_mem` (256 MB) of the server's memory.
const MOST_INDEX_BUILDERS: usize = 4;

/// On PostgreSQL, builds the secondary and search indexes of the rebuilt
/// tables under `prefix`, one per core at once (at most
/// [`MOST_INDEX_BUILDERS`]), each on a pooled connection of its own, with
/// writers free: the swap then only renames them. Built one
/// after another in the swap's transaction, they took 1.3–2.3 s of a
/// million-event replay on one server process while the other core idled,
/// with every writer of the service waiting. What the tail changes after
/// this is indexed as it is written. Nothing on SQLite: one writer builds
/// them at the swap, sorting on a second thread (`PRAGMA threads`).
async fn index_aside(db: &Database, prefix: &str) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let Database::Postgres(pool) = db else { return Ok(()) };
    let mut statements = Vec::new();
    if schema::trigrams_available(&mut *pool.acquire().await?).await {
        // The trigram (GIN) builds are the longest: started first.
        statements.extend(schema::search_indexes(prefix));
    }
    statements.extend(schema::secondary_indexes(prefix));
    let builders = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, MOST_INDEX_BUILDERS);
    futures::stream::iter(statements)
        .map(|sql| async move {
            let mut tx = pool.begin().await?;
            // Each index is built in one pass over its table; the trigram
            // ones flush what they gathered whenever this much memory is
            // full, and the default 64 MB takes a million-event log's
            // invitations in several rounds.
            sqlx::query("SET LOCAL maintenance_work_mem = '256MB'").execute(&mut *tx).await?;
            sqlx::query(&sql).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok::<(), crate::ProjectionError>(())
        })
        .buffer_unordered(builders)
        .try_collect::<()>()
        .await
}

/// A transaction for a batch of the rebuild. On PostgreSQL it commits
/// without waiting for its WAL flush: a batch lost in a crash is simply
/// rebuilt again (the swap commits durably).
async fn begin_batch(db: &Database) -> Result<admit_ledger::Tx> {
    let mut tx = db.begin().await?;
    if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut **t).await?;
    }
    Ok(tx)
}

/// Pages SQLite's writer connection keeps in memory while rebuilding
/// (64 MiB was a few percent faster and 35 MiB more at the peak).
const REBUILD_CACHE_KIB: i64 = 32 * 1024;

/// WAL pages after which a rebuild's commit copies the WAL into the
/// database file (SQLite's default is 1,000). A rebuild commits a few times
/// a second, thousands of pages each, so with the default every commit
/// checkpoints and waits for the file's sync; with 16,384 (64 MiB) a
/// million-event replay checkpoints a few times, and the WAL stays about as
/// large as the default left it after a rebuild's commits (about 90 MB).
const REBUILD_WAL_PAGES: i64 = 16_384;

/// SQLite settings of the writer connection that a rebuild changes.
#[derive(Debug, Clone, Copy)]
struct SqliteSettings {
    /// `PRAGMA cache_size`.
    cache_size: i64,
    /// `PRAGMA threads`: helper threads SQLite may sort with (building an
    /// index at the swap sorts every row of its table).
    threads: i64,
    /// `PRAGMA wal_autocheckpoint`: WAL pages after which a commit copies
    /// the WAL into the database file.
    wal_autocheckpoint: i64,
}

/// On SQLite, sets the writer connection's page cache, sorting threads and
/// WAL checkpoint interval to `restore`, or when None to a rebuild's (the
/// default 2 MiB cache re-reads the rebuilt tables' pages for every batch,
/// no helper thread leaves the second core idle while indexes are built,
/// and see [`REBUILD_WAL_PAGES`]); returns the settings it replaced. On
/// restoring, it checkpoints the WAL the rebuild left (passively: readers
/// are not waited for). Nothing on PostgreSQL.
async fn sqlite_settings(db: &Database, restore: Option<SqliteSettings>) -> Result<Option<SqliteSettings>> {
    let Database::Sqlite { writer, .. } = db else { return Ok(None) };
    let before = SqliteSettings {
        cache_size: sqlx::query_scalar("PRAGMA cache_size").fetch_one(writer).await?,
        threads: sqlx::query_scalar("PRAGMA threads").fetch_one(writer).await?,
        wal_autocheckpoint: sqlx::query_scalar("PRAGMA wal_autocheckpoint").fetch_one(writer).await?,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
    let set = restore.unwrap_or(SqliteSettings {
        cache_size: -REBUILD_CACHE_KIB,
        threads: cores - 1,
        wal_autocheckpoint: REBUILD_WAL_PAGES,
    });
    sqlx::query(&format!("PRAGMA cache_size = {}", set.cache_size)).execute(writer).await?;
    sqlx::query(&format!("PRAGMA threads = {}", set.threads)).execute(writer).await?;
    sqlx::query(&format!("PRAGMA wal_autocheckpoint = {}", set.wal_autocheckpoint)).execute(writer).await?;
    if restore.is_some() {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(writer).await?;
    }
    Ok(Some(before))
}

/// Page cache of SQLite's writer while the secondary indexes are built at
/// the end of a rebuild. SQLite's sorter holds as much as the page cache in
/// memory before it writes a sorted run out; with the rebuild's 32 MiB every
/// index of a million-event log sorted in one run on one thread, while with
/// 2 MiB runs are sorted by the helper thread (`PRAGMA threads`) beside the
/// writer and merged: the twelve index builds took 1.05 s instead of
/// 1.43–1.47 s with the `sqlite3` shell on a replayed database (see
/// docs/performance.md).
const INDEX_BUILD_CACHE_KIB: i64 = 2 * 1024;

/// On SQLite, shrinks the writer's page cache to [`INDEX_BUILD_CACHE_KIB`]
/// for the index builds that follow in `tx` (the rebuild's settings are
/// restored after its commit). Nothing on PostgreSQL.
async fn sort_in_small_runs(tx: &mut admit_ledger::Tx) -> Result<()> {
    if let admit_ledger::Conn::Sqlite(c) = &mut tx.conn {
        sqlx::query(&format!("PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB}")).execute(&mut **c).await?;
    }
    Ok(())
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
