//! Projecting many events at once, for rebuilds.
//!
//! [`Projector`](crate::Projector) runs one to three statements per event:
//! right for a command's handful of events, but a rebuild of a million
//! events then spends nearly all its time in statement round trips. The
//! bulk projector instead keeps the rows it builds in memory and writes
//! each one about once:
//!
//! 1. every row a batch of events touches is looked up in memory first;
//!    only a row written out earlier and dropped from memory since (see
//!    below) is read back from its table, and a row nobody wrote yet is
//!    known to be absent without asking (a rebuild starts from empty
//!    tables),
//! 2. each event is applied to those rows in memory, with exactly the rules
//!    of the per-event projector (inserts that keep an existing row, the
//!    stream-version guards, counters, deletions),
//! 3. the append-only rows (deliveries, the account-stream index) are
//!    written after every batch and forgotten; changed rows stay in memory,
//!    changed, until [`BulkProjector::finish`] writes them all.
//!
//! Memory is bounded, not by the log but by `resident_rows` per table: when
//! a table holds more, the rows used least recently (by batch) are written
//! out and dropped from memory until it holds half; a later event on one of
//! them reads it back. A row is thus written once when the rebuild's rows
//! fit in memory, and about once per time it was dropped otherwise.
//!
//! The replay-equivalence tests compare what a rebuild (this) writes with
//! what the inline projector wrote, with the default bound and with one so
//! small that rows are dropped and read back all the time.

mod postgres;
mod sqlite;
mod text;

use std::collections::{HashMap as StdHashMap, HashSet as StdHashSet};

use admit_domain::access::Access;
use admit_domain::account::AccountEvent;
use admit_domain::invitation::{DeliveryState, InvitationEvent, InvitationStatus};
use admit_domain::personal::Personal;
use admit_domain::user::UserEvent;
use admit_domain::Event;
use admit_ledger::personal::LookupKey;
use admit_ledger::{Conn, Database, Tx};
use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use uuid::Uuid;

use crate::projector::NewInvitation;
use crate::schema::{Table, TABLES};
use crate::{Envelope, Result};
use text::Text;

/// Rows per table a rebuild keeps in memory by default: a million-event log
/// (116,656 invitations) then writes most rows once and replays in under
/// 300 MB (255 MiB measured on SQLite, whose 32 MiB page cache is part of
/// it; see docs/performance.md for how other bounds compared).
pub const DEFAULT_RESIDENT_ROWS: usize = 80_000;

/// One cell of a read-model row. Cells of one column are of one kind, and
/// order as both backends order their stored values (UUIDs and text by
/// their bytes), so rows sorted by key are written in the key's order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Cell {
    Null,
    Uuid(Uuid),
    /// Text: short text in place, longer text boxed (see [`text`]).
    Text(Text),
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
        v.map(|t| Cell::Text(t.into())).unwrap_or(Cell::Null)
    }
}

/// Maps of a rebuild's rows: keys are the rebuild's own, hashed millions
/// of times, so by a fast hash rather than SipHash (still seeded per
/// process, so no input chooses the collisions).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = StdHashSet<K, foldhash::fast::RandomState>;

/// A row's primary key: one or two cells (no read model has more), held
/// in place, so that looking a row up allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key {
    cells: [Cell; 2],
    len: u8,
}

impl Key {
    fn one(a: Cell) -> Key {
        Key { cells: [a, Cell::Null], len: 1 }
    }

    fn two(a: Cell, b: Cell) -> Key {
        Key { cells: [a, b], len: 2 }
    }

