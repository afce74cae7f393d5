//! Lifeboat's sources: the databases it protects. Each kind of database implements
//! `source::Source` (SQLite in `sqlite`, PostgreSQL in `postgres`), whose documentation is
//! the contract; `live::LiveSource` opens the right kind for a configured source. Capture
//! from SQLite (triggers and a changelog) and PostgreSQL (logical replication with
//! pgoutput), reading a tenant's live rows for verification, writing restored tenants, and
//! running measured operations.

pub mod capture;
pub mod drill;
pub mod faults;
pub mod guard;
pub mod installed;
pub mod keyindex;
pub mod live;
pub mod postgres;
pub mod restore;
pub mod snapshot;
pub mod source;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_core::model::{Dialect, Row, TableSchema};
use lifeboat_core::tenancy::SourceTenancy;
use lifeboat_core::{Error, Result};

/// A tenant's live rows: per table, its column names and rows.
pub type TenantRows = BTreeMap<String, (Vec<String>, Vec<Row>)>;

/// Quote an SQL identifier (both SQLite and PostgreSQL use double quotes).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A stop request shared by long-running loops (Ctrl-C, SIGTERM).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Wait until a stop is requested. Made once and polled by a loop again and again, it
    /// registers its wait once, where `sleep` makes a timer and a wait each time.
    pub async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the flag is read: a `set` in between still wakes it.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }

    /// Sleep for `duration`, waking early when a stop is requested.
    pub async fn sleep(&self, duration: Duration) {
        if self.is_set() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.notify.notified() => {}
        }
    }
}

/// A tenant's rows of one table: `SELECT <columns> FROM table t0 WHERE <tenant column> =
/// <placeholder>`, or, for a table reached through `tenant_via`, `WHERE <link column>` is
/// among the keys of the parent's rows that belong to the tenant (see `via_keys`).
pub fn tenant_query(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    placeholder: &str,
    dialect: Dialect,
) -> Result<String> {
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("t0.{}", quote_ident(c)))
        .collect();
    Ok(format!(
        "SELECT {} FROM {} t0 WHERE {}",
        columns.join(", "),
        quote_ident(&schema.name),
        tenant_condition(tenancy, schema, "t0.", placeholder, dialect)?
    ))
}

/// `DELETE FROM table WHERE …`: a tenant's rows of one table, following its `tenant_via`
/// path through the parents (which must still hold their rows: delete children first).
pub fn tenant_delete(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    placeholder: &str,
    dialect: Dialect,
) -> Result<String> {
    Ok(format!(
        "DELETE FROM {} WHERE {}",
        quote_ident(&schema.name),
        tenant_condition(tenancy, schema, "", placeholder, dialect)?
    ))
}

/// The condition that selects a tenant's rows of `schema` (columns prefixed by `alias`).
/// Through `tenant_via`, the parent keys are computed first: on PostgreSQL as
/// `= ANY(ARRAY(SELECT …))`, which the planner evaluates once and then probes the link
/// column's index with (a plain `IN (SELECT …)` can turn into a scan of the whole child
/// table); on SQLite as `IN (SELECT …)`, which it already plans that way.
fn tenant_condition(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    alias: &str,
    placeholder: &str,
    dialect: Dialect,
) -> Result<String> {
    let (links, tenant_column) = tenant_path(tenancy, schema)?;
    let Some(first) = links.first() else {
        return Ok(format!(
            "{alias}{} = {placeholder}",
            quote_ident(&tenant_column)
        ));
    };
    let keys = format!(
        "SELECT t1.{} FROM {} t1{}",
        quote_ident(&first.parent_column),
        quote_ident(&first.parent),
        joins_to_tenant(&links, 1, &tenant_column, placeholder)
    );
    let column = format!("{alias}{}", quote_ident(&first.column));
    Ok(match dialect {
        Dialect::Postgres => format!("{column} = ANY(ARRAY({keys}))"),
        Dialect::Sqlite => format!("{column} IN ({keys})"),
    })
}

fn tenant_path(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
) -> Result<(Vec<lifeboat_core::tenancy::Link>, String)> {
    tenancy.path(&schema.name).ok_or_else(|| {
        Error::config(format!(
            "table {} has no path to a tenant column",
            schema.name
        ))
    })
}

/// `SELECT t0.<column>, [t0.<label>,] tN.<tenant column> FROM table t0 [JOIN …]`: every
/// row's `column` (and `label`) with its tenant, followed by `filter` (a WHERE clause on
/// `t0`, or nothing). `None` for a global table.
pub fn keyed_tenant_query(
    tenancy: &SourceTenancy,
    table: &str,
    column: &str,
    label: Option<&str>,
    filter: &str,
) -> Result<Option<String>> {
    let resolved = tenancy
        .table(table)
        .ok_or_else(|| Error::config(format!("table {table} is not in the source's tenant map")))?;
    if matches!(resolved.tenancy, lifeboat_core::tenancy::Tenancy::Global) {
        return Ok(None);
    }
    let (links, tenant_column) = tenant_path(tenancy, &resolved.schema)?;
    let joins = joins(&links, 0);
    let label = label
        .map(|l| format!("t0.{}, ", quote_ident(l)))
        .unwrap_or_default();
    Ok(Some(format!(
        "SELECT t0.{}, {label}t{}.{} FROM {} t0{joins} {filter}",
        quote_ident(column),
        links.len(),
        quote_ident(&tenant_column),
        quote_ident(table),
    )))
}

/// ` JOIN parent t{i+1} ON …` for the links after `from` (alias `t{from}` is already in the
/// query), then ` WHERE tN.<tenant column> = <placeholder>`.
fn joins_to_tenant(
    links: &[lifeboat_core::tenancy::Link],
    from: usize,
    tenant_column: &str,
    placeholder: &str,
) -> String {
    let mut sql = joins(links, from);
    sql.push_str(&format!(
        " WHERE t{}.{} = {placeholder}",
        links.len(),
        quote_ident(tenant_column)
    ));
    sql
}

/// ` JOIN parent t{i+1} ON t{i}.col = t{i+1}.parent_col` for the links after `from`.
fn joins(links: &[lifeboat_core::tenancy::Link], from: usize) -> String {
    let mut sql = String::new();
    for (i, link) in links.iter().enumerate().skip(from) {
        sql.push_str(&format!(
            " JOIN {} t{} ON t{}.{} = t{}.{}",
            quote_ident(&link.parent),
            i + 1,
            i,
            quote_ident(&link.column),
            i + 1,
            quote_ident(&link.parent_column)
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::Stop;
    use std::time::Duration;

    #[tokio::test]
    async fn stopped_waits_for_a_stop_requested_before_or_while_it_waits() {
        let stop = Stop::new();
        let waiting = stop.stopped();
        tokio::pin!(waiting);
        // Polled again and again without a stop, it stays pending.
        for _ in 0..3 {
            let timed_out = tokio::time::timeout(Duration::from_millis(20), &mut waiting).await;
            assert!(timed_out.is_err(), "stopped before a stop was requested");
        }
        let setter = stop.clone();
        tokio::spawn(async move { setter.set() });
        tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .expect("a stop requested while waiting ends the wait");
        // Made after the stop: it ends at once.
        tokio::time::timeout(Duration::from_secs(5), stop.stopped())
            .await
            .expect("a stop requested before ends the wait");
    }
}
