//! The part of restore that both source kinds share: turning a tenant's state from the
//! vault into the rows to write (rewritten for `--as`), the order tables are written in
//! (parents first; children's rows are removed first), and the order of rows inside a
//! table that references itself (rows that come before a row they reference wait in a
//! temporary file, not in memory).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::model::{Row, TenantKey, Value};
use lifeboat_core::state::{RowFile, TenantStream};
use lifeboat_core::tenancy::{SourceTenancy, Tenancy};
use lifeboat_core::{Error, Result};

use crate::live::RestoreCatalog;

/// One table to write, with the columns its rows carry.
#[derive(Debug, Clone)]
pub struct RestoreTable {
    pub name: String,
    pub columns: Vec<String>,
}

/// What writing one tenant into one source did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct WriteReport {
    /// table -> (rows written, rows removed)
    pub tables: BTreeMap<String, (u64, u64)>,
}

impl WriteReport {
    pub fn rows_written(&self) -> u64 {
        self.tables.values().map(|t| t.0).sum()
    }

    pub fn rows_removed(&self) -> u64 {
        self.tables.values().map(|t| t.1).sum()
    }
}

/// How a tenant's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Write, and commit.
    Commit,
    /// Write, then roll back: whether the rows go in, with nothing changed.
    Trial,
    /// Count what would be written and removed; write nothing.
    DryRun,
}

/// A foreign key between two tables of a source: `child.columns` reference
/// `parent.parent_columns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub child: String,
    pub columns: Vec<String>,
    pub parent: String,
    pub parent_columns: Vec<String>,
}

/// A tenant's rows to write into one source, produced table by table from the vault
/// (never all held at once; in a table that references itself, a row that comes before
/// a row it references waits in a temporary file, only its keys in memory). The digest of
/// every row handed out is kept, so the rows written can be checked against what the
/// database then holds.
pub struct TenantRestore {
    /// Tenant tables in write order.
    pub tables: Vec<RestoreTable>,
    stream: TenantStream,
    /// With `--as`: the tenant column to rewrite, by table, and the new key.
    rewrite: BTreeMap<String, usize>,
    new_key: Option<TenantKey>,
    foreign_keys: Vec<ForeignKey>,
    /// Table -> digest of the rows handed out so far.
    pub digests: BTreeMap<String, TableDigest>,
}

impl TenantRestore {
    /// The rows of `stream` to write for every tenant table of the source, in `order`.
    /// `live` gives each table's columns in the target; every column the vault has must
    /// be there (a column only the target has takes its default). With `new_key`, the
    /// tenant column of every table that has one is rewritten; rows reached through
    /// `tenant_via` follow their parents unchanged.
    pub fn prepare(
        tenancy: &SourceTenancy,
        catalog: &RestoreCatalog,
        stream: TenantStream,
        live: &BTreeMap<String, Vec<String>>,
        new_key: Option<&TenantKey>,
    ) -> Result<TenantRestore> {
        let schemas = stream.schemas();
        let mut tables = Vec::new();
        let mut rewrite = BTreeMap::new();
        for name in &catalog.order {
            let Some(table) = tenancy.table(name) else {
                continue;
            };
            let live_columns = live.get(name).ok_or_else(|| {
                Error::usage(format!("the target schema differs: it has no table {name}"))
            })?;
            let columns = schemas
                .get(name)
                .map(|s| s.columns.clone())
                .unwrap_or_else(|| table.schema.columns.clone());
            if let Some(missing) = columns.iter().find(|c| !live_columns.contains(c)) {
                return Err(Error::usage(format!(
                    "the target schema differs: table {name} has no column {missing}, which \
                     the vault's rows carry"
                )));
            }
            if let Tenancy::Column(index) = &table.tenancy {
                let tenant_column = &table.schema.columns[*index];
                if let Some(at) = columns.iter().position(|c| c == tenant_column) {
                    rewrite.insert(name.clone(), at);
                }
            }
            tables.push(RestoreTable {
                name: name.clone(),
                columns,
            });
        }
        Ok(TenantRestore {
            tables,
            stream,
            rewrite,
            new_key: new_key.cloned(),
            foreign_keys: catalog.foreign_keys.clone(),
            digests: BTreeMap::new(),
        })
    }

