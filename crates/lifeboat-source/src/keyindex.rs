//! Capture's local index of the `tenant_via` key maps (docs/vault-format.md, "Key maps"):
//! an embedded redb file under `[capture] state_dir`, one per vault and source, so that
//! capture's memory does not grow with the number of parent keys. It is a cache of the
//! vault: it names the vault, the source, the latest checkpoint it matches and the position
//! its entries describe, and is rebuilt from the vault when it does not match.
//!
//! Entries are keyed by the key's 64-bit bucket hash, then its encoding, so that a bucket
//! under any number of bucket bits is one contiguous range. The index also keeps, per key
//! map, its bucket bits and key count, the chunk each bucket has in the latest checkpoint,
//! and the buckets changed since (dirty): the next checkpoint writes only those.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};

use lifeboat_core::model::{
    keymap_bucket, keymap_key_bytes, keymap_key_hash, KeymapChunk, KeymapChunkRef, KeymapIndex,
    TenantKey, Value, KEYMAP_MAX_BITS,
};
use lifeboat_core::tenancy::{KeyStore, KeymapLayer, KeymapPair};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

/// The index's page cache: what keeps hot keys in memory, bounded.
const CACHE_BYTES: usize = 32 << 20;
/// Keys a bucket aims at; a map's bits rise above twice this average, fall below a quarter.
const KEYS_PER_BUCKET: u64 = 4096;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Key map name → `MapState`.
const MAPS: TableDefinition<&str, &[u8]> = TableDefinition::new("maps");
/// Key map name, 0, bucket (big-endian) → the bucket's chunk in the latest checkpoint.
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("chunks");
/// Key map name, 0, bucket (big-endian) → (): changed since the latest checkpoint.
const DIRTY: TableDefinition<&[u8], ()> = TableDefinition::new("dirty");

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct MapState {
    bits: u8,
    keys: u64,
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
    maps: Vec<(KeymapPair, u8, BTreeMap<u32, KeymapChunkRef>)>,
}

#[derive(Clone)]
pub struct KeyIndex {
    db: Arc<Database>,
    path: PathBuf,
}

fn map_name(pair: &KeymapPair) -> String {
    format!("{}\u{1f}{}", pair.0, pair.1)
}

