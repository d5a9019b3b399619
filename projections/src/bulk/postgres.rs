//! The bulk projector's reads and writes on PostgreSQL: one statement per
//! table and chunk, every column bound as one array (`UNNEST`), so each
//! statement is prepared once whatever the number of rows.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};
use uuid::Uuid;

use super::{column_list, update_set, Cell, Reads, Writes};
use crate::schema::{Kind, Table};
use crate::{ProjectionError, Result};

/// Rows per statement: bounds the arrays built for one statement.
const CHUNK: usize = 10_000;

/// The stored rows of `table` that `reads` asks for.
pub(super) async fn read(
    conn: &mut PgConnection,
    prefix: &str,
    table: &Table,
    key_cols: &[usize],
    reads: &Reads,
) -> Result<Vec<Vec<Cell>>> {
    let mut out = Vec::new();
    let kinds: Vec<Kind> = key_cols.iter().map(|&c| table.columns[c].1).collect();
    for chunk in reads.keys.chunks(CHUNK) {
        let sql = format!(
            "SELECT {} FROM {prefix}{} WHERE ({}) IN (SELECT * FROM {})",
            column_list(table),
            table.name,
            table.primary_key,
            unnest(&kinds)
        );
        let mut q = sqlx::query(&sql);
        for (c, kind) in kinds.iter().enumerate() {
            q = bind_column(q, chunk.iter().map(|k| &k.cells()[c]), *kind);
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.push(decode_row(&r, table)?);
        }
    }
    if !reads.accounts.is_empty() {
        let sql = format!("SELECT {} FROM {prefix}{} WHERE account_id = ANY($1)", column_list(table), table.name);
        for r in sqlx::query(&sql).bind(&reads.accounts).fetch_all(&mut *conn).await? {
            out.push(decode_row(&r, table)?);
        }
    }
    Ok(out)
}

/// Applies `writes` to `table`.
pub(super) async fn write(
    conn: &mut PgConnection,
    prefix: &str,
    table: &Table,
    key_cols: &[usize],
    writes: &Writes<'_>,
) -> Result<()> {
    let kinds: Vec<Kind> = table.columns.iter().map(|(_, k)| *k).collect();
    let key_kinds: Vec<Kind> = key_cols.iter().map(|&c| kinds[c]).collect();
    let columns = column_list(table);
    let name = table.name;
    let pk = table.primary_key;
    let updates = update_set(table, key_cols);
    let upsert = format!(
        "INSERT INTO {prefix}{name} ({columns}) SELECT * FROM {} ON CONFLICT ({pk}) DO UPDATE SET {}",
        unnest(&kinds),
        updates
    );
    let delete = format!("DELETE FROM {prefix}{name} WHERE ({pk}) IN (SELECT * FROM {})", unnest(&key_kinds));
    for chunk in writes.deletes.chunks(CHUNK) {
        let mut q = sqlx::query(&delete);
        for (c, kind) in key_kinds.iter().enumerate() {
            q = bind_column(q, chunk.iter().map(|k| &k[c]), *kind);
        }
        q.execute(&mut *conn).await?;
    }
    for chunk in writes.upserts.chunks(CHUNK) {
        let mut q = sqlx::query(&upsert);
        for (c, kind) in kinds.iter().enumerate() {
            q = bind_column(q, chunk.iter().map(|r| &r[c]), *kind);
        }
        q.execute(&mut *conn).await?;
    }
    copy(conn, prefix, table, &writes.inserts).await
}

/// Append-only rows (deliveries, the account-stream index), which a
/// rebuild never reads back, inserted on a connection and transaction of
/// their own while the rebuild's connection writes everything else: the
/// server takes them with a second process, on the second core, instead of
/// after the rest. The transaction commits when the writer is closed,
/// before the rebuilt tables are swapped in, and rolls back when the
/// rebuild fails (the writer is dropped unclosed).
#[derive(Debug)]
pub(super) struct SideWriter {
    rows: tokio::sync::mpsc::Sender<Aside>,
    task: tokio::task::JoinHandle<Result<()>>,
}

/// What the side writer is asked to do.
#[derive(Debug)]
enum Aside {
    /// Insert these rows (new, in key order) into this table.
    Insert(&'static Table, Vec<Vec<Cell>>),
    /// Commit: the rebuild is through the log.
    Commit,
}

/// Batches of rows queued for the side writer (bounds the memory they hold).
const SIDE_QUEUE: usize = 4;

impl SideWriter {
    /// Starts a writer inserting into the tables under `prefix` on a
    /// connection of its own from `pool`.
    pub(super) async fn start(pool: &sqlx::PgPool, prefix: &str) -> Result<SideWriter> {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
        let (rows, mut queued) = tokio::sync::mpsc::channel(SIDE_QUEUE);
        let prefix = prefix.to_string();
        let task = tokio::spawn(async move {
            while let Some(aside) = queued.recv().await {
                match aside {
                    Aside::Insert(table, rows) => {
                        let rows: Vec<&[Cell]> = rows.iter().map(Vec::as_slice).collect();
                        copy(&mut tx, &prefix, table, &rows).await?;
                    }
                    Aside::Commit => {
                        tx.commit().await?;
                        return Ok(());
                    }
                }
            }
            // Dropped unclosed: the rebuild failed; `tx` rolls back.
            Ok(())
        });
        Ok(SideWriter { rows, task })
    }