    /// Hand every row of table `index` (of `tables`) to `write`, in an order the
    /// database accepts; returns how many rows there were. Each table can be read once.
    /// The first error `write` returns stops the writing and is returned.
    pub fn rows(&mut self, index: usize, mut write: impl FnMut(&Row) -> Result<()>) -> Result<u64> {
        let table = &self.tables[index];
        let hasher = RowHasher::new(&table.columns);
        let mut digest = TableDigest::default();
        let rewrite = match (&self.new_key, self.rewrite.get(&table.name)) {
            (Some(key), Some(&at)) => Some((key, at)),
            _ => None,
        };
        let mut failed: Option<Error> = None;
        let mut count = 0u64;
        // Rows are lent from the stream's buffer, not handed over: nothing is allocated
        // per row or value on the way from the vault to `write`.
        let mut hand_out = |row: &mut Row| {
            if failed.is_some() {
                return;
            }
            if let Some((key, at)) = rewrite {
                row[at] = rewrite_key(&row[at], key);
            }
            digest.add(hasher.hash(row));
            count += 1;
            if let Err(e) = write(row) {
                failed = Some(e);
            }
        };
        let self_keys = self_keys(&table.name, &table.columns, &self.foreign_keys);
        if self_keys.is_empty() {
            self.stream.for_each_row_mut(&table.name, &mut hand_out)?;
        } else {
            let mut order = SelfReferences::new(&self_keys);
            let mut set_aside: Result<()> = Ok(());
            self.stream.for_each_row_mut(&table.name, |row| {
                if set_aside.is_ok() {
                    set_aside = order.push(row, &mut hand_out);
                }
            })?;
            set_aside?;
            if order.file.rows() > 0 {
                tracing::debug!(
                    table = %table.name,
                    rows = order.file.rows(),
                    "rows set aside until the rows they reference are written"
                );
            }
            order.finish(&mut hand_out)?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.digests.insert(table.name.clone(), digest);
        Ok(count)
    }
}

/// For foreign keys between tables written in one transaction: the keys the parent rows
/// written carry, and the keys the child rows written reference. When every referenced
/// key is among the written ones, the key holds without asking the database. Keys are
/// compared as values (PostgreSQL's text output), so two spellings of one value count as
/// a miss, which only means the database is asked. Past `limit` distinct keys, a key
/// stops being followed and the database is asked.
pub struct WrittenKeys {
    keys: Vec<FollowedKey>,
    limit: usize,
}

struct FollowedKey {
    /// (table index, column indexes) of the referencing and the referenced side.
    child: (usize, Vec<usize>),
    parent: (usize, Vec<usize>),
    written: HashSet<Vec<Value>>,
    wanted: HashSet<Vec<Value>>,
    given_up: bool,
}

impl WrittenKeys {
    /// Follow `keys` (child, its columns, parent, its columns) whose two tables are both
    /// among `tables` with all the columns involved; the others are not followed.
    pub fn new<'a>(
        tables: &[RestoreTable],
        keys: impl IntoIterator<Item = (&'a str, &'a [String], &'a str, &'a [String])>,
        limit: usize,
    ) -> WrittenKeys {
        let locate = |table: &str, columns: &[String]| -> Option<(usize, Vec<usize>)> {
            let index = tables.iter().position(|t| t.name == table)?;
            let at = columns
                .iter()
                .map(|c| tables[index].columns.iter().position(|t| t == c))
                .collect::<Option<Vec<usize>>>()?;
            Some((index, at))
        };
        let keys = keys
            .into_iter()
            .map(|(child, columns, parent, parent_columns)| {
                let located = locate(child, columns).zip(locate(parent, parent_columns));
                FollowedKey {
                    given_up: located.is_none(),
                    child: located.as_ref().map(|l| l.0.clone()).unwrap_or_default(),
                    parent: located.map(|l| l.1).unwrap_or_default(),
                    written: HashSet::new(),
                    wanted: HashSet::new(),
                }
            })
            .collect();
        WrittenKeys { keys, limit }
    }

