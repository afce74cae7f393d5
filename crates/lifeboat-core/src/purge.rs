//! Purge: remove one tenant's data from a source's history in the vault
//! (docs/vault-format.md, "Purge"). Objects are immutable, so a segment or checkpoint that
//! holds the tenant is written again without it and the old object deleted afterwards; the
//! tenant's bases are deleted. Every step can be repeated: a purge interrupted half way is
//! finished by running it again.

use std::collections::{BTreeSet, HashMap};

use crate::error::Result;
use crate::model::{KeymapChunk, KeymapChunkRef, KeymapDeltaRef, KeymapListingRef, TenantKey};
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
    let mut rewritten_deltas: HashMap<String, KeymapDeltaRef> = HashMap::new();
    // A listing naming a rewritten chunk is written again too (its position, a new hash):
    // the checkpoints that shared it share the new one.
    let mut rewritten_listings: HashMap<String, Option<KeymapListingRef>> = HashMap::new();
    let mut replaced = BTreeSet::new();
    for checkpoint_ref in vault.list_checkpoints(source).await? {
        let mut checkpoint = vault.read_checkpoint(&checkpoint_ref.name).await?;
        let mut changed = false;
        for map in &mut checkpoint.keymaps {
            let mut chunks = Vec::with_capacity(map.chunks.len());
            let mut chunks_changed = false;
            for chunk in &map.chunks {
                let old = keymap_chunk_name(source, chunk.position, &chunk.hash);
                let new = match rewritten.get(&old) {
                    Some(new) => new.clone(),
                    None => {
                        let read = vault.read_keymap_chunk(source, map, chunk).await?;
                        let mut entries = read.entries.clone();
                        entries.retain(|(_, t)| t != tenant);
                        let new = if entries.len() == read.entries.len() {
                            Some(chunk.clone())
                        } else if entries.is_empty() {
                            None
                        } else {
                            let rewritten = KeymapChunk { entries, ..read };
                            Some(vault.put_keymap_chunk(&rewritten, chunk.position).await?)
                        };
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
            // A delta naming the tenant: its entries become tombstones, so that a key it
            // moved to the tenant does not fall back to the tenant the chunk names.
            let mut deltas = Vec::with_capacity(map.deltas.len());
            for delta in &map.deltas {
                let old = keymap_delta_name(source, delta.position, &delta.hash);
                let new = match rewritten_deltas.get(&old) {
                    Some(new) => new.clone(),
                    None => {
                        let mut read = vault.read_keymap_delta(source, map, delta).await?;
                        let mut named = false;
                        for (_, t) in &mut read.entries {
                            if t.as_ref() == Some(tenant) {
                                *t = None;
                                named = true;
                            }
                        }
                        let new = if named {
                            vault.put_keymap_delta(&read, delta.position).await?
                        } else {
                            delta.clone()
                        };
                        rewritten_deltas.insert(old.clone(), new.clone());
                        new
                    }
                };
                if new != *delta {
                    changed = true;
                    replaced.insert(old);
                }
                deltas.push(new);
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
    for old in replaced {
        vault.delete(&old).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Checkpoint, KeymapDelta, KeymapIndex, Value};
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
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
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

    /// A delta that moved a key to the purged tenant gets a tombstone there (the key must
    /// not fall back to the tenant its chunk names); a delta without the tenant is kept;
    /// the replaced delta is deleted.
    #[tokio::test]
    async fn a_purge_turns_the_tenants_delta_entries_into_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::init(Arc::new(LocalStore::new(dir.path())))
            .await
            .expect("vault");
        let chunk = vault
            .put_keymap_chunk(&chunk("id", &[(1, "a"), (2, "a")]), 10)
            .await
            .expect("chunk");
        let delta = |entries: &[(i64, Option<&str>)]| KeymapDelta {
            source: "s".into(),
            table: "issues".into(),
            column: "id".into(),
            entries: entries
                .iter()
                .map(|(k, t)| (Value::Int(*k), t.map(TenantKey::new)))
                .collect(),
        };
        let moved = vault
            .put_keymap_delta(
                &delta(&[(1, Some("b")), (3, Some("a")), (4, Some("b"))]),
                20,
            )
            .await
            .expect("delta");
        let other = vault
            .put_keymap_delta(&delta(&[(2, None)]), 30)
            .await
            .expect("delta");
        let mut with_deltas = checkpoint(30, &[("id", &chunk)]);
        with_deltas.keymaps[0].deltas = vec![moved.clone(), other.clone()];
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
        assert_eq!(map.deltas.len(), 2);
        assert_eq!(map.deltas[1], other);
        assert_eq!(map.deltas[0].position, 20);
        let rewritten = vault
            .read_keymap_delta("s", map, &map.deltas[0])
            .await
            .expect("delta");
        assert_eq!(
            rewritten.entries,
            delta(&[(1, None), (3, Some("a")), (4, None)]).entries
        );
        let names: BTreeSet<String> = vault
            .list_keymap_chunks("s")
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert!(!names.contains(&keymap_delta_name("s", 20, &moved.hash)));
        assert!(names.contains(&keymap_delta_name("s", 20, &map.deltas[0].hash)));
        assert_eq!(names.len(), 4, "a chunk, its listing, two deltas");
    }
}
