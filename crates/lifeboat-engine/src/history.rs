//! A tenant's transactions in the vault, newest first.

use lifeboat_core::config::Config;
use lifeboat_core::model::{Dialect, Op};
use lifeboat_core::vault::Vault;
use lifeboat_core::Result;
use std::collections::{BTreeMap, BTreeSet};

use crate::context::{check_tenants, histories_for, open_vault, source_names};

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
    /// Transaction-wide: rows changed of every tenant, for scale (as the segment's head
    /// counts them, so without reading the other tenants' changes).
    pub rows_all_tenants: u64,
}

/// `tenant`'s transactions in `sources` (all when empty), newest first, at most `limit`.
pub async fn history(
    config: &Config,
    tenant: &str,
    sources: &[String],
    limit: usize,
) -> Result<Vec<Entry>> {
    let vault = open_vault(config).await?;
    history_in(&vault, config, tenant, sources, limit).await
}

/// `history` in `vault`. Only the tenant's share of history is read: every segment's head
/// (continuity, and which tenants it holds), and of the segments with changes of the
/// tenant (or a truncate), the head again and the tenant's chunk and the chunk for every
/// tenant; the other tenants' chunks are never read.
pub async fn history_in(
    vault: &Vault,
    config: &Config,
    tenant: &str,
    sources: &[String],
    limit: usize,
) -> Result<Vec<Entry>> {
    let names = source_names(config, sources)?;
    let histories = histories_for(vault, &names, &[tenant.to_string()]).await?;
    let tenant = check_tenants(vault, &histories, &[tenant.to_string()])
        .await?
        .into_iter()
        .next()
        .expect("one tenant checked");
    let wanted = BTreeSet::from([tenant.clone()]);
    let mut entries = Vec::new();
    for history in &histories {
        let dialect = config
            .source(&history.source)
            .and_then(|s| s.dialect())
            .unwrap_or(Dialect::Sqlite);
        let mut applied = 0;
        let mut chain = history.chain(0, u64::MAX);
        while let Some((segment_ref, summary)) = chain.next(vault).await? {
            let truncates = summary
                .0
                .transactions
                .iter()
                .any(|tx| tx.changes.iter().any(|c| c.op == Op::Truncate));
            if !truncates && !summary.1.contains(&tenant) {
                continue;
            }
            let (segment, counts) = vault
                .read_segment_for_counted(&segment_ref.name, &wanted)
                .await?;
            for (tx, all) in segment.transactions.iter().zip(counts) {
                // A transaction at or below `applied` was read already.
                if tx.position <= applied {
                    continue;
                }
                applied = tx.position;
                let mut rows: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
                for change in &tx.changes {
                    let mine = change.tenant.as_ref() == Some(&tenant) || change.op == Op::Truncate;
                    if mine && change.op != Op::Alter {
                        let table = segment
                            .tables
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
                        rows_all_tenants: u64::from(all),
                    });
                }
            }
        }
    }
    entries.sort_by(|a, b| {
        b.commit_time_us
            .cmp(&a.commit_time_us)
            .then(b.position.cmp(&a.position))
    });
    entries.truncate(limit);
    Ok(entries)
}
