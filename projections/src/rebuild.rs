//! Rebuilding read models from the log, and checking a rebuild against the
//! live tables.

use admit_ledger::personal::LookupKey;
use admit_ledger::{on_db, on_db_write, on_tx, Database, GlobalCursor};
use chrono::Utc;

use crate::schema::{self, TABLES};
use crate::{Codec, Projector, Result};

/// Name of the projector that writes every read model.
pub const PROJECTOR: &str = "read_models";

/// Prefix of the tables a rebuild writes before it swaps them in.
pub const REBUILD_PREFIX: &str = "rebuild_";

/// Events projected per transaction during a rebuild.
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
    let mut tx = db.begin().await?;
    schema::drop(&mut tx, prefix).await?;
    schema::create(&mut tx, prefix).await?;
    tx.commit().await?;

    let projector = Projector::with_prefix(prefix, lookup.clone());
    let mut cursor = GlobalCursor::START;
    let mut events = 0u64;
    // Bulk of the log: gap-safe batches, one transaction each, writers free.
    loop {
        let batch = db.read_all(cursor, BATCH).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let decoded = Codec::decode_all(db, &batch).await?;
        let mut tx = db.begin().await?;
        for env in &decoded {
            projector.apply(&mut tx, env).await?;
        }
        record_checkpoint(&mut tx, prefix, cursor).await?;
        tx.commit().await?;
        events += decoded.len() as u64;
    }
    // The tail: hold writers off, catch up on what committed meanwhile.
    let mut tx = db.begin().await?;
    tx.lock_log().await?;
    loop {
        let batch = tx.read_all_committed(cursor, BATCH).await?;
        let Some(last) = batch.last() else { break };
        cursor = GlobalCursor::after(last);
        let decoded = Codec::decode_all_in(&mut tx, &batch).await?;
        for env in &decoded {
            projector.apply(&mut tx, env).await?;
        }
        events += decoded.len() as u64;
    }
    record_checkpoint(&mut tx, prefix, cursor).await?;
    if swap {
        schema::drop(&mut tx, "").await?;
        schema::create(&mut tx, "").await?;
        for table in TABLES.iter().chain(std::iter::once(&schema::CHECKPOINTS)) {
            let copy = format!("INSERT INTO {0} SELECT * FROM {prefix}{0}", table.name);
            admit_ledger::on_tx!(&mut tx, c => sqlx::query(&copy).execute(&mut *c).await.map(|_| ())?);
        }
        schema::drop(&mut tx, prefix).await?;
    }
    tx.commit().await?;
    Ok(Rebuilt { events, cursor })
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
