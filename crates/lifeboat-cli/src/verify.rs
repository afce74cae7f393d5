//! `lifeboat verify`: compare tenants' live rows with the vault's state, table by table,
//! by row count and checksum. Exits 1 on any difference.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use lifeboat_core::checksum::{state_digests, RowHasher, TableDigest};
use lifeboat_core::model::{Row, TableSchema};
use lifeboat_core::state::SourceHistory;
use lifeboat_core::Result;

use crate::context::{
    check_tenants, load_config, open_sources, open_vault, print_json, source_names,
};
use crate::EXIT_PROBLEM;

#[derive(clap::Args)]
pub struct Args {
    /// Tenant to verify (repeatable).
    #[arg(long = "tenant", value_name = "KEY", required = true)]
    tenants: Vec<String>,
    /// Compare with the vault's state at this time (RFC 3339) instead of its latest.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(serde::Serialize)]
struct Difference {
    tenant: String,
    source: String,
    table: String,
    live: TableDigest,
    vault: TableDigest,
    rows_only_live: usize,
    rows_only_vault: usize,
    example_keys: Vec<String>,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path)?;
    let names = source_names(&config, &args.sources)?;
    let at = args
        .at
        .as_deref()
        .map(lifeboat_core::time::parse)
        .transpose()?;
    let sources = open_sources(&config, &names, false).await?;
    let vault = open_vault(&config).await?;
    let requested: std::collections::BTreeSet<lifeboat_core::model::TenantKey> = args
        .tenants
        .iter()
        .map(|t| lifeboat_core::model::TenantKey::new(t.clone()))
        .collect();
    let mut histories = Vec::new();
    for source in &sources {
        histories.push(SourceHistory::load_for(&vault, &source.name, &requested).await?);
    }
    let tenants = check_tenants(&vault, &histories, &args.tenants).await?;

    let mut differences = Vec::new();
    let mut tables_checked = 0usize;
    for (source, history) in sources.iter().zip(&histories) {
        if !history.is_captured() {
            continue;
        }
        let position = match at {
            Some(time) => history.position_at_time(&vault, time).await?,
            None => history.latest_position().unwrap_or(0),
        };
        let states = history.states_at(&vault, &tenants, position).await?;
        for (tenant, state) in &states {
            let live = source.tenant_rows(tenant).await?;
            let vault_digests = state_digests(state);
            for (table, (columns, rows)) in &live {
                tables_checked += 1;
                let live_digest = TableDigest::of(columns, rows);
                let vault_digest = vault_digests.get(table).copied().unwrap_or_default();
                if live_digest != vault_digest {
                    let vault_table = state.tables.get(table);
                    let vault_rows: Vec<&Row> = vault_table
                        .map(|t| t.rows.values().collect())
                        .unwrap_or_default();
                    let vault_columns = vault_table
                        .and_then(|t| t.schema.clone())
                        .map(|s| s.columns)
                        .unwrap_or_else(|| columns.clone());
                    let schema = source.tenancy.table(table).map(|t| t.schema.clone());
                    let (only_live, only_vault, examples) = row_differences(
                        columns,
                        rows,
                        &vault_columns,
                        &vault_rows,
                        schema.as_ref(),
                    );
                    differences.push(Difference {
                        tenant: tenant.to_string(),
                        source: source.name.clone(),
                        table: table.clone(),
                        live: live_digest,
                        vault: vault_digest,
                        rows_only_live: only_live,
                        rows_only_vault: only_vault,
                        example_keys: examples,
                    });
                }
            }
        }
    }
    if args.json {
        print_json(&serde_json::json!({
            "tenants": tenants.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            "tables_checked": tables_checked,
            "differences": differences,
            "ok": differences.is_empty(),
        }));
    } else {
        for d in &differences {
            crate::say!(
                "DIFFERENT tenant {} {}.{}: live {} rows, vault {} rows; {} rows only live, {} only in the vault{}",
                d.tenant,
                d.source,
                d.table,
                d.live.rows,
                d.vault.rows,
                d.rows_only_live,
                d.rows_only_vault,
                if d.example_keys.is_empty() {
                    String::new()
                } else {
                    format!(" (keys {})", d.example_keys.join(", "))
                }
            );
        }
        if differences.is_empty() {
            crate::say!(
                "ok: {} tenants, {} tables match the vault (row counts and checksums)",
                tenants.len(),
                tables_checked
            );
        } else {
            crate::say!("{} tables differ", differences.len());
        }
    }
    Ok(if differences.is_empty() {
        0
    } else {
        EXIT_PROBLEM
    })
}

/// Which rows differ, by whole-row hash; a few of their keys for the operator.
fn row_differences(
    live_columns: &[String],
    live_rows: &[Row],
    vault_columns: &[String],
    vault_rows: &[&Row],
    schema: Option<&TableSchema>,
) -> (usize, usize, Vec<String>) {
    let live_hasher = RowHasher::new(live_columns);
    let vault_hasher = RowHasher::new(vault_columns);
    let mut counts: HashMap<u128, i64> = HashMap::new();
    let mut examples: BTreeMap<u128, String> = BTreeMap::new();
    let key_of = |row: &Row| match schema {
        Some(s) => format!(
            "{:?}",
            s.row_key(row)
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
        ),
        None => String::new(),
    };
    for row in live_rows {
        let h = live_hasher.hash(row);
        *counts.entry(h).or_default() += 1;
        examples.entry(h).or_insert_with(|| key_of(row));
    }
    for row in vault_rows {
        let h = vault_hasher.hash(row);
        *counts.entry(h).or_default() -= 1;
        examples.entry(h).or_insert_with(|| key_of(row));
    }
    let only_live = counts
        .values()
        .filter(|&&c| c > 0)
        .map(|&c| c as usize)
        .sum();
    let only_vault = counts
        .values()
        .filter(|&&c| c < 0)
        .map(|&c| (-c) as usize)
        .sum();
    let keys: Vec<String> = counts
        .iter()
        .filter(|(_, &c)| c != 0)
        .filter_map(|(h, _)| examples.get(h).cloned())
        .filter(|k| !k.is_empty())
        .take(5)
        .collect();
    (only_live, only_vault, keys)
}
