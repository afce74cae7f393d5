//! Capture's local index of the `tenant_via` key maps (docs/vault-format.md, "Key maps"):
//! an embedded redb file under `[capture] state_dir`, one per vault and source, so that
//! capture's memory does not grow with the number of parent keys. It is a cache of the
//! vault: it names the vault, the source, the latest checkpoint it matches and the position
//! its entries describe, and is rebuilt from the vault when it does not match.
//!
//! Entries are keyed by the key's 64-bit bucket hash, then its encoding, so that a bucket
//! under any number of bucket bits is one contiguous range. The index also keeps, per key
//! map, its bucket bits and key count, the chunk each bucket has in the latest checkpoint
//! and listing, that checkpoint's deltas, the keys changed since the latest checkpoint (pending:
//! the next checkpoint's delta) and the buckets changed since the last fold (dirty: the
//! ones a fold writes again).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableHandle, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use lifeboat_core::model::{
    keymap_bucket, keymap_key_bytes, keymap_key_hash, KeymapChunk, KeymapChunkRef, KeymapDelta,
    KeymapDeltaRef, KeymapIndex, KeymapListingRef, TenantKey, Value, KEYMAP_MAX_BITS,
};
use lifeboat_core::tenancy::{KeyStore, KeymapLayer, KeymapPair};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

/// The layout of the index file, in its name: a file of another layout is not opened.
const INDEX_VERSION: u32 = 2;
/// The index's page cache: what keeps hot keys in memory, bounded.
const CACHE_BYTES: usize = 32 << 20;
/// Keys a bucket aims at; a map's bits rise above twice this average, fall below a quarter.
const KEYS_PER_BUCKET: u64 = 4096;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Key map name → `MapState`.
const MAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("maps");
/// Key map name, 0, bucket (big-endian) → the bucket's chunk in the latest checkpoint.
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks");
/// Key map name, 0, bucket (big-endian) → (): changed since the last fold.
const DIRTY: TableDefinition<&[u8], ()> = TableDefinition::new("dirty");
/// Key map name, 0, entry key → its tenant at the latest checkpoint (`held`): changed
/// since then. A key whose tenant is back to that by the checkpoint goes in no delta.
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
/// Key map name → the latest checkpoint's deltas of the map, oldest first.
const DELTAS: TableDefinition<&str, &[u8]> = TableDefinition::new("deltas");
/// Key map name → the latest checkpoint's listing of the map's chunks (if any).
const LISTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("listings");
/// A map folds when its deltas would hold more entries than its chunks' keys over this.
const FOLD_ENTRIES_FRACTION: u64 = 8;
/// A map folds when it would have more deltas than this or its bucket count.
const FOLD_DELTAS_AT_LEAST: usize = 16;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct MapState {
    bits: u8,
    keys: u64,
    /// Entries of the latest checkpoint's deltas of the map.
    #[serde(default)]
    delta_entries: u64,
    /// Keys in the latest checkpoint's chunks of the map.
    #[serde(default)]
    chunk_keys: u64,
    /// Keys changed since the latest checkpoint, as far as they are kept (`PENDING`).
    #[serde(default)]
    pending: u64,
    /// The next checkpoint folds: the map was emptied, or its deltas with the keys changed
    /// since would pass the bound; changed keys are no longer kept then, so that a first
    /// capture or a mass change does not also write every key to `PENDING`.
    #[serde(default)]
    fold: bool,
}

impl MapState {
    /// A key changed since the latest checkpoint: kept for the next delta (true) unless
    /// the map folds anyway.
    fn note_pending(&mut self, newly: bool) -> bool {
        if self.fold {
            return false;
        }
        let pending = self.pending + u64::from(newly);
        if self.delta_entries + pending > self.chunk_keys / FOLD_ENTRIES_FRACTION {
            self.fold = true;
            return false;
        }
        self.pending = pending;
        true
    }
}

/// What the index says it describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexState {
    pub vault: Option<String>,
    pub source: Option<String>,
    /// The latest checkpoint it matches; `None` while it is being built.
    pub checkpoint: Option<String>,
    /// The position its entries describe.
    pub head: u64,
}

/// A checkpoint's key maps as prepared: the index to write, and the bucket references
/// the local index takes once the checkpoint is durable.
pub struct Prepared {
    pub keymaps: Vec<KeymapIndex>,
    maps: Vec<PreparedMap>,
    /// Bytes of key-map listings written for it.
    pub listing_bytes: u64,
}

struct PreparedMap {
    pair: KeymapPair,
    bits: u8,
    chunks: BTreeMap<u32, KeymapChunkRef>,
    deltas: Vec<KeymapDeltaRef>,
    listing: Option<KeymapListingRef>,
    /// The chunks were written again: the dirty buckets are clean.
    folded: bool,
}

/// Whether a map folds rather than take one more delta of `pending` entries, given the
/// keys of its chunks, its bucket bits and the deltas it has (docs/vault-format.md, "Key
/// maps"): past an eighth of the chunks' keys in deltas, or more deltas than buckets.
fn should_fold(chunk_keys: u64, bits: u8, deltas: &[KeymapDeltaRef], pending: u64) -> bool {
    let entries: u64 = deltas.iter().map(|d| d.entries).sum::<u64>() + pending;
    entries > chunk_keys / FOLD_ENTRIES_FRACTION
        || deltas.len() + 1 > FOLD_DELTAS_AT_LEAST.max(1usize << bits)
}

/// A map's keys as a lookup reads them.
type KeysTable = redb::ReadOnlyTable<&'static [u8], &'static str>;
/// Each map's keys opened for lookups: table, column, and its keys (none: no table yet).
type Readers = Vec<(String, String, Option<KeysTable>)>;

#[derive(Clone)]
pub struct KeyIndex {
    db: Arc<Database>,
    path: PathBuf,
    /// Key tables opened for lookups as of the latest commit: a read transaction and a
    /// table opened per lookup cost more than the lookup. Emptied by every write
    /// (`begin_write`, `commit`).
    readers: Arc<Mutex<Readers>>,
}

fn map_name(pair: &KeymapPair) -> String {
    format!("{}\u{1f}{}", pair.0, pair.1)
}

fn keys_table(pair: &KeymapPair) -> String {
    keys_table_of(&pair.0, &pair.1)
}

fn keys_table_of(table: &str, column: &str) -> String {
    format!("keys\u{1f}{table}\u{1f}{column}")
}

fn map_prefix(pair: &KeymapPair) -> Vec<u8> {
    let mut key = map_name(pair).into_bytes();
    key.push(0);
    key
}

fn bucket_key(pair: &KeymapPair, bucket: u32) -> Vec<u8> {
    let mut key = map_name(pair).into_bytes();
    key.push(0);
    key.extend_from_slice(&bucket.to_be_bytes());
    key
}

