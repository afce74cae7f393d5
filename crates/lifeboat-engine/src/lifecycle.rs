//! A tenant's life after deletion (docs/guard.md, "Soft delete"): `lifeboat tenant delete`
//! writes a guarded plan whose apply removes the tenant's rows and marks it deleted in the
//! control store; `undelete` restores it to just before its deletion; `purge` removes its
//! data from the vault once the retention window has passed; `list` shows them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::json;

use lifeboat_control::{DeletedTenant, Entry};
use lifeboat_core::config::Config;
use lifeboat_core::model::TenantKey;
use lifeboat_core::purge::{purge_tenant, PurgeReport};
use lifeboat_core::tenancy::Tenancy;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::{id_value, IdRow};
use lifeboat_source::live::LiveSource;
use lifeboat_source::tenant_delete;

use crate::context::open_vault;
use crate::guard::operation::open_named;
use crate::guard::{
    check_steps, control_store, dedup, delete_declaration, login, make_plan, restore_to_points,
    Merged, PlanSpec, Planned, Purpose,
};
use crate::progress::Progress;

/// A day in microseconds.
const DAY_US: i64 = 86_400_000_000;

/// The first source where `tenant` has rows now, and how many (counted per table).
async fn rows_again(
    sources: &BTreeMap<String, LiveSource>,
    tenant: &str,
) -> Result<Option<(String, u64)>> {
    let key = TenantKey::new(tenant.to_string());
    for (name, source) in sources {
        let mut rows = 0;
        for table in source.tenancy.tenant_tables() {
            rows += source.count_tenant_rows(&key, &table.schema.name).await?;
        }
        if rows > 0 {
            return Ok(Some((name.clone(), rows)));
        }
    }
    Ok(None)
}

/// Plan the soft delete of `tenants` into `output` (a guarded plan: approved and applied
/// like any other).
pub async fn delete(
    config: &Config,
    config_path: &Option<PathBuf>,
    tenants: Vec<String>,
    author: &crate::guard::Signer,
    output: &Path,
) -> Result<Planned> {
    let tenants = dedup(tenants);
    if tenants.is_empty() {
        return Err(Error::usage("no tenants given"));
    }
    let mut control = control_store(config, config_path).await?;
    for tenant in &tenants {
        if let Some(record) = control.deleted_tenant(tenant)? {
            return Err(Error::usage(if record.purged {
                format!("tenant {tenant} was deleted and purged already")
            } else {
                format!(
                    "tenant {tenant} was deleted already (at {}); `lifeboat tenant undelete \
                     {tenant}` brings it back",
                    record.deleted_at
                )
            }));
        }
    }
    let names: BTreeSet<String> = config.sources.keys().cloned().collect();
    let mut sources = open_named(config, &names).await?;

    // Every tenant must have rows somewhere; the steps remove them children first.
    let steps = delete_steps(&sources).await?;
    check_steps(config, &sources, "tenant-delete", &steps, "tenants")?;
    let mut rows: BTreeMap<&String, u64> = BTreeMap::new();
    for source in sources.values() {
        for table in source.tenancy.tenant_tables() {
            for tenant in &tenants {
                *rows.entry(tenant).or_default() += source
                    .count_tenant_rows(&TenantKey::new(tenant.clone()), &table.schema.name)
                    .await?;
            }
        }
    }
    let unknown: Vec<&&String> = rows
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(t, _)| t)
        .collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|t| t.as_str()).collect();
        return Err(Error::usage(format!(
            "unknown tenant(s) {}: no rows in any source",
            list.join(", ")
        )));
    }
    let ids: Vec<IdRow> = tenants
        .iter()
        .map(|t| IdRow {
            id: id_value(t),
            label: None,
            tenant: Some(TenantKey::new(t.clone())),
        })
        .collect();
    let wanted: BTreeSet<&String> = tenants.iter().collect();
    let check = |_: &BTreeMap<String, u64>, effect: &Merged| -> Result<()> {
        for (tenant, tables) in effect {
            if wanted.contains(tenant) {
                continue;
            }
            let who = if tenant.is_empty() {
                "rows of no tenant".to_string()
            } else {
                format!("tenant {tenant}'s rows")
            };
            let (table, n) = tables
                .iter()
                .next()
                .map(|(t, n)| (t.as_str(), *n))
                .unwrap_or(("?", 0));
            return Err(Error::usage(format!(
                "refused: deleting these tenants would also remove {n} of {who} in {table} \
                 (a cascade or trigger reaches beyond them)"
            )));
        }
        Ok(())
    };
    let spec = PlanSpec {
        operation: "tenant-delete".to_string(),
        purpose: Purpose::TenantDelete,
        param: "tenants".to_string(),
        kind: "tenant".to_string(),
        ids,
        declaration: delete_declaration(&steps),
        steps,
    };
    make_plan(
        config,
        config_path,
        &mut sources,
        spec,
        check,
        author,
        output,
    )
    .await
}

