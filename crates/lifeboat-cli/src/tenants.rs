//! `lifeboat tenants`: every protected tenant, its sources, row counts and window.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lifeboat_core::model::TenantKey;
use lifeboat_core::time::format_us;
use lifeboat_core::Result;

use crate::context::{histories, load_config, open_vault, print_json, source_names, thousands};

#[derive(clap::Args)]
pub struct Args {
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    #[arg(long)]
    json: bool,
}

struct Entry {
    rows: BTreeMap<String, usize>,
    earliest_us: i64,
    latest_us: i64,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path)?;
    let names = source_names(&config, &args.sources)?;
    let vault = open_vault(&config).await?;
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
    if args.json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|(tenant, e)| {
                serde_json::json!({
                    "tenant": tenant.as_str(),
                    "sources": e.rows.keys().collect::<Vec<_>>(),
                    "rows": e.rows,
                    "rows_total": e.rows.values().sum::<usize>(),
                    "earliest": format_us(e.earliest_us),
                    "latest": format_us(e.latest_us),
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
        return Ok(0);
    }
    if entries.is_empty() {
        crate::say!("no protected tenants yet: run `lifeboat capture` first");
        return Ok(0);
    }
    crate::say!(
        "{:<20} {:>12}  {:<40} restorable window",
        "tenant",
        "rows",
        "rows by source"
    );
    for (tenant, e) in &entries {
        let by_source: Vec<String> = e
            .rows
            .iter()
            .map(|(s, n)| format!("{s} {}", thousands(*n as u64)))
            .collect();
        crate::say!(
            "{:<20} {:>12}  {:<40} {} .. {}",
            tenant.as_str(),
            thousands(e.rows.values().sum::<usize>() as u64),
            by_source.join(", "),
            format_us(e.earliest_us),
            format_us(e.latest_us)
        );
    }
    crate::say!("{} tenants", entries.len());
    Ok(0)
}
