//! Reading history back out of the vault: a source's restorable window, the position of a
//! time, and a tenant's rows at a position (its latest base at or before the position,
//! plus the changes after it). The read order is docs/vault-format.md's.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Change, Op, Row, Segment, TableSchema, TenantKey, Transaction, Value};
use crate::vault::{BaseReader, CheckpointHead, PositionRef, SegmentRef, Vault};

mod spill;

use spill::{Entry, Kind, Merge, Run, Sorter, SpillFile};
pub use spill::{RowFile, BUDGET_VARIABLE};

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

    /// Every row of a stream, held in memory (for commands that compare row by row).
    pub fn collect(mut stream: TenantStream) -> Result<TenantState> {
        let mut state = TenantState::default();
        for (name, schema) in stream.schemas() {
            let mut table = TableState {
                schema: Some(schema.clone()),
                rows: HashMap::new(),
            };
            stream.for_each_row(&name, |row| {
                table.rows.insert(schema.row_key(&row), row);
            })?;
            state.tables.insert(name, table);
        }
        Ok(state)
    }
}

/// A change that touched one key after the base: the row it left, or its removal (with
/// the removed row, so that the key can be recomputed if the table's shape changes).
#[derive(Debug, Clone)]
enum Net {
    Present(Row),
    Removed(Row),
}

impl Net {
    fn row(&self) -> &Row {
        match self {
            Net::Present(row) | Net::Removed(row) => row,
        }
    }

    fn into_entry(self, key: &[Value]) -> Entry {
        let (kind, row) = match self {
            Net::Present(row) => (Kind::Present, row),
            Net::Removed(row) => (Kind::Removed, row),
        };
        Entry {
            key: spill::encode_values(key),
            kind,
            row,
        }
    }
}

/// Roughly how much memory one key's change takes in `TableChanges::keys`.
fn net_bytes(key_bytes: usize, net: &Net) -> usize {
    // The map's slot and control byte, the key's values and the row's.
    std::mem::size_of::<(Vec<Value>, Net)>() + 1 + key_bytes + spill::row_bytes(net.row())
}

/// What changed in one table after the base, by key, in the table's latest shape: the
/// newest changes in memory, older ones (once the stream's budget was reached) in sorted
/// runs on disk.
#[derive(Debug, Clone)]
struct TableChanges {
    schema: TableSchema,
    /// A truncate: the base's rows are gone.
    truncated: bool,
    keys: HashMap<Vec<Value>, Net>,
    /// Roughly how much memory `keys` takes.
    held: usize,
    /// Changes spilled, older than those in `keys`, in this shape.
    runs: Vec<Run>,
}

impl TableChanges {
    fn set(&mut self, key: Vec<Value>, net: Net) {
        let key_bytes = spill::row_bytes(&key);
        self.held += net_bytes(key_bytes, &net);
        if let Some(old) = self.keys.insert(key, net) {
            self.held -= net_bytes(key_bytes, &old);
        }
    }

    /// Move to a new shape: rows carried over by column name, a new column NULL. Spilled
    /// changes are read back and sorted again by their keys in the new shape.
    fn reshape(
        &mut self,
        schema: &TableSchema,
        spill: Option<&SpillFile>,
        budget: usize,
        rank: &mut u64,
    ) -> Result<()> {
        if &self.schema == schema {
            return Ok(());
        }
        let keys = std::mem::take(&mut self.keys);
        self.held = 0;
        for (_, net) in keys {
            let row = reshape(&self.schema, schema, net.row());
            let key = schema.row_key(&row);
            let net = match net {
                Net::Present(_) => Net::Present(row),
                Net::Removed(_) => Net::Removed(row),
            };
            self.set(key, net);
        }
        if let (false, Some(spill)) = (self.runs.is_empty(), spill) {
            let runs = spill.merge_down(std::mem::take(&mut self.runs))?;
            let mut merge = Merge::new(spill, &runs)?;
            let mut sorter = Sorter::new(budget / 2, true);
            while let Some(group) = merge.next_group()? {
                // Only changes here, the newest first.
                let Some(newest) = group.into_iter().next() else {
                    continue;
                };
                let row = reshape(&self.schema, schema, &newest.row);
                sorter.push(Entry {
                    key: spill::encode_key(schema, &row),
                    kind: newest.kind,
                    row,
                });
                if sorter.is_full() {
                    sorter.flush(spill, next(rank))?;
                }
            }
            sorter.flush(spill, next(rank))?;
            self.runs = sorter.runs;
        }
        self.schema = schema.clone();
        Ok(())
    }

    /// Write the changes held in memory as a run.
    fn spill(&mut self, spill: &SpillFile, rank: u64) -> Result<()> {
        let keys = std::mem::take(&mut self.keys);
        self.held = 0;
        let mut entries: Vec<Entry> = keys
            .into_iter()
            .map(|(key, net)| net.into_entry(&key))
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        self.runs
            .push(spill.write_run(rank, entries.into_iter().map(Ok))?);
        Ok(())
    }
}

/// The next rank, counting from 1.
fn next(rank: &mut u64) -> u64 {
    *rank += 1;
    *rank
}

/// `row`, stored with `from`'s columns, in `to`'s columns (matched by name; NULL where
/// `from` has no such column).
fn reshape(from: &TableSchema, to: &TableSchema, row: &[Value]) -> Row {
    to.columns
        .iter()
        .map(|c| {
            from.column_index(c)
                .and_then(|i| row.get(i).cloned())
                .unwrap_or(Value::Null)
        })
        .collect()
}

