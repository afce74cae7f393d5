//! Compaction on demand: a new base for each tenant at the latest position, so restores
//! start there.

use std::collections::BTreeSet;

use lifeboat_core::compaction::compact;
use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::Result;

use crate::context::{check_tenants, histories, open_vault, source_names};

/// Write new bases for `tenants` (all when empty) in `sources` (all when empty). Returns the
/// number of bases written per source.
pub async fn snapshot(
    config: &Config,
    tenants: &[String],
    sources: &[String],
) -> Result<Vec<(String, usize)>> {
    let names = source_names(config, sources)?;
    let vault = open_vault(config).await?;
    let histories = histories(&vault, &names).await?;
    let only: Option<BTreeSet<TenantKey>> = if tenants.is_empty() {
        None
    } else {
        Some(check_tenants(&vault, &histories, tenants).await?)
    };
    let mut out = Vec::new();
    for history in &histories {
        if !history.is_captured() {
            continue;
        }
        let written = compact(&vault, &history.source, only.as_ref()).await?;
        out.push((history.source.clone(), written));
    }
    Ok(out)
}
