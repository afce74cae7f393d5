//! The part of capture that every source kind shares: attributing raw row changes to
//! tenants, batching committed transactions into segments, writing them to the vault, and
//! the initial snapshot's bases and checkpoint. A source reader (sqlite.rs, postgres/)
//! feeds it and acknowledges to its database only what `flush` reports durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lifeboat_core::config::CaptureConfig;
use lifeboat_core::failpoint;
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{
    Base, BaseRow, Change, Checkpoint, Op, Row, Segment, TableSchema, TenantKey, Transaction,
};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::tenancy::{
    attribute, KeymapPair, Keymaps, RawChange, ResolvedTable, SourceTenancy, Tenancy,
};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::faults::{FaultKind, FaultStats, Retry};
use crate::keyindex::KeyIndex;
pub use crate::snapshot::Snapshot;
use crate::Stop;

/// Capture statistics, reported at the end of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureStats {
    pub source: String,
    pub transactions: u64,
    pub changes: u64,
    pub segments: u64,
    pub skipped_duplicates: u64,
    pub unattributed: u64,
    /// How capture found its local key-map index: `new` (first snapshot), `resumed` (it
    /// matched the vault) or `rebuilt` (from the vault's latest checkpoint).
    pub keymap_index: &'static str,
    /// Keys in the key maps when capture started.
    pub keymap_keys: u64,
    /// Commit-to-durable delays of the transactions captured.
    #[serde(skip)]
    pub lags: Lags,
    /// Transient faults met and retried, per kind; the same counters are live while the
    /// capture runs (docs/faults.md).
    #[serde(skip)]
    pub faults: Arc<FaultStats>,
}

/// Commit-to-durable delays, in a histogram of fixed size (three significant figures, from
/// 1 µs to a day): capture's memory does not grow with its run time.
#[derive(Debug, Clone, Default)]
pub struct Lags(Option<hdrhistogram::Histogram<u64>>);

impl Lags {
    const MAX_US: u64 = 86_400_000_000;