/// One tenant's rows in one source at a position, produced a table at a time: the base's
/// rows are decoded as a stream and the changes after it are laid over them. Changes are
/// held by key in memory up to a budget (`LIFEBOAT_RESTORE_MEMORY_BYTES`, shared by the
/// streams opened together); past it, the largest tables' changes are written to a
/// temporary file as sorted runs, and such a table is read by sorting its base rows the
/// same way and merging, so memory stays within the budget however much changed since
/// the base.
pub struct TenantStream {
    base: Option<BaseReader>,
    changes: BTreeMap<String, TableChanges>,
    /// Roughly how much memory the changes held in memory take.
    held: usize,
    budget: usize,
    /// The temporary file of the streams opened together, made at the first spill; the
    /// system removes it when the last of them is dropped.
    shared: SharedSpill,
    spill: Option<Arc<SpillFile>>,
    /// The rank of the last run written.
    rank: u64,
}

/// One temporary file for the streams opened together, made when first needed.
type SharedSpill = Arc<Mutex<Option<Arc<SpillFile>>>>;

impl TenantStream {
    fn new(base: Option<BaseReader>, budget: usize, shared: SharedSpill) -> TenantStream {
        TenantStream {
            base,
            changes: BTreeMap::new(),
            held: 0,
            budget,
            shared,
            spill: None,
            rank: 0,
        }
    }

    /// A tenant with no rows and no tables: what writing nothing looks like (a restore of
    /// it removes the tenant's rows and writes none).
    pub fn empty() -> TenantStream {
        TenantStream::new(None, usize::MAX, SharedSpill::default())
    }

    /// The shared temporary file, made if it is not yet.
    fn spill_file(&mut self) -> Result<Arc<SpillFile>> {
        if let Some(spill) = &self.spill {
            return Ok(spill.clone());
        }
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| Error::new(ErrorKind::Vault, "a reader of changes panicked"))?;
        let spill = match &*shared {
            Some(spill) => spill.clone(),
            None => {
                let spill = Arc::new(SpillFile::create()?);
                tracing::debug!(
                    budget = self.budget,
                    "changes since the bases past the memory budget: spilling to a \
                     temporary file"
                );
                *shared = Some(spill.clone());
                spill
            }
        };
        self.spill = Some(spill.clone());
        Ok(spill)
    }

    /// Every table the tenant's history knows, in its latest shape (tables it has no rows
    /// in included).
    pub fn schemas(&self) -> BTreeMap<String, TableSchema> {
        let mut out: BTreeMap<String, TableSchema> = BTreeMap::new();
        if let Some(base) = &self.base {
            for schema in &base.tables {
                out.insert(schema.name.clone(), schema.clone());
            }
        }
        for (name, changes) in &self.changes {
            out.insert(name.clone(), changes.schema.clone());
        }
        out
    }

    /// Whether some of the changes were written to the temporary file.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Apply one change (already known to be this tenant's, or one for every tenant).
    pub fn apply(&mut self, schema: &TableSchema, change: &Change) -> Result<()> {
        let table = self
            .changes
            .entry(schema.name.clone())
            .or_insert_with(|| TableChanges {
                schema: schema.clone(),
                truncated: false,
                keys: HashMap::new(),
                held: 0,
                runs: Vec::new(),
            });
        let before = table.held;
        table.reshape(schema, self.spill.as_deref(), self.budget, &mut self.rank)?;
        match change.op {
            Op::Truncate => {
                table.truncated = true;
                table.keys = HashMap::new();
                table.held = 0;
                table.runs.clear();
            }
            Op::Alter => {}
            Op::Insert | Op::Update | Op::Delete => {
                if let Some(old) = &change.old {
                    table.set(schema.row_key(old), Net::Removed(old.clone()));
                }
                if let Some(new) = &change.new {
                    table.set(schema.row_key(new), Net::Present(new.clone()));
                }
            }
        }
        self.held = self.held - before + table.held;
        if self.held > self.budget {
            self.spill_until(self.held / 2)?;
        }
        Ok(())
    }

    /// Write the largest tables' changes to the temporary file until at most `until`
    /// bytes are held.
    fn spill_until(&mut self, until: usize) -> Result<()> {
        let spill = self.spill_file()?;
        let mut tables: Vec<(usize, &mut TableChanges)> = self
            .changes
            .values_mut()
            .filter(|t| !t.keys.is_empty())
            .map(|t| (t.held, t))
            .collect();
        tables.sort_by_key(|(held, _)| Reverse(*held));
        for (_, table) in tables {
            if self.held <= until {
                break;
            }
            self.held -= table.held;
            self.rank += 1;
            table.spill(&spill, self.rank)?;
        }
        Ok(())
    }

    /// Call `visit` with every row of `table` in its latest shape (`schemas()`). Each table
    /// can be read once: its changes are used up. Rows come in the base's order, then the
    /// rows inserted since; for a table whose changes were spilled, in the order of their
    /// keys' encoding.
    pub fn for_each_row(&mut self, table: &str, mut visit: impl FnMut(Row)) -> Result<()> {
        self.for_each_row_mut(table, |row| visit(std::mem::take(row)))
    }

    /// Like `for_each_row`, each row lent to `visit`: a base's rows are decoded into one
    /// buffer, reused from row to row (`BaseReader::for_each_row_mut`). `visit` may change
    /// the row or take its values.
    pub fn for_each_row_mut(&mut self, table: &str, mut visit: impl FnMut(&mut Row)) -> Result<()> {
        let (truncated, mut keys, changed_schema, runs) = match self.changes.remove(table) {
            Some(c) => {
                self.held -= c.held;
                (c.truncated, c.keys, Some(c.schema), c.runs)
            }
            None => (false, HashMap::new(), None, Vec::new()),
        };
        let base_table = self.base.as_ref().and_then(|base| {
            base.tables
                .iter()
                .position(|t| t.name == table)
                .map(|i| (base, i))
        });
        if !runs.is_empty() {
            let Some(spill) = self.spill.clone() else {
                return Err(Error::new(
                    ErrorKind::Vault,
                    "spilled changes without their file",
                ));
            };
            let base = if truncated { None } else { base_table };
            let schema = changed_schema.as_ref().or(base.map(|(b, i)| &b.tables[i]));
            let Some(schema) = schema else {
                return Ok(());
            };
            return merge_spilled(
                &spill,
                &mut self.rank,
                self.budget,
                schema,
                base,
                runs,
                keys,
                |mut row| visit(&mut row),
            );
        }
        if let (Some((base, index)), false) = (base_table, truncated) {
            let stored = &base.tables[index];
            let schema = changed_schema.as_ref().unwrap_or(stored);
            let same = stored == schema;
            base.for_each_row_mut(index as u32, |row| {
                let mut reshaped;
                let row = if same {
                    row
                } else {
                    reshaped = reshape(stored, schema, row);
                    &mut reshaped
                };
                if keys.is_empty() {
                    return visit(row);
                }
                match keys.remove(&schema.row_key(row)) {
                    None => visit(row),
                    Some(Net::Present(mut changed)) => visit(&mut changed),
                    Some(Net::Removed(_)) => {}
                }
            })?;
        }
        for (_, net) in keys {
            if let Net::Present(mut row) = net {
                visit(&mut row);
            }
        }
        Ok(())
    }

    /// How many rows the tenant has, table by table (reads every table).
    pub fn count_rows(mut self) -> Result<usize> {
        let mut count = 0;
        for name in self.schemas().into_keys() {
            self.for_each_row(&name, |_| count += 1)?;
        }
        Ok(count)
    }
}

