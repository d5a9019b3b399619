//! The bulk projector's reads and writes on SQLite, through a direct
//! binding (rusqlite) on the handle of sqlx's own writer connection, inside
//! the transaction sqlx opened on it.
//!
//! sqlx's SQLite driver sends every statement to a worker thread and every
//! bound value through an owned copy; for a rebuild's hundreds of thousands
//! of rows that costs more than SQLite's own work. Prepared statements
//! stepped once per row through the C API cost about a microsecond a row.

use std::ffi::c_int;

use rusqlite::types::ValueRef;
use rusqlite::{ffi, Connection, Statement};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{column_list, push_time, update_set, Cell, Reads, Writes};
use crate::schema::{Kind, Table};
use crate::{ProjectionError, Result};

/// Runs `f` on the raw SQLite handle of `conn`, while sqlx's worker thread
/// is locked out of it; whatever `f` does is part of the transaction open
/// on `conn`.
pub(super) async fn with_handle<T>(
    conn: &mut SqliteConnection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<Result<T>> {
    let mut handle = conn.lock_handle().await?;
    // SAFETY: the handle is locked for as long as `direct` lives, so no
    // other code uses it meanwhile; `from_handle` makes a connection that
    // does not close the handle, and dropping it (before the lock) finalizes
    // the statements it prepared.
    let direct = unsafe { Connection::from_handle(handle.as_raw_handle().as_ptr()) }?;
    let out = f(&direct);
    drop(direct);
    drop(handle);
    Ok(out)
}

/// Binds `cells` as the parameters `?1`, `?2`, ... of `stmt`, as sqlx binds
/// the same Rust types (a UUID as its 16 bytes, a time as RFC 3339 text),
/// so rows written here read back through sqlx exactly as rows sqlx wrote.
/// Times are formatted into `time`, a buffer reused for every one (SQLite
/// copies what is bound).
fn bind(stmt: &mut Statement<'_>, cells: &[Cell], time: &mut String) -> rusqlite::Result<()> {
    for (i, cell) in cells.iter().enumerate() {
        let at = i + 1;
        match cell {
            Cell::Null => stmt.raw_bind_parameter(at, rusqlite::types::Null)?,
            Cell::Uuid(u) => stmt.raw_bind_parameter(at, &u.as_bytes()[..])?,
            Cell::Text(s) => stmt.raw_bind_parameter(at, s.as_str())?,
            Cell::Int(v) => stmt.raw_bind_parameter(at, v)?,
            Cell::Time(t) => {
                time.clear();
                push_time(time, t);
                stmt.raw_bind_parameter(at, time.as_str())?
            }
        }
    }
    Ok(())
}

/// A statement that writes rows, prepared on the raw handle and stepped
/// once per row, whose text and blob parameters SQLite reads in place.
///
/// rusqlite binds every text and blob with `SQLITE_TRANSIENT`: SQLite then
/// copies each value before the statement runs, and that copy (with its
/// allocation) was about half of the binding's cost in the rebuild's
/// instruction counts. Here they are bound with `SQLITE_STATIC`, which is
/// sound because a row's cells outlive its step: [`Prepared::execute`]
/// binds, steps, resets and clears the bindings before it returns, so
/// SQLite never holds a pointer into a row after that. Times are formatted
/// into a buffer per parameter, which only that parameter's next binding
/// rewrites.
struct Prepared<'c> {
    conn: &'c Connection,
    stmt: *mut ffi::sqlite3_stmt,
    times: Vec<String>,
}

impl<'c> Prepared<'c> {
    /// Prepares `sql` (one statement) on `conn`.
    fn new(conn: &'c Connection, sql: &str) -> rusqlite::Result<Prepared<'c>> {
        let mut stmt = std::ptr::null_mut();
        // SAFETY: the handle is open for as long as `conn` lives; `sql` is
        // passed with its length, so it needs no terminating NUL.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                conn.handle(),
                sql.as_ptr().cast(),
                sql.len() as c_int,
                &mut stmt,
                std::ptr::null_mut(),
            )
        };
        let prepared = Prepared { conn, stmt, times: Vec::new() };
        prepared.check(rc)?;
        if stmt.is_null() {
            return Err(rusqlite::Error::InvalidQuery);
        }
        Ok(prepared)
    }

    /// Binds `cells` as `?1`, `?2`, ... (as [`bind`] does) and steps the
    /// statement once.
    fn execute(&mut self, cells: &[Cell]) -> rusqlite::Result<()> {
        if self.times.len() < cells.len() {
            self.times.resize_with(cells.len(), || String::with_capacity(40));
        }
        let stmt = self.stmt;
        let mut bound = Ok(());
        for (i, cell) in cells.iter().enumerate() {
            let at = i as c_int + 1;
            // SAFETY: `stmt` is a live statement of this connection; text
            // and blobs are bound with their lengths and stay valid until
            // the bindings are cleared below (see the type's comment).
            let rc = unsafe {
                match cell {
                    Cell::Null => ffi::sqlite3_bind_null(stmt, at),
                    Cell::Uuid(u) => {
                        ffi::sqlite3_bind_blob(stmt, at, u.as_bytes().as_ptr().cast(), 16, ffi::SQLITE_STATIC())
                    }
                    Cell::Text(s) => {
                        let s = s.as_str();
                        ffi::sqlite3_bind_text(stmt, at, s.as_ptr().cast(), s.len() as c_int, ffi::SQLITE_STATIC())
                    }
                    Cell::Int(v) => ffi::sqlite3_bind_int64(stmt, at, *v),
                    Cell::Time(t) => {
                        let time = &mut self.times[i];
                        time.clear();
                        push_time(time, t);
                        ffi::sqlite3_bind_text(
                            stmt,
                            at,
                            time.as_ptr().cast(),
                            time.len() as c_int,
                            ffi::SQLITE_STATIC(),
                        )
                    }
                }
            };
            bound = self.check(rc);
            if bound.is_err() {
                break;
            }
        }
        // SAFETY: as above; reset and clear_bindings only touch `stmt`.
        let stepped = match bound {
            Ok(()) => match unsafe { ffi::sqlite3_step(stmt) } {
                ffi::SQLITE_DONE => Ok(()),
                ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
                rc => self.check(rc),
            },
            Err(e) => Err(e),
        };
        unsafe {
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
        }
        stepped
    }

    /// `rc` as a result, with SQLite's message for the connection's last
    /// error.
    fn check(&self, rc: c_int) -> rusqlite::Result<()> {
        if rc == ffi::SQLITE_OK {
            return Ok(());
        }
        // SAFETY: the handle is open; the message is copied out at once.
        let message = unsafe {
            let m = ffi::sqlite3_errmsg(self.conn.handle());
            (!m.is_null()).then(|| std::ffi::CStr::from_ptr(m).to_string_lossy().into_owned())
        };
        Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), message))
    }
}

