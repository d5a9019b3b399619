//! Projecting many events at once, for rebuilds.
//!
//! [`Projector`](crate::Projector) runs one to three statements per event:
//! right for a command's handful of events, but a rebuild of a million
//! events then spends nearly all its time in statement round trips. The
//! bulk projector applies a batch of events to the rows they touch in
//! memory and writes the outcome with a few multi-row statements per
//! table:
//!
//! 1. load every row the batch reads or writes that the tables already hold
//!    (one `IN (...)` query per table and chunk),
//! 2. apply each event to those rows in memory, with exactly the rules of
//!    the per-event projector (inserts that keep an existing row, the
//!    stream-version guards, counters, deletions),
//! 3. upsert the rows that changed, delete the rows that went, and insert
//!    the append-only rows (deliveries, the account-stream index).
//!
//! Memory is bounded by the batch: nothing is kept between batches. The
//! replay-equivalence tests compare what a rebuild (this) writes with what
//! the inline projector wrote, so the two cannot drift apart unnoticed.

use std::collections::{HashMap, HashSet};

use admit_domain::access::Access;
use admit_domain::account::AccountEvent;
use admit_domain::invitation::{DeliveryState, InvitationEvent, InvitationStatus};
use admit_domain::user::UserEvent;
use admit_domain::Event;
use admit_ledger::personal::LookupKey;
use admit_ledger::{on_tx, Tx};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::schema::{Kind, Table, TABLES};
use crate::{Envelope, Result};

/// Bind parameters per statement, below SQLite's limit (32766) and
/// PostgreSQL's (65535).
const MAX_BINDS: usize = 30_000;

/// Binds one cell to a query builder (a `Separated` one) with the SQL type
/// of its column, so a NULL is typed as the column is.
macro_rules! bind_cell {
    ($b:expr, $cell:expr, $kind:expr) => {
        match ($cell, $kind) {
            (Cell::Uuid(u), _) => {
                $b.push_bind(*u);
            }
            (Cell::Text(s), _) => {
                $b.push_bind(s.as_str());
            }
            (Cell::Int(i), _) => {
                $b.push_bind(*i);
            }
            (Cell::Time(t), _) => {
                $b.push_bind(*t);
            }
            (Cell::Null, Kind::Uuid) => {
                $b.push_bind(None::<Uuid>);
            }
            (Cell::Null, Kind::Int) => {
                $b.push_bind(None::<i64>);
            }
            (Cell::Null, Kind::Time) => {
                $b.push_bind(None::<DateTime<Utc>>);
            }
            (Cell::Null, Kind::Text | Kind::Json) => {
                $b.push_bind(None::<String>);
            }
        }
    };
}

/// Pushes the primary keys of `$chunk` (each a row of cells of `$kinds`)
/// and the closing parenthesis after a `... IN (` or `... IN (VALUES ` head:
/// plain values for one key column, tuples for several.
macro_rules! push_keys {
    ($q:expr, $chunk:expr, $kinds:expr) => {
        for (n, key) in $chunk.iter().enumerate() {
            if n > 0 {
                $q.push(", ");
            }
            if $kinds.len() > 1 {
                $q.push("(");
            }
            let mut sep = $q.separated(", ");
            for (cell, kind) in key.iter().zip(&$kinds) {
                bind_cell!(sep, cell, *kind);
            }
            if $kinds.len() > 1 {
                $q.push(")");
            }
        }
        $q.push(")");
    };
}

/// One cell of a read-model row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Cell {
    Null,
    Uuid(Uuid),
    Text(String),
    Int(i64),
    Time(DateTime<Utc>),
}

impl Cell {
    fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            _ => 0,
        }
    }

    fn opt_text(v: Option<String>) -> Cell {
        v.map(Cell::Text).unwrap_or(Cell::Null)
    }
}

/// The read models, by their place in [`TABLES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum T {
    Accounts = 0,
    Roles = 1,
    Users = 2,
    Members = 3,
    Invitations = 4,
    ApiKeys = 5,
    AccountStreams = 6,
    Deliveries = 7,
}

const NAMES: [&str; 8] =
    ["accounts", "roles", "users", "members", "invitations", "api_keys", "account_streams", "invitation_deliveries"];

