//! Lifeboat's sources: the databases it protects. Capture from SQLite (triggers and a
//! changelog) and PostgreSQL (logical replication with pgoutput), and reading a tenant's
//! live rows for verification.

pub mod capture;
pub mod drill;
pub mod live;
pub mod postgres;
pub mod restore;
pub mod sqlite;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lifeboat_core::model::{Row, TableSchema};
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

/// `SELECT t0.cols FROM table t0 [JOIN parent t1 …] WHERE tN.<tenant column> = <placeholder>`:
/// a tenant's rows of one table, following its `tenant_via` path.
pub fn tenant_query(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    placeholder: &str,
) -> Result<String> {
    let (links, tenant_column) = tenancy.path(&schema.name).ok_or_else(|| {
        Error::config(format!(
            "table {} has no path to a tenant column",
            schema.name
        ))
    })?;
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("t0.{}", quote_ident(c)))
        .collect();
    let mut sql = format!(
        "SELECT {} FROM {} t0",
        columns.join(", "),
        quote_ident(&schema.name)
    );
    for (i, link) in links.iter().enumerate() {
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
    sql.push_str(&format!(
        " WHERE t{}.{} = {placeholder}",
        links.len(),
        quote_ident(&tenant_column)
    ));
    Ok(sql)
}

/// `DELETE FROM table WHERE …`: a tenant's rows of one table, following its `tenant_via`
/// path through the parents (which must still hold their rows: delete children first).
pub fn tenant_delete(
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    placeholder: &str,
) -> Result<String> {
    let (links, tenant_column) = tenancy.path(&schema.name).ok_or_else(|| {
        Error::config(format!(
            "table {} has no path to a tenant column",
            schema.name
        ))
    })?;
    let table = quote_ident(&schema.name);
    let Some(first) = links.first() else {
        return Ok(format!(
            "DELETE FROM {table} WHERE {} = {placeholder}",
            quote_ident(&tenant_column)
        ));
    };
    let mut inner = format!(
        "SELECT t1.{} FROM {} t1",
        quote_ident(&first.parent_column),
        quote_ident(&first.parent)
    );
    for (i, link) in links.iter().enumerate().skip(1) {
        inner.push_str(&format!(
            " JOIN {} t{} ON t{}.{} = t{}.{}",
            quote_ident(&link.parent),
            i + 1,
            i,
            quote_ident(&link.column),
            i + 1,
            quote_ident(&link.parent_column)
        ));
    }
    inner.push_str(&format!(
        " WHERE t{}.{} = {placeholder}",
        links.len(),
        quote_ident(&tenant_column)
    ));
    Ok(format!(
        "DELETE FROM {table} WHERE {} IN ({inner})",
        quote_ident(&first.column)
    ))
}