impl Drop for Prepared<'_> {
    fn drop(&mut self) {
        // SAFETY: `stmt` was prepared on this connection and is finalized
        // once, here (finalizing null is a no-op).
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}

/// The stored rows of `table` that `reads` asks for.
pub(super) fn read(
    conn: &Connection,
    prefix: &str,
    table: &Table,
    key_cols: &[usize],
    reads: &Reads,
) -> Result<Vec<Vec<Cell>>> {
    let mut out = Vec::new();
    let mut time = String::new();
    if !reads.keys.is_empty() {
        let sql =
            format!("SELECT {} FROM {prefix}{} WHERE {}", column_list(table), table.name, key_match(table, key_cols));
        let mut stmt = conn.prepare_cached(&sql)?;
        for key in &reads.keys {
            bind(&mut stmt, key.cells(), &mut time)?;
            collect(&mut stmt, table, &mut out)?;
        }
    }
    if !reads.accounts.is_empty() {
        let sql = format!("SELECT {} FROM {prefix}{} WHERE account_id = ?1", column_list(table), table.name);
        let mut stmt = conn.prepare_cached(&sql)?;
        for account in &reads.accounts {
            bind(&mut stmt, &[Cell::Uuid(*account)], &mut time)?;
            collect(&mut stmt, table, &mut out)?;
        }
    }
    Ok(out)
}

/// Runs `stmt` with the parameters bound to it, adding the rows of `table`
/// it returns to `out`.
fn collect(stmt: &mut Statement<'_>, table: &Table, out: &mut Vec<Vec<Cell>>) -> Result<()> {
    let mut rows = stmt.raw_query();
    while let Some(r) = rows.next()? {
        let mut cells = Vec::with_capacity(table.columns.len());
        for (i, (name, kind)) in table.columns.iter().enumerate() {
            cells.push(cell(r.get_ref(i)?, *kind).ok_or_else(|| {
                ProjectionError::Corrupt(format!("read model {}: column {name} holds an unexpected value", table.name))
            })?);
        }
        out.push(cells);
    }
    Ok(())
}

/// A stored value as a cell of `kind`; None when it is not of that kind.
fn cell(v: ValueRef<'_>, kind: Kind) -> Option<Cell> {
    Some(match (v, kind) {
        (ValueRef::Null, _) => Cell::Null,
        (ValueRef::Blob(b), Kind::Uuid) => Cell::Uuid(Uuid::from_slice(b).ok()?),
        (ValueRef::Text(t), Kind::Text | Kind::Json) => Cell::Text(std::str::from_utf8(t).ok()?.into()),
        (ValueRef::Integer(i), Kind::Int) => Cell::Int(i),
        (ValueRef::Text(t), Kind::Time) => Cell::Time(admit_ledger::scan::parse_time(std::str::from_utf8(t).ok()?)?),
        _ => return None,
    })
}

/// Applies `writes` to `table`, one prepared statement stepped per row
/// (prepared per call: a call writes a batch's rows of one table, so
/// preparing costs nothing next to them).
pub(super) fn write(
    conn: &Connection,
    prefix: &str,
    table: &Table,
    key_cols: &[usize],
    writes: &Writes<'_>,
) -> Result<()> {
    let name = table.name;
    let pk = table.primary_key;
    if !writes.deletes.is_empty() {
        let mut stmt =
            Prepared::new(conn, &format!("DELETE FROM {prefix}{name} WHERE {}", key_match(table, key_cols)))?;
        for key in &writes.deletes {
            stmt.execute(key)?;
        }
    }
    let columns = column_list(table);
    let marks = (1..=table.columns.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
    let updates = update_set(table, key_cols);
    let upsert =
        format!("INSERT INTO {prefix}{name} ({columns}) VALUES ({marks}) ON CONFLICT ({pk}) DO UPDATE SET {}", updates);
    let insert = format!("INSERT INTO {prefix}{name} ({columns}) VALUES ({marks})");
    for (sql, rows) in [(&upsert, &writes.upserts), (&insert, &writes.inserts)] {
        if rows.is_empty() {
            continue;
        }
        let mut stmt = Prepared::new(conn, sql)?;
        for row in rows.iter() {
            stmt.execute(row)?;
        }
    }
    Ok(())
}

/// `k1 = ?1 AND k2 = ?2` over the primary key columns.
fn key_match(table: &Table, key_cols: &[usize]) -> String {
    key_cols
        .iter()
        .enumerate()
        .map(|(i, &c)| format!("{} = ?{}", table.columns[c].0, i + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}