    /// Record one transaction's delay (a negative one, from clock skew, counts as 0; one
    /// longer than a day as a day).
    pub fn record(&mut self, lag_us: i64) {
        if self.0.is_none() {
            self.0 = hdrhistogram::Histogram::new_with_bounds(1, Self::MAX_US, 3).ok();
        }
        if let Some(histogram) = &mut self.0 {
            histogram.saturating_record(lag_us.clamp(0, Self::MAX_US as i64) as u64);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    /// p50 and p99, in milliseconds (`None` before the first transaction).
    pub fn percentiles_ms(&self) -> Option<(f64, f64)> {
        let histogram = self.0.as_ref().filter(|h| !h.is_empty())?;
        let at = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Some((at(0.50), at(0.99)))
    }
}

pub struct CaptureCore {
    pub source: String,
    config: CaptureConfig,
    tenancy: SourceTenancy,
    /// The key maps: changes since the last segment here, the rest in `index`.
    keymaps: Keymaps,
    index: KeyIndex,
    /// The latest checkpoint of the source as this capture knows it (resumed from, or
    /// written): a checkpoint's unchanged buckets refer to its chunks.
    checkpoint: Option<String>,
    /// Current schemas; a schema change appends a new entry.
    tables: Vec<TableSchema>,
    slots: HashMap<String, u32>,
    pending: Vec<Transaction>,
    pending_changes: usize,
    pending_since: Option<Instant>,
    open: Option<Transaction>,
    /// Highest position durable in the vault.
    head: u64,
    /// Highest position received: durable or pending.
    received: u64,
    head_time_us: i64,
    changes_since_base: BTreeMap<TenantKey, u64>,
    segments_since_checkpoint: u64,
    pub stats: CaptureStats,
    /// Transient faults: every vault write here, and the source readers' reconnects.
    pub retry: Retry,
    stop: Stop,
    /// The source's series: transactions, lag and head fed here; errors by the reader.
    pub metrics: CaptureMetrics,
}

/// Where a source stands in the vault when capture starts.
pub enum Start {
    /// No history: take the initial snapshot.
    Fresh,
    /// Resume after `position`.
    Resume { position: u64 },
}

impl CaptureCore {
    /// Load the source's state from the vault: its latest checkpoint, replaying the
    /// segments after it to rebuild the key maps and find the head. From then on, vault
    /// writes that fail transiently are retried until they succeed or `stop` is set, and
    /// counted in `faults`.
    pub async fn open(
        vault: &Vault,
        source: &str,
        tenancy: SourceTenancy,
        config: CaptureConfig,
        metrics: CaptureMetrics,
        stop: &Stop,
        faults: Arc<FaultStats>,
    ) -> Result<(CaptureCore, Start)> {
        let history = SourceHistory::load(vault, source).await?;
        let retry = Retry::new(source, &config, faults.clone(), metrics.clone());
        let dir = config.state_dir.clone().unwrap_or_else(default_state_dir);
        let index = KeyIndex::open(&dir, vault.id(), source)?;
        // Opened: no other capture of this source on this machine uses the directory.
        let spill = crate::snapshot::spill_dir(index.path());
        if crate::snapshot::remove_leftovers(&spill)? {
            tracing::info!(source, dir = %spill.display(), "removed the temporary files of a first snapshot that did not finish");
        }
        let mut core = CaptureCore {
            source: source.to_string(),
            config,
            keymaps: Keymaps::with_store(&tenancy, Arc::new(index.clone())),
            index,
            checkpoint: None,
            tables: Vec::new(),
            slots: HashMap::new(),
            tenancy,
            pending: Vec::new(),
            pending_changes: 0,
            pending_since: None,
            open: None,
            head: 0,
            received: 0,
            head_time_us: 0,
            changes_since_base: BTreeMap::new(),
            segments_since_checkpoint: 0,
            stats: CaptureStats {
                source: source.to_string(),
                faults,
                ..CaptureStats::default()
            },
            retry,
            stop: stop.clone(),
            metrics,
        };
        core.reset_tables();
        let Some(checkpoint_ref) = history.checkpoints.last() else {
            core.index.reset(vault.id(), source)?;
            core.stats.keymap_index = "new";
            return Ok((core, Start::Fresh));
        };
        // Its index only: the listings are read when the local index is rebuilt.
        let checkpoint = vault.read_checkpoint_index(&checkpoint_ref.name).await?;
        // The local index is used as it is only when it describes this vault's history
        // from its latest checkpoint on; otherwise it is rebuilt from that checkpoint.
        let state = core.index.state()?;
        let vault_head = history.latest_position().unwrap_or(checkpoint.position);
        let index_head = if state.vault.as_deref() == Some(vault.id())
            && state.source.as_deref() == Some(source)
            && state.checkpoint.as_deref() == Some(checkpoint_ref.name.as_str())
            && (checkpoint.position..=vault_head).contains(&state.head)
        {
            core.stats.keymap_index = "resumed";
            state.head
        } else {
            core.rebuild_index(vault, &checkpoint_ref.name, &checkpoint, &state)
                .await?;
            core.stats.keymap_index = "rebuilt";
            checkpoint.position
        };
        core.checkpoint = Some(checkpoint_ref.name.clone());
        core.head = checkpoint.position;
        core.head_time_us = checkpoint.commit_time_us;
        let tenancy = core.tenancy.clone();
        let mut replayed = 0u64;
        let mut head = core.head;
        let mut head_time = core.head_time_us;
        // The shapes the vault knows last: the stream resumes in that history, and a
        // table whose live shape differs gets its change when the stream describes it.
        let mut known: HashMap<String, TableSchema> = checkpoint
            .tables
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let keymaps = &mut core.keymaps;
        let index = &core.index;
        let mut failed: Option<Error> = None;
        history
            .for_each_transaction(vault, checkpoint.position, u64::MAX, |tables, tx| {
                for schema in tables {
                    known.insert(schema.name.clone(), schema.clone());
                }
                head = head.max(tx.position);
                head_time = tx.commit_time_us;
                replayed += 1;
                // The index already holds what is at or below its head.
                if tx.position <= index_head || failed.is_some() {
                    return;
                }
                for change in &tx.changes {
                    let Some(schema) = tables.get(change.table as usize) else {
                        continue;
                    };
                    if let Some(table) = tenancy.table(&schema.name) {
                        let mut table = table.clone();
                        table.schema = schema.clone();
                        keymaps.observe(&table, change);
                    }
                }
                keymaps.end_transaction();
                if keymaps.held() >= HELD_AT_MOST {
                    if let Err(e) = index.apply(keymaps.drain(), tx.position, false) {
                        failed = Some(e);
                    }
                }
            })
            .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        core.index.apply(core.keymaps.drain(), head, true)?;
        core.stats.keymap_keys = core.index.keys()?;
        let unknown: Vec<String> = core
            .tables
            .iter()
            .filter(|t| !known.contains_key(&t.name))
            .map(|t| t.name.clone())
            .collect();
        if !unknown.is_empty() {
            return Err(Error::config(format!(
                "source {source}: table {} holds tenant rows but is not in the vault's history \
                 (created or declared after capture first ran), so its existing rows were \
                 never snapshotted; capture stops rather than protect it only in part. Declare \
                 it global, or capture this source into a new vault (`lifeboat source drop \
                 {source}` first)",
                unknown.join(", ")
            )));
        }
        for schema in known.into_values() {
            if core
                .schema(&schema.name)
                .is_some_and(|current| *current != schema)
            {
                core.adopt_schema(&schema.name, schema.columns, schema.key)?;
            }
        }
        core.head = head;
        core.received = head;
        core.head_time_us = head_time;
        core.metrics.head(head_time);
        tracing::info!(
            source,
            position = core.head,
            replayed,
            "resuming capture from the vault"
        );
        let position = core.head;
        Ok((core, Start::Resume { position }))
    }

    /// Fill the local index from checkpoint `name` of the vault: each map's listing, its
    /// key-map chunks, then its deltas over them, each checked against its name and its
    /// reference.
    async fn rebuild_index(
        &mut self,
        vault: &Vault,
        name: &str,
        checkpoint: &Checkpoint,
        was: &crate::keyindex::IndexState,
    ) -> Result<()> {
        tracing::info!(
            source = %self.source,
            checkpoint = name,
            index = %self.index.path().display(),
            found = ?was.checkpoint,
            "rebuilding capture's key-map index from the vault"
        );
        self.index.reset(vault.id(), &self.source)?;
        let source = self.source.clone();
        let cannot_rebuild = |e: Error| {
            e.context(format!(
                "source {source}: capture cannot rebuild its key maps from checkpoint {name}"
            ))
        };
        let pairs: BTreeSet<KeymapPair> = self.keymaps.pairs().cloned().collect();
        let mut maps = Vec::new();
        for map in &checkpoint.keymaps {
            let pair = (map.table.clone(), map.column.clone());
            if !pairs.contains(&pair) {
                continue;
            }
            let chunks = vault
                .read_keymap_listing(&self.source, map)
                .await
                .map_err(cannot_rebuild)?;
            // A few chunks fetched at once, taken in one transaction.
            for batch in chunks.chunks(16) {
                let reads = futures::future::try_join_all(
                    batch
                        .iter()
                        .map(|chunk| vault.read_keymap_chunk(&self.source, map, chunk)),
                )
                .await
                .map_err(cannot_rebuild)?;
                let chunks: Vec<_> = batch
                    .iter()
                    .zip(reads.into_iter().map(|r| r.entries))
                    .collect();
                self.index.import_chunks(&pair, &chunks)?;
            }
            // Then its deltas over them, oldest first.
            for batch in map.deltas.chunks(16) {
                let reads = futures::future::try_join_all(
                    batch
                        .iter()
                        .map(|delta| vault.read_keymap_delta(&self.source, map, delta)),
                )
                .await
                .map_err(cannot_rebuild)?;
                self.index.import_deltas(&pair, map.bits, &reads)?;
            }
            maps.push((pair, map.bits, map.deltas.clone(), map.listing.clone()));
        }
        self.index.rebuilt(&maps, name, checkpoint.position)?;
        Ok(())
    }

    fn reset_tables(&mut self) {
        self.tables = self
            .tenancy
            .tenant_tables()
            .map(|t| t.schema.clone())
            .collect();
        self.slots = self
            .tables
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i as u32))
            .collect();
    }