/// A row the batch knows about: as stored or changed, or absent (never
/// stored, or deleted by the batch).
#[derive(Debug)]
enum Slot {
    Present { row: Vec<Cell>, dirty: bool },
    Absent { dirty: bool },
}

/// The rows of one table the current batch touches.
#[derive(Debug)]
struct Rows {
    table: &'static Table,
    key_cols: Vec<usize>,
    slots: HashMap<Vec<Cell>, Slot>,
    /// Append-only tables: rows to insert unless their key exists.
    appended: Vec<Vec<Cell>>,
    appended_keys: HashSet<Vec<Cell>>,
}

impl Rows {
    fn new(table: &'static Table) -> Rows {
        let key_cols = table.primary_key.split(',').map(|k| col(table, k.trim())).collect();
        Rows { table, key_cols, slots: HashMap::new(), appended: Vec::new(), appended_keys: HashSet::new() }
    }

    fn key_of(&self, row: &[Cell]) -> Vec<Cell> {
        self.key_cols.iter().map(|&i| row[i].clone()).collect()
    }

    /// `INSERT ... ON CONFLICT DO NOTHING`.
    fn insert_if_absent(&mut self, row: Vec<Cell>) {
        let key = self.key_of(&row);
        match self.slots.get(&key) {
            Some(Slot::Present { .. }) => {}
            _ => {
                self.slots.insert(key, Slot::Present { row, dirty: true });
            }
        }
    }

    /// `UPDATE ... WHERE key` (and the guard `version < v` when given).
    fn update(&mut self, key: &[Cell], below_version: Option<i64>, f: impl FnOnce(&mut RowMut<'_>)) {
        let table = self.table;
        if let Some(Slot::Present { row, dirty }) = self.slots.get_mut(key) {
            if let Some(v) = below_version {
                if row[col(table, "version")].int() >= v {
                    return;
                }
            }
            *dirty = true;
            f(&mut RowMut { table, row });
        }
    }

    /// `DELETE ... WHERE key`.
    fn delete(&mut self, key: &[Cell]) {
        if let Some(slot) = self.slots.get_mut(key) {
            if matches!(slot, Slot::Present { .. }) {
                *slot = Slot::Absent { dirty: true };
            }
        }
    }

    /// Append-only insert: the first row of a key wins.
    fn append(&mut self, row: Vec<Cell>) {
        let key = self.key_of(&row);
        if self.appended_keys.insert(key) {
            self.appended.push(row);
        }
    }
}

fn col(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("read model {} has no column {name}", table.name))
}

/// A row being changed, its cells named by column.
struct RowMut<'a> {
    table: &'static Table,
    row: &'a mut Vec<Cell>,
}

impl RowMut<'_> {
    fn set(&mut self, name: &str, cell: Cell) {
        self.row[col(self.table, name)] = cell;
    }

    fn get(&self, name: &str) -> &Cell {
        &self.row[col(self.table, name)]
    }
}