    /// The key's cells, in the order of the primary key's columns.
    fn cells(&self) -> &[Cell] {
        &self.cells[..self.len as usize]
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

/// A row the rebuild holds in memory.
#[derive(Debug)]
struct Slot {
    /// The row as it stands; None when absent (never inserted, or deleted).
    row: Option<Vec<Cell>>,
    /// Changed since it was last written.
    dirty: bool,
    /// The table holds a row under this key (written earlier).
    stored: bool,
    /// The last batch that used it.
    touched: u32,
}

/// The rows of one table the rebuild holds.
#[derive(Debug)]
struct Rows {
    table: &'static Table,
    key_cols: Vec<usize>,
    /// Where the stream version is, for the guarded updates.
    version_col: Option<usize>,
    slots: HashMap<Key, Slot>,
    /// Keys of rows written out and dropped from memory: the only rows
    /// that must be read back from the table when an event touches them.
    dropped: HashSet<Key>,
    /// Append-only tables: rows to insert. A rebuild applies each event
    /// once, so two appends under one key come only from one batch (the
    /// first wins, as the inline projector's `ON CONFLICT DO NOTHING`).
    appended: Vec<Vec<Cell>>,
    appended_keys: HashSet<Key>,
}

impl Rows {
    fn new(table: &'static Table) -> Rows {
        let key_cols: Vec<usize> = table.primary_key.split(',').map(|k| col(table, k.trim())).collect();
        assert!(key_cols.len() <= 2, "read model {}: a key of more than two columns", table.name);
        Rows {
            table,
            key_cols,
            version_col: table.columns.iter().position(|(n, _)| *n == "version"),
            slots: HashMap::default(),
            dropped: HashSet::default(),
            appended: Vec::new(),
            appended_keys: HashSet::default(),
        }
    }

    fn key_of(&self, row: &[Cell]) -> Key {
        match self.key_cols[..] {
            [a] => Key::one(row[a].clone()),
            [a, b] => Key::two(row[a].clone(), row[b].clone()),
            _ => unreachable!("keys have one or two columns (checked in Rows::new)"),
        }
    }

    /// `INSERT ... ON CONFLICT DO NOTHING`.
    fn insert_if_absent(&mut self, row: Vec<Cell>) {
        let key = self.key_of(&row);
        let slot = self.slots.entry(key).or_insert(Slot { row: None, dirty: false, stored: false, touched: 0 });
        if slot.row.is_none() {
            slot.row = Some(row);
            slot.dirty = true;
        }
    }

    /// `UPDATE ... WHERE key` (and the guard `version < v` when given).
    fn update(&mut self, key: &Key, below_version: Option<i64>, f: impl FnOnce(&mut RowMut<'_>)) {
        let version = self.version_col;
        if let Some(Slot { row: Some(row), dirty, .. }) = self.slots.get_mut(key) {
            if let Some(v) = below_version {
                let version = version.unwrap_or_else(|| panic!("read model {} has no version", self.table.name));
                if row[version].int() >= v {
                    return;
                }
            }
            *dirty = true;
            f(&mut RowMut { row });
        }
    }

    /// `DELETE ... WHERE key`.
    fn delete(&mut self, key: &Key) {
        if let Some(slot) = self.slots.get_mut(key) {
            if slot.row.take().is_some() {
                slot.dirty = true;
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

    /// Marks `key` used by `batch`; true when its row must be read from the
    /// table first (it was written out and dropped from memory).
    fn touch(&mut self, key: Key, batch: u32) -> Option<Key> {
        if let Some(slot) = self.slots.get_mut(&key) {
            slot.touched = batch;
            return None;
        }
        if self.dropped.contains(&key) {
            return Some(key);
        }
        self.slots.insert(key, Slot { row: None, dirty: false, stored: false, touched: batch });
        None
    }

    /// Takes in rows read back from the table; rows held in memory are
    /// newer and win.
    fn read_back(&mut self, found: Vec<Vec<Cell>>, batch: u32) {
        for row in found {
            let key = self.key_of(&row);
            self.dropped.remove(&key);
            self.slots.entry(key).or_insert(Slot { row: Some(row), dirty: false, stored: true, touched: batch });
        }
    }

    /// Drops the least recently used rows until half of `limit` remain,
    /// returning them with what each needs written.
    fn shed(&mut self, limit: usize) -> Vec<(Key, Slot)> {
        if self.slots.len() <= limit {
            return Vec::new();
        }
        // The youngest of the oldest `len - limit / 2` rows: it and every
        // row as old or older go (ties may take a few more).
        let mut ages: Vec<u32> = self.slots.values().map(|s| s.touched).collect();
        let victims = ages.len() - limit / 2;
        let (_, youngest, _) = ages.select_nth_unstable(victims - 1);
        let threshold = *youngest;
        let victims: Vec<Key> =
            self.slots.iter().filter(|(_, s)| s.touched <= threshold).map(|(k, _)| k.clone()).collect();
        let mut out = Vec::with_capacity(victims.len());
        for key in victims {
            if let Some(slot) = self.slots.remove(&key) {
                if slot.row.is_some() {
                    self.dropped.insert(key.clone());
                }
                out.push((key, slot));
            }
        }
        out
    }
}

fn col(table: &Table, name: &str) -> usize {
    table
        .columns
        .iter()
        .position(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("read model {} has no column {name}", table.name))
}

/// The position of column `$col` in read model `$t` (a [`T`]), found when
/// compiling: a misspelt column does not build, and setting a cell costs
/// no search through the column names (which was a tenth of applying an
/// event).
macro_rules! c {
    ($t:ident . $col:ident) => {{
        const C: usize = column_at(&TABLES[T::$t as usize], stringify!($col));
        C
    }};
}

/// [`col`] when compiling (see [`c!`]).
const fn column_at(table: &Table, name: &str) -> usize {
    let mut i = 0;
    while i < table.columns.len() {
        if same_text(table.columns[i].0, name) {
            return i;
        }
        i += 1;
    }
    panic!("a read model has no such column");
}

const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A row being changed, its cells at the positions [`c!`] names.
struct RowMut<'a> {
    row: &'a mut Vec<Cell>,
}

impl RowMut<'_> {
    fn set(&mut self, column: usize, cell: Cell) {
        self.row[column] = cell;
    }

    fn get(&self, column: usize) -> &Cell {
        &self.row[column]
    }
}

/// A full row of `table` from cells at the positions [`c!`] names;
/// columns not given are NULL.
fn row<const N: usize>(table: &Table, cells: [(usize, Cell); N]) -> Vec<Cell> {
    let mut out = vec![Cell::Null; table.columns.len()];
    for (column, cell) in cells {
        out[column] = cell;
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

/// `t.to_rfc3339_opts(SecondsFormat::AutoSi, false)`, what sqlx stores for
/// a time on SQLite (and PostgreSQL reads as a `timestamptz`), without the
/// formatting machinery (a rebuild writes millions): see [`push_time`].
#[cfg(test)]
fn time_text(t: &DateTime<Utc>) -> String {
    let mut out = String::with_capacity(32);
    push_time(&mut out, t);
    out
}

/// Appends [`time_text`] of `t` to `out`:
/// `2026-11-23T10:00:00.123456+00:00`, the fraction as short as exact in
/// steps of 3 digits. A rebuild formats into one buffer it reuses, so a
/// time written costs no allocation.
fn push_time(out: &mut String, t: &DateTime<Utc>) {
    let n = t.naive_utc();
    let nanos = n.nanosecond();
    if !(0..=9999).contains(&n.year()) || nanos >= 1_000_000_000 {
        out.push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, false));
        return;
    }
    push_digits(out, n.year() as u32, 4);
    for (v, sep) in [(n.month(), '-'), (n.day(), '-'), (n.hour(), 'T'), (n.minute(), ':'), (n.second(), ':')] {
        out.push(sep);
        push_digits(out, v, 2);
    }
    let (fraction, width) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if width > 0 {
        out.push('.');
        push_digits(out, fraction, width);
    }
    out.push_str("+00:00");
}

/// Appends `v` in decimal, zero-padded to `width` digits.
fn push_digits(out: &mut String, v: u32, width: u32) {
    for p in (0..width).rev() {
        out.push(char::from(b'0' + (v / 10u32.pow(p) % 10) as u8));
    }
}

/// `a, b, c`: every column of `table`, in order.
fn column_list(table: &Table) -> String {
    table.columns.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// `b = excluded.b, c = excluded.c`: every column but the key, as the
/// `SET` of an upsert.
fn update_set(table: &Table, key_cols: &[usize]) -> String {
    let updates: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(c, _)| !key_cols.contains(c))
        .map(|(_, (n, _))| format!("{n} = excluded.{n}"))
        .collect();
    updates.join(", ")
}

/// What to read from one table before a batch is applied.
#[derive(Debug, Default)]
struct Reads {
    /// Rows by primary key.
    keys: Vec<Key>,
    /// Every row whose `account_id` is one of these (the members of an
    /// account that deleted a role).
    accounts: Vec<Uuid>,
}

/// What to write to one table.
#[derive(Debug, Default)]
struct Writes<'a> {
    /// New rows: the table has none under their keys (it started empty
    /// and they were never written), so they are plainly inserted
    /// (PostgreSQL: `COPY`); a duplicate key would be a bug and fails.
    inserts: Vec<&'a [Cell]>,
    /// Rows written before and changed since: updated.
    upserts: Vec<&'a [Cell]>,
    /// Keys of rows written before and deleted since.
    deletes: Vec<&'a [Cell]>,
}

impl Writes<'_> {
    fn is_empty(&self) -> bool {
        self.inserts.is_empty() && self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// Puts the rows in the order of their keys: each insert then lands
    /// next to the one before it (the rightmost leaf of the key's B-tree
    /// for a rebuild's first write) instead of on a random page, which on
    /// both backends is most of what writing a row costs. Rows are
    /// gathered from hash maps, in no order at all.
    fn sort(&mut self, key_cols: &[usize]) {
        sort_by_key(&mut self.inserts, key_cols);
        sort_by_key(&mut self.upserts, key_cols);
        self.deletes.sort_unstable();
    }
}

/// Sorts rows by their keys ([`by_key`]). When every row's first key cell
/// is a UUID (all tables but the account-stream index), it is taken out
/// beside its row as a number first, so that the sort compares numbers
/// held in one array and reads a row only on a tie, instead of following
/// two pointers to rows all over memory and matching on their cells for
/// every comparison, which was most of what sorting cost.
fn sort_by_key<R: AsRef<[Cell]>>(rows: &mut Vec<R>, key_cols: &[usize]) {
    let (first, rest) = (key_cols[0], &key_cols[1..]);
    let uuid = |row: &R| match row.as_ref()[first] {
        Cell::Uuid(u) => Some(u.as_u128()),
        _ => None,
    };
    let Some(numbers) = rows.iter().map(uuid).collect::<Option<Vec<u128>>>() else {
        rows.sort_unstable_by(|a, b| by_key(key_cols, a.as_ref(), b.as_ref()));
        return;
    };
    // A UUID's number orders as its bytes, which is how cells order.
    let mut keyed: Vec<(u128, R)> = numbers.into_iter().zip(rows.drain(..)).collect();
    keyed.sort_unstable_by(|(ka, a), (kb, b)| ka.cmp(kb).then_with(|| by_key(rest, a.as_ref(), b.as_ref())));
    rows.extend(keyed.into_iter().map(|(_, r)| r));
}

/// The order of two rows' keys (`key_cols`).
fn by_key(key_cols: &[usize], a: &[Cell], b: &[Cell]) -> std::cmp::Ordering {
    key_cols.iter().map(|&c| a[c].cmp(&b[c])).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
}

/// One table's write: the table, its key columns, and the rows.
type TableWrite<'a> = (&'static Table, &'a [usize], Writes<'a>);

/// Reads rows of several tables in `tx` (`reads[i]` of `TABLES`-ordered
/// table `tables[i]`).
async fn read(tx: &mut Tx, prefix: &str, tables: &[&Rows], reads: &[Reads]) -> Result<Vec<Vec<Vec<Cell>>>> {
    match &mut tx.conn {
        Conn::Postgres(t) => {
            let mut out = Vec::with_capacity(reads.len());
            for (rows, r) in tables.iter().zip(reads) {
                out.push(postgres::read(t, prefix, rows.table, &rows.key_cols, r).await?);
            }
            Ok(out)
        }
        Conn::Sqlite(t) => {
            sqlite::with_handle(t, |conn| {
                tables
                    .iter()
                    .zip(reads)
                    .map(|(rows, r)| sqlite::read(conn, prefix, rows.table, &rows.key_cols, r))
                    .collect()
            })
            .await?
        }
    }
}

/// Writes rows of several tables in `tx`.
async fn write(tx: &mut Tx, prefix: &str, writes: &[TableWrite<'_>]) -> Result<()> {
    if writes.iter().all(|(_, _, w)| w.is_empty()) {
        return Ok(());
    }
    match &mut tx.conn {
        Conn::Postgres(t) => {
            for (table, key_cols, w) in writes {
                postgres::write(t, prefix, table, key_cols, w).await?;
            }
            Ok(())
        }
        Conn::Sqlite(t) => {
            sqlite::with_handle(t, |conn| {
                writes.iter().try_for_each(|(table, key_cols, w)| sqlite::write(conn, prefix, table, key_cols, w))
            })
            .await?
        }
    }
}

/// What a slot needs written: its row (insert or update) or, when it was
/// deleted after being written, its key (delete). Nothing when clean.
fn slot_write<'a>(key: &'a Key, slot: &'a Slot, w: &mut Writes<'a>) {
    if !slot.dirty {
        return;
    }
    match &slot.row {
        Some(row) if slot.stored => w.upserts.push(row),
        Some(row) => w.inserts.push(row),
        None if slot.stored => w.deletes.push(key.cells()),
        None => {}
    }
}

/// Projects batches of events into the read models under one prefix.
#[derive(Debug)]
pub(crate) struct BulkProjector {
    prefix: String,
    lookup: LookupKey,
    rows: Vec<Rows>,
    resident_rows: usize,
    batch: u32,
    /// PostgreSQL: where append-only rows go, beside the rebuild's own
    /// connection (see [`postgres::SideWriter`]).
    side: Option<postgres::SideWriter>,
}

impl BulkProjector {
    /// A bulk projector writing to the (empty) tables named
    /// `{prefix}{table}`, keeping at most about `resident_rows` rows per
    /// table in memory (at least 2).
    pub(crate) fn new(prefix: &str, lookup: LookupKey, resident_rows: usize) -> BulkProjector {
        let rows = NAMES
            .iter()
            .map(|name| {
                let table = TABLES.iter().find(|t| t.name == *name).unwrap_or_else(|| panic!("no read model {name}"));
                Rows::new(table)
            })
            .collect();
        BulkProjector {
            prefix: prefix.to_string(),
            lookup,
            rows,
            resident_rows: resident_rows.max(2),
            batch: 0,
            side: None,
        }
    }

    /// On PostgreSQL, writes append-only rows on a second connection from
    /// now until [`finish_aside`](Self::finish_aside), beside the rows
    /// written in the rebuild's transaction. Nothing on SQLite (one writer).
    pub(crate) async fn write_aside(&mut self, db: &Database) -> Result<()> {
        if let Database::Postgres(pool) = db {
            self.side = Some(postgres::SideWriter::start(pool, &self.prefix).await?);
        }
        Ok(())
    }

    /// Writes the held rows ([`finish`](Self::finish)) and, beside it,
    /// commits what the second connection wrote; append-only rows go into
    /// `tx` again from then on.
    pub(crate) async fn finish_aside(&mut self, tx: &mut Tx) -> Result<()> {
        let side = self.side.take();
        let aside = async {
            match side {
                Some(side) => side.close().await,
                None => Ok(()),
            }
        };
        tokio::try_join!(aside, self.finish(tx))?;
        Ok(())
    }

    fn t(&mut self, t: T) -> &mut Rows {
        &mut self.rows[t as usize]
    }

    /// Applies `events` in order, as [`Projector::apply`](crate::Projector::apply)
    /// would one by one, reading and writing in `tx` what memory does not
    /// hold. Changed rows may stay unwritten until [`finish`](Self::finish).
    pub(crate) async fn apply_all(&mut self, tx: &mut Tx, events: &[Envelope]) -> Result<()> {
        let t = std::time::Instant::now();
        self.batch += 1;
        self.read_missing(tx, events).await?;
        let loaded = t.elapsed();
        for env in events {
            self.apply(env);
        }
        let applied = t.elapsed();
        self.spill(tx).await?;
        tracing::trace!(?loaded, ?applied, spilled = ?t.elapsed(), "bulk batch");
        Ok(())
    }

    /// Writes every changed row held in memory (they stay held, unchanged).
    pub(crate) async fn finish(&mut self, tx: &mut Tx) -> Result<()> {
        let writes: Vec<TableWrite<'_>> = self
            .rows
            .iter()
            .map(|rows| {
                let mut w = Writes::default();
                for (key, slot) in &rows.slots {
                    slot_write(key, slot, &mut w);
                }
                w.inserts.extend(rows.appended.iter().map(Vec::as_slice));
                w.sort(&rows.key_cols);
                (rows.table, rows.key_cols.as_slice(), w)
            })
            .collect();
        write(tx, &self.prefix, &writes).await?;
        for rows in &mut self.rows {
            rows.appended.clear();
            rows.appended_keys.clear();
            for slot in rows.slots.values_mut() {
                slot.dirty = false;
                slot.stored = slot.row.is_some();
            }
        }
        Ok(())
    }

    /// Makes every row the events touch present in memory (read back when
    /// it was dropped, absent when it never existed), and, for a deleted
    /// role, every member of its account.
    async fn read_missing(&mut self, tx: &mut Tx, events: &[Envelope]) -> Result<()> {
        let batch = self.batch;
        let mut reads: Vec<Reads> = (0..NAMES.len()).map(|_| Reads::default()).collect();
        let mut touch = |rows: &mut Vec<Rows>, t: T, key: Key| {
            if let Some(key) = rows[t as usize].touch(key, batch) {
                reads[t as usize].keys.push(key);
            }
        };
        let mut role_deleted_accounts = HashSet::default();
        for env in events {
            match &env.event {
                Event::Account(id, e) => {
                    let a = Cell::Uuid(id.0);
                    touch(&mut self.rows, T::Accounts, Key::one(a.clone()));
                    use AccountEvent::*;
                    match e {
                        RoleDefined { role, .. } | RoleChanged { role, .. } | RoleDeleted { role } => {
                            touch(&mut self.rows, T::Roles, Key::two(a.clone(), Cell::Text(role.to_string().into())));
                            if matches!(e, RoleDeleted { .. }) {
                                role_deleted_accounts.insert(id.0);
                            }
                        }
                        ApiKeyCreated { key_id, .. } | ApiKeyRevoked { key_id } => {
                            touch(&mut self.rows, T::ApiKeys, Key::one(Cell::Uuid(key_id.0)));
                        }
                        MemberJoined { user_id, .. }
                        | MemberAccessChanged { user_id, .. }
                        | MemberDeactivated { user_id }
                        | MemberReactivated { user_id }
                        | MemberRemoved { user_id }
                        | MembershipCancelled { user_id } => {
                            touch(&mut self.rows, T::Members, Key::two(a.clone(), Cell::Uuid(user_id.0)));
                        }
                        AccountOpened { .. }
                        | AccountSettingsChanged { .. }
                        | AccountDeactivated {}
                        | AccountReactivated {}
                        | InvitationRenewalRequested { .. } => {}
                    }
                }
                Event::Invitation(id, _) => touch(&mut self.rows, T::Invitations, Key::one(Cell::Uuid(id.0))),
                Event::User(id, _) => touch(&mut self.rows, T::Users, Key::one(Cell::Uuid(id.0))),
            }
        }
        // A deleted role changes every member holding it: those dropped
        // from memory are read back (rows in memory are newer and win).
        if !self.rows[T::Members as usize].dropped.is_empty() {
            reads[T::Members as usize].accounts = role_deleted_accounts.into_iter().collect();
        }
        if reads.iter().all(|r| r.keys.is_empty() && r.accounts.is_empty()) {
            return Ok(());
        }
        let tables: Vec<&Rows> = self.rows.iter().collect();
        let found = read(tx, &self.prefix, &tables, &reads).await?;
        for ((rows, found), wanted) in self.rows.iter_mut().zip(found).zip(reads) {
            rows.read_back(found, batch);
            // A dropped key the table no longer has (cannot happen: rows
            // are written before they are dropped) reads as absent.
            for key in wanted.keys {
                if rows.dropped.remove(&key) {
                    rows.slots.entry(key).or_insert(Slot { row: None, dirty: false, stored: false, touched: batch });
                }
            }
        }
        Ok(())
    }

    /// Writes the batch's append-only rows, and writes and drops the least
    /// recently used rows of every table that holds too many.
    async fn spill(&mut self, tx: &mut Tx) -> Result<()> {
        let limit = self.resident_rows;
        let shed: Vec<Vec<(Key, Slot)>> = self.rows.iter_mut().map(|rows| rows.shed(limit)).collect();
        let mut appended: Vec<Vec<Vec<Cell>>> = self
            .rows
            .iter_mut()
            .map(|rows| {
                rows.appended_keys.clear();
                // The next batch appends about as many rows again.
                let capacity = rows.appended.len();
                std::mem::replace(&mut rows.appended, Vec::with_capacity(capacity))
            })
            .collect();
        if let Some(side) = &mut self.side {
            for (rows, appended) in self.rows.iter().zip(&mut appended) {
                if !appended.is_empty() {
                    let key_cols = &rows.key_cols;
                    sort_by_key(appended, key_cols);
                    side.insert(rows.table, std::mem::take(appended)).await?;
                }
            }
        }
        let writes: Vec<TableWrite<'_>> = self
            .rows
            .iter()
            .zip(&shed)
            .zip(&appended)
            .map(|((rows, shed), appended)| {
                let mut w = Writes::default();
                for (key, slot) in shed {
                    slot_write(key, slot, &mut w);
                }
                w.inserts.extend(appended.iter().map(Vec::as_slice));
                w.sort(&rows.key_cols);
                (rows.table, rows.key_cols.as_slice(), w)
            })
            .collect();
        write(tx, &self.prefix, &writes).await
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
            [
                (c!(AccountStreams.account_id), Cell::Uuid(account)),
                (c!(AccountStreams.stream_id), Cell::Text(stream.into())),
                (c!(AccountStreams.opened_at), Cell::Time(at)),
            ],
        );
        rows.append(r);
    }

    fn set_member_access(&mut self, account: Uuid, user: Uuid, access: &Access, at: DateTime<Utc>) {
        self.t(T::Members).update(&Key::two(Cell::Uuid(account), Cell::Uuid(user)), None, |r| {
            r.set(c!(Members.access), Cell::Text(json(access).into()));
            r.set(c!(Members.roles), Cell::Text(roles_text(access).into()));
            r.set(c!(Members.restricted), Cell::Int(access.is_restricted() as i64));
            r.set(c!(Members.updated_at), Cell::Time(at));
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
                    [
                        (c!(Accounts.account_id), a.clone()),
                        (c!(Accounts.name), Cell::Text(name.to_string().into())),
                        (c!(Accounts.customer_number), Cell::Text(customer_number.to_string().into())),
                        (c!(Accounts.status), Cell::Text("active".into())),
                        (c!(Accounts.settings), Cell::Text(json(settings).into())),
                        (c!(Accounts.opened_at), Cell::Time(at)),
                        (c!(Accounts.updated_at), Cell::Time(at)),
                        (c!(Accounts.version), Cell::Int(v)),
                    ],
                );
                rows.insert_if_absent(r);
                self.index_stream(id, format!("account-{id}"), at);
                return;
            }
            AccountSettingsChanged { settings } => {
                self.t(T::Accounts).update(&Key::one(a.clone()), None, |r| {
                    r.set(c!(Accounts.settings), Cell::Text(json(settings).into()));
                    r.set(c!(Accounts.updated_at), Cell::Time(at));
                });
            }
            AccountDeactivated {} | AccountReactivated {} => {
                let status = if matches!(e, AccountDeactivated {}) { "inactive" } else { "active" };
                self.t(T::Accounts)
                    .update(&Key::one(a.clone()), None, |r| r.set(c!(Accounts.status), Cell::Text(status.into())));
            }
            ApiKeyCreated { key_id, name, permissions, secret_hash, created_by } => {
                let rows = self.t(T::ApiKeys);
                let r = row(
                    rows.table,
                    [
                        (c!(ApiKeys.key_id), Cell::Uuid(key_id.0)),
                        (c!(ApiKeys.account_id), a.clone()),
                        (c!(ApiKeys.name), Cell::Text(name.clone().into())),
                        (c!(ApiKeys.permissions), Cell::Text(json(permissions).into())),
                        (c!(ApiKeys.secret_hash), Cell::Text(secret_hash.clone().into())),
                        (c!(ApiKeys.created_by), Cell::Text(created_by.to_string().into())),
                        (c!(ApiKeys.created_at), Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            ApiKeyRevoked { key_id } => {
                self.t(T::ApiKeys)
                    .update(&Key::one(Cell::Uuid(key_id.0)), None, |r| r.set(c!(ApiKeys.revoked_at), Cell::Time(at)));
            }
            RoleDefined { role, permissions } => {
                let rows = self.t(T::Roles);
                let r = row(
                    rows.table,
                    [
                        (c!(Roles.account_id), a.clone()),
                        (c!(Roles.role), Cell::Text(role.to_string().into())),
                        (c!(Roles.permissions), Cell::Text(json(permissions).into())),
                        (c!(Roles.defined_at), Cell::Time(at)),
                        (c!(Roles.updated_at), Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            RoleChanged { role, permissions } => {
                self.t(T::Roles).update(&Key::two(a.clone(), Cell::Text(role.to_string().into())), None, |r| {
                    r.set(c!(Roles.permissions), Cell::Text(json(permissions).into()));
                    r.set(c!(Roles.updated_at), Cell::Time(at));
                });
            }
            RoleDeleted { role } => {
                self.t(T::Roles).delete(&Key::two(a.clone(), Cell::Text(role.to_string().into())));
                // Every member of the account holding the role loses it.
                let members = self.t(T::Members);
                let (account_col, user_col, access_col) =
                    (c!(Members.account_id), c!(Members.user_id), c!(Members.access));
                // The key (account, user) is held in the map itself, so
                // the other accounts' members are passed over without
                // reaching their rows.
                let holders: Vec<(Uuid, Access)> = members
                    .slots
                    .iter()
                    .filter(|(key, _)| key.cells[0] == a)
                    .filter_map(|(_, s)| match &s.row {
                        Some(row) if row[account_col] == a => match (&row[user_col], &row[access_col]) {
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
                    [
                        (c!(Members.account_id), a.clone()),
                        (c!(Members.user_id), Cell::Uuid(user_id.0)),
                        (c!(Members.access), Cell::Text(json(access).into())),
                        (c!(Members.roles), Cell::Text(roles_text(access).into())),
                        (c!(Members.restricted), Cell::Int(access.is_restricted() as i64)),
                        (c!(Members.status), Cell::Text("active".into())),
                        (c!(Members.invitation_id), Cell::Uuid(invitation_id.0)),
                        (c!(Members.joined_at), Cell::Time(at)),
                        (c!(Members.updated_at), Cell::Time(at)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            MemberAccessChanged { user_id, access } => self.set_member_access(id, user_id.0, access, at),
            MemberDeactivated { user_id } | MemberReactivated { user_id } => {
                let status = if matches!(e, MemberDeactivated { .. }) { "inactive" } else { "active" };
                self.t(T::Members).update(&Key::two(a.clone(), Cell::Uuid(user_id.0)), None, |r| {
                    r.set(c!(Members.status), Cell::Text(status.into()));
                    r.set(c!(Members.updated_at), Cell::Time(at));
                });
            }
            MemberRemoved { user_id } | MembershipCancelled { user_id } => {
                self.t(T::Members).delete(&Key::two(a.clone(), Cell::Uuid(user_id.0)));
            }
            // A request for the inviter's attention: no read model changes.
            InvitationRenewalRequested { .. } => {}
        }
        self.t(T::Accounts).update(&Key::one(a), None, |r| {
            r.set(c!(Accounts.version), Cell::Int(v));
            r.set(c!(Accounts.updated_at), Cell::Time(at));
        });
    }

    /// The `email`, `email_hash` and `name` cells of invitations and users,
    /// in that order (all NULL once the person is erased).
    fn personal_cells(&self, personal: &Personal) -> [Cell; 3] {
        let email = personal.email();
        [
            Cell::opt_text(email.map(|e| e.to_string())),
            Cell::opt_text(email.map(|e| self.lookup.email_hash(e.as_str()))),
            Cell::opt_text(personal.name().map(|n| n.to_string())),
        ]
    }

    fn invitation(&mut self, id: Uuid, e: &InvitationEvent, at: DateTime<Utc>, v: i64) {
        use InvitationEvent::*;
        let key = Key::one(Cell::Uuid(id));
        // The row a sent invitation starts as, as the live projector
        // writes it (and the API answers with it).
        if let Some(n) = NewInvitation::of(id, e, at) {
            let email_hash = Cell::opt_text(n.email.as_deref().map(|e| self.lookup.email_hash(e)));
            let rows = self.t(T::Invitations);
            let r = row(
                rows.table,
                [
                    (c!(Invitations.invitation_id), Cell::Uuid(id)),
                    (c!(Invitations.account_id), Cell::Uuid(n.account_id)),
                    (c!(Invitations.person_id), Cell::Uuid(n.person_id)),
                    (c!(Invitations.email), Cell::opt_text(n.email)),
                    (c!(Invitations.email_hash), email_hash),
                    (c!(Invitations.name), Cell::opt_text(n.name)),
                    (c!(Invitations.status), Cell::Text("pending".into())),
                    (c!(Invitations.access), Cell::Text(n.access.into())),
                    (c!(Invitations.roles), Cell::Text(n.roles.into())),
                    (c!(Invitations.invited_by), Cell::Text(n.invited_by.into())),
                    (c!(Invitations.channel), Cell::Text(n.channel.into())),
                    (c!(Invitations.created_at), Cell::Time(n.created_at)),
                    (c!(Invitations.expires_at), Cell::Time(n.expires_at)),
                    (c!(Invitations.resend_count), Cell::Int(0)),
                    (c!(Invitations.updated_at), Cell::Time(at)),
                    (c!(Invitations.version), Cell::Int(v)),
                    (c!(Invitations.metadata), Cell::opt_text(n.metadata)),
                    (c!(Invitations.redirect_url), Cell::opt_text(n.redirect_url)),
                    (c!(Invitations.opens), Cell::Int(0)),
                    (c!(Invitations.clicks), Cell::Int(0)),
                ],
            );
            rows.insert_if_absent(r);
            self.index_stream(n.account_id, format!("invitation-{id}"), at);
            return;
        }
        if let InvitationDeliveryRecorded { state, detail } = e {
            let rows = self.t(T::Deliveries);
            let r = row(
                rows.table,
                [
                    (c!(Deliveries.invitation_id), Cell::Uuid(id)),
                    (c!(Deliveries.seq), Cell::Int(v)),
                    (c!(Deliveries.state), Cell::Text(state.as_str().into())),
                    (c!(Deliveries.detail), Cell::opt_text(detail.clone())),
                    (c!(Deliveries.recorded_at), Cell::Time(at)),
                ],
            );
            rows.append(r);
        }
        let close = |r: &mut RowMut<'_>, status: InvitationStatus| {
            r.set(c!(Invitations.status), Cell::Text(status.as_str().into()));
            r.set(c!(Invitations.closed_at), Cell::Time(at));
        };
        // Skip an event the row already reflects (replays, retries).
        self.t(T::Invitations).update(&key, Some(v), |r| {
            match e {
                InvitationSent { .. } => unreachable!("handled above"),
                InvitationUpdated { access, expires_at, .. } => {
                    r.set(c!(Invitations.access), Cell::Text(json(access).into()));
                    r.set(c!(Invitations.roles), Cell::Text(roles_text(access).into()));
                    r.set(c!(Invitations.expires_at), Cell::Time(*expires_at));
                }
                InvitationResent { expires_at, .. } => {
                    r.set(c!(Invitations.expires_at), Cell::Time(*expires_at));
                    let n = r.get(c!(Invitations.resend_count)).int();
                    r.set(c!(Invitations.resend_count), Cell::Int(n + 1));
                }
                InvitationDeliveryRecorded { state, .. } => {
                    let counter = match state {
                        DeliveryState::Opened => Some(c!(Invitations.opens)),
                        DeliveryState::Clicked => Some(c!(Invitations.clicks)),
                        _ => None,
                    };
                    match counter {
                        // The first open (click) moves the delivery state;
                        // every one is counted.
                        Some(c) => {
                            let n = r.get(c).int();
                            if n == 0 {
                                r.set(c!(Invitations.delivery_state), Cell::Text(state.as_str().into()));
                                r.set(c!(Invitations.delivery_updated_at), Cell::Time(at));
                            }
                            r.set(c, Cell::Int(n + 1));
                        }
                        // `processed` and `delivered` never move the state
                        // back from what the invitee already did (as the
                        // inline projector).
                        None => {
                            let acted = matches!(r.get(c!(Invitations.delivery_state)), Cell::Text(t) if &**t == "opened" || &**t == "clicked");
                            if !(acted && matches!(state, DeliveryState::Processed | DeliveryState::Delivered)) {
                                r.set(c!(Invitations.delivery_state), Cell::Text(state.as_str().into()));
                                r.set(c!(Invitations.delivery_updated_at), Cell::Time(at));
                            }
                        }
                    }
                }
                InvitationReminded { .. } => r.set(c!(Invitations.reminded_at), Cell::Time(at)),
                InvitationAccepted { user_id, access } => {
                    r.set(c!(Invitations.status), Cell::Text("accepted".into()));
                    r.set(c!(Invitations.accepted_at), Cell::Time(at));
                    r.set(c!(Invitations.accepted_by), Cell::Uuid(user_id.0));
                    r.set(c!(Invitations.closed_at), Cell::Time(at));
                    r.set(c!(Invitations.access), Cell::Text(json(access).into()));
                    r.set(c!(Invitations.roles), Cell::Text(roles_text(access).into()));
                }
                InvitationDeclined {} => close(r, InvitationStatus::Declined),
                InvitationExpired {} => close(r, InvitationStatus::Expired),
                InvitationRevoked { reason, .. } => {
                    close(r, InvitationStatus::Revoked);
                    r.set(c!(Invitations.revoke_reason), Cell::Text(json_name(reason).into()));
                }
            }
            r.set(c!(Invitations.updated_at), Cell::Time(at));
            r.set(c!(Invitations.version), Cell::Int(v));
        });
    }

    fn user(&mut self, id: Uuid, e: &UserEvent, at: DateTime<Utc>, v: i64) {
        let key = Key::one(Cell::Uuid(id));
        match e {
            UserEvent::UserRegistered { person_id, personal, password_hash, .. } => {
                let [email, email_hash, name] = self.personal_cells(personal);
                let rows = self.t(T::Users);
                let r = row(
                    rows.table,
                    [
                        (c!(Users.user_id), Cell::Uuid(id)),
                        (c!(Users.person_id), Cell::Uuid(person_id.0)),
                        (c!(Users.email), email),
                        (c!(Users.email_hash), email_hash),
                        (c!(Users.name), name),
                        (c!(Users.password_hash), Cell::Text(password_hash.as_str().to_string().into())),
                        (c!(Users.status), Cell::Text("active".into())),
                        (c!(Users.registered_at), Cell::Time(at)),
                        (c!(Users.version), Cell::Int(v)),
                    ],
                );
                rows.insert_if_absent(r);
            }
            UserEvent::UserLoggedIn {} => self.t(T::Users).update(&key, Some(v), |r| {
                r.set(c!(Users.last_login_at), Cell::Time(at));
                r.set(c!(Users.version), Cell::Int(v));
            }),
            UserEvent::UserPasswordChanged { password_hash } => self.t(T::Users).update(&key, Some(v), |r| {
                r.set(c!(Users.password_hash), Cell::Text(password_hash.as_str().to_string().into()));
                r.set(c!(Users.version), Cell::Int(v));
            }),
            UserEvent::UserDeactivated {} => self.t(T::Users).update(&key, Some(v), |r| {
                r.set(c!(Users.status), Cell::Text("inactive".into()));
                r.set(c!(Users.version), Cell::Int(v));
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Rows written here sort and read back like rows sqlx wrote.
        #[test]
        fn time_text_is_what_sqlx_writes(micros in -62_135_596_800_000_000i64..253_402_300_799_999_999, step in 0u8..4) {
            // Whole seconds, milliseconds, microseconds and nanoseconds.
            let t = DateTime::from_timestamp_micros(micros).unwrap();
            let t = match step {
                0 => DateTime::from_timestamp(t.timestamp(), 0).unwrap(),
                1 => DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap(),
                2 => t,
                _ => DateTime::from_timestamp(t.timestamp(), (micros.rem_euclid(1_000_000) as u32) * 1000 + 7).unwrap(),
            };
            prop_assert_eq!(time_text(&t), t.to_rfc3339_opts(SecondsFormat::AutoSi, false));
        }

        /// Sorting by the UUID taken out orders rows as sorting by their
        /// cells does, ties on the first cell included; and a first cell
        /// that is not a UUID sorts by the cells.
        #[test]
        fn sorting_by_key_orders_as_the_cells_do(
            rows in proptest::collection::vec((0u8..6, 0u8..4, any::<u64>()), 0..60),
            text_first in any::<bool>(),
        ) {
            let first = |a: u8| match text_first {
                true => Cell::Text(format!("stream-{a}").as_str().into()),
                false => Cell::Uuid(Uuid::from_u128((a as u128) << 120 | a as u128)),
            };
            let rows: Vec<Vec<Cell>> =
                rows.into_iter().map(|(a, b, n)| vec![Cell::Int(n as i64), first(a), Cell::Int(b as i64)]).collect();
            let key_cols = [1, 2];
            let mut sorted: Vec<&[Cell]> = rows.iter().map(Vec::as_slice).collect();
            sort_by_key(&mut sorted, &key_cols);
            let mut expected: Vec<&[Cell]> = rows.iter().map(Vec::as_slice).collect();
            expected.sort_by(|a, b| by_key(&key_cols, a, b));
            let keys = |rows: &[&[Cell]]| rows.iter().map(|r| (r[1].clone(), r[2].clone())).collect::<Vec<_>>();
            prop_assert_eq!(keys(&sorted), keys(&expected));
        }
    }
}
