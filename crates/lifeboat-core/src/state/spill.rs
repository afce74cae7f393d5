//! Changes since a base that outgrow their memory budget: sorted runs written to an
//! unnamed temporary file and merged back, the newest change of a key winning, while a
//! table is read. The base's rows of such a table are sorted the same way and joined in
//! the same merge, so no key is held in memory beyond the budget.
//!
//! A run is a sequence of entries sorted by their key's encoding (`Value::feed` of each key
//! column): `u32` key length, key, kind byte, `u32` row length, the row in MessagePack.
//! Runs carry a rank: a later run's change to a key replaces an earlier one's; base rows
//! (rank 0) are below every change. The streams opened together share one file: a run is
//! written in chunks, each at a place reserved for it, so runs written at once (tenants
//! read on several threads) interleave without locking. The file has no name, so the
//! system frees it when it is closed, however the process ends.
//!
//! `RowFile` sets rows aside one by one in an unnamed temporary file of its own, in the
//! same MessagePack encoding, and reads each back by its place: restore's rows of a table
//! that references itself that must wait for the rows they reference.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Row, TableSchema, Value};

/// The variable that sets the budget, in bytes (tests and benchmarks).
pub const BUDGET_VARIABLE: &str = "LIFEBOAT_RESTORE_MEMORY_BYTES";

/// How much memory the changes since the bases of the tenants read together may take
/// before they are spilled, roughly.
const DEFAULT_BUDGET: usize = 64 << 20;

/// How many runs one merge reads at once.
const FAN_IN: usize = 32;

/// Each run being merged reads through a buffer of this size.
const READ_BUFFER: usize = 32 * 1024;

/// A run is written in chunks of about this size.
const WRITE_CHUNK: usize = 256 * 1024;

/// The memory budget: `LIFEBOAT_RESTORE_MEMORY_BYTES` when set, else 64 MiB.
pub fn budget() -> Result<usize> {
    match std::env::var(BUDGET_VARIABLE) {
        Err(_) => Ok(DEFAULT_BUDGET),
        Ok(v) => v.trim().parse().map_err(|_| {
            Error::config(format!(
                "{BUDGET_VARIABLE} must be a number of bytes, not {v:?}"
            ))
        }),
    }
}

/// What an entry says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key's row was removed by a change.
    Removed = 0,
    /// A change left this row.
    Present = 1,
    /// A base row (older than every change).
    Base = 2,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte {
            0 => Some(Kind::Removed),
            1 => Some(Kind::Present),
            2 => Some(Kind::Base),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub key: Vec<u8>,
    pub kind: Kind,
    pub row: Row,
}

impl Entry {
    fn bytes(&self) -> usize {
        std::mem::size_of::<Entry>() + self.key.len() + row_bytes(&self.row)
    }
}

/// Roughly how much memory `row` takes.
pub fn row_bytes(row: &[Value]) -> usize {
    std::mem::size_of::<Row>()
        + row
            .iter()
            .map(|v| {
                std::mem::size_of::<Value>()
                    + match v {
                        Value::Text(s) => s.len(),
                        Value::Blob(b) => b.len(),
                        _ => 0,
                    }
            })
            .sum::<usize>()
}

/// The encoding of a key's values, which runs are sorted by.
pub fn encode_values(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        value.feed(&mut |bytes| out.extend_from_slice(bytes));
    }
    out
}

/// The encoding of `row`'s key in `schema` (equal to `encode_values(&schema.row_key(row))`).
pub fn encode_key(schema: &TableSchema, row: &[Value]) -> Vec<u8> {
    if schema.key.is_empty() {
        return encode_values(row);
    }
    let mut out = Vec::new();
    for &i in &schema.key {
        row.get(i)
            .unwrap_or(&Value::Null)
            .feed(&mut |bytes| out.extend_from_slice(bytes));
    }
    out
}

fn temp_error(e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Vault,
        format!(
            "cannot use a temporary file in {} (set TMPDIR to a directory with room): {e}",
            std::env::temp_dir().display()
        ),
    )
}

fn bad_run() -> Error {
    Error::new(
        ErrorKind::Vault,
        "a temporary file of changes read back differs from what was written",
    )
}

/// One sorted run: where its chunks are in the spill file, in order, and its rank.
#[derive(Debug, Clone)]
pub struct Run {
    chunks: Vec<(u64, u64)>,
    pub rank: u64,
}

/// The unnamed temporary file runs are written to.
pub struct SpillFile {
    file: File,
    /// Where the next chunk goes.
    end: AtomicU64,
}

