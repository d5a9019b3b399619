//! The read-model tables, described once and created under any prefix on
//! either backend.

use admit_ledger::{on_tx, Backend, Conn, Tx};

/// A column's kind, mapped to each backend's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UUID (PostgreSQL `UUID`, SQLite `BLOB`).
    Uuid,
    /// Text.
    Text,
    /// 64-bit integer (also booleans, as 0/1).
    Int,
    /// Timestamp (PostgreSQL `TIMESTAMPTZ`, SQLite RFC 3339 text).
    Time,
    /// JSON document stored as text.
    Json,
}

/// One read-model table.
#[derive(Debug)]
pub struct Table {
    /// Name without prefix.
    pub name: &'static str,
    /// Columns in order.
    pub columns: &'static [(&'static str, Kind)],
    /// Primary key columns, comma-separated.
    pub primary_key: &'static str,
    /// Extra indexes: each a comma-separated column list.
    pub indexes: &'static [&'static str],
    /// On SQLite, stored as a B-tree on the primary key alone (`WITHOUT
    /// ROWID`) instead of a row-id table plus a key index: for narrow rows
    /// under a composite or text key, one B-tree to write instead of two.
    pub without_rowid: bool,
    /// On SQLite, which has no substring index: columns added at the end of
    /// some of [`indexes`](Self::indexes) (by their place in it), so that a
    /// listing searched by a substring tests the pattern on the index's
    /// entries and reads only the rows that match. Walking the list's index
    /// of 100,000 invitations took 31–48 ms when every row had to be read
    /// for its email, 16–19 ms this way.
    pub sqlite_search: Option<(&'static [usize], &'static str)>,
}

use Kind::*;

/// Every read model.
pub const TABLES: &[Table] = &[
    Table {
        name: "accounts",
        columns: &[
            ("account_id", Uuid),
            ("name", Text),
            ("customer_number", Text),
            ("status", Text),
            ("settings", Json),
            ("opened_at", Time),
            ("updated_at", Time),
            ("version", Int),
        ],
        primary_key: "account_id",
        indexes: &["customer_number"],
        without_rowid: false,
        sqlite_search: None,
    },
    Table {
        name: "roles",
        columns: &[
            ("account_id", Uuid),
            ("role", Text),
            ("permissions", Json),
            ("defined_at", Time),
            ("updated_at", Time),
        ],
        primary_key: "account_id, role",
        indexes: &[],
        without_rowid: true,
        sqlite_search: None,
    },
    Table {
        name: "users",
        columns: &[
            ("user_id", Uuid),
            ("person_id", Uuid),
            ("email", Text),
            ("email_hash", Text),
            ("name", Text),
            ("password_hash", Text),
            ("status", Text),
            ("registered_at", Time),
            ("last_login_at", Time),
            ("version", Int),
        ],
        primary_key: "user_id",
        indexes: &["email_hash", "person_id"],
        without_rowid: false,
        sqlite_search: None,
    },
    Table {
        name: "members",
        columns: &[
            ("account_id", Uuid),
            ("user_id", Uuid),
            ("access", Json),
            ("roles", Text),
            ("restricted", Int),
            ("status", Text),
            ("invitation_id", Uuid),
            ("joined_at", Time),
            ("updated_at", Time),
        ],
        primary_key: "account_id, user_id",
        indexes: &["user_id", "account_id, status"],
        without_rowid: false,
        sqlite_search: None,
    },
    Table {
        name: "invitations",
        columns: &[
            ("invitation_id", Uuid),
            ("account_id", Uuid),
            ("person_id", Uuid),
            ("email", Text),
            ("email_hash", Text),
            ("name", Text),
            ("status", Text),
            ("access", Json),
            ("roles", Text),
            ("invited_by", Text),
            ("channel", Text),
            ("created_at", Time),
            ("expires_at", Time),
            ("accepted_at", Time),
            ("accepted_by", Uuid),
            ("resend_count", Int),
            ("delivery_state", Text),
            ("delivery_updated_at", Time),
            ("opens", Int),
            ("clicks", Int),
            ("reminded_at", Time),
            ("revoke_reason", Text),
            ("metadata", Json),
            ("redirect_url", Text),
            ("closed_at", Time),
            ("updated_at", Time),
            ("version", Int),
        ],
        primary_key: "invitation_id",
        // The list's two indexes end in its whole order (newest first, the
        // id breaking ties), so a page of a common search is the first 50
        // matching rows walked in that order, not every match sorted.
        indexes: &[
            "account_id, status, created_at, invitation_id",
            "account_id, created_at, invitation_id",
            "invited_by, status",
            "person_id",
        ],
        without_rowid: false,
        // After the whole order, so they change neither the order nor the
        // walk; `lower(name)` is computed from the entry's `name`.
        sqlite_search: Some((&[0, 1], "email, name")),
    },
    Table {
        name: "api_keys",
        columns: &[
            ("key_id", Uuid),
            ("account_id", Uuid),
            ("name", Text),
            ("permissions", Json),
            ("secret_hash", Text),
            ("created_by", Text),
            ("created_at", Time),
            ("revoked_at", Time),
        ],
        primary_key: "key_id",
        indexes: &["secret_hash", "account_id"],
        without_rowid: false,
        sqlite_search: None,
    },
    Table {
        name: "account_streams",
        columns: &[("account_id", Uuid), ("stream_id", Text), ("opened_at", Time)],
        primary_key: "stream_id",
        indexes: &["account_id"],
        without_rowid: true,
        sqlite_search: None,
    },
    Table {
        name: "invitation_deliveries",
        columns: &[("invitation_id", Uuid), ("seq", Int), ("state", Text), ("detail", Text), ("recorded_at", Time)],
        primary_key: "invitation_id, seq",
        indexes: &[],
        without_rowid: true,
        sqlite_search: None,
    },
];

