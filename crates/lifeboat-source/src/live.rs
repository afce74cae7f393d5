//! A configured source, connected and checked against its configuration: the one entry
//! point callers use, whatever the kind of database. `LiveSource` holds the source's
//! resolved tenant map and its kind (a `source::Source`: SQLite or PostgreSQL), and hands
//! every operation to the kind; the trait's documentation says what each guarantees.

use std::collections::BTreeMap;
use std::sync::Arc;

use lifeboat_core::config::{CaptureConfig, SourceConfig, SourceKind};
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{Dialect, Position, Row, TenantKey, Value};
use lifeboat_core::tenancy::{resolve, SourceTenancy};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::capture::CaptureStats;
use crate::faults::FaultStats;
use crate::guard::{Effect, IdRow};
use crate::installed::Installed;
use crate::postgres::PostgresSource;
use crate::restore::{ForeignKey, TenantRestore, WriteMode, WriteReport};
use crate::source::{Backlog, Source};
use crate::sqlite::SqliteSource;
use crate::{postgres, Stop, TenantRows};

pub struct LiveSource {
    pub name: String,
    pub tenancy: SourceTenancy,
    kind: Box<dyn Source>,
}

impl LiveSource {
    /// Connect, read the schema and resolve every table's tenancy. With `for_capture`,
    /// also check that the server can be captured (PostgreSQL's wal_level).
    pub async fn open(name: &str, config: &SourceConfig, for_capture: bool) -> Result<LiveSource> {
        let context = |e: Error| e.context(format!("source {name}"));
        let kind = connect(name, config).await?;
        if for_capture {
            kind.check_capturable().await?;
        }
        let live = kind.live_tables().await.map_err(context)?;
        let tenancy = resolve(name, config, &live)?;
        Ok(LiveSource {
            name: name.to_string(),
            tenancy,
            kind,
        })
    }

    /// Whether the configured database can be reached now: connected (PostgreSQL) or
    /// opened (SQLite, never created), and answering a query. Reads no table.
    pub async fn ping(name: &str, config: &SourceConfig) -> Result<()> {
        let context = |e: Error| e.context(format!("source {name}"));
        match config.kind()? {
            SourceKind::Sqlite { path } => crate::sqlite::ping(&path).await.map_err(context),
            SourceKind::Postgres { url } => {
                let schema = config.schema.as_deref().unwrap_or("public");
                let url =
                    lifeboat_core::pg::with_password_file(&url, config.password_file.as_deref())?;
                postgres::ping(&url, schema).await.map_err(context)
            }
        }
    }

    /// What of this source's history waits for capture (see `Backlog`), given the
    /// position where its vault history ends.
    pub async fn backlog(&self, vault_head: u64) -> Result<Backlog> {
        self.kind.backlog(&self.name, vault_head).await
    }

    /// The tenant's rows in every tenant table of this source, as they are now.
    pub async fn tenant_rows(&self, tenant: &TenantKey) -> Result<TenantRows> {
        let mut out: TenantRows = self
            .tenancy
            .tenant_tables()
            .map(|t| {
                (
                    t.schema.name.clone(),
                    (t.schema.columns.clone(), Vec::new()),
                )
            })
            .collect();
        self.for_each_tenant_row(tenant, |table, _, row| {
            if let Some((_, rows)) = out.get_mut(table) {
                rows.push(std::mem::take(row));
            }
        })
        .await?;
        Ok(out)
    }

    /// Hand every row the tenant has now, table by table, to `visit` (with the table's
    /// name and columns), as the database returns them.
    pub async fn for_each_tenant_row(
        &self,
        tenant: &TenantKey,
        mut visit: impl FnMut(&str, &[String], &mut Row) + Send,
    ) -> Result<()> {
        self.kind
            .for_each_tenant_row(&self.tenancy, tenant, &mut visit)
            .await
    }

    /// Each tenant table's columns in this database.
    pub fn live_columns(&self) -> BTreeMap<String, Vec<String>> {
        self.tenancy
            .tenant_tables()
            .map(|t| (t.schema.name.clone(), t.schema.columns.clone()))
            .collect()
    }

    /// The SQL dialect of the source's database.
    pub fn dialect(&self) -> Dialect {
        self.kind.dialect()
    }

    /// What restore needs beyond the tenant map: the write order of the tables and the
    /// foreign keys (and, on PostgreSQL, the sequences).
    pub async fn restore_catalog(&self) -> Result<RestoreCatalog> {
        self.kind.restore_catalog(&self.tenancy).await
    }

