//! Compaction: write a tenant's state at the source's latest position as a new base, so
//! that reading the tenant starts there instead of at the beginning of history.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::model::{Base, BaseRow, TableSchema, TenantKey};
use crate::state::{SourceHistory, TenantState};
use crate::vault::Vault;

/// Turn a materialised state into a base record.
pub fn base_from_state(
    source: &str,
    tenant: &TenantKey,
    position: u64,
    commit_time_us: i64,
    state: &TenantState,
) -> Base {
    let mut tables: Vec<TableSchema> = Vec::new();
    let mut rows = Vec::with_capacity(state.row_count());
    for table in state.tables.values() {
        let Some(schema) = &table.schema else {
            continue;
        };
        let index = tables.len() as u32;
        tables.push(schema.clone());
        let mut table_rows: Vec<&Vec<_>> = table.rows.values().collect();
        // Key order makes bases of equal states byte-identical (same name, no duplicate).
        table_rows.sort_by_cached_key(|row| format!("{:?}", schema.row_key(row)));
        rows.extend(table_rows.into_iter().map(|values| BaseRow {
            table: index,
            values: values.clone(),
        }));
    }
    Base {
        source: source.to_string(),
        tenant: tenant.clone(),
        position,
        commit_time_us,
        tables,
        rows,
    }
}

/// Write new bases for `tenants` (all the vault knows when `None`) of `source` at the
/// latest position. Tenants whose latest base is already there are skipped. Returns how
/// many bases were written.
///
/// A prune may run meanwhile: when reading fails and the source's window has started
/// somewhere else since the listing (the prune deleted what this compaction was reading),
/// it starts over from the new listing.
pub async fn compact(
    vault: &Vault,
    source: &str,
    tenants: Option<&BTreeSet<TenantKey>>,
) -> Result<usize> {
    let mut attempts = 0;
    loop {
        let history = SourceHistory::load(vault, source).await?;
        match compact_from(vault, &history, tenants).await {
            Ok(written) => return Ok(written),
            Err(e) => {
                attempts += 1;
                let now = vault.list_checkpoints(source).await?;
                let moved = now.first().map(|c| c.position) != history.earliest_position();
                if !moved || attempts >= 3 {
                    return Err(e);
                }
                tracing::info!(source, "the window moved while compacting (a prune): again");
            }
        }
    }
}

async fn compact_from(
    vault: &Vault,
    history: &SourceHistory,
    tenants: Option<&BTreeSet<TenantKey>>,
) -> Result<usize> {
    let source = history.source.as_str();
    let Some(position) = history.latest_position() else {
        return Ok(0);
    };
    let all;
    let tenants = match tenants {
        Some(t) => t,
        None => {
            all = history.tenants(vault).await?;
            &all
        }
    };
    let due: BTreeSet<TenantKey> = tenants
        .iter()
        .filter(|t| {
            history
                .bases
                .get(*t)
                .and_then(|b| b.last())
                .is_none_or(|b| b.position < position)
        })
        .cloned()
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    let commit_time_us = history
        .window_times(vault)
        .await?
        .map(|(_, latest)| latest)
        .unwrap_or_else(crate::time::now_us);
    crate::failpoint::pause("compaction.before-read");
    let states = history.states_at(vault, &due, position).await?;
    let mut written = 0;
    for (tenant, state) in &states {
        let base = base_from_state(source, tenant, position, commit_time_us, state);
        vault.put_base(&base).await?;
        written += 1;
    }
    Ok(written)
}