/// Where a rebuild stands, per projector.
pub const CHECKPOINTS: Table = Table {
    name: "projector_checkpoints",
    columns: &[("projector", Text), ("transaction_id", Text), ("position", Int), ("updated_at", Time)],
    primary_key: "projector",
    indexes: &[],
    without_rowid: false,
    sqlite_search: None,
};

fn sql_type(backend: Backend, kind: Kind) -> &'static str {
    match (backend, kind) {
        (Backend::Postgres, Uuid) => "UUID",
        (Backend::Postgres, Time) => "TIMESTAMPTZ",
        (Backend::Postgres, Int) => "BIGINT",
        (Backend::Sqlite, Uuid) => "BLOB",
        (Backend::Sqlite, Int) => "INTEGER",
        (_, Text) | (_, Json) | (Backend::Sqlite, Time) => "TEXT",
    }
}

impl Table {
    /// `CREATE TABLE` and `CREATE INDEX` statements under `prefix`.
    pub fn ddl(&self, backend: Backend, prefix: &str) -> Vec<String> {
        let cols: Vec<String> = self.columns.iter().map(|(n, k)| format!("{n} {}", sql_type(backend, *k))).collect();
        let rowid = if self.without_rowid && backend == Backend::Sqlite { " WITHOUT ROWID" } else { "" };
        let mut out = vec![format!(
            "CREATE TABLE IF NOT EXISTS {prefix}{} ({}, PRIMARY KEY ({})){rowid}",
            self.name,
            cols.join(", "),
            self.primary_key
        )];
        out.extend(self.index_ddl(backend, prefix));
        out
    }

    /// `CREATE INDEX` statements of the secondary indexes under `prefix`.
    fn index_ddl<'a>(&'a self, backend: Backend, prefix: &'a str) -> impl Iterator<Item = String> + 'a {
        let name = self.name;
        let names = self.index_names(prefix);
        let search = self.sqlite_search.filter(|_| backend == Backend::Sqlite);
        self.indexes.iter().zip(names).enumerate().map(move |(i, (ix, n))| match search {
            Some((searched, columns)) if searched.contains(&i) => {
                format!("CREATE INDEX IF NOT EXISTS {n} ON {prefix}{name} ({ix}, {columns})")
            }
            _ => format!("CREATE INDEX IF NOT EXISTS {n} ON {prefix}{name} ({ix})"),
        })
    }

