//! The tenant map: which tables of a source hold tenant rows, and how a row's tenant is
//! found — its own tenant column, or a `tenant_via` path through parent tables. Resolution
//! checks the configuration against the live schema; attribution then tags every captured
//! row with its tenant, keeping a map from referenced keys to tenants for `tenant_via`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::config::{SourceConfig, TableRule};
use crate::error::{Error, Result};
use crate::model::{Change, KeymapRecord, Op, Row, TableSchema, TenantKey, Value};

/// A table as the live database describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    pub schema: TableSchema,
}

/// How one table's rows find their tenant, by column index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tenancy {
    Column(usize),
    Via {
        column: usize,
        parent: String,
        parent_column: String,
    },
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTable {
    pub schema: TableSchema,
    pub tenancy: Tenancy,
}

/// One step of a `tenant_via` path: `table.column` references `parent.parent_column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub table: String,
    pub column: String,
    pub parent: String,
    pub parent_column: String,
}

/// A source's tables with their tenancy, parents before children.
#[derive(Debug, Clone)]
pub struct SourceTenancy {
    pub source: String,
    pub tables: Vec<ResolvedTable>,
    /// `(table, column)` pairs that some `tenant_via` points to.
    pub referenced: BTreeSet<(String, String)>,
}

/// Check `config` against the live tables and resolve every table's tenancy. Every live
/// table must be covered: a table with neither the source's tenant column nor a
/// declaration is an error that names it.
pub fn resolve(source: &str, config: &SourceConfig, live: &[LiveTable]) -> Result<SourceTenancy> {
    let by_name: BTreeMap<&str, &LiveTable> =
        live.iter().map(|t| (t.schema.name.as_str(), t)).collect();
    for declared in config.tables.keys() {
        if !by_name.contains_key(declared.as_str()) {
            return Err(Error::config(format!(
                "[sources.{source}.tables.{declared}] names a table that {source} does not have"
            )));
        }
    }
    let mut rules: BTreeMap<String, TableRule> = BTreeMap::new();
    for table in live {
        let name = &table.schema.name;
        let rule = match config.declared_rule(name)? {
            Some(rule) => rule,
            None => match &config.tenant_column {
                Some(column) if table.schema.column_index(column).is_some() => {
                    TableRule::Column(column.clone())
                }
                Some(column) => {
                    return Err(Error::config(format!(
                        "table {source}.{name} has no column {column:?} (the source's \
                         tenant_column) and no declaration: add [sources.{source}.tables.{name}] \
                         with tenant_column, tenant_via or global = true"
                    )))
                }
                None => {
                    return Err(Error::config(format!(
                        "table {source}.{name} has no declaration and {source} has no \
                         tenant_column: add [sources.{source}.tables.{name}] with \
                         tenant_column, tenant_via or global = true"
                    )))
                }
            },
        };
        rules.insert(name.clone(), rule);
    }

    let mut resolved: BTreeMap<String, ResolvedTable> = BTreeMap::new();
    let mut referenced = BTreeSet::new();
    for table in live {
        let name = &table.schema.name;
        let schema = &table.schema;
        let missing = |column: &str| {
            Error::config(format!(
                "[sources.{source}.tables.{name}]: table {name} has no column {column:?}"
            ))
        };
        let tenancy = match &rules[name] {
            TableRule::Global => Tenancy::Global,
            TableRule::Column(column) => {
                Tenancy::Column(schema.column_index(column).ok_or_else(|| missing(column))?)
            }
            TableRule::Via {
                column,
                parent,
                parent_column,
            } => {
                let index = schema.column_index(column).ok_or_else(|| missing(column))?;
                let unresolved = |why: String| {
                    Error::config(format!(
                        "[sources.{source}.tables.{name}] tenant_via \"{column} -> \
                         {parent}.{parent_column}\" does not resolve: {why}"
                    ))
                };
                let parent_table = by_name
                    .get(parent.as_str())
                    .ok_or_else(|| unresolved(format!("{source} has no table {parent}")))?;
                if parent_table.schema.column_index(parent_column).is_none() {
                    return Err(unresolved(format!(
                        "{parent} has no column {parent_column}"
                    )));
                }
                if rules.get(parent.as_str()) == Some(&TableRule::Global) {
                    return Err(unresolved(format!("{parent} is declared global")));
                }
                referenced.insert((parent.clone(), parent_column.clone()));
                Tenancy::Via {
                    column: index,
                    parent: parent.clone(),
                    parent_column: parent_column.clone(),
                }
            }
        };
        resolved.insert(
            name.clone(),
            ResolvedTable {
                schema: schema.clone(),
                tenancy,
            },
        );
    }

    // Parents before children; a cycle of tenant_via declarations never reaches a tenant.
    let mut ordered: Vec<ResolvedTable> = Vec::with_capacity(resolved.len());
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while placed.len() < resolved.len() {
        let before = placed.len();
        for (name, table) in &resolved {
            if placed.contains(name) {
                continue;
            }
            let ready = match &table.tenancy {
                Tenancy::Via { parent, .. } => placed.contains(parent),
                _ => true,
            };
            if ready {
                ordered.push(table.clone());
                placed.insert(name.clone());
            }
        }
        if placed.len() == before {
            let stuck: Vec<&str> = resolved
                .keys()
                .filter(|n| !placed.contains(*n))
                .map(String::as_str)
                .collect();
            return Err(Error::config(format!(
                "tenant_via declarations of {source} form a cycle and never reach a tenant \
                 column: {}",
                stuck.join(", ")
            )));
        }
    }
    Ok(SourceTenancy {
        source: source.to_string(),
        tables: ordered,
        referenced,
    })
}

