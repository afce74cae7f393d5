//! Purge: remove one tenant's data from a source's history in the vault
//! (docs/vault-format.md, "Purge"). Objects are immutable, so a segment or checkpoint that
//! holds the tenant is written again without it and the old object deleted afterwards; the
//! tenant's bases are deleted. Every step can be repeated: a purge interrupted half way is
//! finished by running it again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::error::Result;
use crate::model::{
    keymap_bucket, keymap_key_bytes, keymap_key_hash, KeymapChunk, KeymapChunkRef, KeymapDelta,
    KeymapDeltaRef, KeymapIndex, KeymapListingRef, TenantKey, Value,
};
use crate::vault::{keymap_chunk_name, keymap_delta_name, keymap_listing_name, Vault};

/// What a purge removed from one source.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Segments written again without the tenant's changes.
    pub segments: usize,
    /// The tenant's changes removed from them.
    pub changes: usize,
    /// Checkpoints written again without the tenant's key-map entries.
    pub checkpoints: usize,
    /// The tenant's bases deleted.
    pub bases: usize,
}

impl PurgeReport {
    pub fn objects(&self) -> usize {
        self.segments + self.checkpoints + self.bases
    }
}

/// Remove `tenant` from `source`'s history: its changes from every segment, its key-map
/// entries from every checkpoint, and its bases.
pub async fn purge_tenant(vault: &Vault, source: &str, tenant: &TenantKey) -> Result<PurgeReport> {
    let mut report = PurgeReport::default();
    for segment_ref in vault.list_segments(source).await? {
        let (_, tenants) = vault.read_segment_summary(&segment_ref.name).await?;
        if !tenants.contains(tenant) {
            continue;
        }
        let mut segment = vault.read_segment(&segment_ref.name).await?;
        segment.generation += 1;
        for tx in &mut segment.transactions {
            let before = tx.changes.len();
            tx.changes.retain(|c| c.tenant.as_ref() != Some(tenant));
            report.changes += before - tx.changes.len();
        }
        // The rewritten segment covers the same transactions: readers skip the duplicates
        // while both exist, so deleting the old one last keeps the vault readable.
        let name = vault.put_segment(&segment).await?;
        if name != segment_ref.name {
            vault.delete(&segment_ref.name).await?;
        }
        report.segments += 1;
    }
    // Key-map chunks and deltas are shared by checkpoints: each one naming the tenant is written
    // again once (same position, new hash), and the old ones are deleted only after every
    // checkpoint that referred to them was written again.
    let mut rewritten: HashMap<String, Option<KeymapChunkRef>> = HashMap::new();
    // The keys each rewritten chunk gave the tenant, by the chunk's old name.
    let mut removed: HashMap<String, HashSet<Value>> = HashMap::new();
    // A delta's rewrite depends on the layers before it as well (`Layers::context`).
    let mut rewritten_deltas: HashMap<(String, u128), Option<KeymapDeltaRef>> = HashMap::new();
    // Deltas some checkpoint keeps as they are: never deleted.
    let mut kept = BTreeSet::new();
    // A listing naming a rewritten chunk is written again too (its position, a new hash):
    // the checkpoints that shared it share the new one.
    let mut rewritten_listings: HashMap<String, Option<KeymapListingRef>> = HashMap::new();
    let mut walks: HashMap<(String, String), Layers> = HashMap::new();
    let mut replaced = BTreeSet::new();
    for checkpoint_ref in vault.list_checkpoints(source).await? {
        let mut checkpoint = vault.read_checkpoint(&checkpoint_ref.name).await?;
        let mut changed = false;
        for map in &mut checkpoint.keymaps {
            let old_chunks = map.chunks.clone();
            let old_listing = map.listing.clone();
            let mut chunks = Vec::with_capacity(map.chunks.len());
            let mut chunks_changed = false;
            for chunk in &map.chunks {
                let old = keymap_chunk_name(source, chunk.position, &chunk.hash);
                let new = match rewritten.get(&old) {
                    Some(new) => new.clone(),
                    None => {
                        let read = vault.read_keymap_chunk(source, map, chunk).await?;
                        let (gone, entries): (Vec<_>, Vec<_>) =
                            read.entries.iter().cloned().partition(|(_, t)| t == tenant);
                        let new = if gone.is_empty() {
                            Some(chunk.clone())
                        } else if entries.is_empty() {
                            None
                        } else {
                            let rewritten = KeymapChunk { entries, ..read };
                            Some(vault.put_keymap_chunk(&rewritten, chunk.position).await?)
                        };
                        if !gone.is_empty() {
                            removed.insert(old.clone(), gone.into_iter().map(|(k, _)| k).collect());
                        }
                        rewritten.insert(old.clone(), new.clone());
                        new
                    }
                };
                if new.as_ref() != Some(chunk) {
                    changed = true;
                    chunks_changed = true;
                    replaced.insert(old);
                }
                chunks.extend(new);
            }
            map.keys = chunks.iter().map(|c| c.keys).sum();
            map.chunks = chunks;
            if chunks_changed {
                if let Some(listing) = map.listing.take() {
                    let old = keymap_listing_name(source, listing.position, &listing.hash);
                    map.listing = match rewritten_listings.get(&old) {
                        Some(new) => new.clone(),
                        None => {
                            vault
                                .put_keymap_listing(source, map, listing.position)
                                .await?;
                            rewritten_listings.insert(old.clone(), map.listing.clone());
                            map.listing.clone()
                        }
                    };
                    replaced.insert(old);
                }
            }
            // Deltas: an entry naming the tenant, or removing a key the tenant held, is
            // decided by the layers before it (docs/vault-format.md, "Purge").
            let old_deltas = std::mem::take(&mut map.deltas);
            let base = match &old_listing {
                Some(l) => keymap_listing_name(source, l.position, &l.hash),
                None => String::new(),
            };
            let names: Vec<String> = old_deltas
                .iter()
                .map(|d| keymap_delta_name(source, d.position, &d.hash))
                .collect();
            let layers = walks
                .entry((map.table.clone(), map.column.clone()))
                .or_default();
            layers.start(&base, old_chunks, &map.chunks, &names);
            let mut deltas = Vec::with_capacity(old_deltas.len());
            for (delta, old) in old_deltas.iter().zip(names) {
                let new = match layers.reused() {
                    Some(new) => new,
                    None => {
                        let context = (old.clone(), layers.context());
                        let read = vault.read_keymap_delta(source, map, delta).await?;
                        let entries = layers
                            .decide(vault, source, map, &removed, &read.entries, tenant)
                            .await?;
                        let new = match (rewritten_deltas.get(&context), entries) {
                            (Some(new), _) => new.clone(),
                            (None, None) => Some(delta.clone()),
                            (None, Some(entries)) if entries.is_empty() => None,
                            (None, Some(entries)) => {
                                let rewritten = KeymapDelta { entries, ..read };
                                Some(vault.put_keymap_delta(&rewritten, delta.position).await?)
                            }
                        };
                        rewritten_deltas.insert(context, new.clone());
                        layers.walked(old.clone(), new.clone());
                        new
                    }
                };
                if new.as_ref() == Some(delta) {
                    kept.insert(old);
                } else {
                    changed = true;
                    replaced.insert(old);
                }
                deltas.extend(new);
            }
            map.deltas = deltas;
        }
        if !changed {
            continue;
        }
        let name = vault.put_checkpoint(&checkpoint).await?;
        if name != checkpoint_ref.name {
            vault.delete(&checkpoint_ref.name).await?;
        }
        report.checkpoints += 1;
    }
    for old in replaced.difference(&kept) {
        vault.delete(old).await?;
    }
    // Chunks an interrupted purge left without any checkpoint referring to them.
    if let Some(latest) = vault.list_checkpoints(source).await?.last() {
        for chunk in
            crate::prune::unreferenced_keymap_chunks(vault, source, latest.position + 1, 0).await?
        {
            vault.delete(&chunk.name).await?;
        }
    }
    for base in vault.list_bases(source, tenant).await? {
        vault.delete(&base.name).await?;
        report.bases += 1;
    }
    Ok(report)
}

