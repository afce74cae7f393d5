//! Every protected tenant in the vault: its sources, row counts and restorable window.

use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::Result;
use std::collections::{BTreeMap, BTreeSet};

use crate::context::{histories, open_vault, source_names};

/// One protected tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Rows at the vault's latest position, by source.
    pub rows: BTreeMap<String, usize>,
    /// The restorable window: from the latest of its sources' first times to the latest
    /// of their last.
    pub earliest_us: i64,
    pub latest_us: i64,
}

/// Every tenant the vault holds rows of in `sources` (all when empty).
pub async fn list(config: &Config, sources: &[String]) -> Result<BTreeMap<TenantKey, Entry>> {
    let names = source_names(config, sources)?;
    let vault = open_vault(config).await?;
    let mut entries: BTreeMap<TenantKey, Entry> = BTreeMap::new();
    for history in histories(&vault, &names).await? {
        let Some((earliest, latest)) = history.window_times(&vault).await? else {
            continue;
        };
        let Some(position) = history.latest_position() else {
            continue;
        };
        let tenants: Vec<TenantKey> = history.tenants(&vault).await?.into_iter().collect();
        // Counted a batch at a time, as streams: memory follows the batch's changes, not
        // the size of every tenant.
        for batch in tenants.chunks(64) {
            let batch: BTreeSet<TenantKey> = batch.iter().cloned().collect();
            for (tenant, stream) in history.streams_at(&vault, &batch, position).await? {
                let entry = entries.entry(tenant).or_insert(Entry {
                    rows: BTreeMap::new(),
                    earliest_us: earliest,
                    latest_us: latest,
                });
                entry
                    .rows
                    .insert(history.source.clone(), stream.count_rows()?);
                entry.earliest_us = entry.earliest_us.max(earliest);
                entry.latest_us = entry.latest_us.max(latest);
            }
        }
    }
    Ok(entries)
}
