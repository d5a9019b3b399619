//! Connecting to PostgreSQL or SQLite, migrating, and opening transactions.
//!
//! Both backends sit behind [`Database`] and [`Tx`]. Code that is the same
//! for both is written once inside [`on_db!`](crate::on_db) /
//! [`on_tx!`](crate::on_tx), which expand the body once per backend so each
//! copy is type-checked against its own driver.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

use crate::{LedgerError, Result};

/// Which database engine a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: production, many concurrent writers.
    Postgres,
    /// SQLite: the embedded zero-setup default, one writer at a time.
    Sqlite,
}

/// A connection pool to the ledger's database.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL pool.
    Postgres(PgPool),
    /// SQLite pools: many readers (WAL) and exactly one writer connection,
    /// so write transactions queue in the pool instead of failing busy.
    Sqlite {
        /// Pool for reads.
        reader: SqlitePool,
        /// Single-connection pool for write transactions.
        writer: SqlitePool,
    },
}

/// An open write transaction on either backend. Everything a command writes
/// (events, reservations, read models) goes through one `Tx`, so it commits
/// or rolls back as a whole.
#[derive(Debug)]
pub struct Tx {
    /// The backend's transaction (use [`on_tx!`](crate::on_tx) to reach it).
    pub conn: Conn,
    /// Events appended in this transaction so far.
    appended: u64,
}

/// The backend-specific part of a [`Tx`].
#[derive(Debug)]
pub enum Conn {
    /// PostgreSQL transaction.
    Postgres(sqlx::Transaction<'static, Postgres>),
    /// SQLite transaction (on the single writer connection).
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

impl From<Conn> for Tx {
    fn from(conn: Conn) -> Tx {
        Tx { conn, appended: 0 }
    }
}

/// `{select} (<id>, <id>, ...)`, each id a bound parameter: the query for
/// rows whose id is in a list, on a backend without array parameters
/// (SQLite; PostgreSQL takes one array with `= ANY($1)` instead, a single
/// prepared statement whatever the list's length). `select` ends in
/// `... IN`.
pub fn ids_in<'a, DB: sqlx::Database>(
    select: &str,
    ids: impl IntoIterator<Item = uuid::Uuid>,
) -> sqlx::QueryBuilder<'a, DB>
where
    uuid::Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DB::Arguments<'a>: Default,
{
    let mut b = sqlx::QueryBuilder::new(select);
    b.push(" (");
    let mut list = b.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    b.push(")");
    b
}

/// Runs `$body` with `$pool` bound to the backend's read pool (`&PgPool` or
/// `&SqlitePool`). The body is expanded once per backend.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Database::Postgres(p) => {
                let $pool = p;
                $body
            }
            $crate::Database::Sqlite { reader, .. } => {
                let $pool = reader;
                $body
            }
        }
    };
}

/// Like [`on_db!`] but with the pool that may write (on SQLite the single
/// writer connection), for small writes outside a command's transaction.
#[macro_export]
macro_rules! on_db_write {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::Database::Postgres(p) => {
                let $pool = p;
                $body
            }
            $crate::Database::Sqlite { writer, .. } => {
                let $pool = writer;
                $body
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection
/// (`&mut PgConnection` or `&mut SqliteConnection`); pass it to queries as
/// `&mut *$conn`. The body is expanded once per backend.
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match &mut ($tx).conn {
            $crate::Conn::Postgres(t) => {
                let $conn: &mut sqlx::PgConnection = &mut *t;
                $body
            }
            $crate::Conn::Sqlite(t) => {
                let $conn: &mut sqlx::SqliteConnection = &mut *t;
                $body
            }
        }
    };
}

/// The advisory lock key of [`Database::lock_preparation`] ("admitprp").
const PREPARATION_LOCK: i64 = 0x61646d6974707270;