/// The steps of a soft delete, from every source's tenant map: one `DELETE` per tenant
/// table, children first (the restore write order, reversed), `$tenants` the keys. `apply`
/// makes them again and refuses a plan whose steps the tenant maps no longer give.
pub(crate) async fn delete_steps(
    sources: &BTreeMap<String, LiveSource>,
) -> Result<Vec<(String, String)>> {
    let mut steps = Vec::new();
    for (name, source) in sources {
        let catalog = source.restore_catalog().await?;
        for table in catalog.order.iter().rev() {
            let Some(resolved) = source.tenancy.table(table) else {
                continue;
            };
            if matches!(resolved.tenancy, Tenancy::Global) {
                continue;
            }
            steps.push((
                name.clone(),
                tenant_delete(
                    &source.tenancy,
                    &resolved.schema,
                    "ANY($tenants)",
                    source.dialect(),
                )?,
            ));
        }
    }
    Ok(steps)
}

/// What an undelete did.
#[derive(Debug, Clone)]
pub struct Undeleted {
    pub tenants: usize,
    pub rows: u64,
    /// Tenant restores that failed or differ from the vault: then no tenant is marked
    /// undeleted.
    pub failures: usize,
}

/// Bring deleted `tenants` back as they were just before their deletion, verified.
pub async fn undelete(
    config: &Config,
    config_path: &Option<PathBuf>,
    tenants: Vec<String>,
    by: Option<String>,
    progress: &dyn Progress,
) -> Result<Undeleted> {
    let by = login(by);
    let tenants = dedup(tenants);
    let mut control = control_store(config, config_path).await?;
    let mut records = Vec::new();
    for tenant in &tenants {
        let record = control.deleted_tenant(tenant)?.ok_or_else(|| {
            Error::usage(format!(
                "tenant {tenant} is not deleted: nothing to undelete"
            ))
        })?;
        if record.purged {
            return Err(Error::usage(format!(
                "tenant {tenant} was purged at {}: its data is gone from the vault",
                record.purged_at.as_deref().unwrap_or("?")
            )));
        }
        records.push(record);
    }
    // Rows written under the key since the deletion would be replaced: refuse.
    let names: BTreeSet<String> = records
        .iter()
        .flat_map(|r| r.point.keys().cloned())
        .collect();
    let sources = open_named(config, &names).await?;
    for record in &records {
        if let Some((name, rows)) = rows_again(&sources, &record.tenant).await? {
            return Err(Error::usage(format!(
                "tenant {} has {rows} rows in source {name} again since its deletion; \
                 undelete would replace them (use `lifeboat restore` if that is meant)",
                record.tenant
            )));
        }
    }
    drop(sources);
    let mut groups: BTreeMap<&BTreeMap<String, u64>, Vec<String>> = BTreeMap::new();
    for record in &records {
        groups
            .entry(&record.point)
            .or_default()
            .push(record.tenant.clone());
    }
    let (rows, failures) = restore_to_points(config, control.url(), &groups, progress).await?;
    if failures > 0 {
        return Ok(Undeleted {
            tenants: records.len(),
            rows,
            failures,
        });
    }
    for record in &records {
        control.mark_undeleted(
            &record.tenant,
            &Entry::new(
                &by,
                "undelete",
                &format!("tenant:{}", record.tenant),
                json!({"plan": record.plan, "restored_to": record.point}),
            ),
        )?;
        control.anchor().await?;
    }
    Ok(Undeleted {
        tenants: records.len(),
        rows,
        failures: 0,
    })
}