    pub fn tenancy(&self) -> &SourceTenancy {
        &self.tenancy
    }

    /// The highest position durable in the vault.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The highest position received so far, durable or still pending.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The current slot of `table` in `tables`. Invariant: the tenancy's schema of a table
    /// is `tables[slot]` (`adopt_schema` and `change_schema` keep both in step).
    fn slot(&self, table: &str) -> Result<u32> {
        self.slots.get(table).copied().ok_or_else(|| {
            Error::source(format!(
                "source {}: change to table {table}, which capture does not protect",
                self.source
            ))
        })
    }

    fn table_rule<'a>(tenancy: &'a SourceTenancy, table: &str) -> Result<&'a ResolvedTable> {
        tenancy
            .table(table)
            .ok_or_else(|| Error::source(format!("table {table} vanished")))
    }

    /// The current captured schema of `table`.
    pub fn schema(&self, table: &str) -> Option<&TableSchema> {
        self.slots.get(table).map(|&s| &self.tables[s as usize])
    }

    /// Make `columns` the table's current schema without recording a change in history
    /// (at start-up, before anything is pending).
    fn adopt_schema(&mut self, table: &str, columns: Vec<String>, key: Vec<usize>) -> Result<()> {
        let slot = self.slot(table)?;
        self.retarget_tenancy(table, &columns, &key)?;
        self.tables[slot as usize] = TableSchema {
            name: table.to_string(),
            columns,
            key,
        };
        Ok(())
    }

    /// Point the table's tenancy at `columns`, finding its tenant column by name.
    fn retarget_tenancy(&mut self, table: &str, columns: &[String], key: &[usize]) -> Result<()> {
        let resolved = Self::table_rule(&self.tenancy, table)?;
        let needed = match &resolved.tenancy {
            Tenancy::Column(i) | Tenancy::Via { column: i, .. } => {
                resolved.schema.columns[*i].clone()
            }
            Tenancy::Global => return Ok(()),
        };
        let Some(new_index) = columns.iter().position(|c| *c == needed) else {
            return Err(Error::source(format!(
                "source {}: table {table} lost its tenant column {needed}; capture cannot \
                 attribute its rows any more",
                self.source
            )));
        };
        if let Some(entry) = self
            .tenancy
            .tables
            .iter_mut()
            .find(|t| t.schema.name == table)
        {
            entry.tenancy = match &entry.tenancy {
                Tenancy::Column(_) => Tenancy::Column(new_index),
                Tenancy::Via {
                    parent,
                    parent_column,
                    ..
                } => Tenancy::Via {
                    column: new_index,
                    parent: parent.clone(),
                    parent_column: parent_column.clone(),
                },
                Tenancy::Global => Tenancy::Global,
            };
            entry.schema.columns = columns.to_vec();
            entry.schema.key = key.to_vec();
        }
        Ok(())
    }

    /// The table's columns changed (PostgreSQL sent a new Relation). Columns may be added
    /// or dropped; the tenant column and `tenant_via` column must stay.
    pub fn change_schema(
        &mut self,
        table: &str,
        columns: Vec<String>,
        key: Vec<usize>,
    ) -> Result<()> {
        if self.schema(table).is_some_and(|s| s.columns == columns) {
            return Ok(());
        }
        self.retarget_tenancy(table, &columns, &key)?;
        let schema = TableSchema {
            name: table.to_string(),
            columns,
            key,
        };
        tracing::info!(source = %self.source, table, "table schema changed: {:?}", schema.columns);
        let slot = self.tables.len() as u32;
        self.slots.insert(table.to_string(), slot);
        self.tables.push(schema);
        // Every tenant's rows take the new shape at this point of history, whether or
        // not the tenant changes afterwards.
        if let Some(tx) = self.open.as_mut() {
            tx.changes.push(Change {
                tenant: None,
                table: slot,
                op: Op::Alter,
                old: None,
                new: None,
                position: 0,
                time_us: None,
            });
        }
        Ok(())
    }

    // --- the initial snapshot --------------------------------------------------------

    /// Begin the initial snapshot: feed every row with `snapshot_row`, parents' tables
    /// before children's (the tenancy's order), then `finish_snapshot`. Rows past
    /// `[capture] snapshot_buffer_bytes` wait in temporary files beside the key-map index.
    pub fn start_snapshot(&self) -> Result<Snapshot> {
        Snapshot::create(
            crate::snapshot::spill_dir(self.index.path()),
            self.config.snapshot_buffer_bytes,
        )
    }

    pub fn snapshot_row(&mut self, snapshot: &mut Snapshot, table: &str, row: Row) -> Result<()> {
        let slot = self.slot(table)?;
        let resolved = Self::table_rule(&self.tenancy, table)?;
        let mut out = Vec::with_capacity(1);
        attribute(
            &mut self.keymaps,
            slot,
            resolved,
            RawChange {
                op: Op::Insert,
                old: None,
                new: Some(row),
                position: 0,
            },
            &mut out,
        )?;
        // The snapshot only inserts: each row may end its own transaction, and the key
        // maps go to the index (not yet durable, matching no checkpoint) as they grow.
        self.keymaps.end_transaction();
        if self.keymaps.held() >= HELD_AT_MOST {
            self.index.apply(self.keymaps.drain(), 0, false)?;
        }
        for change in out {
            match (change.tenant, change.new) {
                (Some(tenant), Some(values)) => snapshot.push(
                    tenant,
                    BaseRow {
                        table: slot,
                        values,
                    },
                )?,
                _ => snapshot.unattributed += 1,
            }
        }
        Ok(())
    }

    /// Write one base per tenant and the first checkpoint, all at `position`.
    pub async fn finish_snapshot(
        &mut self,
        vault: &Vault,
        snapshot: Snapshot,
        position: u64,
        commit_time_us: i64,
    ) -> Result<usize> {
        self.keymaps.end_transaction();
        self.index.apply(self.keymaps.drain(), position, true)?;
        if snapshot.unattributed > 0 {
            tracing::warn!(
                source = %self.source,
                rows = snapshot.unattributed,
                "rows whose tenant could not be found (NULL tenant column or a reference to \
                 a missing parent) are not protected"
            );
        }
        let mut tenants = 0;
        let mut rows_by_tenant = snapshot.into_tenants()?;
        while let Some((tenant, rows)) = rows_by_tenant.next_tenant()? {
            tenants += 1;
            // Only the tables this tenant has rows in, renumbered.
            let used: BTreeSet<u32> = rows.iter().map(|r| r.table).collect();
            let renumber: HashMap<u32, u32> = used
                .iter()
                .enumerate()
                .map(|(i, &t)| (t, i as u32))
                .collect();
            let base = Base {
                source: self.source.clone(),
                tenant,
                position,
                commit_time_us,
                tables: used
                    .iter()
                    .map(|&t| self.tables[t as usize].clone())
                    .collect(),
                rows: rows
                    .into_iter()
                    .map(|r| BaseRow {
                        table: renumber[&r.table],
                        values: r.values,
                    })
                    .collect(),
            };
            self.retry
                .run(FaultKind::Vault, &self.stop, || vault.put_base(&base))
                .await?;
            failpoint::hit("capture.after-base");
        }
        drop(rows_by_tenant);
        self.head = position;
        self.received = position;
        self.head_time_us = commit_time_us;
        self.metrics.head(commit_time_us);
        self.write_checkpoint(vault).await?;
        Ok(tenants)
    }

    /// Write a checkpoint at the head: the key-map chunks of the buckets changed since
    /// the previous one, then the checkpoint. Every bucket is written again when the
    /// vault's latest checkpoint is not the one this capture knows (a purge rewrote it):
    /// the chunks it referred to may be gone.
    pub async fn write_checkpoint(&mut self, vault: &Vault) -> Result<()> {
        let source = self.source.clone();
        let latest = self
            .retry
            .run(FaultKind::Vault, &self.stop, || {
                vault.list_checkpoints(&source)
            })
            .await?
            .pop()
            .map(|c| c.name);
        let full = latest != self.checkpoint;
        if full && self.checkpoint.is_some() {
            tracing::info!(source = %self.source, "the vault's latest checkpoint changed under capture; writing every key-map bucket again");
        }
        let pairs: Vec<KeymapPair> = self.keymaps.pairs().cloned().collect();
        let (index, head) = (self.index.clone(), self.head);
        let prepared = self
            .retry
            .run(FaultKind::Vault, &self.stop, || {
                index.prepare_checkpoint(vault, &source, &pairs, head, full)
            })
            .await?;
        let checkpoint = Checkpoint {
            source: self.source.clone(),
            position: self.head,
            commit_time_us: self.head_time_us,
            tables: self.tables.clone(),
            keymaps: prepared.keymaps.clone(),
        };
        let name = self
            .retry
            .run(FaultKind::Vault, &self.stop, || {
                vault.put_checkpoint(&checkpoint)
            })
            .await?;
        let index = self.index.clone();
        let committed = name.clone();
        tokio::task::spawn_blocking(move || index.committed(prepared, &committed, head))
            .await
            .map_err(|e| Error::source(format!("capture's key-map index: {e}")))??;
        self.checkpoint = Some(name);
        self.segments_since_checkpoint = 0;
        failpoint::hit("capture.after-checkpoint");
        Ok(())
    }

    // --- the stream --------------------------------------------------------------------

    /// A transaction begins at `position` (PostgreSQL: where its commit record starts;
    /// SQLite: its first change). Returns false when it lies wholly before what was
    /// received (a replay after a crash or a reconnect) and must be skipped. A commit
    /// record may start exactly where the previous one ended, so equality is not a
    /// replay: `commit` decides then, by the commit's end position.
    pub fn begin(&mut self, xid: u64, position: u64) -> bool {
        if position != 0 && position < self.received {
            self.open = None;
            self.stats.skipped_duplicates += 1;
            return false;
        }
        self.open = Some(Transaction {
            xid,
            position,
            commit_time_us: 0,
            changes: Vec::new(),
        });
        true
    }

    pub fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// One row change of the open transaction.
    pub fn change(
        &mut self,
        table: &str,
        op: Op,
        old: Option<Row>,
        new: Option<Row>,
        position: u64,
        time_us: Option<i64>,
    ) -> Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        let slot = self.slot(table)?;
        let resolved = Self::table_rule(&self.tenancy, table)?;
        let mut out = Vec::with_capacity(2);
        attribute(
            &mut self.keymaps,
            slot,
            resolved,
            RawChange {
                op,
                old,
                new,
                position,
            },
            &mut out,
        )?;
        let tx = self.open.as_mut().expect("checked above");
        for mut change in out {
            change.time_us = time_us;
            if change.tenant.is_none() && !change.op.is_for_every_tenant() {
                self.stats.unattributed += 1;
                tracing::warn!(source = %self.source, table, "a {} whose tenant cannot be found is not protected", change.op.as_str());
                continue;
            }
            if let Some(tenant) = &change.tenant {
                *self.changes_since_base.entry(tenant.clone()).or_default() += 1;
            }
            tx.changes.push(change);
        }
        Ok(())
    }

    /// The open transaction committed at `position`.
    pub fn commit(&mut self, position: u64, commit_time_us: i64) {
        self.keymaps.end_transaction();
        let Some(mut tx) = self.open.take() else {
            return;
        };
        if position <= self.received {
            self.stats.skipped_duplicates += 1;
            return;
        }
        self.received = position;
        tx.position = position;
        tx.commit_time_us = commit_time_us;
        // PostgreSQL learns a transaction's position only at its commit.
        for change in &mut tx.changes {
            if change.position == 0 {
                change.position = position;
            }
        }
        self.stats.transactions += 1;
        self.stats.changes += tx.changes.len() as u64;
        self.pending_changes += tx.changes.len();
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(tx);
    }

    /// Drop a transaction that did not finish (the connection broke mid-way): it is
    /// received again whole.
    pub fn abandon_open(&mut self) {
        self.open = None;
        self.keymaps.abandon_transaction();
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// True when the pending transactions should be written now.
    pub fn flush_due(&self) -> bool {
        self.pending_changes >= self.config.segment_max_changes
            || self.pending_since.is_some_and(|since| {
                since.elapsed() >= Duration::from_millis(self.config.flush_interval_ms)
            })
    }

    /// Write the pending transactions as one segment. Returns the new durable head when
    /// something was written: only then may the source forget those changes.
    pub async fn flush(&mut self, vault: &Vault) -> Result<Option<u64>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let transactions = std::mem::take(&mut self.pending);
        // Named by its first change's position (an SQLite group's first entry) so that a
        // reader can tell from the name alone whether it reaches back to a target.
        let first = transactions
            .first()
            .map(|t| t.changes.first().map_or(t.position, |c| c.position))
            .unwrap_or(0);
        let last = transactions.last().map(|t| t.position).unwrap_or(0);
        let last_time = transactions.last().map(|t| t.commit_time_us).unwrap_or(0);
        // Only the schemas the segment uses, renumbered.
        let used: BTreeSet<u32> = transactions
            .iter()
            .flat_map(|t| t.changes.iter().map(|c| c.table))
            .collect();
        let renumber: HashMap<u32, u32> = used
            .iter()
            .enumerate()
            .map(|(i, &t)| (t, i as u32))
            .collect();
        let mut transactions = transactions;
        for tx in &mut transactions {
            for change in &mut tx.changes {
                change.table = renumber[&change.table];
            }
        }
        let segment = Segment {
            source: self.source.clone(),
            first,
            last,
            prev: self.head,
            generation: 0,
            tables: used
                .iter()
                .map(|&t| self.tables[t as usize].clone())
                .collect(),
            transactions,
        };
        failpoint::hit("capture.before-segment");
        // Written again whole after a transient failure: the name is the content's, so a
        // write that landed before its error was reported lands again harmlessly.
        self.retry
            .run(FaultKind::Vault, &self.stop, || vault.put_segment(&segment))
            .await?;
        failpoint::hit("capture.after-segment");
        // The key maps as of the segment's end go to the index only now that it is
        // durable: after a crash the index describes a position the vault has. That
        // commit is not synced to disk (only a checkpoint's is): a crash loses at most
        // the entries since the latest checkpoint, which `open` replays from the
        // segments, and the source's writes do not share the disk with a sync per segment.
        let changes = self.keymaps.drain();
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || index.apply(changes, last, false))
            .await
            .map_err(|e| Error::source(format!("capture's key-map index: {e}")))??;
        let now = lifeboat_core::time::now_us();
        for tx in &segment.transactions {
            self.stats.lags.record(now - tx.commit_time_us);
            self.metrics.durable(now - tx.commit_time_us);
        }
        self.metrics.head(last_time);
        self.stats.segments += 1;
        self.pending_changes = 0;
        self.pending_since = None;
        self.head = last;
        self.head_time_us = last_time;
        self.segments_since_checkpoint += 1;
        if self.segments_since_checkpoint >= 64 {
            self.write_checkpoint(vault).await?;
        }
        Ok(Some(last))
    }

    /// Compact the tenants whose changes since their latest base passed the threshold.
    pub async fn compact_due(&mut self, vault: &Vault) -> Result<usize> {
        if !self.pending.is_empty() {
            return Ok(0);
        }
        let due: BTreeSet<TenantKey> = self
            .changes_since_base
            .iter()
            .filter(|(_, &n)| n >= self.config.compact_after_changes)
            .map(|(t, _)| t.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let source = self.source.clone();
        let written = self
            .retry
            .run(FaultKind::Vault, &self.stop, || {
                lifeboat_core::compaction::compact(vault, &source, Some(&due))
            })
            .await?;
        for tenant in &due {
            self.changes_since_base.remove(tenant);
        }
        tracing::info!(source = %self.source, bases = written, "compacted tenants");
        Ok(written)
    }

    /// A clean stop: write what is pending and a checkpoint.
    pub async fn finish(&mut self, vault: &Vault) -> Result<Option<u64>> {
        let head = self.flush(vault).await?;
        if self.segments_since_checkpoint > 0 {
            self.write_checkpoint(vault).await?;
        }
        Ok(head)
    }
}

/// Key-map entries held in memory before they go to the local index (a long replay, the
/// initial snapshot).
const HELD_AT_MOST: usize = 100_000;

/// Where capture keeps its local index without `[capture] state_dir`:
/// `$XDG_STATE_HOME/lifeboat`, or `~/.local/state/lifeboat`.
pub fn default_state_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state"))
        })
        .unwrap_or_else(std::env::temp_dir)
        .join("lifeboat")
}

#[cfg(test)]
mod tests {
    use super::Lags;

    #[test]
    fn lags_are_kept_in_fixed_memory_with_their_percentiles() {
        let mut lags = Lags::default();
        assert_eq!(lags.percentiles_ms(), None);
        // A million transactions: 1 ms to 1,000 ms, evenly; a negative lag counts as 0.
        for i in 0..1_000_000i64 {
            lags.record((i % 1000 + 1) * 1000);
        }
        lags.record(-5);
        assert_eq!(lags.count(), 1_000_001);
        let (p50, p99) = lags.percentiles_ms().expect("percentiles");
        assert!((499.0..=502.0).contains(&p50), "p50 {p50}");
        assert!((989.0..=992.0).contains(&p99), "p99 {p99}");
    }
}