    /// Queues `rows` (new rows, in key order) for `table`.
    pub(super) async fn insert(&mut self, table: &'static Table, rows: Vec<Vec<Cell>>) -> Result<()> {
        if self.rows.send(Aside::Insert(table, rows)).await.is_err() {
            // The writer stopped early: on an error, which `close` returns.
            return Err(ProjectionError::Corrupt("the side writer of the rebuild stopped".into()));
        }
        Ok(())
    }

    /// Writes what is queued and commits it.
    pub(super) async fn close(self) -> Result<()> {
        // A send fails only when the writer already stopped on an error,
        // which awaiting it returns.
        let _ = self.rows.send(Aside::Commit).await;
        self.task.await.map_err(|e| ProjectionError::Corrupt(format!("the side writer of the rebuild failed: {e}")))?
    }
}

/// Bytes of COPY data sent at a time.
const COPY_BUFFER: usize = 1 << 20;

/// Inserts `rows` with `COPY ... FROM STDIN` in the binary format: no
/// statement, plan or executor per row, and nothing for the server to
/// parse (a UUID, an integer or a time is sent as the bytes it stores),
/// the fastest way into a PostgreSQL table.
async fn copy(conn: &mut PgConnection, prefix: &str, table: &Table, rows: &[&[Cell]]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!("COPY {prefix}{} ({}) FROM STDIN (FORMAT binary)", table.name, column_list(table));
    let mut copy = conn.copy_in_raw(&sql).await?;
    let mut buf = Vec::with_capacity(COPY_BUFFER);
    // Signature, flags, no header extension.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let fields = i16::try_from(table.columns.len())
        .map_err(|_| ProjectionError::Corrupt(format!("read model {} has too many columns", table.name)))?;
    for row in rows {
        buf.extend_from_slice(&fields.to_be_bytes());
        for cell in row.iter() {
            copy_cell(&mut buf, cell)?;
        }
        if buf.len() >= COPY_BUFFER {
            copy.send(std::mem::replace(&mut buf, Vec::with_capacity(COPY_BUFFER))).await?;
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    copy.send(buf).await?;
    copy.finish().await?;
    Ok(())
}

/// What PostgreSQL stores for a time bound by sqlx: whole microseconds
/// since 2000-01-01, truncated towards that epoch (`COPY`'s text format
/// would round instead).
fn stored_micros(t: &DateTime<Utc>) -> Option<i64> {
    let epoch = DateTime::from_timestamp(946_684_800, 0)?;
    (*t - epoch).num_microseconds()
}

/// One field in COPY's binary format: its length (-1 for NULL), then the
/// value as the server's binary input of the column's type reads it.
fn copy_cell(buf: &mut Vec<u8>, cell: &Cell) -> Result<()> {
    let field = |buf: &mut Vec<u8>, bytes: &[u8]| -> Result<()> {
        let len =
            i32::try_from(bytes.len()).map_err(|_| ProjectionError::Corrupt("a read-model value over 2 GiB".into()))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(bytes);
        Ok(())
    };
    match cell {
        Cell::Null => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        Cell::Uuid(u) => field(buf, u.as_bytes())?,
        Cell::Int(i) => field(buf, &i.to_be_bytes())?,
        Cell::Time(t) => {
            let micros = stored_micros(t).ok_or_else(|| ProjectionError::Corrupt(format!("time {t} out of range")))?;
            field(buf, &micros.to_be_bytes())?
        }
        Cell::Text(s) => field(buf, s.as_bytes())?,
    }
    Ok(())
}

/// `UNNEST($1::uuid[], $2::text[], ...)` for columns of these kinds.
fn unnest(kinds: &[Kind]) -> String {
    let arrays: Vec<String> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let t = match kind {
                Kind::Uuid => "uuid",
                Kind::Text | Kind::Json => "text",
                Kind::Int => "int8",
                Kind::Time => "timestamptz",
            };
            format!("${}::{t}[]", i + 1)
        })
        .collect();
    format!("UNNEST({})", arrays.join(", "))
}

/// Binds one column of cells as a PostgreSQL array of its kind.
fn bind_column<'q, 'c>(
    q: Query<'q, Postgres, PgArguments>,
    cells: impl Iterator<Item = &'c Cell>,
    kind: Kind,
) -> Query<'q, Postgres, PgArguments> {
    match kind {
        Kind::Uuid => q.bind(cells.map(|c| if let Cell::Uuid(u) = c { Some(*u) } else { None }).collect::<Vec<_>>()),
        Kind::Text | Kind::Json => q.bind(
            cells
                .map(|c| if let Cell::Text(t) = c { Some(t.to_string()) } else { None })
                .collect::<Vec<Option<String>>>(),
        ),
        Kind::Int => q.bind(cells.map(|c| if let Cell::Int(i) = c { Some(*i) } else { None }).collect::<Vec<_>>()),
        Kind::Time => q.bind(
            cells.map(|c| if let Cell::Time(t) = c { Some(*t) } else { None }).collect::<Vec<Option<DateTime<Utc>>>>(),
        ),
    }
}

