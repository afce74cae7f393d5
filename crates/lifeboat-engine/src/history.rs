//! A tenant's transactions in the vault, newest first.

use lifeboat_core::config::Config;
use lifeboat_core::model::{Dialect, Op};
use lifeboat_core::Result;
use std::collections::BTreeMap;

use crate::context::{check_tenants, histories, open_vault, source_names};

/// One transaction that touched the tenant.
#[derive(Debug, Clone)]
pub struct Entry {
    pub source: String,
    pub dialect: Dialect,
    pub xid: u64,
    pub position: u64,
    pub commit_time_us: i64,
    /// (table, operation) -> rows
    pub rows: BTreeMap<(String, &'static str), u64>,
    /// Transaction-wide: rows of every tenant, for scale.
    pub rows_all_tenants: u64,
    pub tenants_touched: usize,
}

/// `tenant`'s transactions in `sources` (all when empty), newest first, at most `limit`.
pub async fn history(
    config: &Config,
    tenant: &str,
    sources: &[String],
    limit: usize,
) -> Result<Vec<Entry>> {
    let names = source_names(config, sources)?;
    let vault = open_vault(config).await?;
    let histories = histories(&vault, &names).await?;
    let tenant = check_tenants(&vault, &histories, &[tenant.to_string()])
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
    entries.truncate(limit);
    Ok(entries)
}
