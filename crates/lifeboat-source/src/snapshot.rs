//! The initial snapshot's rows, grouped by tenant in bounded memory. Rows arrive table by
//! table (parents first) and tenants interleave; a base holds one tenant's rows. Rows are
//! held by tenant up to a budget (`[capture] snapshot_buffer_bytes`); past it, the held rows
//! are written to a run file, in tenant order, and memory starts over. When the bases are
//! written, the runs are merged back tenant by tenant: memory then holds one tenant's rows
//! plus one group of rows per run.
//!
//! A run file is a zstd stream of MessagePack records, each `Some((tenant, rows))` with at
//! most `GROUP_ROWS` rows, ending with `None`. A tenant's rows keep their arrival order: a
//! run holds rows that arrived before those of any later run, and the merge takes a
//! tenant's groups run by run. Run files live in one directory per vault and source under
//! capture's state directory; it is removed when the snapshot is dropped (bases written,
//! or an error), and by the next capture of the source when the process died
//! (`remove_leftovers`).

use std::cmp::Reverse;
use std::collections::{btree_map, BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use lifeboat_core::failpoint;
use lifeboat_core::model::{BaseRow, TenantKey, Value};
use lifeboat_core::{Error, Result};

/// Rows per record of a run file: what the merge holds per run.
const GROUP_ROWS: usize = 1024;
/// Runs of one level merged into one of the next.
const FAN_IN: usize = 16;

type Group = (TenantKey, Vec<BaseRow>);

/// The spill directory of a vault's source, beside its key-map index file.
pub fn spill_dir(index_path: &Path) -> PathBuf {
    index_path.with_extension("snapshot")
}

/// Remove run files a capture that died left behind. Returns whether there were any.
pub fn remove_leftovers(dir: &Path) -> Result<bool> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(dir, "cannot remove", e)),
    }
}

fn io_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::source(format!(
        "{what} the first snapshot's temporary file {}: {e}",
        path.display()
    ))
}

/// The directory of run files, removed with everything in it when dropped.
/// (`None` once handed on.)
struct SpillDir(Option<PathBuf>);

impl SpillDir {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let Some(dir) = self.0.take() else {
            return;
        };
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), "cannot remove the first snapshot's temporary files: {e}");
            }
        }
    }
}

/// Rows of the initial snapshot, by tenant.
pub struct Snapshot {
    // Declared before `dir`: open files close before the directory goes.
    rows: BTreeMap<TenantKey, Vec<BaseRow>>,
    held: usize,
    budget: usize,
    /// Run files in arrival order, with their merge level.
    runs: Vec<(PathBuf, u32)>,
    made: u64,
    pub(crate) unattributed: u64,
    dir: SpillDir,
}

impl Snapshot {
    /// An empty snapshot spilling into `dir` (emptied first) past `budget` bytes of rows.
    pub fn create(dir: PathBuf, budget: u64) -> Result<Snapshot> {
        remove_leftovers(&dir)?;
        Ok(Snapshot {
            rows: BTreeMap::new(),
            held: 0,
            budget: usize::try_from(budget).unwrap_or(usize::MAX).max(1),
            runs: Vec::new(),
            made: 0,
            unattributed: 0,
            dir: SpillDir(Some(dir)),
        })
    }

    /// Run files written so far (and not yet merged into others).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    pub fn push(&mut self, tenant: TenantKey, row: BaseRow) -> Result<()> {
        self.held += row_bytes(&row);
        match self.rows.get_mut(&tenant) {
            Some(rows) => rows.push(row),
            None => {
                self.held += std::mem::size_of::<Group>() + tenant.0.len() + 64;
                self.rows.insert(tenant, vec![row]);
            }
        }
        if self.held >= self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn next_path(&mut self) -> Result<PathBuf> {
        let dir = self.dir.path().to_path_buf();
        if self.made == 0 {
            std::fs::create_dir_all(&dir)
                .map_err(|e| io_error(&dir, "cannot create the directory of", e))?;
        }
        self.made += 1;
        Ok(dir.join(format!("run-{:06}.zst", self.made)))
    }

    /// Write the held rows to a new run file.
    fn spill(&mut self) -> Result<()> {
        let rows = std::mem::take(&mut self.rows);
        self.held = 0;
        let path = self.next_path()?;
        let mut run = RunWriter::create(&path)?;
        for (tenant, rows) in rows {
            run.write(&tenant, &rows)?;
        }
        run.finish()?;
        self.runs.push((path, 0));
        failpoint::hit("capture.snapshot-spilled");
        // FAN_IN runs of one level, the latest ones, become one of the next level: they
        // are consecutive, so the merged run's rows still arrived after those of the runs
        // before it and before those of the runs after it; each row is merged again once a
        // level.
        while self.runs.len() >= FAN_IN {
            let tail = self.runs.len() - FAN_IN;
            let level = self.runs[tail].1;
            if self.runs[tail..].iter().any(|(_, l)| *l != level) {
                break;
            }
            let merged = self.next_path()?;
            let paths: Vec<PathBuf> = self.runs[tail..].iter().map(|(p, _)| p.clone()).collect();
            let mut merge = Merge::open(&paths)?;
            let mut run = RunWriter::create(&merged)?;
            while let Some((tenant, rows)) = merge.next_group()? {
                run.write(&tenant, &rows)?;
            }
            run.finish()?;
            drop(merge);
            for old in &paths {
                std::fs::remove_file(old).map_err(|e| io_error(old, "cannot remove", e))?;
            }
            self.runs.truncate(tail);
            self.runs.push((merged, level + 1));
        }
        Ok(())
    }