impl SourceTenancy {
    pub fn table(&self, name: &str) -> Option<&ResolvedTable> {
        self.tables.iter().find(|t| t.schema.name == name)
    }

    /// Tables that hold tenant rows (not global), parents first.
    pub fn tenant_tables(&self) -> impl Iterator<Item = &ResolvedTable> {
        self.tables
            .iter()
            .filter(|t| !matches!(t.tenancy, Tenancy::Global))
    }

    /// The `tenant_via` path from `table` up to the table with the tenant column, and that
    /// column's name. Empty path: `table` has the tenant column itself.
    pub fn path(&self, table: &str) -> Option<(Vec<Link>, String)> {
        let mut links = Vec::new();
        let mut current = self.table(table)?;
        for _ in 0..=self.tables.len() {
            match &current.tenancy {
                Tenancy::Column(index) => {
                    return Some((links, current.schema.columns[*index].clone()));
                }
                Tenancy::Global => return None,
                Tenancy::Via {
                    column,
                    parent,
                    parent_column,
                } => {
                    links.push(Link {
                        table: current.schema.name.clone(),
                        column: current.schema.columns[*column].clone(),
                        parent: parent.clone(),
                        parent_column: parent_column.clone(),
                    });
                    current = self.table(parent)?;
                }
            }
        }
        None
    }
}

/// A referenced `(table, column)`: one key map.
pub type KeymapPair = (String, String);

/// Where the key maps' committed entries live when `Keymaps` does not hold them all
/// itself: capture's local index on disk.
pub trait KeyStore: Send + Sync {
    fn get(&self, table: &str, column: &str, key: &Value) -> Result<Option<TenantKey>>;
}

/// Changes to one key map since it was last drained (or, without a store, all of it).
#[derive(Debug, Clone, Default)]
pub struct KeymapLayer {
    /// Every key of the map before these changes is gone (a truncate).
    pub cleared: bool,
    /// Key → its tenant, or `None`: removed.
    pub entries: HashMap<Value, Option<TenantKey>>,
}

/// One deferred removal: a key, or every key but those inserted after it (a truncate).
#[derive(Debug, Clone)]
enum Removal {
    Key(KeymapPair, Value),
    All(KeymapPair, HashSet<Value>),
}

/// Referenced key → tenant, for every `(table, column)` a `tenant_via` points to. The
/// open transaction's inserts and the committed changes not yet drained are held here;
/// the rest, with a store, is looked up there (capture), or, without one, is all here.
#[derive(Clone, Default)]
pub struct Keymaps {
    pairs: BTreeSet<KeymapPair>,
    committed: HashMap<KeymapPair, KeymapLayer>,
    /// Inserts of the open transaction.
    open: HashMap<KeymapPair, HashMap<Value, TenantKey>>,
    /// Keys deleted by the open transaction: removed at its end, so that rows deleted in
    /// the same transaction after their parent (cascades) still find their tenant.
    removals: Vec<Removal>,
    store: Option<std::sync::Arc<dyn KeyStore>>,
}