/// A key's place in the index: its bucket hash, then its encoding.
fn entry_key(key: &Value) -> (Vec<u8>, u64) {
    let encoded = keymap_key_bytes(key);
    let hash = keymap_key_hash(&encoded);
    let mut out = hash.to_be_bytes().to_vec();
    out.extend_from_slice(&encoded);
    (out, hash)
}

/// The bucket bits a map of `keys` keys should have, given its current ones.
fn choose_bits(bits: u8, keys: u64) -> u8 {
    let buckets = 1u64 << bits;
    if keys > 2 * KEYS_PER_BUCKET * buckets || (bits > 0 && keys * 4 < KEYS_PER_BUCKET * buckets) {
        let mut bits = 0u8;
        while bits < KEYMAP_MAX_BITS && keys > KEYS_PER_BUCKET << bits {
            bits += 1;
        }
        bits
    } else {
        bits
    }
}

impl KeyIndex {
    /// The index file of `source` in vault `vault_id`, under `dir`: opened, or created
    /// when missing. A file that cannot be opened (damaged, another format) is a cache:
    /// it is replaced by an empty one.
    pub fn open(dir: &Path, vault_id: &str, source: &str) -> Result<KeyIndex> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::config(format!(
                "cannot create capture's state directory {} ([capture] state_dir): {e}",
                dir.display()
            ))
        })?;
        let path = dir.join(format!("keymaps-{INDEX_VERSION}-{vault_id}-{source}.redb"));
        // An index of an earlier layout is a cache like any other: removed, and rebuilt
        // from the vault under the new name.
        let earlier = dir.join(format!("keymaps-{vault_id}-{source}.redb"));
        if earlier.exists() {
            tracing::info!(path = %earlier.display(), "removing a key-map index of an earlier layout: it is rebuilt from the vault");
            let _ = std::fs::remove_file(&earlier);
            // With it, the run files an interrupted first snapshot left beside it.
            let _ = std::fs::remove_dir_all(earlier.with_extension("snapshot"));
        }
        let create = || {
            redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&path)
        };
        let db = match create() {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(Error::source(format!(
                    "capture's key-map index {} is in use by another capture of source \
                     {source} on this machine; give each capture its own [capture] state_dir",
                    path.display()
                ))
                .transient())
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "replacing the key-map index that cannot be opened: {e}");
                let _ = std::fs::remove_file(&path);
                create().map_err(|e| index_error(&path, e))?
            }
        };
        Ok(KeyIndex {
            db: Arc::new(db),
            path,
            readers: Arc::default(),
        })
    }

    fn readers(&self) -> std::sync::MutexGuard<'_, Readers> {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn begin_write(&self) -> Result<WriteTransaction> {
        self.readers().clear();
        self.db.begin_write().map_err(|e| self.error(e))
    }

    /// Commit `txn`; the lookups read what it wrote from then on.
    fn commit(&self, txn: WriteTransaction) -> Result<()> {
        let committed = txn.commit().map_err(|e| self.error(e));
        self.readers().clear();
        committed
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, e: impl std::fmt::Display) -> Error {
        index_error(&self.path, e)
    }

    pub fn state(&self) -> Result<IndexState> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match txn.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(IndexState::default()),
            Err(e) => return Err(self.error(e)),
        };
        let text = |name: &str| -> Result<Option<String>> {
            Ok(table
                .get(name)
                .map_err(|e| self.error(e))?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
        };
        let head = table
            .get("head")
            .map_err(|e| self.error(e))?
            .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        Ok(IndexState {
            vault: text("vault")?,
            source: text("source")?,
            checkpoint: text("checkpoint")?,
            head,
        })
    }

    /// Empty the index and make it name `vault_id` and `source`, matching no checkpoint
    /// yet (a rebuild, or the initial snapshot, follows).
    pub fn reset(&self, vault_id: &str, source: &str) -> Result<()> {
        let txn = self.begin_write()?;
        let names: Vec<String> = txn
            .list_tables()
            .map_err(|e| self.error(e))?
            .map(|t| t.name().to_string())
            .collect();
        for name in names {
            let definition: TableDefinition<&[u8], &[u8]> = TableDefinition::new(&name);
            txn.delete_table(definition).map_err(|e| self.error(e))?;
        }
        {
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("vault", vault_id.as_bytes())
                .map_err(|e| self.error(e))?;
            meta.insert("source", source.as_bytes())
                .map_err(|e| self.error(e))?;
        }
        self.commit(txn)
    }

    /// A write of a rebuild: not durable until `rebuilt` commits durably.
    fn begin_import(&self) -> Result<WriteTransaction> {
        let mut txn = self.begin_write()?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.error(e))?;
        Ok(txn)
    }

    /// Take chunks of a checkpoint being rebuilt from, in one transaction (not durable
    /// until `rebuilt`).
    pub fn import_chunks(
        &self,
        pair: &KeymapPair,
        chunks: &[(&KeymapChunkRef, Vec<(Value, TenantKey)>)],
    ) -> Result<()> {
        let txn = self.begin_import()?;
        {
            let name = keys_table(pair);
            let mut keys = txn
                .open_table(TableDefinition::<&[u8], &str>::new(&name))
                .map_err(|e| self.error(e))?;
            let mut refs = txn.open_table(CHUNKS).map_err(|e| self.error(e))?;
            for (chunk, entries) in chunks {
                for (key, tenant) in entries {
                    let (place, _) = entry_key(key);
                    keys.insert(place.as_slice(), tenant.as_str())
                        .map_err(|e| self.error(e))?;
                }
                refs.insert(
                    bucket_key(pair, chunk.bucket).as_slice(),
                    pack(*chunk)?.as_slice(),
                )
                .map_err(|e| self.error(e))?;
            }
        }
        self.commit(txn)
    }

    /// Apply deltas of a checkpoint being rebuilt from, after all of its chunks, in the
    /// checkpoint's order (oldest first), in one transaction (not durable until
    /// `rebuilt`). The buckets they touch are dirty: the next fold writes them again.
    pub fn import_deltas(&self, pair: &KeymapPair, bits: u8, deltas: &[KeymapDelta]) -> Result<()> {
        let txn = self.begin_import()?;
        {
            let name = keys_table(pair);
            let mut keys = txn
                .open_table(TableDefinition::<&[u8], &str>::new(&name))
                .map_err(|e| self.error(e))?;
            let mut dirty = txn.open_table(DIRTY).map_err(|e| self.error(e))?;
            for delta in deltas {
                for (key, tenant) in &delta.entries {
                    let (place, hash) = entry_key(key);
                    match tenant {
                        Some(tenant) => {
                            keys.insert(place.as_slice(), tenant.as_str())
                                .map_err(|e| self.error(e))?;
                        }
                        None => {
                            keys.remove(place.as_slice()).map_err(|e| self.error(e))?;
                        }
                    }
                    dirty
                        .insert(bucket_key(pair, keymap_bucket(hash, bits)).as_slice(), ())
                        .map_err(|e| self.error(e))?;
                }
            }
        }
        self.commit(txn)
    }

    /// The rebuild from checkpoint `checkpoint` (at `head`) is complete: `maps` are its
    /// key maps' bits and deltas. Durable when this returns.
    pub fn rebuilt(
        &self,
        maps: &[(
            KeymapPair,
            u8,
            Vec<KeymapDeltaRef>,
            Option<KeymapListingRef>,
        )],
        checkpoint: &str,
        head: u64,
    ) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            let mut delta_table = txn.open_table(DELTAS).map_err(|e| self.error(e))?;
            let mut listing_table = txn.open_table(LISTINGS).map_err(|e| self.error(e))?;
            for (pair, bits, deltas, listing) in maps {
                let name = keys_table(pair);
                let keys = txn
                    .open_table(TableDefinition::<&[u8], &str>::new(&name))
                    .map_err(|e| self.error(e))?
                    .len()
                    .map_err(|e| self.error(e))?;
                let chunks = txn.open_table(CHUNKS).map_err(|e| self.error(e))?;
                let prefix = map_prefix(pair);
                let mut chunk_keys = 0;
                for item in chunks
                    .range::<&[u8]>(prefix.as_slice()..)
                    .map_err(|e| self.error(e))?
                {
                    let (key, value) = item.map_err(|e| self.error(e))?;
                    if !key.value().starts_with(&prefix) {
                        break;
                    }
                    chunk_keys += unpack::<KeymapChunkRef>(&self.path, value.value())?.keys;
                }
                let state = MapState {
                    bits: *bits,
                    keys,
                    delta_entries: deltas.iter().map(|d| d.entries).sum(),
                    chunk_keys,
                    pending: 0,
                    fold: false,
                };
                table
                    .insert(map_name(pair).as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
                delta_table
                    .insert(map_name(pair).as_str(), pack(deltas)?.as_slice())
                    .map_err(|e| self.error(e))?;
                listing_table
                    .insert(map_name(pair).as_str(), pack(listing)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("checkpoint", checkpoint.as_bytes())
                .map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        self.commit(txn)
    }

    /// Write key-map changes (`Keymaps::drain`) describing the state at `head`, and mark
    /// their buckets changed. `durable`: the commit is on disk when this returns (the end
    /// of capture's replay at start); otherwise it is made durable by a later durable
    /// commit (after each segment, the initial snapshot, a rebuild's replay), and a crash
    /// before that takes the index back to its latest durable commit.
    pub fn apply(
        &self,
        changes: Vec<(KeymapPair, KeymapLayer)>,
        head: u64,
        durable: bool,
    ) -> Result<()> {
        let mut txn = self.begin_write()?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| self.error(e))?;
        }
        {
            let mut maps = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            let mut dirty = txn.open_table(DIRTY).map_err(|e| self.error(e))?;
            let mut pending = txn.open_table(PENDING).map_err(|e| self.error(e))?;
            for (pair, layer) in changes {
                let name = map_name(&pair);
                let mut state: MapState =
                    match maps.get(name.as_str()).map_err(|e| self.error(e))? {
                        Some(v) => unpack(&self.path, v.value())?,
                        None => MapState::default(),
                    };
                let table_name = keys_table(&pair);
                let definition = TableDefinition::<&[u8], &str>::new(&table_name);
                if layer.cleared {
                    txn.delete_table(definition).map_err(|e| self.error(e))?;
                    state.keys = 0;
                    state.fold = true;
                    // Every bucket that had a chunk is now empty.
                    let chunks = txn.open_table(CHUNKS).map_err(|e| self.error(e))?;
                    let prefix = bucket_key(&pair, 0);
                    let prefix = &prefix[..prefix.len() - 4];
                    for item in chunks.range::<&[u8]>(prefix..).map_err(|e| self.error(e))? {
                        let (key, _) = item.map_err(|e| self.error(e))?;
                        if !key.value().starts_with(prefix) {
                            break;
                        }
                        dirty.insert(key.value(), ()).map_err(|e| self.error(e))?;
                    }
                }
                let mut keys = txn.open_table(definition).map_err(|e| self.error(e))?;
                // Each changed bucket is marked once, after the entries.
                let mut buckets = BTreeSet::new();
                let mut key = map_prefix(&pair);
                let prefix = key.len();
                for (value, tenant) in layer.entries {
                    let (place, hash) = entry_key(&value);
                    // The key's tenant before this change (`held`), when it changes.
                    let changed: Option<Vec<u8>> = match &tenant {
                        Some(tenant) => {
                            let before = keys
                                .insert(place.as_slice(), tenant.as_str())
                                .map_err(|e| self.error(e))?;
                            match before {
                                Some(before) if before.value() == tenant.as_str() => None,
                                Some(before) => Some(held(Some(before.value()))),
                                None => {
                                    state.keys += 1;
                                    Some(held(None))
                                }
                            }
                        }
                        None => {
                            let before =
                                keys.remove(place.as_slice()).map_err(|e| self.error(e))?;
                            before.map(|before| {
                                state.keys -= 1;
                                held(Some(before.value()))
                            })
                        }
                    };
                    if let Some(before) = changed {
                        buckets.insert(keymap_bucket(hash, state.bits));
                        if !state.fold {
                            // Kept first; taken out again if this key turns the map to fold.
                            // The first change since the checkpoint records what the key
                            // held then; a later one puts that back.
                            key.truncate(prefix);
                            key.extend_from_slice(&place);
                            let earlier = pending
                                .insert(key.as_slice(), before.as_slice())
                                .map_err(|e| self.error(e))?
                                .map(|v| v.value().to_vec());
                            let newly = earlier.is_none();
                            if let Some(earlier) = earlier {
                                pending
                                    .insert(key.as_slice(), earlier.as_slice())
                                    .map_err(|e| self.error(e))?;
                            }
                            if !state.note_pending(newly) && newly {
                                pending.remove(key.as_slice()).map_err(|e| self.error(e))?;
                            }
                        }
                    }
                }
                for bucket in buckets {
                    dirty
                        .insert(bucket_key(&pair, bucket).as_slice(), ())
                        .map_err(|e| self.error(e))?;
                }
                maps.insert(name.as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        self.commit(txn)
    }

    /// The entries of one bucket, sorted by the key's encoding.
    fn bucket_entries(
        &self,
        pair: &KeymapPair,
        bits: u8,
        bucket: u32,
    ) -> Result<Vec<(Value, TenantKey)>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let name = keys_table(pair);
        let table = match txn.open_table(TableDefinition::<&[u8], &str>::new(&name)) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        let (start, end) = if bits == 0 {
            (0u64, None)
        } else {
            let span = 1u64 << (64 - u32::from(bits));
            let start = u64::from(bucket) * span;
            (start, start.checked_add(span))
        };
        let low = start.to_be_bytes();
        let high = end.map(u64::to_be_bytes);
        let upper = match &high {
            Some(high) => Bound::Excluded(high.as_slice()),
            None => Bound::Unbounded,
        };
        let mut out: Vec<(Vec<u8>, Value, TenantKey)> = Vec::new();
        for item in table
            .range::<&[u8]>((Bound::Included(low.as_slice()), upper))
            .map_err(|e| self.error(e))?
        {
            let (key, tenant) = item.map_err(|e| self.error(e))?;
            let encoded = key.value()[8..].to_vec();
            let value: Value = rmp_serde::from_slice(&encoded)
                .map_err(|e| self.error(format!("an entry does not decode: {e}")))?;
            out.push((encoded, value, TenantKey::new(tenant.value().to_string())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, k, t)| (k, t)).collect())
    }

    /// Write what each map changed since the latest checkpoint, each object named by
    /// `position`, and return the new checkpoint's key-map index: one delta of the keys
    /// changed, referring to the latest checkpoint's listing, or, past the bound
    /// (`should_fold`), a fold: the chunks of the buckets changed since the last fold, a
    /// listing of the map's chunks, and no deltas; with `full` or when a map's bits
    /// change, every bucket's chunk, a listing and no deltas. The local index changes
    /// only at `committed`.
    pub async fn prepare_checkpoint(
        &self,
        vault: &Vault,
        source: &str,
        pairs: &[KeymapPair],
        position: u64,
        full: bool,
    ) -> Result<Prepared> {
        let mut prepared = Prepared {
            keymaps: Vec::new(),
            maps: Vec::new(),
            listing_bytes: 0,
        };
        for pair in pairs {
            let (state, mut refs, dirty) = self.map_snapshot(pair)?;
            let mut deltas = self.map_deltas(pair)?;
            let listing = if full { None } else { self.map_listing(pair)? };
            let pending = if state.fold {
                Vec::new()
            } else {
                self.pending_entries(pair)?
            };
            let bits = choose_bits(state.bits, state.keys);
            let chunk_keys: u64 = refs.values().map(|r| r.keys).sum();
            let whole = full || bits != state.bits;
            let fold = whole
                || state.fold
                || (!pending.is_empty()
                    && should_fold(chunk_keys, bits, &deltas, pending.len() as u64));
            let buckets: BTreeSet<u32> = if whole {
                refs.clear();
                (0..(1u32 << bits)).collect()
            } else if fold {
                dirty
            } else {
                BTreeSet::new()
            };
            if fold {
                deltas.clear();
            } else if !pending.is_empty() {
                let delta = KeymapDelta {
                    source: source.to_string(),
                    table: pair.0.clone(),
                    column: pair.1.clone(),
                    entries: pending,
                };
                deltas.push(vault.put_keymap_delta(&delta, position).await?);
            }
            for bucket in buckets {
                let entries = self.bucket_entries(pair, bits, bucket)?;
                if entries.is_empty() {
                    refs.remove(&bucket);
                    continue;
                }
                let chunk = KeymapChunk {
                    source: source.to_string(),
                    table: pair.0.clone(),
                    column: pair.1.clone(),
                    bits,
                    bucket,
                    entries,
                };
                refs.insert(bucket, vault.put_keymap_chunk(&chunk, position).await?);
            }
            let mut index = KeymapIndex {
                table: pair.0.clone(),
                column: pair.1.clone(),
                bits,
                keys: refs.values().map(|r| r.keys).sum(),
                chunks: refs.values().cloned().collect(),
                listing,
                deltas: deltas.clone(),
            };
            // Only a fold (or a first checkpoint) changes the chunks, so only then can the
            // listing change; a listing of the same chunks is kept, not written again.
            if fold || index.listing.is_none() {
                prepared.listing_bytes += vault
                    .put_keymap_listing(source, &mut index, position)
                    .await?;
            }
            prepared.maps.push(PreparedMap {
                pair: pair.clone(),
                bits,
                chunks: refs,
                deltas,
                listing: index.listing.clone(),
                folded: fold,
            });
            prepared.keymaps.push(index);
        }
        Ok(prepared)
    }

    /// The latest checkpoint's deltas of a map, oldest first.
    fn map_deltas(&self, pair: &KeymapPair) -> Result<Vec<KeymapDeltaRef>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(DELTAS) {
            Ok(table) => match table
                .get(map_name(pair).as_str())
                .map_err(|e| self.error(e))?
            {
                Some(v) => unpack(&self.path, v.value()),
                None => Ok(Vec::new()),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The latest checkpoint's listing of a map's chunks.
    fn map_listing(&self, pair: &KeymapPair) -> Result<Option<KeymapListingRef>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        match txn.open_table(LISTINGS) {
            Ok(table) => match table
                .get(map_name(pair).as_str())
                .map_err(|e| self.error(e))?
            {
                Some(v) => unpack(&self.path, v.value()),
                None => Ok(None),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// The keys of a map changed since the latest checkpoint, each with its tenant now or
    /// none (removed), sorted by the key's encoding: the next delta's entries. A key whose
    /// tenant is again the one it had at the checkpoint (added and removed again, moved
    /// and moved back) is left out: the layers before the delta give it that already.
    fn pending_entries(&self, pair: &KeymapPair) -> Result<Vec<(Value, Option<TenantKey>)>> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let pending = match txn.open_table(PENDING) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.error(e)),
        };
        let name = keys_table(pair);
        let keys = match txn.open_table(TableDefinition::<&[u8], &str>::new(&name)) {
            Ok(keys) => Some(keys),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.error(e)),
        };
        let prefix = map_prefix(pair);
        let mut out: Vec<(Vec<u8>, Value, Option<TenantKey>)> = Vec::new();
        for item in pending
            .range::<&[u8]>(prefix.as_slice()..)
            .map_err(|e| self.error(e))?
        {
            let (key, before) = item.map_err(|e| self.error(e))?;
            let Some(place) = key.value().strip_prefix(prefix.as_slice()) else {
                break;
            };
            if place.len() < 8 {
                return Err(self.error("a pending key is too short"));
            }
            let encoded = place[8..].to_vec();
            let value: Value = rmp_serde::from_slice(&encoded)
                .map_err(|e| self.error(format!("a pending key does not decode: {e}")))?;
            let tenant = match &keys {
                Some(keys) => keys
                    .get(place)
                    .map_err(|e| self.error(e))?
                    .map(|v| TenantKey::new(v.value().to_string())),
                None => None,
            };
            if before.value() == held(tenant.as_ref().map(|t| t.as_str())) {
                continue;
            }
            out.push((encoded, value, tenant));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, k, t)| (k, t)).collect())
    }

    /// A map's state, its chunk references and its dirty buckets.
    fn map_snapshot(
        &self,
        pair: &KeymapPair,
    ) -> Result<(MapState, BTreeMap<u32, KeymapChunkRef>, BTreeSet<u32>)> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let state = match txn.open_table(MAPS) {
            Ok(table) => match table
                .get(map_name(pair).as_str())
                .map_err(|e| self.error(e))?
            {
                Some(v) => unpack(&self.path, v.value())?,
                None => MapState::default(),
            },
            Err(redb::TableError::TableDoesNotExist(_)) => MapState::default(),
            Err(e) => return Err(self.error(e)),
        };
        let prefix = bucket_key(pair, 0);
        let prefix = &prefix[..prefix.len() - 4];
        let bucket_of = |key: &[u8]| -> u32 {
            let b: [u8; 4] = key[prefix.len()..].try_into().unwrap_or_default();
            u32::from_be_bytes(b)
        };
        let mut refs = BTreeMap::new();
        match txn.open_table(CHUNKS) {
            Ok(table) => {
                for item in table.range::<&[u8]>(prefix..).map_err(|e| self.error(e))? {
                    let (key, value) = item.map_err(|e| self.error(e))?;
                    if !key.value().starts_with(prefix) || key.value().len() != prefix.len() + 4 {
                        break;
                    }
                    refs.insert(bucket_of(key.value()), unpack(&self.path, value.value())?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        let mut dirty = BTreeSet::new();
        match txn.open_table(DIRTY) {
            Ok(table) => {
                for item in table.range::<&[u8]>(prefix..).map_err(|e| self.error(e))? {
                    let (key, _) = item.map_err(|e| self.error(e))?;
                    if !key.value().starts_with(prefix) || key.value().len() != prefix.len() + 4 {
                        break;
                    }
                    dirty.insert(bucket_of(key.value()));
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        Ok((state, refs, dirty))
    }

    /// The checkpoint `name` (at `head`) prepared as `prepared` is durable: take its
    /// references, clear the pending keys and, where it folded, the dirty buckets.
    /// Durable when this returns.
    pub fn committed(&self, prepared: Prepared, name: &str, head: u64) -> Result<()> {
        let txn = self.begin_write()?;
        {
            let mut maps = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            let mut chunks = txn.open_table(CHUNKS).map_err(|e| self.error(e))?;
            let mut dirty = txn.open_table(DIRTY).map_err(|e| self.error(e))?;
            let mut pending = txn.open_table(PENDING).map_err(|e| self.error(e))?;
            let mut delta_table = txn.open_table(DELTAS).map_err(|e| self.error(e))?;
            let mut listing_table = txn.open_table(LISTINGS).map_err(|e| self.error(e))?;
            for map in prepared.maps {
                let pair = &map.pair;
                let prefix = map_prefix(pair);
                let upper = {
                    let mut upper = prefix[..prefix.len() - 1].to_vec();
                    upper.push(1);
                    upper
                };
                let range = prefix.as_slice()..upper.as_slice();
                chunks
                    .retain_in::<&[u8], _>(range.clone(), |_, _| false)
                    .map_err(|e| self.error(e))?;
                if map.folded {
                    dirty
                        .retain_in::<&[u8], _>(range.clone(), |_, _| false)
                        .map_err(|e| self.error(e))?;
                }
                pending
                    .retain_in::<&[u8], _>(range, |_, _| false)
                    .map_err(|e| self.error(e))?;
                for (bucket, chunk) in &map.chunks {
                    chunks
                        .insert(
                            bucket_key(pair, *bucket).as_slice(),
                            pack(chunk)?.as_slice(),
                        )
                        .map_err(|e| self.error(e))?;
                }
                let name = map_name(pair);
                delta_table
                    .insert(name.as_str(), pack(&map.deltas)?.as_slice())
                    .map_err(|e| self.error(e))?;
                listing_table
                    .insert(name.as_str(), pack(&map.listing)?.as_slice())
                    .map_err(|e| self.error(e))?;
                let mut state: MapState =
                    match maps.get(name.as_str()).map_err(|e| self.error(e))? {
                        Some(v) => unpack(&self.path, v.value())?,
                        None => MapState::default(),
                    };
                state.bits = map.bits;
                state.delta_entries = map.deltas.iter().map(|d| d.entries).sum();
                state.chunk_keys = map.chunks.values().map(|c| c.keys).sum();
                state.pending = 0;
                if map.folded {
                    state.fold = false;
                }
                maps.insert(name.as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("checkpoint", name.as_bytes())
                .map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        self.commit(txn)
    }

    /// Keys in the index, all maps together.
    pub fn keys(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match txn.open_table(MAPS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(self.error(e)),
        };
        let mut total = 0;
        for item in table.iter().map_err(|e| self.error(e))? {
            let (_, value) = item.map_err(|e| self.error(e))?;
            total += unpack::<MapState>(&self.path, value.value())?.keys;
        }
        Ok(total)
    }
}

impl KeyStore for KeyIndex {
    fn get(&self, table: &str, column: &str, key: &Value) -> Result<Option<TenantKey>> {
        let mut readers = self.readers();
        let at = match readers
            .iter()
            .position(|(t, c, _)| t == table && c == column)
        {
            Some(at) => at,
            None => {
                let txn = self.db.begin_read().map_err(|e| self.error(e))?;
                let name = keys_table_of(table, column);
                let keys = match txn.open_table(TableDefinition::<&[u8], &str>::new(&name)) {
                    Ok(keys) => Some(keys),
                    Err(redb::TableError::TableDoesNotExist(_)) => None,
                    Err(e) => return Err(self.error(e)),
                };
                readers.push((table.to_string(), column.to_string(), keys));
                readers.len() - 1
            }
        };
        let Some(keys) = &readers[at].2 else {
            return Ok(None);
        };
        let (place, _) = entry_key(key);
        Ok(keys
            .get(place.as_slice())
            .map_err(|e| self.error(e))?
            .map(|v| TenantKey::new(v.value().to_string())))
    }
}

/// A key's tenant as `PENDING` records it: 0 for none, else 1 and the tenant.
fn held(tenant: Option<&str>) -> Vec<u8> {
    match tenant {
        None => vec![0],
        Some(tenant) => {
            let mut out = Vec::with_capacity(tenant.len() + 1);
            out.push(1);
            out.extend_from_slice(tenant.as_bytes());
            out
        }
    }
}

fn index_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::source(format!(
        "capture's key-map index {}: {e} (it is rebuilt from the vault when removed)",
        path.display()
    ))
}

fn pack<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| Error::source(format!("cannot encode a key-map index record: {e}")))
}

fn unpack<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes)
        .map_err(|e| index_error(path, format!("a record does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lifeboat_core::vault::LocalStore;
    use std::collections::HashMap;

    fn pair() -> KeymapPair {
        ("users".to_string(), "id".to_string())
    }

    fn layer(entries: &[(i64, Option<String>)]) -> Vec<(KeymapPair, KeymapLayer)> {
        let entries: HashMap<Value, Option<TenantKey>> = entries
            .iter()
            .map(|(k, t)| (Value::Int(*k), t.clone().map(TenantKey::new)))
            .collect();
        vec![(
            pair(),
            KeymapLayer {
                cleared: false,
                entries,
            },
        )]
    }

    /// A new vault under `dir/vault` and an empty index for its source `s` under `dir/a`.
    async fn vault_and_index(dir: &Path) -> (Vault, KeyIndex) {
        let vault = Vault::init(Arc::new(LocalStore::new(dir.join("vault"))))
            .await
            .expect("vault");
        let index = KeyIndex::open(&dir.join("a"), vault.id(), "s").expect("open");
        index.reset(vault.id(), "s").expect("reset");
        (vault, index)
    }

    /// A checkpoint of `index` at `position`: its key map, once committed.
    async fn checkpoint(vault: &Vault, index: &KeyIndex, position: u64) -> KeymapIndex {
        let prepared = index
            .prepare_checkpoint(vault, "s", &[pair()], position, false)
            .await
            .expect("prepare");
        let map = prepared.keymaps[0].clone();
        index
            .committed(prepared, &format!("checkpoint {position}"), position)
            .expect("commit");
        map
    }

    /// A checkpoint of source `s` at `position` holding only `map`, written to the vault.
    async fn put_checkpoint(vault: &Vault, map: KeymapIndex, position: u64) -> String {
        vault
            .put_checkpoint(&lifeboat_core::model::Checkpoint {
                source: "s".into(),
                position,
                commit_time_us: 0,
                tables: Vec::new(),
                keymaps: vec![map],
            })
            .await
            .expect("checkpoint")
    }

    /// A new index filled from `map` as capture rebuilds it: the chunks its listing names
    /// (read from the vault), then its deltas.
    async fn rebuild(vault: &Vault, dir: &Path, map: &KeymapIndex, position: u64) -> KeyIndex {
        let index = KeyIndex::open(dir, vault.id(), "s").expect("open");
        index.reset(vault.id(), "s").expect("reset");
        let chunks = vault.read_keymap_listing("s", map).await.expect("listing");
        assert_eq!(chunks, map.chunks, "the listing names the map's chunks");
        for chunk in &chunks {
            let read = vault
                .read_keymap_chunk("s", map, chunk)
                .await
                .expect("chunk");
            index
                .import_chunks(&pair(), &[(chunk, read.entries)])
                .expect("import chunk");
        }
        let mut deltas = Vec::new();
        for delta in &map.deltas {
            deltas.push(
                vault
                    .read_keymap_delta("s", map, delta)
                    .await
                    .expect("delta"),
            );
        }
        index
            .import_deltas(&pair(), map.bits, &deltas)
            .expect("import deltas");
        index
            .rebuilt(
                &[(pair(), map.bits, map.deltas.clone(), map.listing.clone())],
                &format!("checkpoint {position}"),
                position,
            )
            .expect("rebuilt");
        index
    }

    fn bytes_of(dir: &Path, suffix: &str) -> (usize, u64) {
        let mut out = (0, 0);
        for entry in std::fs::read_dir(dir.join("sources/s/keymaps")).expect("keymaps") {
            let path = entry.expect("entry").path();
            if path.to_string_lossy().ends_with(suffix) {
                out.0 += 1;
                out.1 += std::fs::metadata(&path).expect("stat").len();
            }
        }
        out
    }

    /// Every key `model` knows (and a few it does not) has the same tenant in `index`;
    /// the index counts as many keys.
    fn assert_same(index: &KeyIndex, model: &BTreeMap<i64, String>, keys: std::ops::Range<i64>) {
        for k in keys {
            let got = index.get("users", "id", &Value::Int(k)).expect("get");
            assert_eq!(
                got.as_ref().map(|t| t.as_str()),
                model.get(&k).map(String::as_str),
                "key {k}"
            );
        }
        assert_eq!(index.keys().expect("keys"), model.len() as u64);
    }

    /// A key whose tenant is back to what it was at the latest checkpoint by the next one
    /// goes in no delta: added and removed again (no tombstone naming a key that no layer
    /// holds, which would keep its value in the vault past a purge), moved and moved
    /// back, removed and added again to its tenant. A key whose tenant did change is in
    /// the delta, however many times it changed in between, with its tenant now.
    #[tokio::test]
    async fn a_key_back_to_its_checkpoint_tenant_goes_in_no_delta() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (vault, index) = vault_and_index(dir.path()).await;
        let t = |name: &str| Some(name.to_string());
        let all: Vec<(i64, Option<String>)> = (0..1_000).map(|k| (k, t("a"))).collect();
        index.apply(layer(&all), 1, true).expect("apply");
        let first = checkpoint(&vault, &index, 10).await;
        assert!(first.deltas.is_empty());

        let steps: Vec<Vec<(i64, Option<String>)>> = vec![
            // Added, then removed: no layer holds 5000.
            vec![
                (5_000, t("b")),
                (1, t("b")),
                (2, None),
                (3, t("b")),
                (4, None),
            ],
            vec![
                (5_000, None),
                (1, t("a")),
                (2, t("a")),
                (3, t("c")),
                (4, t("b")),
            ],
            // 3 ends at c after moving twice; 4 removed then given to b; 6 moved for good.
            vec![(6, t("z"))],
        ];
        for (i, step) in steps.iter().enumerate() {
            index
                .apply(layer(step), 11 + i as u64, false)
                .expect("apply");
        }
        let pending: Vec<(Value, Option<TenantKey>)> =
            index.pending_entries(&pair()).expect("pending");
        let expect = |k: i64, t: &str| (Value::Int(k), Some(TenantKey::new(t)));
        assert_eq!(
            pending,
            vec![expect(3, "c"), expect(4, "b"), expect(6, "z")]
        );
        let second = checkpoint(&vault, &index, 20).await;
        assert_eq!(second.deltas.len(), 1);
        assert_eq!(second.deltas[0].entries, 3);
        let delta = vault
            .read_keymap_delta("s", &second, &second.deltas[0])
            .await
            .expect("delta");
        assert_eq!(delta.entries, pending);

        // Nothing but keys back where they were: no delta at all, and a rebuild from the
        // vault holds the same map.
        index
            .apply(layer(&[(7, t("q")), (8, None)]), 21, false)
            .expect("apply");
        index
            .apply(layer(&[(7, t("a")), (8, t("a"))]), 22, false)
            .expect("apply");
        let third = checkpoint(&vault, &index, 30).await;
        assert_eq!(third.deltas, second.deltas, "no new delta");
        let mut model: BTreeMap<i64, String> = (0..1_000).map(|k| (k, "a".to_string())).collect();
        model.insert(3, "c".into());
        model.insert(4, "b".into());
        model.insert(6, "z".into());
        let rebuilt = rebuild(&vault, &dir.path().join("b"), &third, 30).await;
        assert_same(&rebuilt, &model, 0..1_010);
        assert_same(&index, &model, 0..1_010);
    }

    /// New and moved keys and removals go to one small delta per checkpoint while the
    /// chunks stay shared; past an eighth of the keys the map folds; at every step, an
    /// index rebuilt from the checkpoint's chunks and deltas holds the same map, the same
    /// deltas and the same buckets to fold.
    #[tokio::test]
    async fn deltas_carry_the_changes_a_fold_bounds_them_and_a_rebuild_matches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault_dir = dir.path().join("vault");
        let (vault, index) = vault_and_index(dir.path()).await;
        let tenant = |n: i64| format!("t{}", n % 4);
        let mut model: BTreeMap<i64, String> = (0..20_000).map(|k| (k, tenant(k))).collect();
        let all: Vec<(i64, Option<String>)> =
            model.iter().map(|(k, t)| (*k, Some(t.clone()))).collect();
        index.apply(layer(&all), 1, true).expect("apply");
        // The first checkpoint folds: the changed keys are not kept for a delta.
        assert!(index.pending_entries(&pair()).expect("pending").is_empty());

        // The first checkpoint writes every bucket, and no delta.
        let first = checkpoint(&vault, &index, 10).await;
        assert_eq!(first.bits, 3);
        assert_eq!(first.chunks.len(), 8);
        assert!(first.deltas.is_empty());
        let (chunks, chunk_bytes) = bytes_of(&vault_dir, ".kmap");
        assert_eq!(chunks, 8);
        assert_eq!(
            bytes_of(&vault_dir, ".kml").0,
            1,
            "the first checkpoint's listing"
        );
        assert!(first.listing.is_some());
        let smallest_chunk = chunk_bytes / 8 / 2;

        let steps: Vec<Vec<(i64, Option<String>)>> = vec![
            // Five new keys, one moved, one removed.
            (20_000..20_005)
                .map(|k| (k, Some("t1".to_string())))
                .chain([(7, Some("t9".to_string())), (8, None)])
                .collect(),
            // A new key removed again, the moved one back, a removed one back.
            vec![
                (20_000, None),
                (7, Some(tenant(7))),
                (8, Some("t2".to_string())),
            ],
            // 2,600 keys move: more than an eighth of the map in deltas, a fold.
            (0..2_600)
                .map(|k| (k * 7, Some("t5".to_string())))
                .collect(),
            // After the fold, a delta again.
            vec![(3, None), (20_010, Some("t3".to_string()))],
        ];
        let mut previous = first;
        for (step, changes) in steps.into_iter().enumerate() {
            let position = 20 + 10 * step as u64;
            for (k, t) in &changes {
                match t {
                    Some(t) => model.insert(*k, t.clone()),
                    None => model.remove(k),
                };
            }
            index
                .apply(layer(&changes), position - 1, true)
                .expect("apply");
            // Changed keys are kept for the next delta only up to the fold bound.
            let pending = index.pending_entries(&pair()).expect("pending").len();
            if step == 2 {
                assert!(pending <= 20_005 / 8, "{pending} kept");
            } else {
                assert_eq!(pending, changes.len());
            }
            let before = (bytes_of(&vault_dir, ".kmap"), bytes_of(&vault_dir, ".kmd"));
            let listings_before = bytes_of(&vault_dir, ".kml");
            let map = checkpoint(&vault, &index, position).await;
            let after = (bytes_of(&vault_dir, ".kmap"), bytes_of(&vault_dir, ".kmd"));
            let listings_after = bytes_of(&vault_dir, ".kml");
            if step == 2 {
                // The fold: the buckets changed since the last fold (every one here) are
                // written again, with a new listing of them, and no deltas are left.
                assert!(map.deltas.is_empty(), "{map:?}");
                assert_eq!(after.0 .0, before.0 .0 + 8);
                assert_eq!(after.1, before.1, "no delta written by a fold");
                assert_eq!(listings_after.0, listings_before.0 + 1, "a fold's listing");
                let listing = map.listing.as_ref().expect("listing");
                assert_eq!(listing.position, position);
                assert_ne!(map.listing, previous.listing);
            } else {
                // One delta, holding just the keys changed; the chunks and their listing
                // stay shared.
                assert_eq!(map.chunks, previous.chunks, "step {step}");
                assert_eq!(map.listing, previous.listing, "step {step}");
                assert_eq!(listings_after, listings_before, "no listing written");
                assert_eq!(map.deltas.len(), previous.deltas.len() + 1);
                assert_eq!(
                    map.deltas.last().expect("delta").entries,
                    changes.len() as u64
                );
                assert_eq!(after.0, before.0, "no chunk written");
                assert_eq!(after.1 .0, before.1 .0 + 1);
                let written = after.1 .1 - before.1 .1;
                assert!(
                    written < 200 && written < smallest_chunk / 10,
                    "a delta of {} keys took {written} B (chunks are about {smallest_chunk} B)",
                    changes.len()
                );
            }
            let keys: u64 = map.chunks.iter().map(|c| c.keys).sum();
            assert_eq!(map.keys, keys);
            assert_same(&index, &model, 0..20_020);
            let rebuilt =
                rebuild(&vault, &dir.path().join(format!("b{step}")), &map, position).await;
            assert_same(&rebuilt, &model, 0..20_020);
            let (state_a, refs_a, dirty_a) = index.map_snapshot(&pair()).expect("a");
            let (state_b, refs_b, dirty_b) = rebuilt.map_snapshot(&pair()).expect("b");
            assert_eq!(refs_a, refs_b);
            assert_eq!(dirty_a, dirty_b, "step {step}");
            assert_eq!(
                (state_a.bits, state_a.keys, state_a.delta_entries),
                (state_b.bits, state_b.keys, state_b.delta_entries)
            );
            assert_eq!(
                index.map_deltas(&pair()).expect("a"),
                rebuilt.map_deltas(&pair()).expect("b")
            );
            previous = map;
        }
    }

    /// A checkpoint that does not fold refers to its map's listing and carries only its
    /// delta: its object is about as large for a map of 64 buckets as for one of 1, and
    /// it writes no listing; only the first checkpoint's listing grows with the buckets.
    #[tokio::test]
    async fn a_checkpoint_between_folds_does_not_grow_with_the_buckets() {
        let mut sizes = Vec::new();
        for keys in [2_000i64, 150_000] {
            let dir = tempfile::tempdir().expect("tempdir");
            let vault_dir = dir.path().join("vault");
            let (vault, index) = vault_and_index(dir.path()).await;
            let all: Vec<(i64, Option<String>)> = (0..keys)
                .map(|k| (k, Some(format!("t{}", k % 4))))
                .collect();
            index.apply(layer(&all), 1, true).expect("apply");
            let put = |map: KeymapIndex, position: u64| put_checkpoint(&vault, map, position);
            let first = checkpoint(&vault, &index, 10).await;
            let first_listing = bytes_of(&vault_dir, ".kml");
            assert_eq!(first_listing.0, 1);
            put(first.clone(), 10).await;
            let mut steps = Vec::new();
            for step in 0..3i64 {
                let changes = vec![
                    (keys + step, Some("t1".to_string())),
                    (step * 3, Some("t9".to_string())),
                ];
                index
                    .apply(layer(&changes), 19 + step as u64 * 10, true)
                    .expect("apply");
                let map = checkpoint(&vault, &index, 20 + step as u64 * 10).await;
                assert_eq!(map.listing, first.listing, "{keys} keys, step {step}");
                assert_eq!(map.deltas.len(), step as usize + 1);
                let name = put(map, 20 + step as u64 * 10).await;
                steps.push(std::fs::metadata(vault_dir.join(name)).expect("stat").len());
            }
            assert_eq!(
                bytes_of(&vault_dir, ".kml"),
                first_listing,
                "{keys} keys: no listing written between folds"
            );
            sizes.push((first.chunks.len(), first_listing.1, steps));
        }
        let (small, large) = (&sizes[0], &sizes[1]);
        assert_eq!((small.0, large.0), (1, 64), "{sizes:?}");
        assert!(
            large.1 > small.1 * 10,
            "the listing follows the buckets: {sizes:?}"
        );
        for (a, b) in small.2.iter().zip(&large.2) {
            assert!(
                b.abs_diff(*a) < 64,
                "a checkpoint between folds: {a} B with 1 bucket, {b} B with 64: {sizes:?}"
            );
        }
    }

    /// After a purge of a tenant from checkpoints capture wrote (its keys in the chunks,
    /// keys only it held and keys it took from another in deltas, removals of its keys),
    /// an index rebuilt from any checkpoint holds the map of that time without the tenant:
    /// a key it took from another is absent, not the other's again. Capture goes on from the
    /// rebuilt index, and a rebuild from its next checkpoint matches it.
    #[tokio::test]
    async fn an_index_rebuilt_after_a_purge_holds_the_map_without_the_tenant() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (vault, index) = vault_and_index(dir.path()).await;
        let tenant = |k: i64| ["b", "c", "gone"][k as usize % 3].to_string();
        let mut model: BTreeMap<i64, String> = (0..3_000).map(|k| (k, tenant(k))).collect();
        let all: Vec<(i64, Option<String>)> =
            model.iter().map(|(k, t)| (*k, Some(t.clone()))).collect();
        index.apply(layer(&all), 1, true).expect("apply");
        let put = |map: KeymapIndex, position: u64| put_checkpoint(&vault, map, position);
        put(checkpoint(&vault, &index, 10).await, 10).await;
        let gone = || Some("gone".to_string());
        let steps: Vec<Vec<(i64, Option<String>)>> = vec![
            // New keys of the tenant only, one taken from b, one of its own removed.
            vec![(5_000, gone()), (5_001, gone()), (3, gone()), (2, None)],
            // One of its new keys removed, one given to c, one of b's removed.
            vec![(5_000, None), (5_001, Some("c".to_string())), (0, None)],
            // Taken from c, then a key it took given back to b.
            vec![(1, gone()), (3, Some("b".to_string())), (5_002, gone())],
        ];
        let mut models = vec![model.clone()];
        for (step, changes) in steps.iter().enumerate() {
            let position = 20 + 10 * step as u64;
            for (k, t) in changes {
                match t {
                    Some(t) => model.insert(*k, t.clone()),
                    None => model.remove(k),
                };
            }
            index
                .apply(layer(changes), position - 1, true)
                .expect("apply");
            let map = checkpoint(&vault, &index, position).await;
            assert_eq!(map.deltas.len(), step + 1, "capture wrote a delta");
            put(map, position).await;
            models.push(model.clone());
        }

        lifeboat_core::purge::purge_tenant(&vault, "s", &TenantKey::new("gone"))
            .await
            .expect("purge");
        let listed = vault.list_checkpoints("s").await.expect("list");
        assert_eq!(listed.len(), models.len());
        let mut latest = None;
        for (i, (listed, model)) in listed.iter().zip(&models).enumerate() {
            let read = vault.read_checkpoint(&listed.name).await.expect("read");
            let map = read.keymaps[0].clone();
            let without: BTreeMap<i64, String> = model
                .iter()
                .filter(|(_, t)| *t != "gone")
                .map(|(k, t)| (*k, t.clone()))
                .collect();
            let rebuilt = rebuild(
                &vault,
                &dir.path().join(format!("r{i}")),
                &map,
                read.position,
            )
            .await;
            assert_same(&rebuilt, &without, 0..5_010);
            latest = Some((rebuilt, read.position, without));
        }
        let (rebuilt, position, mut without) = latest.expect("a checkpoint");
        assert_eq!(
            rebuilt.get("users", "id", &Value::Int(3)).expect("get"),
            Some(TenantKey::new("b")),
            "given back to b after the tenant"
        );
        assert_eq!(
            rebuilt.get("users", "id", &Value::Int(1)).expect("get"),
            None
        );
        let changes = vec![(1, Some("c".to_string())), (7, None)];
        rebuilt
            .apply(layer(&changes), position + 1, true)
            .expect("apply");
        let next = checkpoint(&vault, &rebuilt, position + 10).await;
        without.insert(1, "c".to_string());
        without.remove(&7);
        assert_same(&rebuilt, &without, 0..5_010);
        let again = rebuild(&vault, &dir.path().join("next"), &next, position + 10).await;
        assert_same(&again, &without, 0..5_010);
        assert_eq!(
            rebuilt.map_deltas(&pair()).expect("a"),
            again.map_deltas(&pair()).expect("b")
        );
    }

    #[test]
    fn a_map_folds_past_an_eighth_of_its_keys_or_more_deltas_than_buckets() {
        let deltas = |n: usize, entries: u64| -> Vec<KeymapDeltaRef> {
            (0..n)
                .map(|i| KeymapDeltaRef {
                    position: i as u64,
                    hash: String::new(),
                    entries,
                })
                .collect()
        };
        assert!(!should_fold(8_000, 1, &deltas(3, 300), 99));
        assert!(!should_fold(8_000, 1, &deltas(3, 300), 100));
        assert!(should_fold(8_000, 1, &deltas(3, 300), 101));
        // Up to 16 deltas, or one per bucket where there are more buckets.
        assert!(!should_fold(1 << 20, 2, &deltas(15, 1), 1));
        assert!(should_fold(1 << 20, 2, &deltas(16, 1), 1));
        assert!(!should_fold(1 << 20, 6, &deltas(63, 1), 1));
        assert!(should_fold(1 << 20, 6, &deltas(64, 1), 1));
    }

    #[test]
    fn bits_follow_the_key_count_with_room_either_way() {
        assert_eq!(choose_bits(0, 10), 0);
        assert_eq!(choose_bits(0, 8192), 0);
        assert_eq!(choose_bits(0, 8193), 2);
        assert_eq!(choose_bits(0, 10_000_000), 12);
        // Within a factor of two either way of the aim: kept.
        assert_eq!(choose_bits(12, 5_000_000), 12);
        assert_eq!(choose_bits(12, 30_000_000), 12);
        assert_eq!(choose_bits(12, 40_000_000), 14);
        assert_eq!(choose_bits(12, 1_000_000), 8);
    }
}