impl SpillFile {
    pub fn create() -> Result<SpillFile> {
        let file = tempfile::tempfile().map_err(temp_error)?;
        Ok(SpillFile {
            file,
            end: AtomicU64::new(0),
        })
    }

    /// Write `entries` (sorted by key) as one run of rank `rank`.
    pub fn write_run(
        &self,
        rank: u64,
        entries: impl IntoIterator<Item = Result<Entry>>,
    ) -> Result<Run> {
        let mut chunks = Vec::new();
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_CHUNK + 1024);
        let mut packed = Vec::new();
        for entry in entries {
            let entry = entry?;
            packed.clear();
            rmp_serde::encode::write(&mut packed, &entry.row)
                .map_err(|e| Error::new(ErrorKind::Vault, format!("cannot encode a row: {e}")))?;
            let key_len = u32::try_from(entry.key.len()).map_err(|_| bad_run())?;
            let row_len = u32::try_from(packed.len()).map_err(|_| bad_run())?;
            out.extend_from_slice(&key_len.to_le_bytes());
            out.extend_from_slice(&entry.key);
            out.push(entry.kind as u8);
            out.extend_from_slice(&row_len.to_le_bytes());
            out.extend_from_slice(&packed);
            if out.len() >= WRITE_CHUNK {
                chunks.push(self.write_chunk(&out)?);
                out.clear();
            }
        }
        if !out.is_empty() {
            chunks.push(self.write_chunk(&out)?);
        }
        Ok(Run { chunks, rank })
    }

    /// Write `bytes` at a place reserved for them; where they are.
    fn write_chunk(&self, bytes: &[u8]) -> Result<(u64, u64)> {
        let len = bytes.len() as u64;
        let at = self.end.fetch_add(len, Ordering::Relaxed);
        self.file.write_all_at(bytes, at).map_err(temp_error)?;
        Ok((at, len))
    }

    fn reader(&self, run: &Run) -> RunReader<'_> {
        RunReader {
            inner: BufReader::with_capacity(
                READ_BUFFER,
                Chunks {
                    file: &self.file,
                    chunks: run.chunks.clone(),
                    next: 0,
                    pos: 0,
                },
            ),
            packed: Vec::new(),
        }
    }

    /// Merge runs until at most `FAN_IN` are left, oldest first, so that a final merge
    /// reads few at once. A merged run keeps every base entry and the newest change of
    /// each key, and takes the highest rank it merged.
    pub fn merge_down(&self, mut runs: Vec<Run>) -> Result<Vec<Run>> {
        runs.sort_by_key(|r| r.rank);
        while runs.len() > FAN_IN {
            let group: Vec<Run> = runs.drain(..FAN_IN).collect();
            let rank = group.iter().map(|r| r.rank).max().unwrap_or(0);
            let mut merge = Merge::new(self, &group)?;
            let mut pending: std::vec::IntoIter<Entry> = Vec::new().into_iter();
            let entries = std::iter::from_fn(|| loop {
                if let Some(entry) = pending.next() {
                    return Some(Ok(entry));
                }
                match merge.next_group() {
                    Err(e) => return Some(Err(e)),
                    Ok(None) => return None,
                    Ok(Some(group)) => {
                        let mut kept = Vec::with_capacity(group.len());
                        let mut change_kept = false;
                        for entry in group {
                            if entry.kind == Kind::Base {
                                kept.push(entry);
                            } else if !change_kept {
                                // The group is newest first: the first change wins.
                                change_kept = true;
                                kept.push(entry);
                            }
                        }
                        pending = kept.into_iter();
                    }
                }
            });
            let merged = self.write_run(rank, entries)?;
            runs.insert(0, merged);
        }
        Ok(runs)
    }
}

/// Rows set aside in an unnamed temporary file and read back one at a time, in any order,
/// by where they were written: each row in MessagePack (as in a run), one after another.
/// Restore sets aside the rows of a self-referencing table that come before a row they
/// reference, and writes them once the table is read.
pub struct RowFile {
    file: Option<File>,
    /// Rows encoded and not yet written; they go at `written`.
    pending: Vec<u8>,
    written: u64,
    /// Bytes of the file read back (a block), and where they start.
    block: Vec<u8>,
    block_at: u64,
    rows: u64,
}

/// Rows are read back from the file a block of this size at a time.
const ROW_BLOCK: u64 = 64 * 1024;

