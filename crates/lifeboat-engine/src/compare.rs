//! The one comparison of a tenant's live rows with a state the vault holds, table by table,
//! by row count and order-independent checksum (`lifeboat_core::checksum`). `verify`,
//! restore's read-back, the campaign worker's verifying stage and the drill all use it.
//!
//! Rule: a table is compared on the columns the vault's side names. Live rows are read as a
//! stream and projected onto those columns (a column the database lacks counts as NULL), so
//! memory does not follow the tenant's size. A table the vault's side does not name is
//! digested over its live columns: any live row there is a difference.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use lifeboat_core::checksum::{RowHasher, TableDigest};
use lifeboat_core::model::{Row, TenantKey, Value};
use lifeboat_core::state::{TenantState, TenantStream};
use lifeboat_core::Result;
use lifeboat_source::live::LiveSource;

/// What a tenant's tables should hold: table -> (columns, digest over those columns).
pub type Expected = BTreeMap<String, (Vec<String>, TableDigest)>;

/// One table of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCheck {
    pub table: String,
    pub live: TableDigest,
    pub vault: TableDigest,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.live == self.vault
    }
}

/// A tenant's live rows in one source against the vault's side: every table either side
/// has, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantCheck {
    pub tables: Vec<TableCheck>,
}

impl TenantCheck {
    pub fn matches(&self) -> bool {
        self.tables.iter().all(TableCheck::matches)
    }

    pub fn differences(&self) -> impl Iterator<Item = &TableCheck> {
        self.tables.iter().filter(|t| !t.matches())
    }
}

/// The vault's side from a materialised state (`verify`).
pub fn expected_from_state(state: &TenantState) -> Expected {
    state
        .tables
        .iter()
        .filter_map(|(name, table)| {
            let schema = table.schema.as_ref()?;
            Some((
                name.clone(),
                (
                    schema.columns.clone(),
                    TableDigest::of(&schema.columns, table.rows.values()),
                ),
            ))
        })
        .collect()
}

/// The vault's side from a stream (the worker), read once, table by table.
pub fn expected_from_stream(stream: &mut TenantStream) -> Result<Expected> {
    let mut out = Expected::new();
    for (table, schema) in stream.schemas() {
        let hasher = RowHasher::new(&schema.columns);
        let mut digest = TableDigest::default();
        stream.for_each_row(&table, |row| digest.add(hasher.hash(&row)))?;
        out.insert(table, (schema.columns, digest));
    }
    Ok(out)
}

/// Digest `tenant`'s live rows in `source`, each table projected onto `columns[table]`
/// (a table not named there: onto its own live columns).
pub async fn live_digests(
    source: &LiveSource,
    tenant: &TenantKey,
    columns: &BTreeMap<String, Vec<String>>,
) -> Result<BTreeMap<String, TableDigest>> {
    // table -> (hasher over the wanted columns, where each wanted column is live (`None`
    // when the live columns are the wanted ones, in order: the row is hashed as read),
    // digest)
    type Projection = (RowHasher, Option<Vec<Option<usize>>>, TableDigest);
    let mut tables: BTreeMap<String, Projection> = BTreeMap::new();
    source
        .for_each_tenant_row(tenant, |table, live_columns, row| {
            if !tables.contains_key(table) {
                let onto = columns
                    .get(table)
                    .map(Vec::as_slice)
                    .unwrap_or(live_columns);
                let positions = (onto != live_columns).then(|| {
                    onto.iter()
                        .map(|c| live_columns.iter().position(|x| x == c))
                        .collect()
                });
                tables.insert(
                    table.to_string(),
                    (RowHasher::new(onto), positions, TableDigest::default()),
                );
            }
            let Some((hasher, positions, digest)) = tables.get_mut(table) else {
                return;
            };
            match positions {
                None => digest.add(hasher.hash(row)),
                Some(positions) => {
                    let projected: Row = positions
                        .iter()
                        .map(|p| p.and_then(|i| row.get(i).cloned()).unwrap_or(Value::Null))
                        .collect();
                    digest.add(hasher.hash(&projected));
                }
            }
        })
        .await?;
    Ok(tables
        .into_iter()
        .map(|(table, (_, _, digest))| (table, digest))
        .collect())
}

/// Compare `tenant`'s live rows in `source` with `expected`.
pub async fn compare_tenant(
    source: &LiveSource,
    tenant: &TenantKey,
    expected: &Expected,
) -> Result<TenantCheck> {
    let columns: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(table, (columns, _))| (table.clone(), columns.clone()))
        .collect();
    let live = live_digests(source, tenant, &columns).await?;
    Ok(check(expected, &live))
}

/// Live digests (`live_digests`, read over `expected`'s columns) against `expected`.
pub fn check(expected: &Expected, live: &BTreeMap<String, TableDigest>) -> TenantCheck {
    let names: BTreeSet<&String> = expected.keys().chain(live.keys()).collect();
    TenantCheck {
        tables: names
            .into_iter()
            .map(|table| TableCheck {
                table: table.clone(),
                live: live.get(table).copied().unwrap_or_default(),
                vault: expected
                    .get(table)
                    .map(|(_, digest)| *digest)
                    .unwrap_or_default(),
            })
            .collect(),
    }
}