    /// Names of the secondary indexes under `prefix`, in the order of
    /// [`indexes`](Self::indexes).
    fn index_names(&self, prefix: &str) -> Vec<String> {
        (0..self.indexes.len()).map(|i| format!("{prefix}{}_ix{i}", self.name)).collect()
    }

    /// A query listing every row as text cells, in primary-key order (for
    /// comparing a rebuild with the live tables).
    pub fn dump_sql(&self, backend: Backend, prefix: &str) -> String {
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|(n, k)| match (backend, k) {
                (Backend::Sqlite, Uuid) => format!("hex({n})"),
                (Backend::Postgres, Uuid) => format!("replace(upper({n}::text), '-', '')"),
                (Backend::Postgres, Time) => {
                    format!("to_char({n} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
                }
                (Backend::Sqlite, Time) => format!("strftime('%Y-%m-%dT%H:%M:%f', {n})"),
                _ => format!("CAST({n} AS TEXT)"),
            })
            .collect();
        format!("SELECT {} FROM {prefix}{} ORDER BY {}", cells.join(", "), self.name, self.primary_key)
    }
}

/// The whole read-model description as DDL text: when it differs from the
/// one the live tables were built with, they are rebuilt.
pub fn description(backend: Backend) -> String {
    let mut ddl: Vec<String> =
        TABLES.iter().chain(std::iter::once(&CHECKPOINTS)).flat_map(|t| t.ddl(backend, "")).collect();
    if backend == Backend::Postgres {
        ddl.extend(search_indexes(""));
    }
    ddl.join(";\n")
}

/// PostgreSQL trigram indexes behind the invitation list's email and name
/// search (`?q=`, a substring match): without them a rare substring scans
/// every invitation of the account. Needs the `pg_trgm` extension (trusted:
/// a database owner may create it); without it the search still works,
/// only slower.
///
/// `fastupdate = off`: by default a GIN index queues new entries in a
/// pending list of up to 4 MB (`gin_pending_list_limit`) that every search
/// reads in full until a vacuum merges it. With 100,000 invitations that
/// list made one search cost 7–17 ms of CPU instead of under 1 ms, and it
/// refills under a steady stream of invitations; each invitation now pays
/// its few trigram entries at insert time instead.
pub(crate) fn search_indexes(prefix: &str) -> Vec<String> {
    vec![
        format!(
            "CREATE INDEX IF NOT EXISTS {prefix}{SEARCH_BY_EMAIL} ON {prefix}invitations \
             USING gin (email gin_trgm_ops) WITH (fastupdate = off)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {prefix}{SEARCH_BY_NAME} ON {prefix}invitations \
             USING gin (lower(name) gin_trgm_ops) WITH (fastupdate = off)"
        ),
    ]
}

/// Names (without prefix) of the trigram indexes of [`search_indexes`].
const SEARCH_BY_EMAIL: &str = "invitations_email_trgm";
const SEARCH_BY_NAME: &str = "invitations_name_trgm";

/// The PostgreSQL `CREATE INDEX` statements of every read model's secondary indexes
/// under `prefix` (what [`create`] adds to [`create_tables`]), the search
/// indexes not included, the largest table's first.
pub(crate) fn secondary_indexes(prefix: &str) -> Vec<String> {
    let mut tables: Vec<&Table> = TABLES.iter().collect();
    tables.sort_by_key(|t| t.name != "invitations");
    tables.iter().flat_map(|t| t.index_ddl(Backend::Postgres, prefix)).collect()
}

/// Makes pg_trgm available for the search indexes; false (and a
/// warning) when it is not and cannot be.
pub(crate) async fn trigrams_available(conn: &mut sqlx::PgConnection) -> bool {
    match sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute(conn).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "pg_trgm is not available: the invitation search runs without its index");
            false
        }
    }
}