impl Default for RowFile {
    fn default() -> Self {
        RowFile::new()
    }
}

impl RowFile {
    /// A row file; the temporary file is made when the first row is written to it.
    pub fn new() -> RowFile {
        RowFile {
            file: None,
            pending: Vec::new(),
            written: 0,
            block: Vec::new(),
            block_at: 0,
            rows: 0,
        }
    }

    /// Set `row` aside; returns where it ends. A row starts where the one before it ended
    /// (the first at 0).
    pub fn push(&mut self, row: &[Value]) -> Result<u64> {
        rmp_serde::encode::write(&mut self.pending, row)
            .map_err(|e| Error::new(ErrorKind::Vault, format!("cannot encode a row: {e}")))?;
        self.rows += 1;
        let end = self.written + self.pending.len() as u64;
        if self.pending.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(end)
    }

    /// How many rows were set aside.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.file.is_none() {
            self.file = Some(tempfile::tempfile().map_err(temp_error)?);
        }
        let file = self.file.as_ref().ok_or_else(bad_run)?;
        file.write_all_at(&self.pending, self.written)
            .map_err(temp_error)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// The row set aside at `start..end`. Rows near one another, before or after it, are
    /// read from the same block.
    pub fn read(&mut self, start: u64, end: u64) -> Result<Row> {
        if end > self.written {
            self.flush()?;
        }
        if start >= end || end > self.written {
            return Err(bad_run());
        }
        let cached = start >= self.block_at && end <= self.block_at + self.block.len() as u64;
        if !cached {
            let file = self.file.as_ref().ok_or_else(bad_run)?;
            let mut from = start - start % ROW_BLOCK;
            if end - from > ROW_BLOCK {
                from = start;
            }
            let to = (from + ROW_BLOCK).max(end).min(self.written);
            self.block.resize((to - from) as usize, 0);
            file.read_exact_at(&mut self.block, from)
                .map_err(temp_error)?;
            self.block_at = from;
        }
        let bytes = &self.block[(start - self.block_at) as usize..(end - self.block_at) as usize];
        rmp_serde::from_slice(bytes).map_err(|_| bad_run())
    }
}

/// A run's bytes, chunk after chunk, read by position.
struct Chunks<'a> {
    file: &'a File,
    chunks: Vec<(u64, u64)>,
    /// The chunk being read, and how far into it.
    next: usize,
    pos: u64,
}

impl Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(&(at, len)) = self.chunks.get(self.next) else {
                return Ok(0);
            };
            if self.pos == len {
                self.next += 1;
                self.pos = 0;
                continue;
            }
            let want = (len - self.pos).min(out.len() as u64) as usize;
            if want == 0 {
                return Ok(0);
            }
            let got = self.file.read_at(&mut out[..want], at + self.pos)?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.pos += got as u64;
            return Ok(got);
        }
    }
}

struct RunReader<'a> {
    inner: BufReader<Chunks<'a>>,
    packed: Vec<u8>,
}

impl RunReader<'_> {
    fn next(&mut self) -> Result<Option<Entry>> {
        if self.inner.fill_buf().map_err(temp_error)?.is_empty() {
            return Ok(None);
        }
        let key_len = self.read_u32()? as usize;
        let mut key = vec![0; key_len];
        self.inner.read_exact(&mut key).map_err(temp_error)?;
        let mut kind = [0u8];
        self.inner.read_exact(&mut kind).map_err(temp_error)?;
        let kind = Kind::from_byte(kind[0]).ok_or_else(bad_run)?;
        let row_len = self.read_u32()? as usize;
        self.packed.resize(row_len, 0);
        self.inner
            .read_exact(&mut self.packed)
            .map_err(temp_error)?;
        let row: Row = rmp_serde::from_slice(&self.packed).map_err(|_| bad_run())?;
        Ok(Some(Entry { key, kind, row }))
    }

    fn read_u32(&mut self) -> Result<u32> {
        let mut bytes = [0u8; 4];
        self.inner.read_exact(&mut bytes).map_err(temp_error)?;
        Ok(u32::from_le_bytes(bytes))
    }
}

/// A run's next key in a merge: smallest key first; for one key, the highest rank first.
type Head = Reverse<(Vec<u8>, Reverse<u64>, usize)>;

/// Several runs read together in key order, a key at a time.
pub struct Merge<'a> {
    readers: Vec<RunReader<'a>>,
    ranks: Vec<u64>,
    /// The entry each reader is at (its key is in `heap`).
    heads: Vec<Option<(Kind, Row)>>,
    heap: BinaryHeap<Head>,
}