fn keys_table(pair: &KeymapPair) -> String {
    format!("keys\u{1f}{}", map_name(pair))
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
        let path = dir.join(format!("keymaps-{vault_id}-{source}.redb"));
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
        })
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
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
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
        txn.commit().map_err(|e| self.error(e))
    }

    /// Take chunks of a checkpoint being rebuilt from, in one transaction (not durable
    /// until `rebuilt`).
    pub fn import_chunks(
        &self,
        pair: &KeymapPair,
        chunks: &[(&KeymapChunkRef, Vec<(Value, TenantKey)>)],
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.error(e))?;
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
        txn.commit().map_err(|e| self.error(e))
    }

    /// The rebuild from checkpoint `checkpoint` (at `head`) is complete: `maps` are its
    /// key maps' bits and key counts. Durable when this returns.
    pub fn rebuilt(
        &self,
        maps: &[(KeymapPair, u8, u64)],
        checkpoint: &str,
        head: u64,
    ) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut table = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            for (pair, bits, keys) in maps {
                let state = MapState {
                    bits: *bits,
                    keys: *keys,
                };
                table
                    .insert(map_name(pair).as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("checkpoint", checkpoint.as_bytes())
                .map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
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
        let mut txn = self.db.begin_write().map_err(|e| self.error(e))?;
        if !durable {
            txn.set_durability(Durability::None)
                .map_err(|e| self.error(e))?;
        }
        {
            let mut maps = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            let mut dirty = txn.open_table(DIRTY).map_err(|e| self.error(e))?;
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
                for (key, tenant) in layer.entries {
                    let (place, hash) = entry_key(&key);
                    let changed = match &tenant {
                        Some(tenant) => {
                            let before = keys
                                .insert(place.as_slice(), tenant.as_str())
                                .map_err(|e| self.error(e))?
                                .map(|v| v.value().to_string());
                            if before.is_none() {
                                state.keys += 1;
                            }
                            before.as_deref() != Some(tenant.as_str())
                        }
                        None => {
                            let before =
                                keys.remove(place.as_slice()).map_err(|e| self.error(e))?;
                            if before.is_some() {
                                state.keys -= 1;
                            }
                            before.is_some()
                        }
                    };
                    if changed {
                        let bucket = keymap_bucket(hash, state.bits);
                        dirty
                            .insert(bucket_key(&pair, bucket).as_slice(), ())
                            .map_err(|e| self.error(e))?;
                    }
                }
                maps.insert(name.as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
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

    /// Write the chunks of the buckets changed since the latest checkpoint (every bucket,
    /// with `full` or when a map's bits change), each named by `position`, and return the
    /// new checkpoint's key-map index. The local index changes only at `committed`.
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
        };
        for pair in pairs {
            let (state, mut refs, dirty) = self.map_snapshot(pair)?;
            let bits = choose_bits(state.bits, state.keys);
            let buckets: BTreeSet<u32> = if full || bits != state.bits {
                refs.clear();
                (0..(1u32 << bits)).collect()
            } else {
                dirty
            };
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
            prepared.keymaps.push(KeymapIndex {
                table: pair.0.clone(),
                column: pair.1.clone(),
                bits,
                keys: refs.values().map(|r| r.keys).sum(),
                chunks: refs.values().cloned().collect(),
            });
            prepared.maps.push((pair.clone(), bits, refs));
        }
        Ok(prepared)
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
    /// references, clear the changed buckets. Durable when this returns.
    pub fn committed(&self, prepared: Prepared, name: &str, head: u64) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut maps = txn.open_table(MAPS).map_err(|e| self.error(e))?;
            let mut chunks = txn.open_table(CHUNKS).map_err(|e| self.error(e))?;
            let mut dirty = txn.open_table(DIRTY).map_err(|e| self.error(e))?;
            for (pair, bits, refs) in prepared.maps {
                let prefix = bucket_key(&pair, 0);
                let prefix = prefix[..prefix.len() - 4].to_vec();
                let upper = {
                    let mut upper = prefix.clone();
                    upper.push(u8::MAX);
                    upper
                };
                chunks
                    .retain_in::<&[u8], _>(prefix.as_slice()..upper.as_slice(), |_, _| false)
                    .map_err(|e| self.error(e))?;
                dirty
                    .retain_in::<&[u8], _>(prefix.as_slice()..upper.as_slice(), |_, _| false)
                    .map_err(|e| self.error(e))?;
                for (bucket, chunk) in &refs {
                    chunks
                        .insert(
                            bucket_key(&pair, *bucket).as_slice(),
                            pack(chunk)?.as_slice(),
                        )
                        .map_err(|e| self.error(e))?;
                }
                let name = map_name(&pair);
                let mut state: MapState =
                    match maps.get(name.as_str()).map_err(|e| self.error(e))? {
                        Some(v) => unpack(&self.path, v.value())?,
                        None => MapState::default(),
                    };
                state.bits = bits;
                maps.insert(name.as_str(), pack(&state)?.as_slice())
                    .map_err(|e| self.error(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("checkpoint", name.as_bytes())
                .map_err(|e| self.error(e))?;
            meta.insert("head", head.to_be_bytes().as_slice())
                .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))
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
        let pair = (table.to_string(), column.to_string());
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let name = keys_table(&pair);
        let keys = match txn.open_table(TableDefinition::<&[u8], &str>::new(&name)) {
            Ok(keys) => keys,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let (place, _) = entry_key(key);
        Ok(keys
            .get(place.as_slice())
            .map_err(|e| self.error(e))?
            .map(|v| TenantKey::new(v.value().to_string())))
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