impl std::fmt::Debug for Keymaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keymaps")
            .field("pairs", &self.pairs)
            .field("held", &self.held())
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl Keymaps {
    pub fn new(tenancy: &SourceTenancy) -> Self {
        Keymaps {
            pairs: tenancy.referenced.iter().cloned().collect(),
            ..Keymaps::default()
        }
    }

    /// Key maps whose committed entries are in `store`; only changes are held here, until
    /// `drain`.
    pub fn with_store(tenancy: &SourceTenancy, store: std::sync::Arc<dyn KeyStore>) -> Self {
        Keymaps {
            store: Some(store),
            ..Keymaps::new(tenancy)
        }
    }

    pub fn from_records(tenancy: &SourceTenancy, records: &[KeymapRecord]) -> Self {
        let mut keymaps = Keymaps::new(tenancy);
        for record in records {
            let pair = (record.table.clone(), record.column.clone());
            if keymaps.pairs.contains(&pair) {
                let layer = keymaps.committed.entry(pair).or_default();
                for (key, tenant) in &record.entries {
                    layer.entries.insert(key.clone(), Some(tenant.clone()));
                }
            }
        }
        keymaps
    }

    /// The referenced `(table, column)` pairs.
    pub fn pairs(&self) -> impl Iterator<Item = &KeymapPair> {
        self.pairs.iter()
    }

    pub fn lookup(&self, table: &str, column: &str, key: &Value) -> Result<Option<TenantKey>> {
        // A handful of maps: found by comparing names, without building a key per lookup.
        let is = |pair: &KeymapPair| pair.0 == table && pair.1 == column;
        if let Some(tenant) = self
            .open
            .iter()
            .find(|(pair, _)| is(pair))
            .and_then(|(_, m)| m.get(key))
        {
            return Ok(Some(tenant.clone()));
        }
        if let Some((_, layer)) = self.committed.iter().find(|(pair, _)| is(pair)) {
            if let Some(entry) = layer.entries.get(key) {
                return Ok(entry.clone());
            }
            if layer.cleared {
                return Ok(None);
            }
        }
        match &self.store {
            Some(store) if self.pairs.iter().any(is) => store.get(table, column, key),
            _ => Ok(None),
        }
    }

    /// The tenant of `row` in `table`.
    pub fn tenant_of(&self, table: &ResolvedTable, row: &[Value]) -> Result<Option<TenantKey>> {
        match &table.tenancy {
            Tenancy::Global => Ok(None),
            Tenancy::Column(index) => Ok(row.get(*index).and_then(Value::tenant_key)),
            Tenancy::Via {
                column,
                parent,
                parent_column,
            } => match row.get(*column) {
                Some(key) => self.lookup(parent, parent_column, key),
                None => Ok(None),
            },
        }
    }

    /// Record what a change to `table` (tenant already attributed) means for the maps.
    pub fn observe(&mut self, table: &ResolvedTable, change: &Change) {
        if change.op == Op::Alter {
            return;
        }
        let name = &table.schema.name;
        // Most tables hold no referenced column: nothing to build or copy for them.
        let referenced: Vec<(KeymapPair, usize)> = self
            .pairs
            .iter()
            .filter(|pair| pair.0 == *name)
            .filter_map(|pair| {
                table
                    .schema
                    .columns
                    .iter()
                    .position(|c| *c == pair.1)
                    .map(|i| (pair.clone(), i))
            })
            .collect();
        for (pair, index) in referenced {
            if change.op == Op::Truncate {
                self.removals.push(Removal::All(pair, HashSet::new()));
                continue;
            }
            let old = change.old.as_ref().and_then(|r| r.get(index));
            let new = change.new.as_ref().and_then(|r| r.get(index));
            if let Some(old) = old {
                if Some(old) != new || change.op == Op::Delete {
                    self.removals.push(Removal::Key(pair.clone(), old.clone()));
                }
            }
            if let (Some(new), Some(tenant)) = (new, &change.tenant) {
                if change.op != Op::Delete {
                    self.removals.retain_mut(|removal| match removal {
                        Removal::Key(p, key) => !(p == &pair && key == new),
                        Removal::All(p, exempt) => {
                            if p == &pair {
                                exempt.insert(new.clone());
                            }
                            true
                        }
                    });
                    self.open
                        .entry(pair)
                        .or_default()
                        .insert(new.clone(), tenant.clone());
                }
            }
        }
    }

    /// Forget the removals of a transaction that was not read to its end (the connection
    /// broke): it is read again whole, and a key it removes must still be found by the
    /// changes before that removal.
    pub fn abandon_transaction(&mut self) {
        self.removals.clear();
        self.open.clear();
    }

    /// The transaction ended: its inserts are committed and the removals it deferred
    /// applied.
    pub fn end_transaction(&mut self) {
        for (pair, inserts) in self.open.drain() {
            let layer = self.committed.entry(pair).or_default();
            for (key, tenant) in inserts {
                layer.entries.insert(key, Some(tenant));
            }
        }
        let held_all = self.store.is_none();
        for removal in std::mem::take(&mut self.removals) {
            match removal {
                Removal::Key(pair, key) => {
                    let layer = self.committed.entry(pair).or_default();
                    if held_all {
                        layer.entries.remove(&key);
                    } else {
                        layer.entries.insert(key, None);
                    }
                }
                Removal::All(pair, exempt) => {
                    let layer = self.committed.entry(pair).or_default();
                    let kept: Vec<(Value, Option<TenantKey>)> = exempt
                        .into_iter()
                        .filter_map(|key| layer.entries.get(&key).cloned().map(|t| (key, t)))
                        .collect();
                    layer.entries.clear();
                    layer.cleared = true;
                    layer.entries.extend(kept);
                }
            }
        }
    }

    /// The committed changes held here, taken out (with a store: the caller writes them
    /// there). The open transaction's are kept.
    pub fn drain(&mut self) -> Vec<(KeymapPair, KeymapLayer)> {
        let mut drained: Vec<(KeymapPair, KeymapLayer)> = self.committed.drain().collect();
        drained.sort_by(|a, b| a.0.cmp(&b.0));
        drained
    }

    /// Entries held in memory: committed changes not yet drained and the open
    /// transaction's inserts.
    pub fn held(&self) -> usize {
        self.committed
            .values()
            .map(|l| l.entries.len())
            .chain(self.open.values().map(HashMap::len))
            .sum()
    }

    /// Keys held, without a store: every key of every map.
    pub fn len(&self) -> usize {
        self.committed
            .values()
            .map(|l| l.entries.values().filter(|t| t.is_some()).count())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A row change as a source reports it, before attribution.
#[derive(Debug, Clone, PartialEq)]
pub struct RawChange {
    pub op: Op,
    pub old: Option<Row>,
    pub new: Option<Row>,
    pub position: u64,
}

/// Attribute a raw row change to its tenant(s). An update that moves a row to another
/// tenant becomes a delete for the old tenant and an insert for the new one. Updates
/// keys and defers removals in `keymaps`; call `Keymaps::end_transaction` at commit.
pub fn attribute(
    keymaps: &mut Keymaps,
    table_index: u32,
    table: &ResolvedTable,
    raw: RawChange,
    out: &mut Vec<Change>,
) -> Result<()> {
    let RawChange {
        op,
        old,
        new,
        position,
    } = raw;
    if matches!(table.tenancy, Tenancy::Global) {
        return Ok(());
    }
    let mut push = |keymaps: &mut Keymaps, change: Change| {
        keymaps.observe(table, &change);
        out.push(change);
    };
    match op {
        Op::Truncate | Op::Alter => push(
            keymaps,
            Change {
                tenant: None,
                table: table_index,
                op,
                old: None,
                new: None,
                position,
                time_us: None,
            },
        ),
        Op::Insert => {
            let tenant = match new.as_deref() {
                Some(r) => keymaps.tenant_of(table, r)?,
                None => None,
            };
            push(
                keymaps,
                Change {
                    tenant,
                    table: table_index,
                    op,
                    old: None,
                    new,
                    position,
                    time_us: None,
                },
            )
        }
        Op::Delete => {
            let tenant = match old.as_deref() {
                Some(r) => keymaps.tenant_of(table, r)?,
                None => None,
            };
            push(
                keymaps,
                Change {
                    tenant,
                    table: table_index,
                    op,
                    old,
                    new: None,
                    position,
                    time_us: None,
                },
            )
        }
        Op::Update => {
            let before = match old.as_deref() {
                Some(r) => keymaps.tenant_of(table, r)?,
                None => None,
            };
            let after = match new.as_deref() {
                Some(r) => keymaps.tenant_of(table, r)?,
                None => None,
            };
            if before == after || old.is_none() {
                push(
                    keymaps,
                    Change {
                        tenant: after,
                        table: table_index,
                        op,
                        old,
                        new,
                        position,
                        time_us: None,
                    },
                )
            } else {
                push(
                    keymaps,
                    Change {
                        tenant: before,
                        table: table_index,
                        op: Op::Delete,
                        old,
                        new: None,
                        position,
                        time_us: None,
                    },
                );
                push(
                    keymaps,
                    Change {
                        tenant: after,
                        table: table_index,
                        op: Op::Insert,
                        old: None,
                        new,
                        position,
                        time_us: None,
                    },
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn live(name: &str, columns: &[&str]) -> LiveTable {
        LiveTable {
            schema: TableSchema {
                name: name.into(),
                columns: columns.iter().map(|c| c.to_string()).collect(),
                key: vec![0],
            },
        }
    }

    fn config(extra: &str) -> SourceConfig {
        let text = format!(
            "[vault]\nurl = \"file:///v\"\n[sources.s]\nurl = \"sqlite:///s.db\"\n\
             tenant_column = \"site_id\"\n[sources.s.tables.sites]\ntenant_column = \"id\"\n{extra}"
        );
        Config::parse(&text).expect("config").sources["s"].clone()
    }

    fn schema() -> Vec<LiveTable> {
        vec![
            live("sites", &["id", "url"]),
            live("issues", &["id", "site_id", "title"]),
            live("comments", &["id", "issue_id", "body"]),
            live("reactions", &["id", "comment_id"]),
        ]
    }

    #[test]
    fn chains_resolve_through_parents() {
        let cfg = config(
            "[sources.s.tables.comments]\ntenant_via = \"issue_id -> issues.id\"\n\
             [sources.s.tables.reactions]\ntenant_via = \"comment_id -> comments.id\"\n",
        );
        let tenancy = resolve("s", &cfg, &schema()).expect("resolves");
        let order: Vec<&str> = tenancy
            .tables
            .iter()
            .map(|t| t.schema.name.as_str())
            .collect();
        let pos = |n| order.iter().position(|o| *o == n).expect("present");
        assert!(pos("issues") < pos("comments") && pos("comments") < pos("reactions"));
        let (links, column) = tenancy.path("reactions").expect("path");
        assert_eq!(links.len(), 2);
        assert_eq!(column, "site_id");
    }

    #[test]
    fn undeclared_table_is_named() {
        let err = resolve("s", &config(""), &schema()).expect_err("comments undeclared");
        assert!(err.to_string().contains("s.comments"), "{err}");
    }

    #[test]
    fn unresolvable_via_is_refused() {
        let cfg = config(
            "[sources.s.tables.comments]\ntenant_via = \"issue_id -> tickets.id\"\n\
             [sources.s.tables.reactions]\nglobal = true\n",
        );
        let err = resolve("s", &cfg, &schema()).expect_err("no tickets");
        assert!(err.to_string().contains("does not resolve"), "{err}");
    }

    #[test]
    fn cascade_delete_keeps_parent_key_until_commit() {
        let cfg = config(
            "[sources.s.tables.comments]\ntenant_via = \"issue_id -> issues.id\"\n\
             [sources.s.tables.reactions]\nglobal = true\n",
        );
        let tenancy = resolve("s", &cfg, &schema()).expect("resolves");
        let issues = tenancy.table("issues").expect("issues").clone();
        let comments = tenancy.table("comments").expect("comments").clone();
        let mut keymaps = Keymaps::new(&tenancy);
        let mut out = Vec::new();
        let issue = vec![Value::Int(7), Value::Int(42), Value::Text("t".into())];
        attribute(
            &mut keymaps,
            0,
            &issues,
            RawChange {
                op: Op::Insert,
                old: None,
                new: Some(issue.clone()),
                position: 1,
            },
            &mut out,
        )
        .expect("attributed");
        keymaps.end_transaction();
        // Parent deleted first, then its comment, in one transaction.
        attribute(
            &mut keymaps,
            0,
            &issues,
            RawChange {
                op: Op::Delete,
                old: Some(issue),
                new: None,
                position: 2,
            },
            &mut out,
        )
        .expect("attributed");
        let comment = vec![Value::Int(1), Value::Int(7), Value::Text("b".into())];
        attribute(
            &mut keymaps,
            1,
            &comments,
            RawChange {
                op: Op::Delete,
                old: Some(comment),
                new: None,
                position: 2,
            },
            &mut out,
        )
        .expect("attributed");
        keymaps.end_transaction();
        assert_eq!(out[2].tenant, Some(TenantKey::new("42")));
        assert!(keymaps.is_empty());
    }
}