    /// The tenants with their rows, in tenant order, each tenant's rows in arrival order.
    pub fn into_tenants(mut self) -> Result<Tenants> {
        let source = if self.runs.is_empty() {
            TenantSource::Memory(std::mem::take(&mut self.rows).into_iter())
        } else {
            if !self.rows.is_empty() {
                self.spill()?;
            }
            let paths: Vec<PathBuf> = self.runs.iter().map(|(p, _)| p.clone()).collect();
            TenantSource::Merge(Merge::open(&paths)?)
        };
        Ok(Tenants {
            source,
            _dir: SpillDir(self.dir.0.take()),
        })
    }
}

/// What `into_tenants` hands out; holds the run files until dropped.
pub struct Tenants {
    source: TenantSource,
    _dir: SpillDir,
}

enum TenantSource {
    Memory(btree_map::IntoIter<TenantKey, Vec<BaseRow>>),
    Merge(Merge),
}

impl Tenants {
    pub fn next_tenant(&mut self) -> Result<Option<Group>> {
        match &mut self.source {
            TenantSource::Memory(rows) => Ok(rows.next()),
            TenantSource::Merge(merge) => {
                let Some((tenant, mut rows)) = merge.next_group()? else {
                    return Ok(None);
                };
                while merge.next_is(&tenant) {
                    if let Some((_, more)) = merge.next_group()? {
                        rows.extend(more);
                    }
                }
                Ok(Some((tenant, rows)))
            }
        }
    }
}

/// A row's share of memory, as the allocator sees it: each allocation rounded up to 16
/// bytes plus 16 of overhead, and the tenant's vector of rows up to twice the rows it holds.
fn row_bytes(row: &BaseRow) -> usize {
    let allocation = |bytes: usize| {
        if bytes == 0 {
            0
        } else {
            bytes.div_ceil(16) * 16 + 16
        }
    };
    let heap: usize = row
        .values
        .iter()
        .map(|v| match v {
            Value::Text(s) => allocation(s.capacity()),
            Value::Blob(b) => allocation(b.capacity()),
            _ => 0,
        })
        .sum();
    2 * std::mem::size_of::<BaseRow>()
        + allocation(row.values.capacity() * std::mem::size_of::<Value>())
        + heap
}

struct RunWriter {
    path: PathBuf,
    out: zstd::stream::write::Encoder<'static, BufWriter<File>>,
}

impl RunWriter {
    fn create(path: &Path) -> Result<RunWriter> {
        let file = File::create(path).map_err(|e| io_error(path, "cannot create", e))?;
        let out = zstd::stream::write::Encoder::new(BufWriter::with_capacity(64 << 10, file), 1)
            .map_err(|e| io_error(path, "cannot create", e))?;
        Ok(RunWriter {
            path: path.to_path_buf(),
            out,
        })
    }