/// What the layers of a key map before a delta gave a key, before the purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// No tenant.
    Nothing,
    /// The purged tenant.
    Purged,
    /// Another tenant.
    Other,
}

/// One key map's layers as the purge walks a checkpoint's deltas, oldest first: what the
/// chunks and the deltas walked so far gave each key, before the purge. Kept from one
/// checkpoint to the next, which mostly refers to the same listing and deltas plus one,
/// so that each delta is read and decided once.
#[derive(Default)]
struct Layers {
    /// The listing (its name before the purge; empty for none) the deltas apply over.
    base: String,
    /// The map's chunks before and after the purge.
    old_chunks: Vec<KeymapChunkRef>,
    new_chunks: Vec<KeymapChunkRef>,
    /// The deltas walked (names before the purge) and what each became.
    walked: Vec<(String, Option<KeymapDeltaRef>)>,
    /// The identity of the layers before each walked delta and after the last one.
    contexts: Vec<u128>,
    /// How many of `walked` the current checkpoint has passed.
    next: usize,
    /// What the deltas walked gave each of their keys.
    keys: HashMap<Value, Held>,
    /// What the chunks give the keys looked up in them: `Other` or `Nothing`.
    in_chunks: HashMap<Value, Held>,
}

impl Layers {
    /// Start a checkpoint's map: its listing before the purge (`base`), its chunks before
    /// and after, and its deltas' names. The walk so far is kept when the map has the same
    /// listing and its deltas begin with the ones walked.
    fn start(
        &mut self,
        base: &str,
        old_chunks: Vec<KeymapChunkRef>,
        new_chunks: &[KeymapChunkRef],
        deltas: &[String],
    ) {
        if self.base != base || self.contexts.is_empty() {
            self.base = base.to_string();
            self.in_chunks.clear();
            self.walked.clear();
            self.keys.clear();
            self.contexts = vec![xxhash_rust::xxh3::xxh3_128(base.as_bytes())];
        }
        self.old_chunks = old_chunks;
        self.new_chunks = new_chunks.to_vec();
        let extends = self.walked.len() <= deltas.len()
            && self.walked.iter().zip(deltas).all(|((w, _), d)| w == d);
        if !extends {
            self.walked.clear();
            self.keys.clear();
            self.contexts.truncate(1);
        }
        self.next = 0;
    }