/// A full row of `table` from named cells; unnamed columns are NULL.
fn row(table: &Table, cells: Vec<(&str, Cell)>) -> Vec<Cell> {
    let mut out = vec![Cell::Null; table.columns.len()];
    for (name, cell) in cells {
        out[col(table, name)] = cell;
    }
    out
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn json_name(v: &impl serde::Serialize) -> String {
    json(v).trim_matches('"').to_string()
}

fn roles_text(access: &Access) -> String {
    access.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(" ")
}

/// Projects batches of events into the read models under one prefix.
#[derive(Debug)]
pub(crate) struct BulkProjector {
    prefix: String,
    lookup: LookupKey,
    rows: Vec<Rows>,
}

impl BulkProjector {
    /// A bulk projector writing to tables named `{prefix}{table}`.
    pub(crate) fn new(prefix: &str, lookup: LookupKey) -> BulkProjector {
        let rows = NAMES
            .iter()
            .map(|name| {
                let table = TABLES.iter().find(|t| t.name == *name).unwrap_or_else(|| panic!("no read model {name}"));
                Rows::new(table)
            })
            .collect();
        BulkProjector { prefix: prefix.to_string(), lookup, rows }
    }

    fn t(&mut self, t: T) -> &mut Rows {
        &mut self.rows[t as usize]
    }

    /// Applies `events` in order, as [`Projector::apply`](crate::Projector::apply)
    /// would one by one, and writes the outcome in `tx`.
    pub(crate) async fn apply_all(&mut self, tx: &mut Tx, events: &[Envelope]) -> Result<()> {
        let t = std::time::Instant::now();
        self.load(tx, events).await?;
        let loaded = t.elapsed();
        for env in events {
            self.apply(env);
        }
        let applied = t.elapsed();
        self.flush(tx).await?;
        tracing::trace!(?loaded, ?applied, flushed = ?t.elapsed(), "bulk batch");
        Ok(())
    }

    /// Loads every stored row the events touch (and, for a deleted role,
    /// every member of its account).
    async fn load(&mut self, tx: &mut Tx, events: &[Envelope]) -> Result<()> {
        let mut keys: Vec<HashSet<Vec<Cell>>> = vec![HashSet::new(); NAMES.len()];
        let mut role_deleted_accounts = HashSet::new();
        for env in events {
            match &env.event {
                Event::Account(id, e) => {
                    let a = Cell::Uuid(id.0);
                    keys[T::Accounts as usize].insert(vec![a.clone()]);
                    use AccountEvent::*;
                    match e {
                        RoleDefined { role, .. } | RoleChanged { role, .. } | RoleDeleted { role } => {
                            keys[T::Roles as usize].insert(vec![a.clone(), Cell::Text(role.to_string())]);
                            if matches!(e, RoleDeleted { .. }) {
                                role_deleted_accounts.insert(id.0);
                            }
                        }
                        ApiKeyCreated { key_id, .. } | ApiKeyRevoked { key_id } => {
                            keys[T::ApiKeys as usize].insert(vec![Cell::Uuid(key_id.0)]);
                        }
                        MemberJoined { user_id, .. }
                        | MemberAccessChanged { user_id, .. }
                        | MemberDeactivated { user_id }
                        | MemberReactivated { user_id }
                        | MemberRemoved { user_id }
                        | MembershipCancelled { user_id } => {
                            keys[T::Members as usize].insert(vec![a.clone(), Cell::Uuid(user_id.0)]);
                        }
                        AccountOpened { .. }
                        | AccountSettingsChanged { .. }
                        | AccountDeactivated {}
                        | AccountReactivated {}
                        | InvitationRenewalRequested { .. } => {}
                    }
                }
                Event::Invitation(id, _) => {
                    keys[T::Invitations as usize].insert(vec![Cell::Uuid(id.0)]);
                }
                Event::User(id, _) => {
                    keys[T::Users as usize].insert(vec![Cell::Uuid(id.0)]);
                }
            }
        }
        for (i, wanted) in keys.into_iter().enumerate() {
            let wanted: Vec<Vec<Cell>> = wanted.into_iter().filter(|k| !self.rows[i].slots.contains_key(k)).collect();
            if wanted.is_empty() {
                continue;
            }
            let found = self.select_keys(tx, i, &wanted).await?;
            let rows = &mut self.rows[i];
            for r in found {
                rows.slots.insert(rows.key_of(&r), Slot::Present { row: r, dirty: false });
            }
            for k in wanted {
                rows.slots.entry(k).or_insert(Slot::Absent { dirty: false });
            }
        }
        for account in role_deleted_accounts {
            let i = T::Members as usize;
            let sql = format!("SELECT {} FROM {}{} WHERE account_id = $1", column_list(self.rows[i].table), self.prefix, NAMES[i]);
            let table = self.rows[i].table;
            let found = on_tx!(tx, c => {
                let rows = sqlx::query(&sql).bind(account).fetch_all(&mut *c).await?;
                rows.iter().map(|r| decode_row(r, table)).collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
            });
            let rows = &mut self.rows[i];
            for r in found {
                let k = rows.key_of(&r);
                // Rows the batch already holds are newer than the stored ones.
                rows.slots.entry(k).or_insert(Slot::Present { row: r, dirty: false });
            }
        }
        Ok(())
    }

    /// The stored rows of table `i` with these keys.
    async fn select_keys(&self, tx: &mut Tx, i: usize, keys: &[Vec<Cell>]) -> Result<Vec<Vec<Cell>>> {
        let rows = &self.rows[i];
        let table = rows.table;
        let key_kinds: Vec<Kind> = rows.key_cols.iter().map(|&c| table.columns[c].1).collect();
        if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
            // One array parameter per key column: one prepared statement
            // whatever the count.
            let sql = format!(
                "SELECT {} FROM {}{} WHERE ({}) IN (SELECT * FROM {})",
                column_list(table),
                self.prefix,
                table.name,
                table.primary_key,
                pg_unnest(&key_kinds, 1)
            );
            let mut q = sqlx::query(&sql);
            for (c, kind) in key_kinds.iter().enumerate() {
                q = pg_bind_column(q, keys.iter().map(|k| &k[c]), *kind);
            }
            let rows = q.fetch_all(&mut **t).await?;
            return Ok(rows.iter().map(|r| decode_row(r, table)).collect::<std::result::Result<Vec<_>, sqlx::Error>>()?);
        }
        let mut out = Vec::new();
        for chunk in keys.chunks(MAX_BINDS / key_kinds.len()) {
            let head = if key_kinds.len() == 1 {
                format!("SELECT {} FROM {}{} WHERE {} IN (", column_list(table), self.prefix, table.name, table.primary_key)
            } else {
                format!("SELECT {} FROM {}{} WHERE ({}) IN (VALUES ", column_list(table), self.prefix, table.name, table.primary_key)
            };
            let found = on_tx!(tx, c => {
                let mut q = sqlx::QueryBuilder::new(head);
                push_keys!(q, chunk, key_kinds);
                let rows = q.build().fetch_all(&mut *c).await?;
                rows.iter().map(|r| decode_row(r, table)).collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
            });
            out.extend(found);
        }
        Ok(out)
    }

    /// Writes what the batch changed and forgets the batch.
    async fn flush(&mut self, tx: &mut Tx) -> Result<()> {
        for i in 0..self.rows.len() {
            let table = self.rows[i].table;
            let rows = std::mem::replace(&mut self.rows[i], Rows::new(table));
            let mut upserts = Vec::new();
            let mut deletes = Vec::new();
            for (key, slot) in rows.slots {
                match slot {
                    Slot::Present { row, dirty: true } => upserts.push(row),
                    Slot::Absent { dirty: true } => deletes.push(key),
                    _ => {}
                }
            }
            if !deletes.is_empty() {
                self.delete_keys(tx, table, &rows.key_cols, &deletes).await?;
            }
            let updates: Vec<&str> = table
                .columns
                .iter()
                .enumerate()
                .filter(|(c, _)| !rows.key_cols.contains(c))
                .map(|(_, (n, _))| *n)
                .collect();
            let on_conflict = format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                table.primary_key,
                updates.iter().map(|n| format!("{n} = excluded.{n}")).collect::<Vec<_>>().join(", ")
            );
            self.insert(tx, table, &upserts, &on_conflict).await?;
            let keep = format!(" ON CONFLICT ({}) DO NOTHING", table.primary_key);
            self.insert(tx, table, &rows.appended, &keep).await?;
        }
        Ok(())
    }

    async fn insert(&self, tx: &mut Tx, table: &'static Table, rows: &[Vec<Cell>], tail: &str) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
            // One array per column: a single statement, prepared once.
            let kinds: Vec<Kind> = table.columns.iter().map(|(_, k)| *k).collect();
            let sql = format!(
                "INSERT INTO {}{} ({}) SELECT * FROM {}{tail}",
                self.prefix,
                table.name,
                column_list(table),
                pg_unnest(&kinds, 1)
            );
            let mut q = sqlx::query(&sql);
            for (c, kind) in kinds.iter().enumerate() {
                q = pg_bind_column(q, rows.iter().map(|r| &r[c]), *kind);
            }
            q.execute(&mut **t).await?;
            return Ok(());
        }
        let head = format!("INSERT INTO {}{} ({}) ", self.prefix, table.name, column_list(table));
        for chunk in rows.chunks(MAX_BINDS / table.columns.len()) {
            on_tx!(tx, c => {
                let mut q = sqlx::QueryBuilder::new(head.as_str());
                q.push_values(chunk, |mut b, row| {
                    for (cell, (_, kind)) in row.iter().zip(table.columns) {
                        bind_cell!(b, cell, *kind);
                    }
                });
                q.push(tail);
                q.build().execute(&mut *c).await.map(|_| ())?
            });
        }
        Ok(())
    }

    async fn delete_keys(&self, tx: &mut Tx, table: &'static Table, key_cols: &[usize], keys: &[Vec<Cell>]) -> Result<()> {
        let kinds: Vec<Kind> = key_cols.iter().map(|&c| table.columns[c].1).collect();
        if let admit_ledger::Conn::Postgres(t) = &mut tx.conn {
            let sql = format!(
                "DELETE FROM {}{} WHERE ({}) IN (SELECT * FROM {})",
                self.prefix,
                table.name,
                table.primary_key,
                pg_unnest(&kinds, 1)
            );
            let mut q = sqlx::query(&sql);
            for (c, kind) in kinds.iter().enumerate() {
                q = pg_bind_column(q, keys.iter().map(|k| &k[c]), *kind);
            }
            q.execute(&mut **t).await?;
            return Ok(());
        }
        for chunk in keys.chunks(MAX_BINDS / kinds.len()) {
            let head = if kinds.len() == 1 {
                format!("DELETE FROM {}{} WHERE {} IN (", self.prefix, table.name, table.primary_key)
            } else {
                format!("DELETE FROM {}{} WHERE ({}) IN (VALUES ", self.prefix, table.name, table.primary_key)
            };
            on_tx!(tx, c => {
                let mut q = sqlx::QueryBuilder::new(head);
                push_keys!(q, chunk, kinds);
                q.build().execute(&mut *c).await.map(|_| ())?
            });
        }
        Ok(())
    }

    fn apply(&mut self, env: &Envelope) {
        let at = env.recorded_at;
        let v = env.stream_version;
        match &env.event {
            Event::Account(id, e) => self.account(id.0, e, at, v),
            Event::Invitation(id, e) => self.invitation(id.0, e, at, v),
            Event::User(id, e) => self.user(id.0, e, at, v),
        }
    }

    fn index_stream(&mut self, account: Uuid, stream: String, at: DateTime<Utc>) {
        let rows = self.t(T::AccountStreams);
        let r = row(
            rows.table,
            vec![("account_id", Cell::Uuid(account)), ("stream_id", Cell::Text(stream)), ("opened_at", Cell::Time(at))],
        );
        rows.append(r);
    }

    fn set_member_access(&mut self, account: Uuid, user: Uuid, access: &Access, at: DateTime<Utc>) {
        self.t(T::Members).update(&[Cell::Uuid(account), Cell::Uuid(user)], None, |r| {
            r.set("access", Cell::Text(json(access)));
            r.set("roles", Cell::Text(roles_text(access)));
            r.set("restricted", Cell::Int(access.is_restricted() as i64));
            r.set("updated_at", Cell::Time(at));
        });
    }

    fn account(&mut self, id: Uuid, e: &AccountEvent, at: DateTime<Utc>, v: i64) {
        use AccountEvent::*;
        let a = Cell::Uuid(id);
        match e {
            AccountOpened { name, customer_number, settings, .. } => {
                let rows = self.t(T::Accounts);
                let r = row(
                    rows.table,
                    vec![
                        ("account_id", a.clone()),
                        ("name", Cell::Text(name.to_string())),
                        ("customer_number", Cell::Text(customer_number.to_string())),
                        ("status", Cell::Text("active".into())),
                        ("settings", Cell::Text(json(settings))),
                        ("opened_at", Cell::Time(at)),
                        ("updated_at", Cell::Time(at)),
                        ("version", Cell::Int(v)),
                    ],
                );
                rows.insert_if_absent(r);
                self.index_stream(id, format!("account-{id}"), at);
                return;
            }
            AccountSettingsChanged { settings } => {
                self.t(T::Accounts).update(&[a.clone()], None, |r| {
                    r.set("settings", Cell::Text(json(settings)));
                    r.set("updated_at", Cell::Time(at));
                });
            }
            AccountDeactivated {} | AccountReactivated {} => {
                let status = if matches!(e, AccountDeactivated {}) { "inactive" } else { "active" };
                self.t(T::Accounts).update(&[a.clone()], None, |r| r.set("status", Cell::Text(status.into())));
            }
            ApiKeyCreated { key_id, name, permissions, secret_hash, created_by } => {
                let rows = self.t(T::ApiKeys);
                let r = row(
                    rows.table,
                    vec![
                        ("key_id", Cell::Uuid(key_id.0)),
                        ("account_id", a.clone()),
                        ("name", Cell::Text(name.clone())),
                        ("permissions", Cell::Text(json(permissions))),
                        ("secret_hash", Cell::Text(secret_hash.clone())),
                        ("created_by", Cell::Text(created_by.to_string())),
                        ("created_at", Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            ApiKeyRevoked { key_id } => {
                self.t(T::ApiKeys).update(&[Cell::Uuid(key_id.0)], None, |r| r.set("revoked_at", Cell::Time(at)));
            }
            RoleDefined { role, permissions } => {
                let rows = self.t(T::Roles);
                let r = row(
                    rows.table,
                    vec![
                        ("account_id", a.clone()),
                        ("role", Cell::Text(role.to_string())),
                        ("permissions", Cell::Text(json(permissions))),
                        ("defined_at", Cell::Time(at)),
                        ("updated_at", Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            RoleChanged { role, permissions } => {
                self.t(T::Roles).update(&[a.clone(), Cell::Text(role.to_string())], None, |r| {
                    r.set("permissions", Cell::Text(json(permissions)));
                    r.set("updated_at", Cell::Time(at));
                });
            }
            RoleDeleted { role } => {
                self.t(T::Roles).delete(&[a.clone(), Cell::Text(role.to_string())]);
                // Every member of the account holding the role loses it.
                let members = self.t(T::Members);
                let (account_col, user_col, access_col) =
                    (col(members.table, "account_id"), col(members.table, "user_id"), col(members.table, "access"));
                let holders: Vec<(Uuid, Access)> = members
                    .slots
                    .values()
                    .filter_map(|s| match s {
                        Slot::Present { row, .. } if row[account_col] == a => match (&row[user_col], &row[access_col]) {
                            (Cell::Uuid(u), Cell::Text(access)) => {
                                serde_json::from_str::<Access>(access).ok().map(|acc| (*u, acc))
                            }
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect();
                for (user, mut access) in holders {
                    if access.roles.iter().any(|r| r.as_str() == role.as_str()) {
                        access.roles.retain(|r| r.as_str() != role.as_str());
                        self.set_member_access(id, user, &access, at);
                    }
                }
            }
            MemberJoined { user_id, invitation_id, access } => {
                let rows = self.t(T::Members);
                let r = row(
                    rows.table,
                    vec![
                        ("account_id", a.clone()),
                        ("user_id", Cell::Uuid(user_id.0)),
                        ("access", Cell::Text(json(access))),
                        ("roles", Cell::Text(roles_text(access))),
                        ("restricted", Cell::Int(access.is_restricted() as i64)),
                        ("status", Cell::Text("active".into())),
                        ("invitation_id", Cell::Uuid(invitation_id.0)),
                        ("joined_at", Cell::Time(at)),
                        ("updated_at", Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            MemberAccessChanged { user_id, access } => self.set_member_access(id, user_id.0, access, at),
            MemberDeactivated { user_id } | MemberReactivated { user_id } => {
                let status = if matches!(e, MemberDeactivated { .. }) { "inactive" } else { "active" };
                self.t(T::Members).update(&[a.clone(), Cell::Uuid(user_id.0)], None, |r| {
                    r.set("status", Cell::Text(status.into()));
                    r.set("updated_at", Cell::Time(at));
                });
            }
            MemberRemoved { user_id } | MembershipCancelled { user_id } => {
                self.t(T::Members).delete(&[a.clone(), Cell::Uuid(user_id.0)]);
            }
            // A request for the inviter's attention: no read model changes.
            InvitationRenewalRequested { .. } => {}
        }
        self.t(T::Accounts).update(&[a], None, |r| {
            r.set("version", Cell::Int(v));
            r.set("updated_at", Cell::Time(at));
        });
    }

    fn invitation(&mut self, id: Uuid, e: &InvitationEvent, at: DateTime<Utc>, v: i64) {
        use InvitationEvent::*;
        let key = [Cell::Uuid(id)];
        if let InvitationSent {
            account_id, person_id, personal, access, invited_by, channel, expires_at, metadata, redirect_url, ..
        } = e
        {
            let email_hash = personal.email().map(|e| self.lookup.email_hash(e.as_str()));
            let rows = self.t(T::Invitations);
            let r = row(
                rows.table,
                vec![
                    ("invitation_id", Cell::Uuid(id)),
                    ("account_id", Cell::Uuid(account_id.0)),
                    ("person_id", Cell::Uuid(person_id.0)),
                    ("email", Cell::opt_text(personal.email().map(|e| e.to_string()))),
                    ("email_hash", Cell::opt_text(email_hash)),
                    ("name", Cell::opt_text(personal.name().map(|n| n.to_string()))),
                    ("status", Cell::Text("pending".into())),
                    ("access", Cell::Text(json(access))),
                    ("roles", Cell::Text(roles_text(access))),
                    ("invited_by", Cell::Text(invited_by.to_string())),
                    ("channel", Cell::Text(json_name(channel))),
                    ("created_at", Cell::Time(at)),
                    ("expires_at", Cell::Time(*expires_at)),
                    ("resend_count", Cell::Int(0)),
                    ("updated_at", Cell::Time(at)),
                    ("version", Cell::Int(v)),
                    ("metadata", Cell::opt_text(metadata.as_ref().map(|m| m.to_string()))),
                    ("redirect_url", Cell::opt_text(redirect_url.clone())),
                    ("opens", Cell::Int(0)),
                    ("clicks", Cell::Int(0)),
                ],
            );
            rows.insert_if_absent(r);
            self.index_stream(account_id.0, format!("invitation-{id}"), at);
            return;
        }
        if let InvitationDeliveryRecorded { state, detail } = e {
            let rows = self.t(T::Deliveries);
            let r = row(
                rows.table,
                vec![
                    ("invitation_id", Cell::Uuid(id)),
                    ("seq", Cell::Int(v)),
                    ("state", Cell::Text(json_name(state))),
                    ("detail", Cell::opt_text(detail.clone())),
                    ("recorded_at", Cell::Time(at)),
                ],
            );
            rows.append(r);
        }
        let close = |r: &mut RowMut<'_>, status: InvitationStatus| {
            r.set("status", Cell::Text(status.as_str().into()));
            r.set("closed_at", Cell::Time(at));
        };
        // Skip an event the row already reflects (replays, retries).
        self.t(T::Invitations).update(&key, Some(v), |r| {
            match e {
                InvitationSent { .. } => unreachable!("handled above"),
                InvitationUpdated { access, expires_at, .. } => {
                    r.set("access", Cell::Text(json(access)));
                    r.set("roles", Cell::Text(roles_text(access)));
                    r.set("expires_at", Cell::Time(*expires_at));
                }
                InvitationResent { expires_at, .. } => {
                    r.set("expires_at", Cell::Time(*expires_at));
                    let n = r.get("resend_count").int();
                    r.set("resend_count", Cell::Int(n + 1));
                }
                InvitationDeliveryRecorded { state, .. } => {
                    let counter = match state {
                        DeliveryState::Opened => Some("opens"),
                        DeliveryState::Clicked => Some("clicks"),
                        _ => None,
                    };
                    match counter {
                        // The first open (click) moves the delivery state;
                        // every one is counted.
                        Some(c) => {
                            let n = r.get(c).int();
                            if n == 0 {
                                r.set("delivery_state", Cell::Text(json_name(state)));
                                r.set("delivery_updated_at", Cell::Time(at));
                            }
                            r.set(c, Cell::Int(n + 1));
                        }
                        // `processed` and `delivered` never move the state
                        // back from what the invitee already did (as the
                        // inline projector).
                        None => {
                            let acted = matches!(r.get("delivery_state"), Cell::Text(t) if t == "opened" || t == "clicked");
                            if !(acted && matches!(state, DeliveryState::Processed | DeliveryState::Delivered)) {
                                r.set("delivery_state", Cell::Text(json_name(state)));
                                r.set("delivery_updated_at", Cell::Time(at));
                            }
                        }
                    }
                }
                InvitationReminded { .. } => r.set("reminded_at", Cell::Time(at)),
                InvitationAccepted { user_id, access } => {
                    r.set("status", Cell::Text("accepted".into()));
                    r.set("accepted_at", Cell::Time(at));
                    r.set("accepted_by", Cell::Uuid(user_id.0));
                    r.set("closed_at", Cell::Time(at));
                    r.set("access", Cell::Text(json(access)));
                    r.set("roles", Cell::Text(roles_text(access)));
                }
                InvitationDeclined {} => close(r, InvitationStatus::Declined),
                InvitationExpired {} => close(r, InvitationStatus::Expired),
                InvitationRevoked { reason, .. } => {
                    close(r, InvitationStatus::Revoked);
                    r.set("revoke_reason", Cell::Text(json_name(reason)));
                }
            }
            r.set("updated_at", Cell::Time(at));
            r.set("version", Cell::Int(v));
        });
    }

    fn user(&mut self, id: Uuid, e: &UserEvent, at: DateTime<Utc>, v: i64) {
        let key = [Cell::Uuid(id)];
        match e {
            UserEvent::UserRegistered { person_id, personal, password_hash, .. } => {
                let email_hash = personal.email().map(|e| self.lookup.email_hash(e.as_str()));
                let rows = self.t(T::Users);
                let r = row(
                    rows.table,
                    vec![
                        ("user_id", Cell::Uuid(id)),
                        ("person_id", Cell::Uuid(person_id.0)),
                        ("email", Cell::opt_text(personal.email().map(|e| e.to_string()))),
                        ("email_hash", Cell::opt_text(email_hash)),
                        ("name", Cell::opt_text(personal.name().map(|n| n.to_string()))),
                        ("password_hash", Cell::Text(password_hash.as_str().to_string())),
                        ("status", Cell::Text("active".into())),
                        ("registered_at", Cell::Time(at)),
                        ("version", Cell::Int(v)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            UserEvent::UserLoggedIn {} => self.t(T::Users).update(&key, Some(v), |r| {
                r.set("last_login_at", Cell::Time(at));
                r.set("version", Cell::Int(v));
            }),
            UserEvent::UserPasswordChanged { password_hash } => self.t(T::Users).update(&key, Some(v), |r| {
                r.set("password_hash", Cell::Text(password_hash.as_str().to_string()));
                r.set("version", Cell::Int(v));
            }),
            UserEvent::UserDeactivated {} => self.t(T::Users).update(&key, Some(v), |r| {
                r.set("status", Cell::Text("inactive".into()));
                r.set("version", Cell::Int(v));
            }),
        }
    }
}

/// `UNNEST($n::uuid[], $n+1::text[], ...)` for columns of these kinds.
fn pg_unnest(kinds: &[Kind], first: usize) -> String {
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
            format!("${}::{t}[]", first + i)
        })
        .collect();
    format!("UNNEST({})", arrays.join(", "))
}

/// Binds one column of cells as a PostgreSQL array of its kind.
fn pg_bind_column<'q, 'c>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    cells: impl Iterator<Item = &'c Cell>,
    kind: Kind,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match kind {
        Kind::Uuid => q.bind(cells.map(|c| if let Cell::Uuid(u) = c { Some(*u) } else { None }).collect::<Vec<Option<Uuid>>>()),
        Kind::Text | Kind::Json => {
            q.bind(cells.map(|c| if let Cell::Text(t) = c { Some(t.clone()) } else { None }).collect::<Vec<Option<String>>>())
        }
        Kind::Int => q.bind(cells.map(|c| if let Cell::Int(i) = c { Some(*i) } else { None }).collect::<Vec<Option<i64>>>()),
        Kind::Time => {
            q.bind(cells.map(|c| if let Cell::Time(t) = c { Some(*t) } else { None }).collect::<Vec<Option<DateTime<Utc>>>>())
        }
    }
}

fn column_list(table: &Table) -> String {
    table.columns.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}


/// A stored row as cells, by the kinds of `table`'s columns.
fn decode_row<R>(r: &R, table: &Table) -> std::result::Result<Vec<Cell>, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'a> Uuid: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> DateTime<Utc>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        let cell = match kind {
            Kind::Uuid => r.try_get::<Option<Uuid>, _>(i)?.map(Cell::Uuid),
            Kind::Text | Kind::Json => r.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            Kind::Int => r.try_get::<Option<i64>, _>(i)?.map(Cell::Int),
            Kind::Time => r.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Cell::Time),
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}
