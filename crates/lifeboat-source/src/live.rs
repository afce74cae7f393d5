//! A configured source, connected and checked against its configuration: the one entry
//! point the CLI uses, whatever the kind of database.

use std::path::PathBuf;

use lifeboat_core::config::{CaptureConfig, SourceConfig, SourceKind};
use lifeboat_core::model::{Dialect, Position, Row, TenantKey};
use lifeboat_core::tenancy::{resolve, SourceTenancy};
use lifeboat_core::vault::Vault;
use lifeboat_core::Result;

use std::collections::BTreeMap;

use crate::capture::CaptureStats;
use crate::restore::{table_order, ForeignKey, TenantRestore, WriteMode, WriteReport};
use crate::{postgres, sqlite, Stop, TenantRows};

enum Connection {
    Sqlite {
        path: PathBuf,
        conn: std::sync::Mutex<rusqlite::Connection>,
    },
    Postgres {
        url: String,
        schema: String,
        client: tokio_postgres::Client,
    },
}

pub struct LiveSource {
    pub name: String,
    pub tenancy: SourceTenancy,
    connection: Connection,
}

impl LiveSource {
    /// Connect, read the schema and resolve every table's tenancy. With `for_capture`,
    /// also check that the server can be captured (PostgreSQL's wal_level).
    pub async fn open(name: &str, config: &SourceConfig, for_capture: bool) -> Result<LiveSource> {
        let context = |e: lifeboat_core::Error| e.context(format!("source {name}"));
        match config.kind()? {
            SourceKind::Sqlite { path } => {
                let conn = sqlite::open(&path).map_err(context)?;
                let live = sqlite::live_tables(&conn, &path).map_err(context)?;
                let tenancy = resolve(name, config, &live)?;
                Ok(LiveSource {
                    name: name.to_string(),
                    tenancy,
                    connection: Connection::Sqlite {
                        path,
                        conn: std::sync::Mutex::new(conn),
                    },
                })
            }
            SourceKind::Postgres { url } => {
                let schema = config
                    .schema
                    .clone()
                    .unwrap_or_else(|| "public".to_string());
                let client = postgres::connect(&url, &schema).await.map_err(context)?;
                if for_capture {
                    postgres::check_wal_level(&client, &url).await?;
                }
                let live = postgres::live_tables(&client, &schema)
                    .await
                    .map_err(context)?;
                let tenancy = resolve(name, config, &live)?;
                Ok(LiveSource {
                    name: name.to_string(),
                    tenancy,
                    connection: Connection::Postgres {
                        url,
                        schema,
                        client,
                    },
                })
            }
        }
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
                rows.push(row);
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
        visit: impl FnMut(&str, &[String], Row),
    ) -> Result<()> {
        match &self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .lock()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                sqlite::for_each_tenant_row(&conn, path, &self.tenancy, tenant, visit)
            }
            Connection::Postgres { client, .. } => {
                postgres::for_each_tenant_row(client, &self.tenancy, tenant, visit).await
            }
        }
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
        match self.connection {
            Connection::Sqlite { .. } => Dialect::Sqlite,
            Connection::Postgres { .. } => Dialect::Postgres,
        }
    }

    /// What restore needs beyond the tenant map: the write order of the tables and the
    /// foreign keys (and, on PostgreSQL, the sequences).
    pub async fn restore_catalog(&self) -> Result<RestoreCatalog> {
        let (foreign_keys, postgres) = match &self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .lock()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                (sqlite::foreign_keys(&conn, path)?, None)
            }
            Connection::Postgres { client, schema, .. } => {
                let catalog = postgres::restore::catalog(client, schema).await?;
                (catalog.foreign_keys.clone(), Some(catalog))
            }
        };
        Ok(RestoreCatalog {
            order: table_order(&self.tenancy, &foreign_keys),
            foreign_keys,
            postgres,
        })
    }

    /// Replace `delete_key`'s rows with `restore`'s rows in one transaction (see
    /// `sqlite::write_tenant` and `postgres::restore::write_tenant`). The restore comes
    /// back with the digests of the rows written.
    pub async fn write_tenant(
        &mut self,
        catalog: &RestoreCatalog,
        delete_key: &TenantKey,
        mut restore: TenantRestore,
        mode: WriteMode,
    ) -> Result<(WriteReport, TenantRestore)> {
        match &mut self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .get_mut()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                let report = sqlite::write_tenant(
                    conn,
                    path,
                    &self.tenancy,
                    delete_key,
                    &mut restore,
                    mode,
                )?;
                Ok((report, restore))
            }
            Connection::Postgres { client, .. } => {
                let pg = catalog.postgres.clone().unwrap_or_default();
                postgres::restore::write_tenant(
                    client,
                    &self.tenancy,
                    &pg,
                    delete_key,
                    restore,
                    mode,
                )
                .await
            }
        }
    }

    /// Find `ids` in `table.column` (with `label`), each with its tenant.
    pub async fn lookup_ids(
        &self,
        table: &str,
        column: &str,
        label: Option<&str>,
        ids: &[lifeboat_core::model::Value],
    ) -> Result<Vec<crate::guard::IdRow>> {
        let sql = crate::guard::id_query(&self.tenancy, table, column, label, ids, self.dialect())?;
        match &self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .lock()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                sqlite::lookup_ids(&conn, path, &sql, label.is_some())
            }
            Connection::Postgres { client, .. } => {
                postgres::lookup_ids(client, &sql, label.is_some()).await
            }
        }
    }

    /// Run an operation's steps (SQL with parameters bound) in one transaction, measuring
    /// the rows touched per tenant and table; commit only when `decide` says so.
    pub async fn run_steps(
        &mut self,
        steps: &[String],
        decide: impl FnOnce(&crate::guard::Effect) -> bool,
    ) -> Result<(crate::guard::Effect, bool)> {
        match &mut self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .get_mut()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                sqlite::run_steps(conn, path, &self.tenancy, steps, decide)
            }
            Connection::Postgres { client, schema, .. } => {
                postgres::run_steps(client, &self.tenancy, schema, steps, decide).await
            }
        }
    }

    /// The source's position now (PostgreSQL: WAL insert position; SQLite: changelog).
    pub async fn position(&self) -> Result<Position> {
        let position = match &self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .lock()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                sqlite::position(&conn, path)
            }
            Connection::Postgres { client, .. } => postgres::position(client).await,
        }?;
        Ok(Position::new(position))
    }

    /// How many rows `tenant` has in `table` now.
    pub async fn count_tenant_rows(&self, tenant: &TenantKey, table: &str) -> Result<u64> {
        let schema = &self
            .tenancy
            .table(table)
            .ok_or_else(|| {
                lifeboat_core::Error::config(format!(
                    "table {table} is not in source {}'s tenant map",
                    self.name
                ))
            })?
            .schema;
        match &self.connection {
            Connection::Sqlite { path, conn } => {
                let conn = conn
                    .lock()
                    .map_err(|_| lifeboat_core::Error::source("sqlite connection poisoned"))?;
                sqlite::count_tenant_rows(&conn, path, &self.tenancy, schema, tenant)
            }
            Connection::Postgres { client, .. } => {
                postgres::count_tenant_rows(client, &self.tenancy, schema, tenant).await
            }
        }
    }

    /// Capture this source (see `sqlite::capture` and `postgres::capture`).
    pub async fn capture(
        self,
        vault: &Vault,
        config: CaptureConfig,
        until_caught_up: bool,
        stop: &Stop,
    ) -> Result<CaptureStats> {
        match self.connection {
            Connection::Sqlite { path, conn } => {
                drop(conn);
                sqlite::capture(
                    vault,
                    &self.name,
                    &path,
                    self.tenancy,
                    config,
                    until_caught_up,
                    stop,
                )
                .await
            }
            Connection::Postgres {
                url,
                schema,
                client,
            } => {
                drop(client);
                postgres::capture(
                    vault,
                    &self.name,
                    &url,
                    &schema,
                    self.tenancy,
                    config,
                    until_caught_up,
                    stop,
                )
                .await
            }
        }
    }
}

/// A source's schema facts for restore.
#[derive(Debug, Clone)]
pub struct RestoreCatalog {
    /// Tenant tables, parents before children.
    pub order: Vec<String>,
    pub foreign_keys: Vec<ForeignKey>,
    pub postgres: Option<postgres::restore::Catalog>,
}
