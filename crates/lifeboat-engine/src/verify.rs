//! `verify`: compare tenants' live rows with the vault's state, table by table, by row
//! count and checksum (`compare`); for a table that differs, which rows and a few keys.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::config::Config;
use lifeboat_core::model::{Row, TableSchema};
use lifeboat_core::Result;

use crate::compare::{compare_tenant, expected_from_state};
use crate::context::{check_tenants, histories_for, open_sources, open_vault, source_names};

/// What to verify.
pub struct Request {
    pub tenants: Vec<String>,
    /// The vault's state at this time (µs) instead of its latest.
    pub at_us: Option<i64>,
    /// Only these sources (all when empty).
    pub sources: Vec<String>,
}

/// A table whose live rows differ from the vault's.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub tenant: String,
    pub source: String,
    pub table: String,
    pub live: TableDigest,
    pub vault: TableDigest,
    pub rows_only_live: usize,
    pub rows_only_vault: usize,
    pub example_keys: Vec<String>,
}

/// The vault's digest of one table of one tenant (what an export's manifest records for
/// the same point).
#[derive(Debug, Serialize)]
pub struct VaultTable {
    pub tenant: String,
    pub source: String,
    pub table: String,
    pub rows: u64,
    /// The digest's sum, 32 hex digits.
    pub checksum: String,
}

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Report {
    pub tenants: Vec<String>,
    pub tables_checked: usize,
    /// Every table the vault's side has, with its digest.
    pub tables: Vec<VaultTable>,
    pub differences: Vec<Difference>,
    pub ok: bool,
}

pub async fn verify(config: &Config, request: &Request) -> Result<Report> {
    let names = source_names(config, &request.sources)?;
    let sources = open_sources(config, &names, false).await?;
    let vault = open_vault(config).await?;
    let histories = histories_for(&vault, &names, &request.tenants).await?;
    let tenants = check_tenants(&vault, &histories, &request.tenants).await?;

    let mut differences = Vec::new();
    let mut tables_checked = 0usize;
    let mut tables = Vec::new();
    for (source, history) in sources.iter().zip(&histories) {
        if !history.is_captured() {
            continue;
        }
        let position = match request.at_us {
            Some(time) => history.position_at_time(&vault, time).await?,
            None => history.latest_position().unwrap_or(0),
        };
        let states = history.states_at(&vault, &tenants, position).await?;
        for (tenant, state) in &states {
            let expected = expected_from_state(state);
            for (table, (_, digest)) in &expected {
                tables.push(VaultTable {
                    tenant: tenant.to_string(),
                    source: source.name.clone(),
                    table: table.clone(),
                    rows: digest.rows,
                    checksum: digest.hex(),
                });
            }
            let check = compare_tenant(source, tenant, &expected).await?;
            tables_checked += check.tables.len();
            if check.matches() {
                continue;
            }
            // Which rows differ: only now are the tenant's live rows held.
            let live = source.tenant_rows(tenant).await?;
            for table in check.differences() {
                let (columns, rows) = live
                    .get(&table.table)
                    .map(|(c, r)| (c.clone(), r.as_slice()))
                    .unwrap_or_default();
                let vault_table = state.tables.get(&table.table);
                let vault_rows: Vec<&Row> = vault_table
                    .map(|t| t.rows.values().collect())
                    .unwrap_or_default();
                let vault_columns = vault_table
                    .and_then(|t| t.schema.clone())
                    .map(|s| s.columns)
                    .unwrap_or_else(|| columns.clone());
                let schema = source.tenancy.table(&table.table).map(|t| t.schema.clone());
                let (only_live, only_vault, examples) =
                    row_differences(&columns, rows, &vault_columns, &vault_rows, schema.as_ref());
                differences.push(Difference {
                    tenant: tenant.to_string(),
                    source: source.name.clone(),
                    table: table.table.clone(),
                    live: table.live,
                    vault: table.vault,
                    rows_only_live: only_live,
                    rows_only_vault: only_vault,
                    example_keys: examples,
                });
            }
        }
    }
    Ok(Report {
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        tables_checked,
        tables,
        ok: differences.is_empty(),
        differences,
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
