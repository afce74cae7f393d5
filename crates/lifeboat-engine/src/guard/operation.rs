//! Running an operation's steps against its sources and comparing measured effects.

use std::collections::{BTreeMap, BTreeSet};

use lifeboat_core::config::Config;
use lifeboat_core::model::Value;
use lifeboat_core::{Error, Result};
use lifeboat_source::guard::{bind_array, Effect};
use lifeboat_source::live::LiveSource;

use super::plan::Merged;

/// Open each named source once.
pub async fn open_named(
    config: &Config,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, LiveSource>> {
    let mut out = BTreeMap::new();
    for name in names {
        out.insert(
            name.clone(),
            LiveSource::open(name, config.source(name)?, false).await?,
        );
    }
    Ok(out)
}

/// Run `steps` (source, SQL) with the IDs bound, one transaction per source, and merge the
/// effects as tenant -> "source.table" -> rows. `decide` gets each source's effect and
/// says whether that source's transaction commits.
pub async fn run_operation(
    sources: &mut BTreeMap<String, LiveSource>,
    steps: &[(String, String)],
    param: &str,
    ids: &[Value],
    mut decide: impl FnMut(&str, &Effect) -> bool + Send,
) -> Result<(Merged, bool)> {
    let mut order: Vec<String> = Vec::new();
    for (source, _) in steps {
        if !order.contains(source) {
            order.push(source.clone());
        }
    }
    let mut merged = Merged::new();
    let mut all_committed = true;
    for name in order {
        let source = sources
            .get_mut(&name)
            .ok_or_else(|| Error::config(format!("unknown source {name}")))?;
        let dialect = source.dialect();
        let sql: Vec<String> = steps
            .iter()
            .filter(|(s, _)| *s == name)
            .map(|(_, sql)| bind_array(sql, param, ids, dialect))
            .collect();
        let (effect, committed) = source.run_steps(&sql, |e| decide(&name, e)).await?;
        all_committed &= committed;
        for (tenant, tables) in effect {
            let entry = merged.entry(tenant).or_default();
            for (table, n) in tables {
                *entry.entry(format!("{name}.{table}")).or_default() += n;
            }
        }
    }
    Ok((merged, all_committed))
}

/// One source's part of a merged effect, as that source measures it.
pub fn effect_of(merged: &Merged, source: &str) -> Effect {
    let prefix = format!("{source}.");
    let mut out = Effect::new();
    for (tenant, tables) in merged {
        for (table, n) in tables {
            if let Some(t) = table.strip_prefix(&prefix) {
                out.entry(tenant.clone())
                    .or_default()
                    .insert(t.to_string(), *n);
            }
        }
    }
    out.retain(|_, t| !t.is_empty());
    out
}

/// The differences between two effects, for people.
pub fn effect_differences(want: &Merged, got: &Merged) -> Vec<String> {
    let mut out = Vec::new();
    let tenants: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for tenant in tenants {
        let empty = BTreeMap::new();
        let w = want.get(tenant).unwrap_or(&empty);
        let g = got.get(tenant).unwrap_or(&empty);
        let tables: BTreeSet<&String> = w.keys().chain(g.keys()).collect();
        for table in tables {
            let (a, b) = (
                w.get(table).copied().unwrap_or(0),
                g.get(table).copied().unwrap_or(0),
            );
            if a != b {
                let who = if tenant.is_empty() {
                    "rows of no tenant".to_string()
                } else {
                    format!("tenant {tenant}")
                };
                out.push(format!("{who}, {table}: planned {a} rows, now {b}"));
            }
        }
    }
    out
}