    /// What the next delta became, when it was walked already with these layers before it.
    fn reused(&mut self) -> Option<Option<KeymapDeltaRef>> {
        let (_, new) = self.walked.get(self.next)?;
        self.next += 1;
        Some(new.clone())
    }

    /// The identity of the layers before the next delta: the listing and the deltas before
    /// it, by their names before the purge.
    fn context(&self) -> u128 {
        self.contexts[self.next]
    }

    /// The next delta, `old` before the purge, was decided and became `new`.
    fn walked(&mut self, old: String, new: Option<KeymapDeltaRef>) {
        let mut bytes = self.context().to_be_bytes().to_vec();
        bytes.extend_from_slice(old.as_bytes());
        self.contexts.push(xxhash_rust::xxh3::xxh3_128(&bytes));
        self.walked.push((old, new));
        self.next += 1;
    }

    /// The next delta's entries without `tenant`, or `None` when none changes: an entry
    /// naming the tenant becomes a tombstone when the layers before it give the key
    /// another tenant and goes otherwise; a tombstone of a key they give the tenant goes.
    /// Takes the delta's entries into the layers.
    async fn decide(
        &mut self,
        vault: &Vault,
        source: &str,
        map: &KeymapIndex,
        removed: &HashMap<String, HashSet<Value>>,
        entries: &[(Value, Option<TenantKey>)],
        tenant: &TenantKey,
    ) -> Result<Option<Vec<(Value, Option<TenantKey>)>>> {
        let bucket = |key: &Value| keymap_bucket(keymap_key_hash(&keymap_key_bytes(key)), map.bits);
        // Whether another tenant holds a key named for the tenant: looked up in the chunks
        // after the purge, each chunk read once.
        let mut lookups: BTreeMap<u32, Vec<&Value>> = BTreeMap::new();
        for (key, t) in entries {
            if t.as_ref() == Some(tenant)
                && !self.keys.contains_key(key)
                && !self.in_chunks.contains_key(key)
            {
                lookups.entry(bucket(key)).or_default().push(key);
            }
        }
        for (bucket, keys) in lookups {
            let held: HashSet<Value> =
                match self.new_chunks.binary_search_by_key(&bucket, |c| c.bucket) {
                    Ok(i) => vault
                        .read_keymap_chunk(source, map, &self.new_chunks[i])
                        .await?
                        .entries
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect(),
                    Err(_) => HashSet::new(),
                };
            for key in keys {
                let found = if held.contains(key) {
                    Held::Other
                } else {
                    Held::Nothing
                };
                self.in_chunks.insert(key.clone(), found);
            }
        }
        let mut out = Vec::with_capacity(entries.len());
        let mut changed = false;
        for (key, t) in entries {
            // What the layers before gave the key. From the chunks: for an entry naming the
            // tenant, whether another tenant holds it (looked up above); for a tombstone,
            // only whether the tenant held it matters (`Other` stands for anything else);
            // another tenant's entry is kept whatever they gave.
            let before = match self.keys.get(key) {
                Some(held) => *held,
                None if t.is_none() => {
                    let chunk = self
                        .old_chunks
                        .binary_search_by_key(&bucket(key), |c| c.bucket)
                        .ok()
                        .map(|i| &self.old_chunks[i]);
                    let gave_tenant = chunk.is_some_and(|c| {
                        removed
                            .get(&keymap_chunk_name(source, c.position, &c.hash))
                            .is_some_and(|keys| keys.contains(key))
                    });
                    if gave_tenant {
                        Held::Purged
                    } else {
                        Held::Other
                    }
                }
                None => self.in_chunks.get(key).copied().unwrap_or(Held::Nothing),
            };
            let after = match t {
                Some(t) if t == tenant => Held::Purged,
                Some(_) => Held::Other,
                None => Held::Nothing,
            };
            self.keys.insert(key.clone(), after);
            match (t, before) {
                (Some(t), Held::Other) if t == tenant => {
                    out.push((key.clone(), None));
                    changed = true;
                }
                (Some(t), _) if t == tenant => changed = true,
                (None, Held::Purged) => changed = true,
                _ => out.push((key.clone(), t.clone())),
            }
        }
        Ok(changed.then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Checkpoint;
    use crate::vault::LocalStore;

    fn chunk(column: &str, entries: &[(i64, &str)]) -> KeymapChunk {
        KeymapChunk {
            source: "s".into(),
            table: "issues".into(),
            column: column.into(),
            bits: 0,
            bucket: 0,
            entries: entries
                .iter()
                .map(|(k, t)| (Value::Int(*k), TenantKey::new(*t)))
                .collect(),
        }
    }

    fn checkpoint(position: u64, maps: &[(&str, &KeymapChunkRef)]) -> Checkpoint {
        Checkpoint {
            source: "s".into(),
            position,
            commit_time_us: position as i64,
            tables: Vec::new(),
            keymaps: maps
                .iter()
                .map(|(column, chunk)| KeymapIndex {
                    table: "issues".into(),
                    column: column.to_string(),
                    bits: 0,
                    keys: chunk.keys,
                    chunks: vec![(*chunk).clone()],
                    listing: None,
                    deltas: Vec::new(),
                })
                .collect(),
        }
    }

    /// A purged tenant's key-map entries are gone from every checkpoint; a chunk shared by
    /// two checkpoints is written again once, and the old one deleted, and so is the
    /// listing naming it (same position, shared by both again); a chunk without the tenant
    /// and its listing stay as they are; a chunk no checkpoint refers to goes.
    #[tokio::test]
    async fn a_purge_rewrites_shared_key_map_chunks_once() {
        let (_dir, vault) = local_vault().await;
        let both = vault
            .put_keymap_chunk(&chunk("id", &[(1, "a"), (2, "b"), (3, "b")]), 10)
            .await
            .expect("chunk");
        let only_a = vault
            .put_keymap_chunk(&chunk("code", &[(1, "a")]), 10)
            .await
            .expect("chunk");
        let mut shared = checkpoint(10, &[("id", &both), ("code", &only_a)]);
        for map in &mut shared.keymaps {
            vault
                .put_keymap_listing("s", map, 10)
                .await
                .expect("listing");
        }
        let old_listings: Vec<_> = shared.keymaps.iter().map(|m| m.listing.clone()).collect();
        for position in [10, 20] {
            shared.position = position;
            vault.put_checkpoint(&shared).await.expect("checkpoint");
        }
        // What an interrupted purge leaves: a chunk no checkpoint refers to.
        vault
            .put_keymap_chunk(&chunk("id", &[(2, "b")]), 20)
            .await
            .expect("leftover");
        let report = purge_tenant(&vault, "s", &TenantKey::new("b"))
            .await
            .expect("purge");
        assert_eq!(report.checkpoints, 2);
        let mut names = BTreeSet::new();
        for checkpoint in vault.list_checkpoints("s").await.expect("list") {
            let read = vault.read_checkpoint(&checkpoint.name).await.expect("read");
            let id = read.keymaps[0].listing.clone().expect("listing");
            let old = old_listings[0].clone().expect("listing");
            assert_eq!(id.position, old.position);
            assert_ne!(id.hash, old.hash, "the listing naming b's chunk is new");
            assert_eq!(read.keymaps[1].listing, old_listings[1], "kept");
            for map in &read.keymaps {
                let listing = map.listing.as_ref().expect("listing");
                names.insert(keymap_listing_name("s", listing.position, &listing.hash));
                for reference in &map.chunks {
                    let chunk = vault
                        .read_keymap_chunk("s", map, reference)
                        .await
                        .expect("chunk");
                    assert!(chunk.entries.iter().all(|(_, t)| t.as_str() != "b"));
                    assert_eq!(map.keys, chunk.entries.len() as u64);
                    names.insert(keymap_chunk_name("s", reference.position, &reference.hash));
                }
            }
        }
        let listed: BTreeSet<String> = vault
            .list_keymap_chunks("s")
            .await
            .expect("chunks")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            listed, names,
            "the old chunk and listing are gone, the shared new ones kept"
        );
        assert_eq!(listed.len(), 4, "two chunks, two listings");
        assert!(listed.contains(&keymap_chunk_name("s", 10, &only_a.hash)));
    }

    fn delta(column: &str, entries: &[(i64, Option<&str>)]) -> KeymapDelta {
        KeymapDelta {
            source: "s".into(),
            table: "issues".into(),
            column: column.into(),
            entries: entries
                .iter()
                .map(|(k, t)| (Value::Int(*k), t.map(TenantKey::new)))
                .collect(),
        }
    }

    /// A new vault on a local directory, kept while the directory is.
    async fn local_vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        (dir, vault)
    }