    /// Note one row written into table `index`.
    pub fn row(&mut self, index: usize, row: &Row) {
        for key in self.keys.iter_mut().filter(|k| !k.given_up) {
            if key.parent.0 == index {
                note(&mut key.written, &key.parent.1, row);
            }
            if key.child.0 == index && key.child.1.iter().all(|&c| !row[c].is_null()) {
                note(&mut key.wanted, &key.child.1, row);
            }
            if key.written.len() + key.wanted.len() > self.limit {
                key.given_up = true;
                key.written = HashSet::new();
                key.wanted = HashSet::new();
            }
        }
    }

    /// Whether key `n` (in the order given to `new`) holds by the rows written alone.
    pub fn holds(&self, n: usize) -> bool {
        self.keys
            .get(n)
            .is_some_and(|k| !k.given_up && k.wanted.is_subset(&k.written))
    }
}

/// Add the values of `columns` of `row` to `set`; a one-column key already there is
/// looked up in place, without copying it.
fn note(set: &mut HashSet<Vec<Value>>, columns: &[usize], row: &Row) {
    if let [column] = columns {
        let value = std::slice::from_ref(&row[*column]);
        if set.contains(value) {
            return;
        }
    }
    set.insert(columns.iter().map(|&c| row[c].clone()).collect());
}

/// The new tenant key in the value's own kind.
fn rewrite_key(old: &Value, key: &TenantKey) -> Value {
    match old {
        Value::Int(_) => key
            .as_str()
            .parse()
            .map(Value::Int)
            .unwrap_or_else(|_| Value::Text(key.to_string())),
        _ => Value::Text(key.to_string()),
    }
}

/// Tenant tables in write order: a table after every table it references (by foreign key
/// or `tenant_via`). Foreign key cycles other than a table referencing itself fall back
/// to the tenancy's order for the tables involved.
pub fn table_order(tenancy: &SourceTenancy, foreign_keys: &[ForeignKey]) -> Vec<String> {
    let names: Vec<String> = tenancy
        .tenant_tables()
        .map(|t| t.schema.name.clone())
        .collect();
    let known: BTreeSet<&String> = names.iter().collect();
    let mut parents: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for table in tenancy.tenant_tables() {
        if let Tenancy::Via { parent, .. } = &table.tenancy {
            parents
                .entry(table.schema.name.as_str())
                .or_default()
                .insert(parent.as_str());
        }
    }
    for fk in foreign_keys {
        if fk.child != fk.parent && known.contains(&fk.child) && known.contains(&fk.parent) {
            parents
                .entry(fk.child.as_str())
                .or_default()
                .insert(fk.parent.as_str());
        }
    }
    let mut placed: Vec<String> = Vec::with_capacity(names.len());
    let mut done: BTreeSet<&str> = BTreeSet::new();
    while placed.len() < names.len() {
        let before = placed.len();
        for name in &names {
            if done.contains(name.as_str()) {
                continue;
            }
            let ready = parents
                .get(name.as_str())
                .is_none_or(|ps| ps.iter().all(|p| done.contains(p)));
            if ready {
                done.insert(name.as_str());
                placed.push(name.clone());
            }
        }
        if placed.len() == before {
            // A cycle: take the next table in the tenancy's order.
            if let Some(name) = names.iter().find(|n| !done.contains(n.as_str())) {
                done.insert(name.as_str());
                placed.push(name.clone());
            }
        }
    }
    placed
}

/// A table's foreign keys to itself, as (referencing, referenced) column indexes.
type SelfKeys = Vec<(Vec<usize>, Vec<usize>)>;

fn self_keys(table: &str, columns: &[String], foreign_keys: &[ForeignKey]) -> SelfKeys {
    foreign_keys
        .iter()
        .filter(|fk| fk.child == table && fk.parent == table)
        .filter_map(|fk| {
            let index = |cols: &[String]| -> Option<Vec<usize>> {
                cols.iter()
                    .map(|c| columns.iter().position(|t| t == c))
                    .collect()
            };
            Some((index(&fk.columns)?, index(&fk.parent_columns)?))
        })
        .collect()
}

