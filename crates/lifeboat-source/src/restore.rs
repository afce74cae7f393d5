//! The part of restore that both source kinds share: turning a tenant's state from the
//! vault into the rows to write (rewritten for `--as`), the order tables are written in
//! (parents first; children's rows are removed first), and the order of rows inside a
//! table that references itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        let mut hand_out = |mut row: Row| {
            if failed.is_some() {
                return;
            }
            if let Some((key, at)) = rewrite {
                row[at] = rewrite_key(&row[at], key);
            }
            digest.add(hasher.hash(&row));
            count += 1;
            if let Err(e) = write(&row) {
                failed = Some(e);
            }
        };
        let self_keys = self_keys(&table.name, &table.columns, &self.foreign_keys);
        if self_keys.is_empty() {
            self.stream.for_each_row(&table.name, &mut hand_out)?;
        } else {
            let mut rows = Vec::new();
            self.stream
                .for_each_row(&table.name, |row| rows.push(row))?;
            for row in order_self_references(rows, &self_keys) {
                hand_out(row);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        self.digests.insert(table.name.clone(), digest);
        Ok(count)
    }
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
    for &byte in text.as_bytes() {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            other => out.push(other),
        }
    }
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
    fn copy_text_escapes_what_copy_reads_specially() {
        let mut out = Vec::new();
        copy_text(&Value::Text("a\tb\\c\nd".into()), &mut out);
        out.push(b'|');
        copy_text(&Value::Null, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd|\\N");
        out.clear();
        copy_text(&Value::Blob(vec![0, 255]), &mut out);
        assert_eq!(out, b"\\\\x00ff");
    }
}