    /// A map as a reader of the whole map sees it at a checkpoint: its chunks, then its
    /// deltas oldest first.
    async fn read_map(vault: &Vault, map: &KeymapIndex) -> BTreeMap<Vec<u8>, (Value, String)> {
        let mut out = BTreeMap::new();
        for reference in &map.chunks {
            let chunk = vault
                .read_keymap_chunk("s", map, reference)
                .await
                .expect("chunk");
            for (key, tenant) in chunk.entries {
                out.insert(keymap_key_bytes(&key), (key, tenant.as_str().to_string()));
            }
        }
        for reference in &map.deltas {
            let delta = vault
                .read_keymap_delta("s", map, reference)
                .await
                .expect("delta");
            for (key, tenant) in delta.entries {
                match tenant {
                    Some(t) => out.insert(keymap_key_bytes(&key), (key, t.as_str().to_string())),
                    None => out.remove(&keymap_key_bytes(&key)),
                };
            }
        }
        out
    }

    /// Every key-map object of source `s` as its decompressed body, by name.
    async fn keymap_bodies(vault: &Vault) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for name in vault
            .store()
            .list("sources/s/keymaps/")
            .await
            .expect("list")
        {
            let bytes = vault
                .store()
                .get(&name)
                .await
                .expect("get")
                .expect("object");
            assert_eq!(&bytes[..8], b"LIFEBOAT", "{name}");
            let body = zstd::decode_all(&bytes[11..]).expect("zstd body");
            out.insert(name, body);
        }
        out
    }

    fn holds(body: &[u8], text: &str) -> bool {
        body.windows(text.len()).any(|w| w == text.as_bytes())
    }

    /// A delta that moved a key to the purged tenant from another gets a tombstone there
    /// (the key must not fall back to the chunk's tenant); an entry for a key no earlier
    /// layer holds is dropped, and so is a later tombstone of a key the tenant held; an
    /// entry moving a key from the tenant to another becomes a tombstone where the key
    /// falls back to a third; a delta without the tenant is kept; the replaced delta is
    /// deleted.
    #[tokio::test]
    async fn a_purge_keeps_a_tombstone_only_where_an_earlier_layer_holds_the_key() {
        let (_dir, vault) = local_vault().await;
        let chunk = vault
            .put_keymap_chunk(&chunk("id", &[(1, "a"), (2, "a")]), 10)
            .await
            .expect("chunk");
        let moved = vault
            .put_keymap_delta(
                &delta(
                    "id",
                    &[
                        (1, Some("b")),
                        (3, Some("a")),
                        (4, Some("b")),
                        (5, Some("a")),
                    ],
                ),
                20,
            )
            .await
            .expect("delta");
        let later = vault
            .put_keymap_delta(&delta("id", &[(2, None), (4, None), (5, Some("b"))]), 30)
            .await
            .expect("delta");
        let other = vault
            .put_keymap_delta(&delta("id", &[(3, None)]), 40)
            .await
            .expect("delta");
        let mut with_deltas = checkpoint(40, &[("id", &chunk)]);
        with_deltas.keymaps[0].deltas = vec![moved.clone(), later.clone(), other.clone()];
        vault
            .put_checkpoint(&with_deltas)
            .await
            .expect("checkpoint");

        let report = purge_tenant(&vault, "s", &TenantKey::new("b"))
            .await
            .expect("purge");
        assert_eq!(report.checkpoints, 1);
        let listed = vault.list_checkpoints("s").await.expect("list");
        let read = vault.read_checkpoint(&listed[0].name).await.expect("read");
        let map = &read.keymaps[0];
        assert_eq!(map.chunks, vec![chunk], "the chunk does not name b");
        assert_eq!(map.deltas.len(), 3);
        assert_eq!(map.deltas[2], other);
        assert_eq!(map.deltas[0].position, 20);
        assert_eq!(map.deltas[1].position, 30);
        let entries = |i: usize| {
            let vault = &vault;
            async move {
                vault
                    .read_keymap_delta("s", map, &map.deltas[i])
                    .await
                    .expect("delta")
                    .entries
            }
        };
        // 1 falls back to a in the chunk: a tombstone; 4 was nobody's before b's.
        assert_eq!(
            entries(0).await,
            delta("id", &[(1, None), (3, Some("a")), (5, Some("a"))]).entries
        );
        // 4 had only b before: its removal goes; 5 moved from a to b: a tombstone.
        assert_eq!(
            entries(1).await,
            delta("id", &[(2, None), (5, None)]).entries
        );
        let keys: Vec<Value> = read_map(&vault, map)
            .await
            .into_values()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![], "1, 2, 3 and 5 are removed, 4 is b's");
        let names: BTreeSet<String> = vault
            .list_keymap_chunks("s")
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(!names.contains(&keymap_delta_name("s", 20, &moved.hash)));
        assert!(!names.contains(&keymap_delta_name("s", 30, &later.hash)));
        assert!(names.contains(&keymap_delta_name("s", 20, &map.deltas[0].hash)));
        assert_eq!(names.len(), 5, "a chunk, its listing, three deltas");
    }

    /// A delta found behind different chunks in two checkpoints is decided for each: the
    /// tombstone of a key the tenant held goes behind the chunk naming the tenant and stays
    /// behind the one naming another, so the old delta is kept, not deleted.
    #[tokio::test]
    async fn a_delta_behind_different_layers_is_decided_for_each() {
        let (_dir, vault) = local_vault().await;
        let tenants = vault
            .put_keymap_chunk(&chunk("id", &[(1, "a"), (2, "c")]), 10)
            .await
            .expect("chunk");
        let others = vault
            .put_keymap_chunk(&chunk("id", &[(1, "b"), (2, "c")]), 20)
            .await
            .expect("chunk");
        let removed = vault
            .put_keymap_delta(&delta("id", &[(1, None)]), 30)
            .await
            .expect("delta");
        for (position, chunk) in [(30, &tenants), (40, &others)] {
            let mut checkpoint = checkpoint(position, &[("id", chunk)]);
            let map = &mut checkpoint.keymaps[0];
            vault
                .put_keymap_listing("s", map, position)
                .await
                .expect("listing");
            map.deltas = vec![removed.clone()];
            vault.put_checkpoint(&checkpoint).await.expect("checkpoint");
        }
        purge_tenant(&vault, "s", &TenantKey::new("a"))
            .await
            .expect("purge");
        let listed = vault.list_checkpoints("s").await.expect("list");
        let behind_tenant = vault.read_checkpoint(&listed[0].name).await.expect("read");
        let behind_other = vault.read_checkpoint(&listed[1].name).await.expect("read");
        assert!(
            behind_tenant.keymaps[0].deltas.is_empty(),
            "its only entry went"
        );
        assert_eq!(behind_other.keymaps[0].deltas, vec![removed.clone()]);
        for read in [&behind_tenant, &behind_other] {
            let keys: Vec<Value> = read_map(&vault, &read.keymaps[0])
                .await
                .into_values()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(keys, vec![Value::Int(2)], "at {}", read.position);
        }
        let names: BTreeSet<String> = vault
            .list_keymap_chunks("s")
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(names.contains(&keymap_delta_name("s", 30, &removed.hash)));
    }

    /// Keys only the purged tenant ever held leave no trace in any key-map object: not in
    /// a chunk, not as an entry of a delta shared by two checkpoints, not as a later
    /// tombstone; a delta left empty goes from the checkpoints' lists. A key the tenant
    /// took from another keeps a tombstone (the other tenant's chunk holds it anyway), and
    /// reads as absent, not as the other tenant's. A second purge changes nothing.
    #[tokio::test]
    async fn a_purge_leaves_no_trace_of_keys_only_the_tenant_held() {
        let (_dir, vault) = local_vault().await;
        let text = |k: &str| Value::Text(k.to_string());
        let first = KeymapChunk {
            source: "s".into(),
            table: "users".into(),
            column: "email".into(),
            bits: 0,
            bucket: 0,
            entries: vec![
                (text("bob@example.org"), TenantKey::new("b")),
                (text("carol@example.org"), TenantKey::new("gone")),
                (text("dave@example.org"), TenantKey::new("b")),
            ],
        };
        let mut first = first;
        first.entries.sort_by_key(|(k, _)| keymap_key_bytes(k));
        let first = vault.put_keymap_chunk(&first, 10).await.expect("chunk");
        let text_delta = |entries: &[(&str, Option<&str>)]| {
            let mut entries: Vec<_> = entries
                .iter()
                .map(|(k, t)| (text(k), t.map(TenantKey::new)))
                .collect();
            entries.sort_by_key(|(k, _)| keymap_key_bytes(k));
            KeymapDelta {
                source: "s".into(),
                table: "users".into(),
                column: "email".into(),
                entries,
            }
        };
        // At 20 alice joins the purged tenant and dave moves to it; at 30 alice leaves,
        // erin joins it; at 40 only the tenant's keys change.
        let at20 = vault
            .put_keymap_delta(
                &text_delta(&[
                    ("alice@example.org", Some("gone")),
                    ("dave@example.org", Some("gone")),
                ]),
                20,
            )
            .await
            .expect("delta");
        let at30 = vault
            .put_keymap_delta(
                &text_delta(&[
                    ("alice@example.org", None),
                    ("erin@example.org", Some("gone")),
                ]),
                30,
            )
            .await
            .expect("delta");
        let at40 = vault
            .put_keymap_delta(&text_delta(&[("carol@example.org", None)]), 40)
            .await
            .expect("delta");
        let mut map = KeymapIndex {
            table: "users".into(),
            column: "email".into(),
            bits: 0,
            keys: 3,
            chunks: vec![first],
            listing: None,
            deltas: Vec::new(),
        };
        vault
            .put_keymap_listing("s", &mut map, 10)
            .await
            .expect("listing");
        for (position, deltas) in [
            (10, vec![]),
            (20, vec![at20.clone()]),
            (30, vec![at20.clone(), at30.clone()]),
            (40, vec![at20.clone(), at30.clone(), at40.clone()]),
        ] {
            let mut checkpoint = checkpoint(position, &[]);
            let mut map = map.clone();
            map.deltas = deltas;
            checkpoint.keymaps = vec![map];
            vault.put_checkpoint(&checkpoint).await.expect("checkpoint");
        }
        let before = keymap_bodies(&vault).await;
        for value in ["alice@", "carol@", "erin@"] {
            assert!(
                before.values().any(|body| holds(body, value)),
                "the search finds {value} before the purge"
            );
        }

        let report = purge_tenant(&vault, "s", &TenantKey::new("gone"))
            .await
            .expect("purge");
        assert_eq!(report.checkpoints, 4);
        let after = keymap_bodies(&vault).await;
        for (name, body) in &after {
            for value in ["alice@example.org", "carol@example.org", "erin@example.org"] {
                assert!(!holds(body, value), "{name} still holds {value}");
            }
            assert!(!holds(body, "gone"), "{name} still names the tenant");
        }
        assert!(
            after.values().any(|body| holds(body, "dave@example.org")),
            "b's key stays in b's chunk and as a tombstone"
        );
        let mut referenced = BTreeSet::new();
        let mut shared = None;
        for (i, listed) in vault
            .list_checkpoints("s")
            .await
            .expect("list")
            .into_iter()
            .enumerate()
        {
            let read = vault.read_checkpoint(&listed.name).await.expect("read");
            let map = &read.keymaps[0];
            let keys: Vec<(Value, String)> = read_map(&vault, map).await.into_values().collect();
            let mut expected = vec![(text("bob@example.org"), "b".to_string())];
            if i == 0 {
                expected.push((text("dave@example.org"), "b".to_string()));
            }
            assert_eq!(
                keys, expected,
                "checkpoint {i}: dave is b's until he moved, then does not fall back to b"
            );
            // 20's delta keeps dave's tombstone, 30's is left empty, 40's too.
            assert_eq!(map.deltas.len(), usize::from(i >= 1), "checkpoint {i}");
            if let Some(delta) = map.deltas.first() {
                assert_eq!(*shared.get_or_insert(delta.clone()), *delta, "shared");
                assert_eq!(
                    vault
                        .read_keymap_delta("s", map, delta)
                        .await
                        .expect("delta")
                        .entries,
                    text_delta(&[("dave@example.org", None)]).entries
                );
            }
            let listing = map.listing.as_ref().expect("listing");
            referenced.insert(keymap_listing_name("s", listing.position, &listing.hash));
            for c in &map.chunks {
                referenced.insert(keymap_chunk_name("s", c.position, &c.hash));
            }
            for d in &map.deltas {
                referenced.insert(keymap_delta_name("s", d.position, &d.hash));
            }
        }
        let names: BTreeSet<String> = after.keys().cloned().collect();
        assert_eq!(names, referenced, "every old object is gone");

        let again = purge_tenant(&vault, "s", &TenantKey::new("gone"))
            .await
            .expect("purge again");
        assert_eq!(again, PurgeReport::default());
        assert_eq!(keymap_bodies(&vault).await, after);
    }

    /// A small xorshift generator: the same history for the same seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Histories written as capture writes them (a listing, deltas appended checkpoint by
    /// checkpoint, folds) over several buckets: after a purge every checkpoint reads as
    /// its map before the purge without the tenant, no key-map object holds a key only
    /// the tenant held, every object left is referred to, and a second purge changes
    /// nothing.
    #[tokio::test]
    async fn purged_histories_read_as_before_without_the_tenant() {
        let tenants = ["a", "b", "c"];
        let key = |k: u64| Value::Text(format!("user{k}@example.org"));
        for seed in 1..=12u64 {
            let (_dir, vault) = local_vault().await;
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let bits = 2;
            let mut state: BTreeMap<u64, &str> = BTreeMap::new();
            let mut others: BTreeSet<u64> = BTreeSet::new();
            let mut expected = Vec::new();
            let mut map = KeymapIndex {
                table: "issues".into(),
                column: "id".into(),
                bits,
                keys: 0,
                chunks: Vec::new(),
                listing: None,
                deltas: Vec::new(),
            };
            for step in 0..10u64 {
                let position = 10 * (step + 1);
                let before = state.clone();
                for _ in 0..rng.below(6) + 1 {
                    let k = rng.below(24);
                    if state.contains_key(&k) && rng.below(3) == 0 {
                        state.remove(&k);
                    } else {
                        state.insert(k, tenants[rng.below(3) as usize]);
                    }
                }
                for (k, t) in &state {
                    if *t != "a" {
                        others.insert(*k);
                    }
                }
                if step == 0 || rng.below(4) == 0 {
                    // A fold: every bucket's chunk again, a new listing, no deltas.
                    let mut buckets: BTreeMap<u32, Vec<(Value, TenantKey)>> = BTreeMap::new();
                    for (k, t) in &state {
                        let value = key(*k);
                        let bucket =
                            keymap_bucket(keymap_key_hash(&keymap_key_bytes(&value)), bits);
                        buckets
                            .entry(bucket)
                            .or_default()
                            .push((value, TenantKey::new(*t)));
                    }
                    map.chunks.clear();
                    for (bucket, mut entries) in buckets {
                        entries.sort_by_key(|(k, _)| keymap_key_bytes(k));
                        let chunk = KeymapChunk {
                            source: "s".into(),
                            table: "issues".into(),
                            column: "id".into(),
                            bits,
                            bucket,
                            entries,
                        };
                        map.chunks.push(
                            vault
                                .put_keymap_chunk(&chunk, position)
                                .await
                                .expect("chunk"),
                        );
                    }
                    map.keys = map.chunks.iter().map(|c| c.keys).sum();
                    map.deltas.clear();
                    vault
                        .put_keymap_listing("s", &mut map, position)
                        .await
                        .expect("listing");
                } else {
                    let mut entries: Vec<(Value, Option<TenantKey>)> = (0..24)
                        .filter(|k| before.get(k) != state.get(k))
                        .map(|k| (key(k), state.get(&k).map(|t| TenantKey::new(*t))))
                        .collect();
                    entries.sort_by_key(|(k, _)| keymap_key_bytes(k));
                    if !entries.is_empty() {
                        let delta = KeymapDelta {
                            source: "s".into(),
                            table: "issues".into(),
                            column: "id".into(),
                            entries,
                        };
                        map.deltas.push(
                            vault
                                .put_keymap_delta(&delta, position)
                                .await
                                .expect("delta"),
                        );
                    }
                }
                let mut checkpoint = checkpoint(position, &[]);
                checkpoint.keymaps = vec![map.clone()];
                vault.put_checkpoint(&checkpoint).await.expect("checkpoint");
                let without: BTreeMap<Vec<u8>, (Value, String)> = state
                    .iter()
                    .filter(|(_, t)| **t != "a")
                    .map(|(k, t)| (keymap_key_bytes(&key(*k)), (key(*k), t.to_string())))
                    .collect();
                expected.push(without);
            }

            purge_tenant(&vault, "s", &TenantKey::new("a"))
                .await
                .expect("purge");
            let listed = vault.list_checkpoints("s").await.expect("list");
            assert_eq!(listed.len(), expected.len());
            let mut referenced = BTreeSet::new();
            for (listed, expected) in listed.iter().zip(&expected) {
                let read = vault.read_checkpoint(&listed.name).await.expect("read");
                let map = &read.keymaps[0];
                assert_eq!(
                    read_map(&vault, map).await,
                    *expected,
                    "seed {seed}, checkpoint {}",
                    read.position
                );
                if let Some(l) = &map.listing {
                    referenced.insert(keymap_listing_name("s", l.position, &l.hash));
                }
                for c in &map.chunks {
                    referenced.insert(keymap_chunk_name("s", c.position, &c.hash));
                }
                for d in &map.deltas {
                    assert!(d.entries > 0, "seed {seed}: an empty delta");
                    referenced.insert(keymap_delta_name("s", d.position, &d.hash));
                }
            }
            let bodies = keymap_bodies(&vault).await;
            let names: BTreeSet<String> = bodies.keys().cloned().collect();
            assert_eq!(
                names, referenced,
                "seed {seed}: every object left is referred to"
            );
            for k in (0..24).filter(|k| !others.contains(k)) {
                let text = format!("user{k}@example.org");
                for (name, body) in &bodies {
                    assert!(!holds(body, &text), "seed {seed}: {name} holds {text}");
                }
            }
            let again = purge_tenant(&vault, "s", &TenantKey::new("a"))
                .await
                .expect("purge again");
            assert_eq!(again, PurgeReport::default(), "seed {seed}");
            assert_eq!(keymap_bodies(&vault).await, bodies, "seed {seed}");
        }
    }
}