/// `SelfReferences::state` of a key no row of the table was seen carrying (a reference to
/// it points outside the table, or at a row not there: the database decides).
const ABSENT: u32 = u32::MAX;
/// `SelfReferences::state` of a key a row handed out carries.
const WRITTEN: u32 = u32::MAX - 1;
/// `SelfReferences::references` of a reference with a NULL value.
const NO_REFERENCE: u32 = u32::MAX;

/// The rows of a table that references itself, handed out so that a row a reference
/// points to comes before the row, without holding the rows. A row whose references are
/// all NULL or point at rows already handed out goes at once (rows that come parents
/// first never wait); any other is set aside in a temporary file (`RowFile`), keeping in
/// memory only its references and the keys it carries (interned) and where it ends in the
/// file. Once the table is read, the rows set aside are ordered by a walk up their
/// references (a reference to a key no row carries points outside: the database decides;
/// a cycle is cut where it closes) and read back in that order.
struct SelfReferences<'a> {
    self_keys: &'a SelfKeys,
    /// Keys (the values' `Value::feed` encoding, after the foreign key's index when the
    /// table has more than one to itself), each with an id.
    keys: Keys,
    /// By key id: `ABSENT`, `WRITTEN`, or the row set aside that carries it.
    state: Vec<u32>,
    file: RowFile,
    /// By row set aside: where it ends in `file` (it starts where the one before ended)…
    ends: Vec<u64>,
    /// …and the key id of its reference by each foreign key in turn (`NO_REFERENCE`).
    references: Vec<u32>,
    buffer: Vec<u8>,
}

