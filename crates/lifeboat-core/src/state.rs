//! Reading history back out of the vault: a source's restorable window, the position of a
//! time, and a tenant's rows at a position (its latest base at or before the position,
//! plus the changes after it). The read order is docs/vault-format.md's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Op, Row, Segment, TableSchema, TenantKey, Transaction, Value};
use crate::vault::{PositionRef, SegmentRef, Vault};

/// One table's rows of one tenant, by key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    pub schema: Option<TableSchema>,
    pub rows: HashMap<Vec<Value>, Row>,
}

/// A tenant's rows in one source, by table name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantState {
    pub tables: BTreeMap<String, TableState>,
}

impl TenantState {
    pub fn row_count(&self) -> usize {
        self.tables.values().map(|t| t.rows.len()).sum()
    }

    fn table_mut(&mut self, schema: &TableSchema) -> &mut TableState {
        let table = self.tables.entry(schema.name.clone()).or_default();
        match &table.schema {
            Some(current) if current == schema => {}
            Some(current) => {
                // The table's shape changed (a column added or dropped): carry rows over by
                // column name; a column new to the row is NULL.
                let mapping: Vec<Option<usize>> = schema
                    .columns
                    .iter()
                    .map(|c| current.column_index(c))
                    .collect();
                let rows = std::mem::take(&mut table.rows);
                for (_, row) in rows {
                    let row: Row = mapping
                        .iter()
                        .map(|m| m.and_then(|i| row.get(i).cloned()).unwrap_or(Value::Null))
                        .collect();
                    table.rows.insert(schema.row_key(&row), row);
                }
                table.schema = Some(schema.clone());
            }
            None => table.schema = Some(schema.clone()),
        }
        table
    }

    /// Apply one change (already known to be this tenant's, or a truncate).
    pub fn apply(&mut self, schema: &TableSchema, change: &Change) {
        let table = self.table_mut(schema);
        match change.op {
            Op::Truncate => table.rows.clear(),
            Op::Alter => {}
            Op::Insert => {
                if let Some(new) = &change.new {
                    table.rows.insert(schema.row_key(new), new.clone());
                }
            }
            Op::Update => {
                if let Some(old) = &change.old {
                    table.rows.remove(&schema.row_key(old));
                }
                if let Some(new) = &change.new {
                    table.rows.insert(schema.row_key(new), new.clone());
                }
            }
            Op::Delete => {
                if let Some(old) = &change.old {
                    table.rows.remove(&schema.row_key(old));
                }
            }
        }
    }

    pub fn insert_row(&mut self, schema: &TableSchema, row: Row) {
        let table = self.table_mut(schema);
        table.rows.insert(schema.row_key(&row), row);
    }
}

/// A segment's transactions (without tenants' changes) and the tenants it has changes of.
pub type SegmentSummary = Arc<(Segment, Vec<TenantKey>)>;

/// What the vault holds for one source, listed once.
#[derive(Debug, Clone)]
pub struct SourceHistory {
    pub source: String,
    pub segments: Vec<SegmentRef>,
    pub checkpoints: Vec<PositionRef>,
    pub bases: BTreeMap<TenantKey, Vec<PositionRef>>,
    /// Segment summaries read so far: one command asks for them several times.
    summaries: Arc<Mutex<HashMap<String, SegmentSummary>>>,
}

impl SourceHistory {
    pub async fn load(vault: &Vault, source: &str) -> Result<SourceHistory> {
        let checkpoints = vault.list_checkpoints(source).await?;
        let mut bases = vault.list_all_bases(source).await?;
        // Bases below the first checkpoint come from a first snapshot that never
        // finished: they are not history (docs/vault-format.md, write order).
        let start = checkpoints.first().map_or(u64::MAX, |c| c.position);
        bases.retain(|_, refs| {
            refs.retain(|b| b.position >= start);
            !refs.is_empty()
        });
        Ok(SourceHistory {
            source: source.to_string(),
            segments: vault.list_segments(source).await?,
            checkpoints,
            bases,
            summaries: Arc::default(),
        })
    }