    /// Replace `delete_key`'s rows with `restore`'s rows in one transaction (see
    /// `Source::write_tenant`). The restore comes back with the digests of the rows written.
    pub async fn write_tenant(
        &mut self,
        catalog: &RestoreCatalog,
        delete_key: &TenantKey,
        restore: TenantRestore,
        mode: WriteMode,
    ) -> Result<(WriteReport, TenantRestore)> {
        self.kind
            .write_tenant(&self.tenancy, catalog, delete_key, restore, mode)
            .await
    }

    /// Find `ids` in `table.column` (with `label`), each with its tenant.
    pub async fn lookup_ids(
        &self,
        table: &str,
        column: &str,
        label: Option<&str>,
        ids: &[Value],
    ) -> Result<Vec<IdRow>> {
        self.kind
            .lookup_ids(&self.tenancy, table, column, label, ids)
            .await
    }

    /// Run an operation's steps (SQL with parameters bound) in one transaction, measuring
    /// the rows touched per tenant and table; commit only when `decide` says so.
    pub async fn run_steps(
        &mut self,
        steps: &[String],
        decide: impl FnOnce(&Effect) -> bool + Send,
    ) -> Result<(Effect, bool)> {
        self.kind
            .run_steps(&self.tenancy, steps, Box::new(decide))
            .await
    }

    /// The source's position now (PostgreSQL: WAL insert position; SQLite: changelog).
    pub async fn position(&self) -> Result<Position> {
        self.kind.position().await
    }

    /// A position a running capture passes once the vault holds everything committed
    /// before the call (see `Source::position_to_capture`).
    pub async fn position_to_capture(&self) -> Result<Position> {
        self.kind.position_to_capture().await
    }

    /// How many rows `tenant` has in `table` now.
    pub async fn count_tenant_rows(&self, tenant: &TenantKey, table: &str) -> Result<u64> {
        let schema = &self
            .tenancy
            .table(table)
            .ok_or_else(|| {
                Error::config(format!(
                    "table {table} is not in source {}'s tenant map",
                    self.name
                ))
            })?
            .schema;
        self.kind
            .count_tenant_rows(&self.tenancy, schema, tenant)
            .await
    }

    /// Capture this source (see `Source::capture`).
    pub async fn capture(
        self,
        vault: &Vault,
        config: CaptureConfig,
        metrics: CaptureMetrics,
        until_caught_up: bool,
        stop: &Stop,
    ) -> Result<CaptureStats> {
        self.capture_counted(
            vault,
            config,
            metrics,
            until_caught_up,
            stop,
            Arc::default(),
        )
        .await
    }

    /// Capture this source, counting the transient faults it meets in `faults`, which
    /// can be read while capture runs.
    pub async fn capture_counted(
        self,
        vault: &Vault,
        config: CaptureConfig,
        metrics: CaptureMetrics,
        until_caught_up: bool,
        stop: &Stop,
        faults: Arc<FaultStats>,
    ) -> Result<CaptureStats> {
        self.kind
            .capture(
                vault,
                &self.name,
                self.tenancy,
                config,
                metrics,
                until_caught_up,
                stop,
                faults,
            )
            .await
    }
}

/// Connect to a configured source's database, of its kind.
async fn connect(name: &str, config: &SourceConfig) -> Result<Box<dyn Source>> {
    let context = |e: Error| e.context(format!("source {name}"));
    Ok(match config.kind()? {
        SourceKind::Sqlite { path } => Box::new(SqliteSource::open(&path).await.map_err(context)?),
        SourceKind::Postgres { url } => {
            let schema = config.schema.as_deref().unwrap_or("public");
            let url = lifeboat_core::pg::with_password_file(&url, config.password_file.as_deref())?;
            Box::new(
                PostgresSource::connect(&url, schema)
                    .await
                    .map_err(context)?,
            )
        }
    })
}

/// What capture installed in source `name`'s database. The tenant map is not resolved: a
/// source whose tables no longer match its declarations can still be released.
pub async fn installed(name: &str, config: &SourceConfig) -> Result<Installed> {
    let kind = connect(name, config).await?;
    kind.installed(name)
        .await
        .map_err(|e| e.context(format!("source {name}")))
}

/// Remove what capture installed in source `name`'s database (see `Source::uninstall`).
pub async fn uninstall(name: &str, config: &SourceConfig) -> Result<Installed> {
    let mut kind = connect(name, config).await?;
    kind.uninstall(name)
        .await
        .map_err(|e| e.context(format!("source {name}")))
}

/// A source's schema facts for restore.
#[derive(Debug, Clone)]
pub struct RestoreCatalog {
    /// Tenant tables, parents before children.
    pub order: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub postgres: Option<postgres::restore::Catalog>,
}