impl<'a> SelfReferences<'a> {
    fn new(self_keys: &'a SelfKeys) -> SelfReferences<'a> {
        SelfReferences {
            self_keys,
            keys: Keys::default(),
            state: Vec::new(),
            file: RowFile::new(),
            ends: Vec::new(),
            references: Vec::new(),
            buffer: Vec::new(),
        }
    }

    /// Encode the `columns` of `row` for foreign key `k` of `keys` into `buffer`; false
    /// when one is NULL.
    fn encode(
        buffer: &mut Vec<u8>,
        (k, keys): (usize, usize),
        columns: &[usize],
        row: &Row,
    ) -> bool {
        buffer.clear();
        if keys > 1 {
            buffer.extend_from_slice(&(k as u32).to_le_bytes());
        }
        for &c in columns {
            if row[c].is_null() {
                return false;
            }
            row[c].feed_into(buffer);
        }
        true
    }

    /// The id of the key in `buffer`, given one if it has none.
    fn intern(&mut self) -> Result<u32> {
        let (id, new) = self.keys.intern(&self.buffer)?;
        if new {
            self.state.push(ABSENT);
        }
        Ok(id)
    }

    /// Hand `row` out now if every row it references was, else set it aside.
    fn push(&mut self, row: &mut Row, hand_out: &mut impl FnMut(&mut Row)) -> Result<()> {
        let keys = self.self_keys;
        let ready = keys.iter().enumerate().all(|(k, (referencing, _))| {
            !Self::encode(&mut self.buffer, (k, keys.len()), referencing, row)
                || self
                    .keys
                    .get(&self.buffer)
                    .is_some_and(|id| self.state[id as usize] == WRITTEN)
        });
        if ready {
            for (k, (_, referenced)) in keys.iter().enumerate() {
                if Self::encode(&mut self.buffer, (k, keys.len()), referenced, row) {
                    let id = self.intern()?;
                    self.state[id as usize] = WRITTEN;
                }
            }
            hand_out(row);
            return Ok(());
        }
        let index = u32::try_from(self.ends.len())
            .ok()
            .filter(|&i| i < WRITTEN)
            .ok_or_else(too_many_rows)?;
        for (k, (referencing, referenced)) in keys.iter().enumerate() {
            let reference = if Self::encode(&mut self.buffer, (k, keys.len()), referencing, row) {
                self.intern()?
            } else {
                NO_REFERENCE
            };
            self.references.push(reference);
            if Self::encode(&mut self.buffer, (k, keys.len()), referenced, row) {
                let id = self.intern()?;
                if self.state[id as usize] != WRITTEN {
                    self.state[id as usize] = index;
                }
            }
        }
        self.ends.push(self.file.push(row)?);
        Ok(())
    }

    /// Hand out the rows set aside, each after the rows set aside that it references.
    fn finish(mut self, hand_out: &mut impl FnMut(&mut Row)) -> Result<()> {
        self.keys = Keys::default();
        let count = self.ends.len();
        let per_row = self.self_keys.len();
        let mut walk = vec![0u8; count]; // 0 waiting, 1 on the walk, 2 handed out
        let mut stack: Vec<usize> = Vec::new();
        for first in 0..count {
            // Iterative depth-first walk up the references; a cycle is cut where it closes.
            stack.push(first);
            while let Some(&i) = stack.last() {
                if walk[i] == 2 {
                    stack.pop();
                    continue;
                }
                walk[i] = 1;
                let next = self.references[i * per_row..(i + 1) * per_row]
                    .iter()
                    .find_map(|&reference| {
                        if reference == NO_REFERENCE {
                            return None;
                        }
                        match self.state[reference as usize] {
                            ABSENT | WRITTEN => None,
                            j => Some(j as usize).filter(|&j| walk[j] == 0),
                        }
                    });
                match next {
                    Some(j) => stack.push(j),
                    None => {
                        walk[i] = 2;
                        stack.pop();
                        let start = if i == 0 { 0 } else { self.ends[i - 1] };
                        let mut row = self.file.read(start, self.ends[i])?;
                        hand_out(&mut row);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Keys interned: their bytes one after another, each key's id the order it came in, found
/// through a table of ids by the keys' hashes (a few bytes a key beyond its own).
#[derive(Default)]
struct Keys {
    table: hashbrown::HashTable<u32>,
    bytes: Vec<u8>,
    /// By id: where the key ends in `bytes` (it starts where the one before ended).
    ends: Vec<u64>,
    hasher: std::hash::RandomState,
}

impl Keys {
    fn key<'k>(bytes: &'k [u8], ends: &[u64], id: u32) -> &'k [u8] {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] as usize };
        &bytes[start..ends[id] as usize]
    }

    fn get(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&id| Self::key(&self.bytes, &self.ends, id) == key)
            .copied()
    }

    /// The id of `key`, and whether it is new.
    fn intern(&mut self, key: &[u8]) -> Result<(u32, bool)> {
        if let Some(id) = self.get(key) {
            return Ok((id, false));
        }
        let id = u32::try_from(self.ends.len())
            .ok()
            .filter(|&id| id < WRITTEN)
            .ok_or_else(too_many_rows)?;
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len() as u64);
        let Keys {
            table,
            bytes,
            ends,
            hasher,
        } = self;
        table.insert_unique(hasher.hash_one(key), id, |&id| {
            hasher.hash_one(Self::key(bytes, ends, id))
        });
        Ok((id, true))
    }
}

fn too_many_rows() -> Error {
    Error::usage(
        "a table that references itself has too many rows of one tenant to order \
         (more than 4 billion keys)",
    )
}

/// A value in COPY's text format (PostgreSQL values are stored as their text output).
pub fn copy_text(value: &Value, out: &mut Vec<u8>) {
    let text = match value {
        Value::Null => {
            out.extend_from_slice(b"\\N");
            return;
        }
        Value::Text(s) => std::borrow::Cow::Borrowed(s.as_str()),
        Value::Int(i) => std::borrow::Cow::Owned(i.to_string()),
        Value::Real(f) => std::borrow::Cow::Owned(f.to_string()),
        // bytea's hex input `\x…`; the backslash is escaped below like any other.
        Value::Blob(b) => std::borrow::Cow::Owned(format!("\\x{}", hex::encode(b))),
    };
    // Runs of plain bytes are copied whole; only the four special bytes are escaped. Most
    // values have none, which `needs_escape` tells first.
    let bytes = text.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut plain = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain..at]);
        out.extend_from_slice(escaped);
        plain = at + 1;
    }
    out.extend_from_slice(&bytes[plain..]);
}