/// The rows of a table whose changes were spilled: the changes still in memory written as
/// the newest run, the base's rows (if the table has any and was not truncated since)
/// sorted into runs of their own, then every run merged by key. For a key, the newest
/// change decides: its row, or nothing; a key no change touched keeps its base row.
#[allow(clippy::too_many_arguments)]
fn merge_spilled(
    spill: &SpillFile,
    rank: &mut u64,
    budget: usize,
    schema: &TableSchema,
    base: Option<(&BaseReader, usize)>,
    mut runs: Vec<Run>,
    keys: HashMap<Vec<Value>, Net>,
    mut visit: impl FnMut(Row),
) -> Result<()> {
    if !keys.is_empty() {
        let mut entries: Vec<Entry> = keys
            .into_iter()
            .map(|(key, net)| net.into_entry(&key))
            .collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        runs.push(spill.write_run(next(rank), entries.into_iter().map(Ok))?);
    }
    if let Some((base, index)) = base {
        let stored = &base.tables[index];
        let same = stored == schema;
        let mut sorter = Sorter::new(budget, false);
        let mut failed = None;
        base.for_each_row(index as u32, |row| {
            if failed.is_some() {
                return;
            }
            let row = if same {
                row
            } else {
                reshape(stored, schema, &row)
            };
            sorter.push(Entry {
                key: spill::encode_key(schema, &row),
                kind: Kind::Base,
                row,
            });
            if sorter.is_full() {
                if let Err(e) = sorter.flush(spill, 0) {
                    failed = Some(e);
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        sorter.flush(spill, 0)?;
        runs.append(&mut sorter.runs);
    }
    let runs = spill.merge_down(runs)?;
    let mut merge = Merge::new(spill, &runs)?;
    while let Some(group) = merge.next_group()? {
        // Newest first: the first change decides; base rows of the same key (a table
        // without a key can hold one row twice) but the one it replaced are kept.
        let mut change = None;
        let mut bases = Vec::new();
        for entry in group {
            match entry.kind {
                Kind::Base => bases.push(entry.row),
                _ if change.is_none() => change = Some(entry),
                _ => {}
            }
        }
        let mut bases = bases.into_iter();
        if let Some(change) = change {
            bases.next();
            if change.kind == Kind::Present {
                visit(change.row);
            }
        }
        bases.for_each(&mut visit);
    }
    Ok(())
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
    summaries: ObjectCache<(Segment, Vec<TenantKey>)>,
    /// Checkpoint heads read so far (their key maps are never needed here).
    heads: ObjectCache<CheckpointHead>,
}

/// Vault objects (or parts of them) read once and shared, by name.
#[derive(Debug)]
struct ObjectCache<T>(Arc<Mutex<HashMap<String, Arc<T>>>>);

impl<T> Clone for ObjectCache<T> {
    fn clone(&self) -> Self {
        ObjectCache(self.0.clone())
    }
}

impl<T> Default for ObjectCache<T> {
    fn default() -> Self {
        ObjectCache(Arc::default())
    }
}

impl<T> ObjectCache<T> {
    async fn get_or_read<F, Fut>(&self, name: &str, read: F) -> Result<Arc<T>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if let Some(hit) = self.0.lock().ok().and_then(|m| m.get(name).cloned()) {
            return Ok(hit);
        }
        let value = Arc::new(read().await?);
        if let Ok(mut map) = self.0.lock() {
            map.insert(name.to_string(), value.clone());
        }
        Ok(value)
    }
}

/// A walk along a source's segments, checking continuity step by step
/// (`SourceHistory::chain`).
pub struct Chain<'h> {
    history: &'h SourceHistory,
    end: u64,
    /// The position the segments walked so far reach.
    covered: u64,
    /// The object that ends at `covered`, for messages.
    before: String,
    next: usize,
    walked: usize,
}

impl Chain<'_> {
    /// The next segment and its summary, or None once the range is covered.
    pub async fn next(&mut self, vault: &Vault) -> Result<Option<(SegmentRef, SegmentSummary)>> {
        let history = self.history;
        if self.covered >= self.end {
            return Ok(None);
        }
        let Some(next) = history.segments.get(self.next) else {
            let after_gap = history
                .checkpoints
                .iter()
                .find(|c| c.position > self.covered)
                .map_or_else(|| format!("position {}", self.end), |c| c.name.clone());
            return Err(history.gap(self.covered + 1, self.end, &self.before, &after_gap));
        };
        let same: Vec<&SegmentRef> = history.segments[self.next..]
            .iter()
            .take_while(|s| (s.first, s.last) == (next.first, next.last))
            .collect();
        self.next += same.len();
        let mut chosen = (same[0], history.summary(vault, &same[0].name).await?);
        for other in &same[1..] {
            let summary = history.summary(vault, &other.name).await?;
            let (a, b) = (chosen.1 .0.generation, summary.0.generation);
            if a == b {
                return Err(Error::corrupt(format!(
                    "source {}: the history is broken: {} and {} both hold positions {} to \
                     {} (a duplicate)",
                    history.source, chosen.0.name, other.name, next.first, next.last
                )));
            }
            if b > a {
                chosen = (other, summary);
            }
        }
        let (segment, summary) = chosen;
        let prev = summary.0.prev;
        if prev > self.covered {
            return Err(history.gap(self.covered + 1, prev, &self.before, &segment.name));
        }
        // The first segment may start below the range (a base inside its range); every
        // later one starts right after the one before.
        let covered = self.covered;
        if self.walked > 0 && (prev < covered || segment.first <= covered) {
            return Err(Error::corrupt(format!(
                "source {}: the history is broken: positions {} to {covered} are held twice, \
                 by {} and {} (an overlap)",
                history.source,
                (prev + 1).min(segment.first),
                self.before,
                segment.name
            )));
        }
        self.covered = segment.last;
        self.before = segment.name.clone();
        self.walked += 1;
        Ok(Some((segment.clone(), summary)))
    }
}

impl SourceHistory {
    pub async fn load(vault: &Vault, source: &str) -> Result<SourceHistory> {
        let bases = vault.list_all_bases(source).await?;
        Self::with_bases(vault, source, bases).await
    }

    /// Like `load`, with the bases of `tenants` only: what a command about a few tenants
    /// needs, without listing every tenant's bases.
    pub async fn load_for(
        vault: &Vault,
        source: &str,
        tenants: &BTreeSet<TenantKey>,
    ) -> Result<SourceHistory> {
        let mut bases = BTreeMap::new();
        for tenant in tenants {
            let refs = vault.list_bases(source, tenant).await?;
            if !refs.is_empty() {
                bases.insert(tenant.clone(), refs);
            }
        }
        Self::with_bases(vault, source, bases).await
    }

    async fn with_bases(
        vault: &Vault,
        source: &str,
        mut bases: BTreeMap<TenantKey, Vec<PositionRef>>,
    ) -> Result<SourceHistory> {
        let checkpoints = vault.list_checkpoints(source).await?;
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
            summaries: ObjectCache::default(),
            heads: ObjectCache::default(),
        })
    }

    /// A segment's summary, read once per `SourceHistory`.
    pub async fn summary(&self, vault: &Vault, name: &str) -> Result<SegmentSummary> {
        self.summaries
            .get_or_read(name, || async { vault.read_segment_summary(name).await })
            .await
    }

    /// A checkpoint's position, time and shapes, read once per `SourceHistory`.
    pub async fn checkpoint_head(&self, vault: &Vault, name: &str) -> Result<Arc<CheckpointHead>> {
        self.heads
            .get_or_read(name, || async { vault.read_checkpoint_head(name).await })
            .await
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
        let mut chain = self.chain(0, u64::MAX);
        while let Some((_, summary)) = chain.next(vault).await? {
            tenants.extend(summary.1.iter().cloned());
        }
        Ok(tenants)
    }

    /// Commit time of the source's first checkpoint and of its last transaction.
    pub async fn window_times(&self, vault: &Vault) -> Result<Option<(i64, i64)>> {
        let Some(first) = self.checkpoints.first() else {
            return Ok(None);
        };
        let earliest = self
            .checkpoint_head(vault, &first.name)
            .await?
            .commit_time_us;
        let mut latest = earliest;
        if let Some(last) = self.checkpoints.last() {
            latest = latest.max(
                self.checkpoint_head(vault, &last.name)
                    .await?
                    .commit_time_us,
            );
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
        let checkpoint = self.checkpoint_head(vault, &first.name).await?;
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
        let mut chain = self.chain(position, u64::MAX);
        while let Some((segment_ref, summary)) = chain.next(vault).await? {
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

    /// The commit time of the last transaction at or before `position`.
    pub async fn commit_time_at(&self, vault: &Vault, position: u64) -> Result<i64> {
        let Some(checkpoint) = self.checkpoint_at(position) else {
            return Err(self.not_captured());
        };
        let mut time_us = self
            .checkpoint_head(vault, &checkpoint.name)
            .await?
            .commit_time_us;
        let mut chain = self.chain(checkpoint.position, position);
        while let Some((_, summary)) = chain.next(vault).await? {
            for tx in &summary.0.transactions {
                if tx.position <= position {
                    time_us = time_us.max(tx.commit_time_us);
                }
            }
        }
        Ok(time_us)
    }

    /// The latest checkpoint at or before `position`.
    fn checkpoint_at(&self, position: u64) -> Option<&PositionRef> {
        self.checkpoints
            .iter()
            .rev()
            .find(|c| c.position <= position)
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
        let Some(checkpoint) = self.checkpoint_at(position) else {
            return Ok(BTreeMap::new());
        };
        let checkpoint = self.checkpoint_head(vault, &checkpoint.name).await?;
        let mut out: BTreeMap<String, TableSchema> = checkpoint
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let mut chain = self.chain(checkpoint.position, position);
        while let Some((segment, _)) = chain.next(vault).await? {
            if segment.first > position {
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

    /// The segments that hold the transactions in (after, upto] (`after` taken no lower
    /// than the first checkpoint, `upto` no higher than the head), in order, once each,
    /// checked to be continuous as they are walked (docs/vault-format.md, "Continuity"):
    /// each one's `prev`, read from its head, is the `last` of the one before, the first
    /// one's at or below `after`, and they reach `upto`. A gap, an overlap or a duplicate
    /// is refused with an error naming the source, the positions and the objects on either
    /// side. Of segments with one range and different generations (an interrupted purge),
    /// the newest is used.
    pub fn chain(&self, after: u64, upto: u64) -> Chain<'_> {
        let earliest = self.earliest_position().unwrap_or(0);
        let end = upto.min(self.latest_position().unwrap_or(0));
        let covered = after.max(earliest);
        Chain {
            history: self,
            end,
            covered,
            before: self.object_ending_at(covered),
            next: self.segments.partition_point(|s| s.last <= covered),
            walked: 0,
        }
    }

    /// Every segment of (after, upto], checked to be continuous (`chain`).
    pub async fn chained(&self, vault: &Vault, after: u64, upto: u64) -> Result<Vec<SegmentRef>> {
        let mut chain = self.chain(after, upto);
        let mut out = Vec::new();
        while let Some((segment, _)) = chain.next(vault).await? {
            out.push(segment);
        }
        Ok(out)
    }

    /// The object whose history ends at `position`: a segment, else a checkpoint.
    fn object_ending_at(&self, position: u64) -> String {
        self.segments
            .iter()
            .find(|s| s.last == position)
            .map(|s| s.name.clone())
            .or_else(|| {
                self.checkpoints
                    .iter()
                    .find(|c| c.position == position)
                    .map(|c| c.name.clone())
            })
            .unwrap_or_else(|| format!("position {position}"))
    }

    fn gap(&self, from: u64, to: u64, before: &str, after: &str) -> Error {
        Error::corrupt(format!(
            "source {}: the history is broken: positions {from} to {to} are missing, \
             between {before} and {after} (a gap)",
            self.source
        ))
    }

    /// Read every transaction with a position in (after, upto], in order, once each.
    pub async fn for_each_transaction(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        self.visit_transactions(vault, after, upto, None, true, visit)
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
        self.visit_transactions(vault, after, upto, Some(tenants), true, visit)
            .await
    }

    /// Like `for_each_transaction_of`, without the changes past `upto` (a transaction that
    /// straddles it, an SQLite commit group, has only its changes up to it): they are
    /// not decoded, which is what a reader of the state at `upto` needs.
    async fn for_each_transaction_of_upto(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        tenants: &BTreeSet<TenantKey>,
        visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        self.visit_transactions(vault, after, upto, Some(tenants), false, visit)
            .await
    }

    async fn visit_transactions(
        &self,
        vault: &Vault,
        after: u64,
        upto: u64,
        tenants: Option<&BTreeSet<TenantKey>>,
        changes_past_upto: bool,
        mut visit: impl FnMut(&[TableSchema], &Transaction),
    ) -> Result<()> {
        let mut applied = after;
        let mut chain = self.chain(after, upto);
        while let Some((segment_ref, summary)) = chain.next(vault).await? {
            let read;
            let segment = match tenants {
                Some(tenants) => {
                    // A segment without any of these tenants' changes: its summary has all
                    // that matters (transactions, truncates, alters).
                    if summary.1.iter().any(|t| tenants.contains(t)) {
                        read = if changes_past_upto {
                            vault.read_segment_for(&segment_ref.name, tenants).await?
                        } else {
                            vault
                                .read_segment_upto(&segment_ref.name, tenants, upto)
                                .await?
                        };
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
                if tx.changes.first().map_or(tx.position, |c| c.position) > upto {
                    return Ok(());
                }
                visit(&segment.tables, tx);
                applied = tx.position;
            }
        }
        Ok(())
    }

    /// The states of `tenants` at `position`, held in memory, reading each segment once.
    pub async fn states_at(
        &self,
        vault: &Vault,
        tenants: &BTreeSet<TenantKey>,
        position: u64,
    ) -> Result<BTreeMap<TenantKey, TenantState>> {
        let streams = self.streams_at(vault, tenants, position).await?;
        let mut out = BTreeMap::new();
        for (tenant, stream) in streams {
            out.insert(tenant, TenantState::collect(stream)?);
        }
        Ok(out)
    }

    /// The rows of `tenants` at `position`, as streams: each tenant's latest base at or
    /// before the position (opened, not decoded) and the changes after it, reading each
    /// segment once.
    pub async fn streams_at(
        &self,
        vault: &Vault,
        tenants: &BTreeSet<TenantKey>,
        position: u64,
    ) -> Result<BTreeMap<TenantKey, TenantStream>> {
        self.check_position(position)?;
        let earliest = self.earliest_position().unwrap_or(0);
        let budget = spill::budget()?;
        let shared = SharedSpill::default();
        let mut streams: BTreeMap<TenantKey, TenantStream> = BTreeMap::new();
        let mut starts: HashMap<TenantKey, u64> = HashMap::new();
        for tenant in tenants {
            let base_ref = self
                .bases
                .get(tenant)
                .and_then(|bases| bases.iter().rev().find(|b| b.position <= position));
            let base = match base_ref {
                Some(base_ref) => Some(vault.open_base(&base_ref.name).await?),
                None => None,
            };
            starts.insert(
                tenant.clone(),
                base.as_ref().map_or(earliest, |b| b.position),
            );
            streams.insert(
                tenant.clone(),
                TenantStream::new(base, budget, shared.clone()),
            );
        }
        let Some(&from) = starts.values().min() else {
            return Ok(streams);
        };
        // The budget is the streams' together: past it, the stream holding the most
        // spills.
        let mut held = 0usize;
        let mut failed: Option<Error> = None;
        // Runs `step` on `stream`, keeping `held` up to date.
        fn counted(
            stream: &mut TenantStream,
            held: &mut usize,
            step: impl FnOnce(&mut TenantStream) -> Result<()>,
        ) -> Result<()> {
            let before = stream.held;
            let done = step(stream);
            *held = *held - before + stream.held;
            done
        }
        self.for_each_transaction_of_upto(vault, from, position, tenants, |tables, tx| {
            for change in &tx.changes {
                if failed.is_some() || change.position > position {
                    break;
                }
                let Some(schema) = tables.get(change.table as usize) else {
                    continue;
                };
                match &change.tenant {
                    Some(tenant) => {
                        if let (Some(stream), Some(&start)) =
                            (streams.get_mut(tenant), starts.get(tenant))
                        {
                            if change.position > start {
                                let done = counted(stream, &mut held, |s| s.apply(schema, change));
                                if let Err(e) = done {
                                    failed = Some(e);
                                }
                            }
                        }
                    }
                    None if change.op.is_for_every_tenant() => {
                        for (tenant, stream) in streams.iter_mut() {
                            if change.position > starts[tenant] {
                                let done = counted(stream, &mut held, |s| s.apply(schema, change));
                                if let Err(e) = done {
                                    failed = Some(e);
                                }
                            }
                        }
                    }
                    None => {}
                }
                if held > budget && failed.is_none() {
                    // The largest streams spill all they hold, until a quarter of the
                    // budget is free again.
                    let mut sizes: Vec<(usize, TenantKey)> =
                        streams.iter().map(|(t, s)| (s.held, t.clone())).collect();
                    sizes.sort_by_key(|(size, _)| Reverse(*size));
                    for (_, tenant) in sizes {
                        if held <= budget / 4 * 3 {
                            break;
                        }
                        let Some(stream) = streams.get_mut(&tenant) else {
                            continue;
                        };
                        if let Err(e) = counted(stream, &mut held, |s| s.spill_until(0)) {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
        })
        .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Base, BaseRow};
    use crate::vault::LocalStore;

    fn schema(name: &str, columns: &[&str], key: Vec<usize>) -> TableSchema {
        TableSchema {
            name: name.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            key,
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn change(op: Op, old: Option<Row>, new: Option<Row>) -> Change {
        Change {
            tenant: Some(TenantKey::new("1")),
            table: 0,
            op,
            old,
            new,
            position: 0,
            time_us: None,
        }
    }

    /// The base's rows with the changes laid over them, streamed table by table, equal
    /// what applying the changes to the rows one by one gives, whether the changes stay in
    /// memory or are spilled to disk (a budget of one byte spills at every change).
    #[tokio::test]
    async fn a_stream_lays_changes_over_the_base() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let t = schema("t", &["id", "x"], vec![0]);
        let u = schema("u", &["v"], vec![]);
        let mut rows: Vec<BaseRow> = (1..=5)
            .map(|i| BaseRow {
                table: 0,
                values: vec![Value::Int(i), text(&format!("x{i}"))],
            })
            .collect();
        rows.insert(
            2,
            BaseRow {
                table: 1,
                values: vec![text("u1")],
            },
        );
        rows.push(BaseRow {
            table: 1,
            values: vec![text("u2")],
        });
        let name = vault
            .put_base(&Base {
                source: "s".into(),
                tenant: TenantKey::new("1"),
                position: 10,
                commit_time_us: 0,
                tables: vec![t.clone(), u.clone()],
                rows,
            })
            .await
            .expect("put base");
        for budget in [usize::MAX, 1, 300] {
            let base = vault.open_base(&name).await.expect("open base");
            let mut u_rows = Vec::new();
            base.for_each_row(1, |r| u_rows.push(r)).expect("rows of u");
            assert_eq!(u_rows, vec![vec![text("u1")], vec![text("u2")]]);

            let mut stream = TenantStream::new(Some(base), budget, SharedSpill::default());
            let row = |id: i64, x: &str| vec![Value::Int(id), text(x)];
            let mut apply = |schema: &TableSchema, op, old, new| {
                stream.apply(schema, &change(op, old, new)).expect("apply");
            };
            apply(&t, Op::Update, Some(row(2, "x2")), Some(row(2, "b2")));
            apply(&t, Op::Delete, Some(row(3, "x3")), None);
            apply(&t, Op::Insert, None, Some(row(6, "x6")));
            apply(&t, Op::Update, Some(row(4, "x4")), Some(row(40, "x4")));
            apply(&t, Op::Insert, None, Some(row(7, "x7")));
            apply(&t, Op::Delete, Some(row(7, "x7")), None);
            // A column added: earlier rows take NULL in it.
            let t2 = schema("t", &["id", "x", "y"], vec![0]);
            apply(&t2, Op::Alter, None, None);
            let with_y = |id: i64, x: &str, y: Value| vec![Value::Int(id), text(x), y];
            apply(&t2, Op::Insert, None, Some(with_y(8, "x8", text("z"))));
            apply(&u, Op::Truncate, None, None);
            apply(&u, Op::Insert, None, Some(vec![text("u3")]));

            assert_eq!(stream.schemas()["t"], t2);
            assert_eq!(stream.spilled(), budget != usize::MAX, "budget {budget}");
            let state = TenantState::collect(stream).expect("collect");
            let mut got: Vec<Row> = state.tables["t"].rows.values().cloned().collect();
            got.sort_by_key(|r| format!("{r:?}"));
            let mut want = vec![
                with_y(1, "x1", Value::Null),
                with_y(2, "b2", Value::Null),
                with_y(5, "x5", Value::Null),
                with_y(6, "x6", Value::Null),
                with_y(40, "x4", Value::Null),
                with_y(8, "x8", text("z")),
            ];
            want.sort_by_key(|r| format!("{r:?}"));
            assert_eq!(got, want, "budget {budget}");
            let u_now: Vec<Row> = state.tables["u"].rows.values().cloned().collect();
            assert_eq!(u_now, vec![vec![text("u3")]], "budget {budget}");
        }
    }

    /// Every table of a long history read under a budget small enough to spill many runs
    /// (merged in several rounds) gives the rows the in-memory path gives: updates, deletes,
    /// inserts, key changes, a truncate, a column added to a keyed table and to a table
    /// without a key (whose keys are whole rows, so its spilled changes are sorted again),
    /// and a table without a key holding one row twice.
    #[tokio::test]
    async fn spilled_changes_give_the_rows_held_changes_give() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let t = schema("t", &["id", "x"], vec![0]);
        let u = schema("u", &["v"], vec![]);
        let w = schema("w", &["id"], vec![0]);
        let mut rows = Vec::new();
        for i in 1..=300 {
            rows.push(BaseRow {
                table: 0,
                values: vec![Value::Int(i), text(&format!("x{i}"))],
            });
        }
        for v in ["u1", "u2", "u2", "u5", "u5", "u6"] {
            rows.push(BaseRow {
                table: 1,
                values: vec![text(v)],
            });
        }
        for i in 1..=50 {
            rows.push(BaseRow {
                table: 2,
                values: vec![Value::Int(i)],
            });
        }
        let name = vault
            .put_base(&Base {
                source: "s".into(),
                tenant: TenantKey::new("1"),
                position: 10,
                commit_time_us: 0,
                tables: vec![t.clone(), u.clone(), w.clone()],
                rows,
            })
            .await
            .expect("put base");

        let row = |id: i64, x: &str| vec![Value::Int(id), text(x)];
        let t2 = schema("t", &["id", "x", "y"], vec![0]);
        let u2 = schema("u", &["v", "n"], vec![]);
        let v = schema("v", &["id", "note"], vec![0]);
        let mut changes: Vec<(TableSchema, Change)> = Vec::new();
        let mut push =
            |s: &TableSchema, op, old, new| changes.push((s.clone(), change(op, old, new)));
        for i in 1..=100 {
            push(
                &t,
                Op::Update,
                Some(row(i, &format!("x{i}"))),
                Some(row(i, &format!("b{i}"))),
            );
        }
        for i in 101..=150 {
            push(&t, Op::Delete, Some(row(i, &format!("x{i}"))), None);
        }
        for i in 301..=400 {
            push(&t, Op::Insert, None, Some(row(i, "new")));
        }
        for i in 1..=30 {
            push(&w, Op::Insert, None, Some(vec![Value::Int(50 + i)]));
        }
        // Key changes, and a key inserted then deleted, deleted then inserted again.
        push(
            &t,
            Op::Update,
            Some(row(200, "x200")),
            Some(row(2000, "x200")),
        );
        push(
            &t,
            Op::Update,
            Some(row(2000, "x200")),
            Some(row(2001, "moved")),
        );
        push(&t, Op::Insert, None, Some(row(7000, "gone")));
        push(&t, Op::Delete, Some(row(7000, "gone")), None);
        push(&t, Op::Delete, Some(row(160, "x160")), None);
        push(&t, Op::Insert, None, Some(row(160, "back")));
        for i in 1..=40 {
            push(&v, Op::Insert, None, Some(vec![Value::Int(i), text("n")]));
        }
        for i in 1..=10 {
            push(&v, Op::Delete, Some(vec![Value::Int(i), text("n")]), None);
        }
        // A truncate after spilled changes: the base and every earlier change gone.
        push(&w, Op::Truncate, None, None);
        push(&w, Op::Insert, None, Some(vec![Value::Int(2)]));
        push(&w, Op::Insert, None, Some(vec![Value::Int(1)]));
        // Changes to a table without a key, one of them to a row held twice.
        push(&u, Op::Insert, None, Some(vec![text("u3")]));
        push(&u, Op::Delete, Some(vec![text("u1")]), None);
        push(&u, Op::Delete, Some(vec![text("u5")]), None);
        // A column added: keyed rows keep their keys, whole-row keys change.
        push(&t2, Op::Alter, None, None);
        push(
            &t2,
            Op::Insert,
            None,
            Some(vec![Value::Int(500), text("y"), text("z")]),
        );
        push(
            &t2,
            Op::Update,
            Some(vec![Value::Int(5), text("b5"), Value::Null]),
            Some(vec![Value::Int(5), text("b5"), text("y5")]),
        );
        push(&u2, Op::Alter, None, None);
        push(&u2, Op::Insert, None, Some(vec![text("u4"), Value::Int(1)]));
        push(&u2, Op::Delete, Some(vec![text("u3"), Value::Null]), None);
        for i in 401..=450 {
            push(
                &t2,
                Op::Insert,
                None,
                Some(vec![Value::Int(i), text("late"), Value::Null]),
            );
        }

        let mut results = Vec::new();
        for budget in [usize::MAX, 1, 700, 5_000] {
            let base = vault.open_base(&name).await.expect("open base");
            let mut stream = TenantStream::new(Some(base), budget, SharedSpill::default());
            for (schema, change) in &changes {
                stream.apply(schema, change).expect("apply");
            }
            assert_eq!(stream.spilled(), budget != usize::MAX, "budget {budget}");
            let mut tables = BTreeMap::new();
            for name in stream.schemas().into_keys() {
                let mut rows = Vec::new();
                stream.for_each_row(&name, |r| rows.push(r)).expect("rows");
                rows.sort_by_key(|r| format!("{r:?}"));
                tables.insert(name, rows);
            }
            results.push((budget, tables));
        }
        let (_, held) = &results[0];
        assert_eq!(held["t"].len(), 300 - 50 + 100 + 1 + 50, "{:?}", held["t"]);
        assert!(held["t"].contains(&vec![Value::Int(2001), text("moved"), Value::Null]));
        assert!(held["t"].contains(&vec![Value::Int(160), text("back"), Value::Null]));
        assert!(held["t"].contains(&vec![Value::Int(5), text("b5"), text("y5")]));
        assert_eq!(held["w"], vec![vec![Value::Int(1)], vec![Value::Int(2)]]);
        assert_eq!(held["v"].len(), 30);
        let u_want: Vec<Row> = [
            ("u2", Value::Null),
            ("u2", Value::Null),
            ("u4", Value::Int(1)),
            ("u5", Value::Null),
            ("u6", Value::Null),
        ]
        .into_iter()
        .map(|(v, n)| vec![text(v), n])
        .collect();
        let mut u_want = u_want;
        u_want.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(held["u"], u_want);
        for (budget, spilled) in &results[1..] {
            assert_eq!(spilled, held, "budget {budget}");
        }
    }

    /// A segment of tenant 1 inserting row `position`, covering (prev, position].
    fn linked(prev: u64, position: u64, generation: u32) -> Segment {
        let mut insert = change(Op::Insert, None, Some(vec![Value::Int(position as i64)]));
        insert.position = position;
        Segment {
            source: "s".into(),
            first: position,
            last: position,
            prev,
            generation,
            tables: vec![schema("t", &["id"], vec![0])],
            transactions: vec![Transaction {
                xid: position,
                position,
                commit_time_us: position as i64,
                changes: vec![insert],
            }],
        }
    }

    async fn rows_at(vault: &Vault, position: u64) -> Result<usize> {
        let history = SourceHistory::load(vault, "s").await?;
        let tenant = TenantKey::new("1");
        let states = history
            .states_at(vault, &BTreeSet::from([tenant.clone()]), position)
            .await?;
        Ok(states[&tenant].row_count())
    }

    /// Readers walk the segments by their links: a newer generation of a range (an
    /// interrupted purge) replaces the older one; a gap or an overlap is refused, naming
    /// the positions and the objects on either side.
    #[tokio::test]
    async fn readers_follow_the_links_between_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        vault
            .put_checkpoint(&crate::model::Checkpoint {
                source: "s".into(),
                position: 10,
                commit_time_us: 10,
                tables: vec![schema("t", &["id"], vec![0])],
                keymaps: Vec::new(),
            })
            .await
            .expect("checkpoint");
        let a = vault.put_segment(&linked(10, 20, 0)).await.expect("a");
        let b = vault.put_segment(&linked(20, 30, 0)).await.expect("b");
        let c = vault.put_segment(&linked(30, 40, 0)).await.expect("c");
        assert_eq!(rows_at(&vault, 40).await.expect("whole"), 3);
        assert_eq!(rows_at(&vault, 25).await.expect("inside"), 1);

        // b written again with its change gone (a purge that stopped before deleting b).
        let mut purged = linked(20, 30, 1);
        purged.transactions[0].changes.clear();
        let b1 = vault.put_segment(&purged).await.expect("b1");
        assert_eq!(rows_at(&vault, 40).await.expect("newest generation"), 2);
        vault.delete(&b1).await.expect("delete b1");

        // b gone: a gap between a and c.
        let moved = vault.read_segment(&b).await.expect("read b");
        vault.delete(&b).await.expect("delete b");
        let err = rows_at(&vault, 40).await.expect_err("gap");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let text = err.to_string();
        for needle in ["source s", "positions 21 to 30 are missing", &a, &c] {
            assert!(text.contains(needle), "{text} lacks {needle}");
        }
        // A target before the gap is still readable: only the replayed range counts.
        assert_eq!(rows_at(&vault, 20).await.expect("before the gap"), 1);
        vault.put_segment(&moved).await.expect("b back");

        // A segment whose link reaches back into its predecessor: an overlap.
        let overlap = vault
            .put_segment(&linked(35, 50, 0))
            .await
            .expect("overlap");
        let text = rows_at(&vault, 50).await.expect_err("overlap").to_string();
        assert!(
            text.contains("overlap") && text.contains(&overlap),
            "{text}"
        );
        vault.delete(&overlap).await.expect("delete");

        // The last segment gone while a checkpoint stands at its end: a gap at the head.
        vault
            .put_checkpoint(&crate::model::Checkpoint {
                source: "s".into(),
                position: 40,
                commit_time_us: 40,
                tables: vec![schema("t", &["id"], vec![0])],
                keymaps: Vec::new(),
            })
            .await
            .expect("checkpoint");
        vault.delete(&c).await.expect("delete c");
        let text = rows_at(&vault, 40).await.expect_err("tail").to_string();
        assert!(text.contains("positions 31 to 40 are missing"), "{text}");
    }
}