impl<'a> Merge<'a> {
    pub fn new(spill: &'a SpillFile, runs: &[Run]) -> Result<Merge<'a>> {
        let mut merge = Merge {
            readers: runs.iter().map(|r| spill.reader(r)).collect(),
            ranks: runs.iter().map(|r| r.rank).collect(),
            heads: vec![None; runs.len()],
            heap: BinaryHeap::with_capacity(runs.len()),
        };
        for i in 0..runs.len() {
            merge.advance(i)?;
        }
        Ok(merge)
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some(entry) = self.readers[i].next()? {
            self.heads[i] = Some((entry.kind, entry.row));
            self.heap
                .push(Reverse((entry.key, Reverse(self.ranks[i]), i)));
        }
        Ok(())
    }

    /// Every entry of the next key, the newest run's first; None at the end.
    pub fn next_group(&mut self) -> Result<Option<Vec<Entry>>> {
        let Some(Reverse((key, _, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let mut group = Vec::new();
        let (kind, row) = self.heads[i].take().ok_or_else(bad_run)?;
        self.advance(i)?;
        while let Some(Reverse((next, _, _))) = self.heap.peek() {
            if *next != key {
                break;
            }
            let Some(Reverse((next, _, j))) = self.heap.pop() else {
                break;
            };
            let (kind, row) = self.heads[j].take().ok_or_else(bad_run)?;
            self.advance(j)?;
            group.push(Entry {
                key: next,
                kind,
                row,
            });
        }
        group.insert(0, Entry { key, kind, row });
        Ok(Some(group))
    }
}

/// Entries gathered in memory up to a limit, then written as a sorted run.
pub struct Sorter {
    entries: Vec<Entry>,
    bytes: usize,
    limit: usize,
    /// Keep only the last entry pushed for a key (changes); else keep all (base rows).
    dedup: bool,
    pub runs: Vec<Run>,
}

impl Sorter {
    pub fn new(limit: usize, dedup: bool) -> Sorter {
        Sorter {
            entries: Vec::new(),
            bytes: 0,
            limit,
            dedup,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, entry: Entry) {
        self.bytes += entry.bytes();
        self.entries.push(entry);
    }

    pub fn is_full(&self) -> bool {
        self.bytes > self.limit
    }

    /// Write what is gathered as a run of rank `rank` (nothing when empty).
    pub fn flush(&mut self, spill: &SpillFile, rank: u64) -> Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut entries = std::mem::take(&mut self.entries);
        self.bytes = 0;
        // Stable: for one key, the entries stay in the order they were pushed.
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        if self.dedup {
            let mut kept: Vec<Entry> = Vec::with_capacity(entries.len());
            for entry in entries {
                match kept.last_mut() {
                    Some(last) if last.key == entry.key => *last = entry,
                    _ => kept.push(entry),
                }
            }
            entries = kept;
        }
        let run = spill.write_run(rank, entries.into_iter().map(Ok))?;
        self.runs.push(run);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: i64, kind: Kind, x: &str) -> Entry {
        let row = vec![Value::Int(key), Value::Text(x.into())];
        Entry {
            key: encode_values(&row[..1]),
            kind,
            row,
        }
    }

    /// Runs merged many at a time (more than a merge reads at once) keep every base entry
    /// and, for each key, the newest change.
    #[test]
    fn merging_down_keeps_the_newest_change_and_every_base_row() {
        let spill = SpillFile::create().expect("spill file");
        let mut runs = Vec::new();
        // 100 runs of changes to keys 0..10, each newer than the one before.
        for rank in 1..=100u64 {
            let mut sorter = Sorter::new(usize::MAX, true);
            for key in 0..10 {
                let kind = if (key + rank as i64) % 3 == 0 {
                    Kind::Removed
                } else {
                    Kind::Present
                };
                sorter.push(entry(key, kind, &format!("r{rank}")));
            }
            sorter.flush(&spill, rank).expect("flush");
            runs.extend(sorter.runs);
        }
        // Base rows, key 3 twice.
        let mut base = Sorter::new(usize::MAX, false);
        for key in [3, 11, 3, 5] {
            base.push(entry(key, Kind::Base, "base"));
        }
        base.flush(&spill, 0).expect("flush base");
        runs.extend(base.runs);

        let runs = spill.merge_down(runs).expect("merge down");
        assert!(runs.len() <= FAN_IN);
        let mut merge = Merge::new(&spill, &runs).expect("merge");
        let mut seen = Vec::new();
        while let Some(group) = merge.next_group().expect("group") {
            let key = group[0].key.clone();
            let change = group.iter().find(|e| e.kind != Kind::Base).cloned();
            let bases = group.iter().filter(|e| e.kind == Kind::Base).count();
            seen.push((key, change.map(|c| (c.kind, c.row[1].clone())), bases));
        }
        type Seen = (Vec<u8>, Option<(Kind, Value)>, usize);
        let want: Vec<Seen> = {
            let mut want = Vec::new();
            for key in [0i64, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11] {
                let change = (key < 10).then(|| {
                    let kind = if (key + 100) % 3 == 0 {
                        Kind::Removed
                    } else {
                        Kind::Present
                    };
                    (kind, Value::Text("r100".into()))
                });
                let bases = match key {
                    3 => 2,
                    5 | 11 => 1,
                    _ => 0,
                };
                want.push((encode_values(&[Value::Int(key)]), change, bases));
            }
            want.sort_by(|a, b| a.0.cmp(&b.0));
            want
        };
        assert_eq!(seen, want);
    }

    /// Runs written at once on several threads into one file (in interleaved chunks) read
    /// back whole and in order.
    #[test]
    fn runs_written_at_once_read_back_apart() {
        let spill = SpillFile::create().expect("spill file");
        let runs: Vec<Run> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..4u64)
                .map(|w| {
                    let spill = &spill;
                    scope.spawn(move || {
                        let entries = (0..20_000i64).map(|k| {
                            Ok(entry(
                                k,
                                Kind::Present,
                                &format!("writer {w} {}", "x".repeat(20)),
                            ))
                        });
                        spill.write_run(w + 1, entries).expect("write run")
                    })
                })
                .collect();
            writers
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        assert!(runs.iter().all(|r| r.chunks.len() > 1), "{runs:?}");
        for (w, run) in runs.iter().enumerate() {
            let mut reader = spill.reader(run);
            let mut count = 0i64;
            while let Some(e) = reader.next().expect("read") {
                assert_eq!(e.row[0], Value::Int(count));
                assert_eq!(
                    e.row[1],
                    Value::Text(format!("writer {w} {}", "x".repeat(20)))
                );
                count += 1;
            }
            assert_eq!(count, 20_000);
        }
    }

    /// Rows set aside read back whole, in any order, whether still buffered or written,
    /// small or larger than a block.
    #[test]
    fn rows_set_aside_read_back_in_any_order() {
        let mut file = RowFile::new();
        let row = |i: u64| {
            let size = if i % 1000 == 7 { 100_000 } else { 30 };
            vec![
                Value::Int(i as i64),
                Value::Text("x".repeat(size)),
                Value::Null,
            ]
        };
        let mut places = Vec::new();
        let mut start = 0;
        for i in 0..20_000u64 {
            let end = file.push(&row(i)).expect("push");
            places.push((start, end));
            start = end;
        }
        assert_eq!(file.rows(), 20_000);
        assert!(
            file.written > 0,
            "rows are written to the file as they come"
        );
        let last = places[19_999];
        assert_eq!(file.read(last.0, last.1).expect("read"), row(19_999));
        for i in (0..20_000u64).rev().chain((0..20_000).step_by(7)) {
            let (start, end) = places[i as usize];
            assert_eq!(file.read(start, end).expect("read"), row(i), "row {i}");
        }
        assert!(file.read(5, 5).is_err());
        assert!(file.read(0, start + 1).is_err());
    }

    #[test]
    fn a_sorter_keeps_the_last_change_of_a_key() {
        let spill = SpillFile::create().expect("spill file");
        let mut sorter = Sorter::new(usize::MAX, true);
        sorter.push(entry(1, Kind::Present, "a"));
        sorter.push(entry(2, Kind::Present, "b"));
        sorter.push(entry(1, Kind::Removed, "c"));
        sorter.flush(&spill, 1).expect("flush");
        let mut merge = Merge::new(&spill, &sorter.runs).expect("merge");
        let mut got = Vec::new();
        while let Some(group) = merge.next_group().expect("group") {
            assert_eq!(group.len(), 1);
            got.push((group[0].kind, group[0].row[1].clone()));
        }
        got.sort_by_key(|(_, x)| format!("{x:?}"));
        assert_eq!(
            got,
            vec![
                (Kind::Present, Value::Text("b".into())),
                (Kind::Removed, Value::Text("c".into()))
            ]
        );
    }
}