    /// A segment's summary, read once per `SourceHistory`.
    pub async fn summary(&self, vault: &Vault, name: &str) -> Result<SegmentSummary> {
        if let Some(summary) = self
            .summaries
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return Ok(summary);
        }
        let summary = Arc::new(vault.read_segment_summary(name).await?);
        if let Ok(mut summaries) = self.summaries.lock() {
            summaries.insert(name.to_string(), summary.clone());
        }
        Ok(summary)
    }

    pub fn is_captured(&self) -> bool {
        !self.checkpoints.is_empty()
    }

    /// Where the source's history starts: its first checkpoint.
    pub fn earliest_position(&self) -> Option<u64> {
        self.checkpoints.first().map(|c| c.position)
    }

    /// The last position the vault has seen.
    pub fn latest_position(&self) -> Option<u64> {
        let segment = self.segments.iter().map(|s| s.last).max();
        let checkpoint = self.checkpoints.last().map(|c| c.position);
        segment.max(checkpoint)
    }

    /// Every tenant the vault knows in this source: bases and changes.
    pub async fn tenants(&self, vault: &Vault) -> Result<BTreeSet<TenantKey>> {
        let mut tenants: BTreeSet<TenantKey> = self.bases.keys().cloned().collect();
        for segment in &self.segments {
            tenants.extend(self.summary(vault, &segment.name).await?.1.iter().cloned());
        }
        Ok(tenants)
    }

    /// Commit time of the source's first checkpoint and of its last transaction.
    pub async fn window_times(&self, vault: &Vault) -> Result<Option<(i64, i64)>> {
        let Some(first) = self.checkpoints.first() else {
            return Ok(None);
        };
        let earliest = vault.read_checkpoint(&first.name).await?.commit_time_us;
        let mut latest = earliest;
        if let Some(last) = self.checkpoints.last() {
            latest = latest.max(vault.read_checkpoint(&last.name).await?.commit_time_us);
        }
        if let Some(segment) = self.segments.iter().max_by_key(|s| s.last) {
            let summary = self.summary(vault, &segment.name).await?;
            if let Some(tx) = summary.0.transactions.last() {
                latest = latest.max(tx.commit_time_us);
            }
        }
        Ok(Some((earliest, latest)))
    }

    /// The position of the last transaction committed at or before `time_us`. A time
    /// before the source's history starts is outside the window.
    pub async fn position_at_time(&self, vault: &Vault, time_us: i64) -> Result<u64> {
        let Some(first) = self.checkpoints.first() else {
            return Err(self.not_captured());
        };
        let checkpoint = vault.read_checkpoint(&first.name).await?;
        if time_us < checkpoint.commit_time_us {
            return Err(Error::new(
                ErrorKind::OutOfWindow,
                format!(
                    "{} is before the restorable window of source {}, which starts at {}",
                    crate::time::format_us(time_us),
                    self.source,
                    crate::time::format_us(checkpoint.commit_time_us)
                ),
            ));
        }
        let mut position = checkpoint.position;
        for segment_ref in &self.segments {
            if segment_ref.last <= position {
                continue;
            }
            let summary = self.summary(vault, &segment_ref.name).await?;
            // Where the time falls inside a transaction's changes (SQLite), they are needed.
            let full;
            let mut segment = &summary.0;
            if segment
                .transactions
                .iter()
                .any(|tx| tx.position > position && tx.commit_time_us > time_us)
            {
                full = vault.read_segment(&segment_ref.name).await?;
                segment = &full;
            }
            for tx in &segment.transactions {
                if tx.position <= position {
                    continue;
                }
                if tx.commit_time_us > time_us {
                    // An SQLite commit group can hold changes committed long before the
                    // time (capture read a backlog): keep every change made by then. A
                    // change's time is its statement's, so a writer transaction still open
                    // at the time can be cut there; SQLite tells triggers no commit time.
                    for change in &tx.changes {
                        match change.time_us {
                            Some(t) if t <= time_us => position = position.max(change.position),
                            _ => break,
                        }
                    }
                    return Ok(position);
                }
                position = tx.position;
            }
        }
        Ok(position)
    }

    fn not_captured(&self) -> Error {
        Error::usage(format!(
            "source {} has no history in the vault yet: run `lifeboat capture` first",
            self.source
        ))
    }

    /// The captured shape of every table at `position`: the latest checkpoint at or before
    /// it, then the shapes that changes up to `position` were stored with.
    pub async fn schemas_at(
        &self,
        vault: &Vault,
        position: u64,
    ) -> Result<BTreeMap<String, TableSchema>> {
        let Some(checkpoint) = self
            .checkpoints
            .iter()
            .rev()
            .find(|c| c.position <= position)
        else {
            return Ok(BTreeMap::new());
        };
        let checkpoint = vault.read_checkpoint(&checkpoint.name).await?;
        let mut out: BTreeMap<String, TableSchema> = checkpoint
            .tables
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        for segment in &self.segments {
            if segment.last <= checkpoint.position || segment.first > position {
                continue;
            }
            if segment.last <= position {
                // A segment's tables are the shapes its changes were stored with, in order.
                let summary = self.summary(vault, &segment.name).await?;
                for schema in &summary.0.tables {
                    out.insert(schema.name.clone(), schema.clone());
                }
            } else {
                // The segment reaches past the position: only the shapes of the changes up
                // to it count (a later alter in the same segment does not).
                let segment = vault.read_segment(&segment.name).await?;
                let mut used: Vec<u32> = segment
                    .transactions
                    .iter()
                    .flat_map(|tx| tx.changes.iter())
                    .filter(|c| c.position <= position)
                    .map(|c| c.table)
                    .collect();
                used.sort_unstable();
                used.dedup();
                for index in used {
                    if let Some(schema) = segment.tables.get(index as usize) {
                        out.insert(schema.name.clone(), schema.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Check that `position` lies inside the window.
    pub fn check_position(&self, position: u64) -> Result<()> {
        let (Some(earliest), Some(latest)) = (self.earliest_position(), self.latest_position())
        else {
            return Err(self.not_captured());
        };
        if position < earliest || position > latest {
            return Err(Error::new(
                ErrorKind::OutOfWindow,
                format!(
                    "position {position} is outside the restorable window of source {} \
                     ({earliest} to {latest})",
                    self.source
                ),
            ));
        }
        Ok(())
    }

    /// Read every transaction with a position in (after, upto], in order, once each.
    pub async fn for_each_transaction(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        self.visit_transactions(vault, after, upto, None, visit)
            .await
    }

    /// Like `for_each_transaction`, with only the changes of `tenants` (and those for every
    /// tenant) decoded: the work follows the tenants' share of history, not all of it.
    pub async fn for_each_transaction_of(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        tenants: &BTreeSet<TenantKey>,
        visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        self.visit_transactions(vault, after, upto, Some(tenants), visit)
            .await
    }

    async fn visit_transactions(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        tenants: Option<&BTreeSet<TenantKey>>,
        mut visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        let mut applied = after;
        for segment_ref in &self.segments {
            // A segment's name holds its first change's position and its last
            // transaction's.
            if segment_ref.last <= applied || segment_ref.first > upto {
                continue;
            }
            let read;
            let summary;
            let segment = match tenants {
                Some(tenants) => {
                    // A segment without any of these tenants' changes: its summary has all
                    // that matters (transactions, truncates, alters).
                    summary = self.summary(vault, &segment_ref.name).await?;
                    if summary.1.iter().any(|t| tenants.contains(t)) {
                        read = vault.read_segment_for(&segment_ref.name, tenants).await?;
                        &read
                    } else {
                        &summary.0
                    }
                }
                None => {
                    read = vault.read_segment(&segment_ref.name).await?;
                    &read
                }
            };
            for tx in &segment.transactions {
                // Bases and checkpoints sit on transaction boundaries, so a transaction at
                // or below `applied` was read already (or precedes the range).
                if tx.position <= applied {
                    continue;
                }
                if tx.changes.first().is_some_and(|c| c.position > upto) {
                    return Ok(());
                }
                visit(&segment.tables, tx);
                applied = tx.position;
            }
        }
        Ok(())
    }

    /// The states of `tenants` at `position`, reading each segment once.
    pub async fn states_at(
        &self,
        vault: &Vault,
        tenants: &BTreeSet<TenantKey>,
        position: u64,
    ) -> Result<BTreeMap<TenantKey, TenantState>> {
        self.check_position(position)?;
        let earliest = self.earliest_position().unwrap_or(0);
        let mut states: BTreeMap<TenantKey, TenantState> = BTreeMap::new();
        let mut starts: HashMap<TenantKey, u64> = HashMap::new();
        for tenant in tenants {
            let mut state = TenantState::default();
            let mut start = earliest;
            let base_ref = self
                .bases
                .get(tenant)
                .and_then(|bases| bases.iter().rev().find(|b| b.position <= position));
            if let Some(base_ref) = base_ref {
                let base = vault.read_base(&base_ref.name).await?;
                for row in base.rows {
                    if let Some(schema) = base.tables.get(row.table as usize) {
                        state.insert_row(schema, row.values);
                    }
                }
                // Tables the tenant had no rows in still count as known.
                for schema in &base.tables {
                    state.table_mut(schema);
                }
                start = base.position;
            }
            starts.insert(tenant.clone(), start);
            states.insert(tenant.clone(), state);
        }
        let Some(&from) = starts.values().min() else {
            return Ok(states);
        };
        self.for_each_transaction_of(vault, from, position, tenants, |tables, tx| {
            for change in &tx.changes {
                if change.position > position {
                    break;
                }
                let Some(schema) = tables.get(change.table as usize) else {
                    continue;
                };
                match &change.tenant {
                    Some(tenant) => {
                        if let (Some(state), Some(&start)) =
                            (states.get_mut(tenant), starts.get(tenant))
                        {
                            if change.position > start {
                                state.apply(schema, change);
                            }
                        }
                    }
                    None if change.op.is_for_every_tenant() => {
                        for (tenant, state) in states.iter_mut() {
                            if change.position > starts[tenant] {
                                state.apply(schema, change);
                            }
                        }
                    }
                    None => {}
                }
            }
        })
        .await?;
        Ok(states)
    }
}