/// One tenant purged.
#[derive(Debug, Clone)]
pub struct Purged {
    pub tenant: String,
    pub report: PurgeReport,
}

/// Remove deleted `tenants`' data from the vault, once the retention window has passed.
pub async fn purge(
    config: &Config,
    config_path: &Option<PathBuf>,
    tenants: Vec<String>,
    by: Option<String>,
) -> Result<Vec<Purged>> {
    let by = login(by);
    let tenants = dedup(tenants);
    let mut control = control_store(config, config_path).await?;
    let now = lifeboat_core::time::now_us();
    let window = i64::from(config.guard.retention_days) * DAY_US;
    let mut records = Vec::new();
    for tenant in &tenants {
        let record = control.deleted_tenant(tenant)?.ok_or_else(|| {
            Error::usage(format!(
                "tenant {tenant} is not deleted: only a deleted tenant can be purged \
                 (`lifeboat tenant delete {tenant}` first)"
            ))
        })?;
        // A purge interrupted half way is finished by running it again.
        if !record.purged && record.deleted_at_us + window > now {
            return Err(Error::usage(format!(
                "refused: tenant {tenant} was deleted at {}, inside the {}-day retention \
                 window; it can be purged from {}",
                record.deleted_at,
                config.guard.retention_days,
                lifeboat_core::time::format_us(record.deleted_at_us + window)
            )));
        }
        records.push(record);
    }
    // A key in use again belongs to someone now: its history is not the deleted tenant's.
    let names: BTreeSet<String> = config.sources.keys().cloned().collect();
    let live = open_named(config, &names).await?;
    for record in &records {
        if let Some((name, rows)) = rows_again(&live, &record.tenant).await? {
            return Err(Error::usage(format!(
                "refused: tenant key {} has {rows} rows in source {name} again since its \
                 deletion; purging would erase their history",
                record.tenant
            )));
        }
    }
    drop(live);
    let vault = open_vault(config).await?;
    let sources = vault.list_sources().await?;
    let mut out = Vec::new();
    for record in &records {
        // Marked first: from here on, undelete refuses it.
        control.mark_purged(
            &record.tenant,
            &Entry::new(
                &by,
                "purge",
                &format!("tenant:{}", record.tenant),
                json!({"plan": record.plan}),
            ),
        )?;
        control.anchor().await?;
        let key = TenantKey::new(record.tenant.clone());
        let mut total = PurgeReport::default();
        let mut per_source = BTreeMap::new();
        for source in &sources {
            let report = purge_tenant(&vault, source, &key).await?;
            total.segments += report.segments;
            total.changes += report.changes;
            total.checkpoints += report.checkpoints;
            total.bases += report.bases;
            per_source.insert(
                source.clone(),
                json!({"segments": report.segments, "changes": report.changes,
                       "checkpoints": report.checkpoints, "bases": report.bases}),
            );
        }
        control
            .append(
                &by,
                "purged",
                &format!("tenant:{}", record.tenant),
                json!({"plan": record.plan, "sources": per_source}),
            )
            .await?;
        out.push(Purged {
            tenant: record.tenant.clone(),
            report: total,
        });
    }
    Ok(out)
}

/// Deleted and purged tenants, with the first time each may be purged (µs).
pub async fn list(
    config: &Config,
    config_path: &Option<PathBuf>,
) -> Result<Vec<(DeletedTenant, i64)>> {
    let mut control = control_store(config, config_path).await?;
    let window = i64::from(config.guard.retention_days) * DAY_US;
    Ok(control
        .deleted_tenants()?
        .into_iter()
        .map(|r| {
            let from = r.deleted_at_us + window;
            (r, from)
        })
        .collect())
}