    fn write(&mut self, tenant: &TenantKey, rows: &[BaseRow]) -> Result<()> {
        for group in rows.chunks(GROUP_ROWS) {
            rmp_serde::encode::write(&mut self.out, &Some((tenant, group)))
                .map_err(|e| io_error(&self.path, "cannot write", e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let end: Option<Group> = None;
        rmp_serde::encode::write(&mut self.out, &end)
            .map_err(|e| io_error(&self.path, "cannot write", e))?;
        let mut file = self
            .out
            .finish()
            .map_err(|e| io_error(&self.path, "cannot write", e))?;
        file.flush()
            .map_err(|e| io_error(&self.path, "cannot write", e))
    }
}

struct RunReader {
    path: PathBuf,
    input: zstd::stream::read::Decoder<'static, BufReader<File>>,
}

impl RunReader {
    fn open(path: &Path) -> Result<RunReader> {
        let file = File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
        let input =
            zstd::stream::read::Decoder::new(file).map_err(|e| io_error(path, "cannot open", e))?;
        Ok(RunReader {
            path: path.to_path_buf(),
            input,
        })
    }

    fn next(&mut self) -> Result<Option<Group>> {
        rmp_serde::decode::from_read(&mut self.input)
            .map_err(|e| io_error(&self.path, "cannot read", e))
    }
}

/// Runs merged by tenant; for one tenant, runs in order.
struct Merge {
    runs: Vec<RunReader>,
    heads: Vec<Vec<BaseRow>>,
    order: BinaryHeap<Reverse<(TenantKey, usize)>>,
}

impl Merge {
    fn open(paths: &[PathBuf]) -> Result<Merge> {
        let mut merge = Merge {
            runs: Vec::with_capacity(paths.len()),
            heads: Vec::with_capacity(paths.len()),
            order: BinaryHeap::with_capacity(paths.len()),
        };
        for (i, path) in paths.iter().enumerate() {
            merge.runs.push(RunReader::open(path)?);
            merge.heads.push(Vec::new());
            merge.advance(i)?;
        }
        Ok(merge)
    }

    fn advance(&mut self, run: usize) -> Result<()> {
        if let Some((tenant, rows)) = self.runs[run].next()? {
            self.heads[run] = rows;
            self.order.push(Reverse((tenant, run)));
        }
        Ok(())
    }

    fn next_is(&self, tenant: &TenantKey) -> bool {
        self.order.peek().is_some_and(|Reverse((t, _))| t == tenant)
    }

    fn next_group(&mut self) -> Result<Option<Group>> {
        let Some(Reverse((tenant, run))) = self.order.pop() else {
            return Ok(None);
        };
        let rows = std::mem::take(&mut self.heads[run]);
        self.advance(run)?;
        Ok(Some((tenant, rows)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: u32, i: i64, text: &str) -> BaseRow {
        BaseRow {
            table,
            values: vec![
                Value::Int(i),
                Value::Text(text.to_string()),
                Value::Real(f64::from(i as i32) / 3.0),
                Value::Blob(vec![i as u8, 0, 255]),
                Value::Null,
            ],
        }
    }

    /// The rows of `pushes` by tenant, as they would be held without spilling.
    fn expected(pushes: &[(TenantKey, BaseRow)]) -> Vec<Group> {
        let mut by: BTreeMap<TenantKey, Vec<BaseRow>> = BTreeMap::new();
        for (t, r) in pushes {
            by.entry(t.clone()).or_default().push(r.clone());
        }
        by.into_iter().collect()
    }

    fn drain(snapshot: Snapshot) -> Vec<Group> {
        let mut tenants = snapshot.into_tenants().expect("tenants");
        let mut out = Vec::new();
        while let Some(group) = tenants.next_tenant().expect("next") {
            out.push(group);
        }
        out
    }

    fn pushes(n: i64) -> Vec<(TenantKey, BaseRow)> {
        // Three tables, tenants interleaved, one big tenant spanning many groups.
        (0..n)
            .map(|i| {
                let tenant = if i % 3 == 0 {
                    "big".to_string()
                } else {
                    format!("t{}", (i * 7919) % 97)
                };
                (
                    TenantKey(tenant),
                    row((i * 3 / n) as u32, i, &"x".repeat((i % 50) as usize)),
                )
            })
            .collect()
    }

    #[test]
    fn spilled_rows_come_back_by_tenant_in_arrival_order() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("s.snapshot");
        for (rows, budget) in [
            (600, 1u64),
            (20_000, 4096),
            (20_000, 100_000),
            (20_000, 1 << 40),
        ] {
            let all = pushes(rows);
            let mut snapshot = Snapshot::create(dir.clone(), budget).expect("create");
            for (t, r) in &all {
                snapshot.push(t.clone(), r.clone()).expect("push");
            }
            let spilled = snapshot.runs() > 0;
            assert_eq!(spilled, budget < 1 << 40, "budget {budget}");
            assert!(snapshot.runs() < FAN_IN * 3, "{} runs", snapshot.runs());
            assert_eq!(drain(snapshot), expected(&all), "budget {budget}");
            assert!(!dir.exists(), "run files left behind (budget {budget})");
        }
    }

    #[test]
    fn dropped_snapshot_and_leftovers_leave_no_files() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("s.snapshot");
        let mut snapshot = Snapshot::create(dir.clone(), 1000).expect("create");
        for (t, r) in pushes(5000) {
            snapshot.push(t, r).expect("push");
        }
        assert!(std::fs::read_dir(&dir).expect("dir").count() > 0);
        drop(snapshot);
        assert!(!dir.exists());
        // What a killed capture leaves: removed by the next one.
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("run-000001.zst"), b"partial").expect("write");
        assert!(remove_leftovers(&dir).expect("remove"));
        assert!(!dir.exists());
        assert!(!remove_leftovers(&dir).expect("again"));
    }

    #[test]
    fn a_damaged_run_file_is_a_clear_error() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("s.snapshot");
        let mut snapshot = Snapshot::create(dir.clone(), 1000).expect("create");
        for (t, r) in pushes(3000) {
            snapshot.push(t, r).expect("push");
        }
        let first = snapshot.runs[0].0.clone();
        let name = first
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&first).expect("read");
        std::fs::write(&first, &bytes[..bytes.len() / 2]).expect("truncate");
        let mut tenants = match snapshot.into_tenants() {
            Ok(tenants) => tenants,
            Err(e) => {
                assert!(e.to_string().contains(&name), "{e}");
                return;
            }
        };
        let err = loop {
            match tenants.next_tenant() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("a truncated run read to its end"),
                Err(e) => break e,
            }
        };
        assert!(err.to_string().contains(&name), "{err}");
        drop(tenants);
        assert!(!dir.exists());
    }
}
