//! `lifeboat history --tenant K`: the tenant's transactions, newest first.

use std::collections::BTreeMap;
use std::path::PathBuf;

use lifeboat_core::model::{format_lsn, Dialect, Op, Position};
use lifeboat_core::time::format_us;
use lifeboat_core::Result;

use crate::context::{
    check_tenants, histories, load_config, open_vault, print_json, source_names, thousands,
};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    tenant: String,
    /// Only these sources (repeatable).
    #[arg(long = "source", value_name = "NAME")]
    sources: Vec<String>,
    /// At most this many transactions.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

struct Entry {
    source: String,
    dialect: Dialect,
    xid: u64,
    position: u64,
    commit_time_us: i64,
    /// (table, operation) -> rows
    rows: BTreeMap<(String, &'static str), u64>,
    /// Transaction-wide: rows of every tenant, for scale.
    rows_all_tenants: u64,
    tenants_touched: usize,
}

pub async fn run(config_path: Option<PathBuf>, args: Args) -> Result<u8> {
    let config = load_config(config_path)?;
    let names = source_names(&config, &args.sources)?;
    let vault = open_vault(&config).await?;
    let histories = histories(&vault, &names).await?;
    let tenant = check_tenants(&vault, &histories, std::slice::from_ref(&args.tenant))
        .await?
        .into_iter()
        .next()
        .expect("one tenant checked");
    let mut entries = Vec::new();
    for history in &histories {
        let dialect = config
            .source(&history.source)
            .and_then(|s| s.dialect())
            .unwrap_or(Dialect::Sqlite);
        history
            .for_each_transaction(&vault, 0, u64::MAX, |tables, tx| {
                let mut rows: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
                let mut tenants = std::collections::BTreeSet::new();
                for change in &tx.changes {
                    if let Some(t) = &change.tenant {
                        tenants.insert(t.clone());
                    }
                    let mine = change.tenant.as_ref() == Some(&tenant) || change.op == Op::Truncate;
                    let mine = mine && change.op != Op::Alter;
                    if mine {
                        let table = tables
                            .get(change.table as usize)
                            .map(|t| t.name.clone())
                            .unwrap_or_default();
                        *rows.entry((table, change.op.as_str())).or_default() += 1;
                    }
                }
                if !rows.is_empty() {
                    entries.push(Entry {
                        source: history.source.clone(),
                        dialect,
                        xid: tx.xid,
                        position: tx.position,
                        commit_time_us: tx.commit_time_us,
                        rows,
                        rows_all_tenants: tx.changes.len() as u64,
                        tenants_touched: tenants.len(),
                    });
                }
            })
            .await?;
    }
    entries.sort_by(|a, b| {
        b.commit_time_us
            .cmp(&a.commit_time_us)
            .then(b.position.cmp(&a.position))
    });
    entries.truncate(args.limit);
    if args.json {
        let value: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "source": e.source,
                    "transaction": format!("{}:{}", e.source, e.xid),
                    "xid": e.xid,
                    "position": e.position,
                    "lsn": (e.dialect == Dialect::Postgres).then(|| format_lsn(e.position)),
                    "commit_time": format_us(e.commit_time_us),
                    "rows": e.rows.iter().map(|((table, op), n)| serde_json::json!({"table": table, "op": op, "rows": n})).collect::<Vec<_>>(),
                    "rows_total": e.rows.values().sum::<u64>(),
                    "rows_all_tenants": e.rows_all_tenants,
                    "tenants_touched": e.tenants_touched,
                })
            })
            .collect();
        print_json(&serde_json::Value::Array(value));
        return Ok(0);
    }
    if entries.is_empty() {
        crate::say!("no transactions of tenant {tenant} in the vault (its rows may all come from the first snapshot)");
        return Ok(0);
    }
    for e in &entries {
        let total: u64 = e.rows.values().sum();
        let tables: std::collections::BTreeSet<&String> = e.rows.keys().map(|(t, _)| t).collect();
        let position = Position::new(e.position).describe(e.dialect);
        crate::say!(
            "{}  {}:{}  at {}  {} rows across {} tables{}",
            format_us(e.commit_time_us),
            e.source,
            e.xid,
            position,
            thousands(total),
            tables.len(),
            if e.tenants_touched > 1 {
                format!(
                    " (transaction touched {} tenants, {} rows)",
                    e.tenants_touched,
                    thousands(e.rows_all_tenants)
                )
            } else {
                String::new()
            }
        );
        for ((table, op), n) in &e.rows {
            crate::say!("    {op:<8} {table:<30} {:>10}", thousands(*n));
        }
    }
    Ok(0)
}