/// Held while this process prepares the database; dropping it closes its
/// connection, which releases the lock.
#[derive(Debug)]
pub struct PreparationLock(#[allow(dead_code)] Option<sqlx::PgConnection>);

impl Database {
    /// How long a request waits for a PostgreSQL connection by default
    /// before it fails (503 `database_unavailable`), e.g. while the server
    /// restarts.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// Connects to `url`: `postgres://...` or `sqlite://path` (the file and
    /// its folder are created when missing).
    pub async fn connect(url: &str) -> Result<Database> {
        Database::connect_with_timeout(url, Database::DEFAULT_TIMEOUT).await
    }

    /// Like [`connect`](Database::connect), waiting at most `timeout` for a
    /// PostgreSQL connection (to connect, or to get one from the pool)
    /// before an operation fails; the bound on how long a request can hang
    /// while the database is down.
    pub async fn connect_with_timeout(url: &str, timeout: Duration) -> Result<Database> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new().max_connections(32).acquire_timeout(timeout).connect_with(options).await?;
            Ok(Database::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            if let Some(parent) = options.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| LedgerError::Database(sqlx::Error::Io(e)))?;
                }
            }
            let writer = SqlitePoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(60))
                .connect_with(options.clone())
                .await?;
            let reader = SqlitePoolOptions::new().max_connections(8).connect_with(options.read_only(true)).await?;
            Ok(Database::Sqlite { reader, writer })
        } else {
            Err(LedgerError::UnsupportedUrl(url.to_string()))
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// Waits until no other process is preparing this database, then holds
    /// it until the returned lock is dropped. Processes that start together
    /// (`serve` and a worker) would otherwise race to create and rebuild the
    /// read-model tables. On PostgreSQL a session advisory lock on a
    /// connection of its own; SQLite's single writer already serialises.
    pub async fn lock_preparation(&self) -> Result<PreparationLock> {
        match self {
            Database::Postgres(pool) => {
                let mut conn = pool.acquire().await?.detach();
                sqlx::query("SELECT pg_advisory_lock($1)").bind(PREPARATION_LOCK).execute(&mut conn).await?;
                Ok(PreparationLock(Some(conn)))
            }
            Database::Sqlite { .. } => Ok(PreparationLock(None)),
        }
    }

    /// Applies the migrations embedded in the binary (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        match self {
            Database::Postgres(pool) => sqlx::migrate!("../migrations/postgres").run(pool).await?,
            Database::Sqlite { writer, .. } => sqlx::migrate!("../migrations/sqlite").run(writer).await?,
        }
        Ok(())
    }

    /// True when every embedded migration has been applied (for readiness).
    pub async fn is_migrated(&self) -> Result<bool> {
        let (applied, expected): (i64, usize) = match self {
            Database::Postgres(pool) => {
                (applied_count(pool).await?, sqlx::migrate!("../migrations/postgres").migrations.len())
            }
            Database::Sqlite { reader, .. } => {
                (applied_count(reader).await?, sqlx::migrate!("../migrations/sqlite").migrations.len())
            }
        };
        Ok(applied as usize >= expected)
    }

    /// Opens a write transaction.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(match self {
            Database::Postgres(pool) => Conn::Postgres(pool.begin().await?),
            Database::Sqlite { writer, .. } => Conn::Sqlite(writer.begin().await?),
        }
        .into())
    }

    /// Opens a read-only transaction that sees one fixed state of the
    /// database for all its statements (for consistent scans such as
    /// as-of views). Never blocks writers.
    pub async fn begin_snapshot(&self) -> Result<Tx> {
        Ok(match self {
            Database::Postgres(pool) => {
                let mut t = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY").execute(&mut *t).await?;
                Conn::Postgres(t)
            }
            Database::Sqlite { reader, .. } => Conn::Sqlite(reader.begin().await?),
        }
        .into())
    }

    /// Closes every connection. On SQLite the writer first copies the WAL
    /// into the database file and truncates it to nothing (a checkpoint in
    /// `TRUNCATE` mode): the last connection to close would also do that,
    /// but a connection another thread still holds (a rebuild's log reader
    /// ends on its own thread) or another process's can be the last, and
    /// read-only ones leave the WAL as it is. After a replay it holds
    /// 110-120 MB that the next start would read through to recover.
    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite { reader, writer } => {
                // Best effort: a busy database keeps its WAL, nothing is lost.
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(writer).await {
                    tracing::debug!(error = %e, "closing: the WAL was not truncated");
                }
                reader.close().await;
                writer.close().await;
            }
        }
    }
}

async fn applied_count<'e, E>(executor: E) -> Result<i64>
where
    E: sqlx::Executor<'e>,
    i64: sqlx::Type<E::Database> + for<'r> sqlx::Decode<'r, E::Database>,
    for<'r> (i64,): sqlx::FromRow<'r, <E::Database as sqlx::Database>::Row>,
    for<'q> <E::Database as sqlx::Database>::Arguments<'q>: sqlx::IntoArguments<'q, E::Database>,
{
    let row: std::result::Result<(i64,), sqlx::Error> =
        sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success").fetch_one(executor).await;
    match row {
        Ok((n,)) => Ok(n),
        // No migrations table yet: nothing applied.
        Err(sqlx::Error::Database(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

impl Tx {
    /// Which engine this transaction runs on.
    pub fn backend(&self) -> Backend {
        match self.conn {
            Conn::Postgres(_) => Backend::Postgres,
            Conn::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Events appended in this transaction so far (for metrics after commit).
    pub fn appended(&self) -> u64 {
        self.appended
    }

    pub(crate) fn count_appended(&mut self, n: u64) {
        self.appended += n;
    }

    /// Makes every write of the transaction durable at once.
    pub async fn commit(self) -> Result<()> {
        match self.conn {
            Conn::Postgres(t) => t.commit().await?,
            Conn::Sqlite(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Runs `statement`, which ends in `WHERE <id column>`, for the rows
    /// whose id is in `ids`: `= ANY($1)` with one array on PostgreSQL (one
    /// prepared statement whatever the list's length), [`ids_in`] on SQLite
    /// (not kept prepared: its length varies). The workers' batched updates
    /// and deletes go through here.
    pub async fn execute_for_ids(&mut self, statement: &str, ids: Vec<uuid::Uuid>) -> Result<()> {
        match &mut self.conn {
            Conn::Postgres(t) => {
                sqlx::query(&format!("{statement} = ANY($1)")).bind(ids).execute(&mut **t).await?;
            }
            Conn::Sqlite(t) => {
                ids_in(&format!("{statement} IN"), ids).build().persistent(false).execute(&mut **t).await?;
            }
        }
        Ok(())
    }

    /// Discards every write of the transaction.
    pub async fn rollback(self) -> Result<()> {
        match self.conn {
            Conn::Postgres(t) => t.rollback().await?,
            Conn::Sqlite(t) => t.rollback().await?,
        }
        Ok(())
    }
}
