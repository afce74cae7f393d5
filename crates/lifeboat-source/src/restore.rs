//! The part of restore that both source kinds share: turning a tenant's state from the
//! vault into the rows to write (rewritten for `--as`), the order tables are written in
//! (parents first; children's rows are removed first), and the order of rows inside a
//! table that references itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::model::{Row, TenantKey, Value};
use lifeboat_core::state::TenantStream;
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
/// (never all held at once; a table that references itself is the exception, since its
/// rows are ordered before writing). The digest of every row handed out is kept, so the
/// rows written can be checked against what the database then holds.
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
            let mut rows = Vec::new();
            self.stream
                .for_each_row(&table.name, |row| rows.push(row))?;
            for mut row in order_self_references(rows, &self_keys) {
                hand_out(&mut row);
            }
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

/// Order rows so that a row a self-referencing foreign key points to comes first.
fn order_self_references(rows: Vec<Row>, self_keys: &SelfKeys) -> Vec<Row> {
    if self_keys.is_empty() || rows.len() < 2 {
        return rows;
    }
    let mut by_key: Vec<HashMap<Vec<Value>, usize>> = Vec::new();
    for (_, referenced) in self_keys {
        by_key.push(
            rows.iter()
                .enumerate()
                .map(|(i, r)| (referenced.iter().map(|&c| r[c].clone()).collect(), i))
                .collect(),
        );
    }
    let mut state = vec![0u8; rows.len()]; // 0 new, 1 visiting, 2 placed
    let mut order = Vec::with_capacity(rows.len());
    for start in 0..rows.len() {
        // Iterative depth-first walk up the references; a cycle is cut where it closes.
        let mut stack = vec![start];
        while let Some(&i) = stack.last() {
            if state[i] == 2 {
                stack.pop();
                continue;
            }
            state[i] = 1;
            let next = self_keys
                .iter()
                .zip(&by_key)
                .find_map(|((columns, _), map)| {
                    let key: Vec<Value> = columns.iter().map(|&c| rows[i][c].clone()).collect();
                    if key.iter().any(Value::is_null) {
                        return None;
                    }
                    map.get(&key).copied().filter(|&j| state[j] == 0)
                });
            match next {
                Some(j) => stack.push(j),
                None => {
                    state[i] = 2;
                    order.push(i);
                    stack.pop();
                }
            }
        }
    }
    let mut rows: Vec<Option<Row>> = rows.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| rows[i].take()).collect()
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

    #[test]
    fn self_references_come_after_what_they_reference() {
        let columns: Vec<String> = vec!["id".into(), "parent_id".into()];
        let rows = vec![
            vec![Value::Text("3".into()), Value::Text("2".into())],
            vec![Value::Text("2".into()), Value::Text("1".into())],
            vec![Value::Text("1".into()), Value::Null],
            vec![Value::Text("4".into()), Value::Text("4".into())],
        ];
        let fk = ForeignKey {
            child: "issues".into(),
            columns: vec!["parent_id".into()],
            parent: "issues".into(),
            parent_columns: vec!["id".into()],
        };
        let ordered = order_self_references(rows, &self_keys("issues", &columns, &[fk]));
        let ids: Vec<String> = ordered.iter().map(|r| r[0].to_string()).collect();
        assert_eq!(ids, vec!["1", "2", "3", "4"]);
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