/// Whether `bytes` hold one of the bytes COPY's text format escapes: checked 32 bytes at
/// a time without branching inside (a loop the compiler vectorises), then the rest.
fn needs_escape(bytes: &[u8]) -> bool {
    let special = |b: u8| (b == b'\\') | (b == b'\n') | (b == b'\r') | (b == b'\t');
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(0u8, |hit, &b| hit | special(b) as u8) != 0 {
            return true;
        }
    }
    blocks.remainder().iter().any(|&b| special(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issues_key() -> SelfKeys {
        let columns: Vec<String> = vec!["id".into(), "parent_id".into(), "title".into()];
        let fk = ForeignKey {
            child: "issues".into(),
            columns: vec!["parent_id".into()],
            parent: "issues".into(),
            parent_columns: vec!["id".into()],
        };
        self_keys("issues", &columns, &[fk])
    }

    /// The rows as `TenantRestore::rows` hands them out, and how many went through the
    /// temporary file.
    fn ordered(rows: Vec<Row>, keys: &SelfKeys) -> (Vec<Row>, u64) {
        let mut out = Vec::new();
        let mut hand_out = |row: &mut Row| out.push(row.clone());
        let mut order = SelfReferences::new(keys);
        for mut row in rows {
            order.push(&mut row, &mut hand_out).expect("push");
        }
        let set_aside = order.file.rows();
        order.finish(&mut hand_out).expect("finish");
        (out, set_aside)
    }

    #[test]
    fn self_references_come_after_what_they_reference() {
        let text = |s: &str| Value::Text(s.into());
        let rows = vec![
            vec![text("3"), text("2"), Value::Null],
            vec![text("2"), text("1"), Value::Null],
            vec![text("1"), Value::Null, Value::Null],
            vec![text("4"), text("4"), Value::Null],
        ];
        let (ordered, set_aside) = ordered(rows, &issues_key());
        let ids: Vec<String> = ordered.iter().map(|r| r[0].to_string()).collect();
        assert_eq!(ids, vec!["1", "2", "3", "4"]);
        assert_eq!(set_aside, 3, "only the row with no parent went at once");
    }

    /// A 10,000-deep chain given children first, a tree given parents first, a row before
    /// the parent it references, a cycle, a row referencing itself and one referencing a
    /// row not in the table: every row comes out once, after the row it references
    /// (except where the cycle is cut, and the row referencing itself), and only the rows
    /// that came before their parent go through the file.
    #[test]
    fn rows_set_aside_come_out_after_what_they_reference() {
        let row = |id: i64, parent: Option<i64>| {
            vec![
                Value::Int(id),
                parent.map_or(Value::Null, Value::Int),
                Value::Text(format!("issue {id}")),
            ]
        };
        let mut rows = Vec::new();
        for id in (1..=10_000).rev() {
            rows.push(row(id, (id > 1).then_some(id - 1)));
        }
        rows.push(row(20_700, Some(20_000)));
        rows.push(row(20_000, None));
        for id in 20_001..=20_100 {
            rows.push(row(id, Some(20_000)));
        }
        for id in 20_101..=20_600 {
            rows.push(row(id, Some(20_001 + id % 100)));
        }
        rows.push(row(30_001, Some(30_002)));
        rows.push(row(30_002, Some(30_003)));
        rows.push(row(30_003, Some(30_001)));
        rows.push(row(30_010, Some(30_010)));
        rows.push(row(30_020, Some(99_999)));
        let given = rows.clone();

        let (out, set_aside) = ordered(rows, &issues_key());
        assert_eq!(set_aside, 9_999 + 1 + 3 + 1 + 1);
        assert_eq!(out.len(), given.len());
        let mut position = HashMap::new();
        for (at, row) in out.iter().enumerate() {
            let Value::Int(id) = row[0] else {
                panic!("{row:?}")
            };
            assert!(position.insert(id, at).is_none(), "{id} came out twice");
            assert!(given.contains(row), "{row:?} was not given");
        }
        let mut before_parent = Vec::new();
        for (at, row) in out.iter().enumerate() {
            if let (Value::Int(id), Value::Int(parent)) = (&row[0], &row[1]) {
                match position.get(parent) {
                    Some(&p) if p < at => {}
                    None => assert_eq!(*parent, 99_999, "{id}'s parent is not in the table"),
                    Some(_) => before_parent.push(*id),
                }
            }
        }
        before_parent.sort();
        assert_eq!(before_parent.len(), 2, "{before_parent:?}");
        assert!(
            (30_001..=30_003).contains(&before_parent[0]),
            "{before_parent:?}"
        );
        assert_eq!(before_parent[1], 30_010);
        // What had no parent to wait for went first, as it came.
        assert_eq!(out[0][0], Value::Int(1));
        assert_eq!(out[1][0], Value::Int(20_000));
        assert_eq!(out[2][0], Value::Int(20_001));
    }

    #[test]
    fn written_keys_hold_only_when_every_reference_was_written() {
        let tables = vec![
            RestoreTable {
                name: "issues".into(),
                columns: vec!["id".into(), "parent_id".into()],
            },
            RestoreTable {
                name: "comments".into(),
                columns: vec!["id".into(), "issue_id".into()],
            },
        ];
        let id: Vec<String> = vec!["id".into()];
        let parent_id: Vec<String> = vec!["parent_id".into()];
        let issue_id: Vec<String> = vec!["issue_id".into()];
        let plan_id: Vec<String> = vec!["plan_id".into()];
        let keys = [
            ("comments", issue_id.as_slice(), "issues", id.as_slice()),
            ("issues", parent_id.as_slice(), "issues", id.as_slice()),
            ("issues", plan_id.as_slice(), "plans", id.as_slice()),
        ];
        let text = |s: &str| Value::Text(s.into());
        let mut written = WrittenKeys::new(&tables, keys, 100);
        written.row(0, &vec![text("2"), text("1")]);
        written.row(0, &vec![text("1"), Value::Null]);
        written.row(1, &vec![text("10"), text("1")]);
        assert!(written.holds(0) && written.holds(1));
        assert!(
            !written.holds(2),
            "a table not written is never taken as holding"
        );
        written.row(1, &vec![text("11"), text("3")]);
        assert!(!written.holds(0), "issue 3 was not written");
        let mut small = WrittenKeys::new(&tables, keys, 2);
        small.row(0, &vec![text("1"), Value::Null]);
        small.row(0, &vec![text("2"), text("1")]);
        assert!(!small.holds(1), "past the limit the database is asked");
    }

    #[test]
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = Vec::new();
        copy_text(&Value::Text("a\tb\\c\nd".into()), &mut out);
        out.push(b'|');
        copy_text(&Value::Null, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd|\\N");
        out.clear();
        copy_text(&Value::Blob(vec![0, 255]), &mut out);
        assert_eq!(out, b"\\\\x00ff");
        out.clear();
        copy_text(&Value::Text("plain é".into()), &mut out);
        copy_text(&Value::Text("\r\rx\\".into()), &mut out);
        assert_eq!(out, "plain é\\r\\rx\\\\".as_bytes());
        // Long values: a special byte in the first block of 32, in a later one, in the
        // rest after the blocks, or none.
        for at in [0usize, 31, 32, 70, 95, 96, 99] {
            let mut text = "a".repeat(100);
            text.replace_range(at..at + 1, "\t");
            out.clear();
            copy_text(&Value::Text(text.clone()), &mut out);
            assert_eq!(out, text.replace('\t', "\\t").as_bytes(), "tab at {at}");
        }
        out.clear();
        copy_text(&Value::Text("b".repeat(100)), &mut out);
        assert_eq!(out, "b".repeat(100).as_bytes());
    }
}