/// On PostgreSQL, once the tables under `from` have been renamed to the
/// names under `to` (a rebuild's tables swapped in for the live ones),
/// gives their indexes the names they have under `to` too: the secondary
/// and search indexes built before the swap (missing ones are skipped),
/// and the primary keys, which PostgreSQL named after the rebuild's
/// tables. The live tables then look as if [`create`] had made them.
/// Nothing on SQLite, which cannot rename an index (and whose rebuild
/// builds the live indexes at the swap).
pub async fn rename_indexes(tx: &mut Tx, from: &str, to: &str) -> crate::Result<()> {
    let Conn::Postgres(c) = &mut tx.conn else { return Ok(()) };
    let names =
        TABLES.iter().flat_map(|t| t.index_names("")).chain([SEARCH_BY_EMAIL.to_string(), SEARCH_BY_NAME.to_string()]);
    for name in names {
        sqlx::query(&format!("ALTER INDEX IF EXISTS {from}{name} RENAME TO {to}{name}")).execute(&mut **c).await?;
    }
    for table in TABLES.iter().chain(std::iter::once(&CHECKPOINTS)) {
        let name = format!("{to}{}", table.name);
        let key: Option<String> = sqlx::query_scalar(
            "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
        )
        .bind(&name)
        .fetch_optional(&mut **c)
        .await?;
        let wanted = format!("{name}_pkey");
        if let Some(key) = key.filter(|k| *k != wanted) {
            sqlx::query(&format!("ALTER TABLE {name} RENAME CONSTRAINT \"{key}\" TO {wanted}"))
                .execute(&mut **c)
                .await?;
        }
    }
    Ok(())
}

/// On PostgreSQL, creates the search indexes when `pg_trgm` is (or can be
/// made) available; behind a savepoint, so that failing to create the
/// extension leaves the transaction usable.
async fn create_search_indexes(tx: &mut Tx, prefix: &str) -> crate::Result<()> {
    let Conn::Postgres(c) = &mut tx.conn else { return Ok(()) };
    sqlx::query("SAVEPOINT search_indexes").execute(&mut **c).await?;
    if trigrams_available(c).await {
        for stmt in search_indexes(prefix) {
            sqlx::query(&stmt).execute(&mut **c).await?;
        }
        sqlx::query("RELEASE SAVEPOINT search_indexes").execute(&mut **c).await?;
    } else {
        sqlx::query("ROLLBACK TO SAVEPOINT search_indexes").execute(&mut **c).await?;
    }
    Ok(())
}

/// Creates every read-model table (and the checkpoints) under `prefix`.
pub async fn create(tx: &mut Tx, prefix: &str) -> crate::Result<()> {
    let backend = tx.backend();
    for table in TABLES.iter().chain(std::iter::once(&CHECKPOINTS)) {
        for stmt in table.ddl(backend, prefix) {
            on_tx!(tx, c => sqlx::query(&stmt).execute(&mut *c).await.map(|_| ())?);
        }
    }
    if backend == Backend::Postgres {
        create_search_indexes(tx, prefix).await?;
    }
    Ok(())
}

/// Creates every read-model table (and the checkpoints) under `prefix`
/// without their secondary indexes: a rebuild fills the tables first and
/// indexes them once at the end ([`create`] adds the indexes), instead of
/// updating every index row by row.
pub async fn create_tables(tx: &mut Tx, prefix: &str) -> crate::Result<()> {
    let backend = tx.backend();
    for table in TABLES.iter().chain(std::iter::once(&CHECKPOINTS)) {
        if let Some(stmt) = table.ddl(backend, prefix).first() {
            on_tx!(tx, c => sqlx::query(stmt).execute(&mut *c).await.map(|_| ())?);
        }
    }
    Ok(())
}

/// Drops every read-model table under `prefix`.
pub async fn drop(tx: &mut Tx, prefix: &str) -> crate::Result<()> {
    for table in TABLES.iter().chain(std::iter::once(&CHECKPOINTS)) {
        let stmt = format!("DROP TABLE IF EXISTS {prefix}{}", table.name);
        on_tx!(tx, c => sqlx::query(&stmt).execute(&mut *c).await.map(|_| ())?);
    }
    Ok(())
}
