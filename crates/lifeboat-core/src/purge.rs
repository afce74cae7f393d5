//! Purge: remove one tenant's data from a source's history in the vault
//! (docs/vault-format.md, "Purge"). Objects are immutable, so a segment or checkpoint that
//! holds the tenant is written again without it and the old object deleted afterwards; the
//! tenant's bases are deleted. Every step can be repeated: a purge interrupted half way is
//! finished by running it again.

use crate::error::Result;
use crate::model::TenantKey;
use crate::vault::Vault;

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
    for checkpoint_ref in vault.list_checkpoints(source).await? {
        let mut checkpoint = vault.read_checkpoint(&checkpoint_ref.name).await?;
        let mut removed = 0;
        for keymap in &mut checkpoint.keymaps {
            let before = keymap.entries.len();
            keymap.entries.retain(|(_, t)| t != tenant);
            removed += before - keymap.entries.len();
        }
        if removed == 0 {
            continue;
        }
        let name = vault.put_checkpoint(&checkpoint).await?;
        if name != checkpoint_ref.name {
            vault.delete(&checkpoint_ref.name).await?;
        }
        report.checkpoints += 1;
    }
    for base in vault.list_bases(source, tenant).await? {
        vault.delete(&base.name).await?;
        report.bases += 1;
    }
    Ok(report)
}