/// A stored row as cells, by the kinds of `table`'s columns.
fn decode_row(r: &sqlx::postgres::PgRow, table: &Table) -> std::result::Result<Vec<Cell>, sqlx::Error> {
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        let cell = match kind {
            Kind::Uuid => r.try_get::<Option<Uuid>, _>(i)?.map(Cell::Uuid),
            Kind::Text | Kind::Json => r.try_get::<Option<String>, _>(i)?.map(|t| Cell::Text(t.into())),
            Kind::Int => r.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            Kind::Time => r.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Cell::Time),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_keep_what_a_bound_parameter_keeps() {
        // A bound parameter truncates to whole microseconds, towards 2000.
        let t = DateTime::from_timestamp(1_764_576_857, 42_107_999).unwrap();
        let kept = DateTime::from_timestamp(946_684_800, 0).unwrap()
            + chrono::TimeDelta::microseconds(stored_micros(&t).unwrap());
        assert_eq!(kept, DateTime::from_timestamp(1_764_576_857, 42_107_000).unwrap());
        let before_2000 = DateTime::from_timestamp(915_148_800, 999_999_999).unwrap();
        let kept = DateTime::from_timestamp(946_684_800, 0).unwrap()
            + chrono::TimeDelta::microseconds(stored_micros(&before_2000).unwrap());
        assert_eq!(kept, DateTime::from_timestamp(915_148_801, 0).unwrap());
    }

    /// The side writer's rows count only once it is closed: a rebuild that
    /// fails part-way leaves none of them behind.
    #[tokio::test(flavor = "multi_thread")]
    async fn side_writer_rows_commit_on_close_and_roll_back_when_dropped() {
        let url = admit_ledger::testing::fresh_postgres_url().await;
        // One connection: each writer (and the count) waits for the one
        // before it to have ended its transaction, however it ended it.
        let pool = &sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.expect("connect");
        let db = admit_ledger::Database::Postgres(pool.clone());
        let mut tx = db.begin().await.expect("begin");
        crate::schema::create_tables(&mut tx, "side_").await.expect("create tables");
        tx.commit().await.expect("commit");
        let table = crate::schema::TABLES.iter().find(|t| t.name == "invitation_deliveries").expect("deliveries");
        let rows = |from: i64| -> Vec<Vec<Cell>> {
            (from..from + 3)
                .map(|seq| {
                    vec![
                        Cell::Uuid(Uuid::now_v7()),
                        Cell::Int(seq),
                        Cell::Text("delivered".into()),
                        Cell::Null,
                        Cell::Time(DateTime::from_timestamp(1_764_576_857, 42_107_999).unwrap()),
                    ]
                })
                .collect()
        };
        let count = || async {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM side_invitation_deliveries")
                .fetch_one(pool)
                .await
                .expect("count")
        };

        let mut failed = SideWriter::start(pool, "side_").await.expect("start");
        failed.insert(table, rows(1)).await.expect("queue");
        drop(failed);
        let mut closed = SideWriter::start(pool, "side_").await.expect("start");
        closed.insert(table, rows(10)).await.expect("queue");
        closed.insert(table, rows(20)).await.expect("queue");
        closed.close().await.expect("close");

        assert_eq!(count().await, 6);
        let kept: Option<DateTime<Utc>> = sqlx::query_scalar("SELECT MAX(recorded_at) FROM side_invitation_deliveries")
            .fetch_one(pool)
            .await
            .expect("max");
        assert_eq!(kept, DateTime::from_timestamp(1_764_576_857, 42_107_000));
    }

    #[test]
    fn binary_fields_are_length_prefixed_big_endian() {
        let mut buf = Vec::new();
        copy_cell(&mut buf, &Cell::Null).unwrap();
        copy_cell(&mut buf, &Cell::Int(258)).unwrap();
        copy_cell(&mut buf, &Cell::Text("ab".into())).unwrap();
        assert_eq!(buf, [255, 255, 255, 255, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 2, b'a', b'b']);
    }
}
