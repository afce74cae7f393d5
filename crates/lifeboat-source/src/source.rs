//! What a kind of source database does for Lifeboat, behind one trait: `Source`, implemented
//! by `sqlite::SqliteSource` and `postgres::PostgresSource`. Callers use it through
//! `live::LiveSource`, which opens the right kind for a configuration and holds the
//! source's tenant map; every method here gets that map as `tenancy`.

use async_trait::async_trait;

use lifeboat_core::config::CaptureConfig;
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{Dialect, Position, Row, TableSchema, TenantKey, Value};
use lifeboat_core::tenancy::{LiveTable, SourceTenancy};
use lifeboat_core::vault::Vault;
use lifeboat_core::Result;

use std::sync::Arc;

use crate::capture::CaptureStats;
use crate::faults::FaultStats;
use crate::guard::{Effect, IdRow};
use crate::installed::Installed;
use crate::live::RestoreCatalog;
use crate::restore::{TenantRestore, WriteMode, WriteReport};
use crate::Stop;

/// Where a tenant's rows go, one at a time: the table's name, its columns, and the row,
/// lent (the reader may reuse its memory for the next row; take its values to keep them).
pub type RowVisitor<'a> = dyn FnMut(&str, &[String], &mut Row) + Send + 'a;

/// Whether to commit a measured operation, given its effect. Called at most once.
pub type Decide<'a> = Box<dyn FnOnce(&Effect) -> bool + Send + 'a>;

/// One connected source database of one kind.
///
/// The contract every kind keeps:
///
/// - **Tenants.** Each method that reads or writes rows reaches a tenant's rows through the
///   tenant map it is given (`tenancy`): a table's tenant column, or a `tenant_via` path to
///   a parent that has one. Rows of global tables and of other tenants are never read as
///   the tenant's, and never removed or written by `write_tenant`.
/// - **Atomicity.** `write_tenant` is one database transaction: the tenant's rows are
///   replaced completely or, on any error (a constraint or foreign key violated, the
///   connection lost), not at all. `run_steps` is one transaction too, committed only when
///   its `decide` says so and rolled back otherwise; a failing step rolls everything back.
/// - **Idempotence.** Writing the same tenant state twice leaves the same rows as writing it
///   once: the tenant's current rows are removed before the state's rows are written.
/// - **Positions.** `position` is where the source's history stands now (PostgreSQL: the WAL
///   insert position; SQLite: the last sequence number of capture's changelog). Positions
///   only grow: whatever commits after a call has a greater position than the call
///   returned. They are comparable only within one source.
/// - **Acknowledgement.** `capture` tells the database that changes are safe (PostgreSQL:
///   the slot's confirmed position; SQLite: changelog entries deleted) only once the vault
///   flush that holds them is durable, so a crash at any point loses nothing: the changes
///   not acknowledged are read again.
/// - **Errors.** Every error is a `lifeboat_core::Error`. `is_transient()` marks the ones
///   worth retrying (a connection dropped, a server restarting, SQLite busy or locked);
///   any other error is permanent for the same input (a violated constraint, a missing
///   table, a source not captured yet) and fails the same way when retried.
/// - **Blocking.** No method blocks the async runtime's worker threads: a kind whose driver
///   blocks (SQLite) does that work on the runtime's blocking threads.
#[async_trait]
pub trait Source: Send + Sync {
    /// The SQL dialect: how queries for this source are written and its positions read.
    fn dialect(&self) -> Dialect;

    /// The database's tables (Lifeboat's own left out), from which the tenant map is
    /// resolved.
    async fn live_tables(&self) -> Result<Vec<LiveTable>>;

    /// Refuse a database that cannot be captured, saying what to change. Kinds that need
    /// nothing of the server accept every database.
    async fn check_capturable(&self) -> Result<()> {
        Ok(())
    }

    /// Hand every row `tenant` has now to `visit`: table by table, in the order of
    /// `tenancy.tenant_tables()`, each table's rows as the database returns them. Each table
    /// is read by its own statement, so rows committed meanwhile by others may be seen in
    /// one table and not in another. On an error, the rows already handed over stay handed.
    async fn for_each_tenant_row(
        &self,
        tenancy: &SourceTenancy,
        tenant: &TenantKey,
        visit: &mut RowVisitor<'_>,
    ) -> Result<()>;

    /// What a restore needs beyond the tenant map: the tables' write order and foreign keys
    /// (and, on PostgreSQL, its sequences and how keys may be checked).
    async fn restore_catalog(&self, tenancy: &SourceTenancy) -> Result<RestoreCatalog>;

    /// Replace `delete_key`'s rows with `restore`'s rows, in one transaction (see the
    /// contract above): the tenant's rows are removed, children first, and the restored
    /// rows written, parents first; foreign keys must hold when it commits. `WriteMode`:
    /// `Commit` commits; `Trial` writes and rolls back; `DryRun` only counts. The restore
    /// comes back with the digests of the rows it handed out.
    async fn write_tenant(
        &mut self,
        tenancy: &SourceTenancy,
        catalog: &RestoreCatalog,
        delete_key: &TenantKey,
        restore: TenantRestore,
        mode: WriteMode,
    ) -> Result<(WriteReport, TenantRestore)>;

    /// Run an operation's `steps` (SQL, parameters already bound) in one transaction and
    /// measure the rows they touched, per tenant and table, cascades and triggers included
    /// (rows of no tenant count under the empty tenant). `decide` gets that effect while
    /// the transaction is open; the transaction commits only when it returns true. Returns
    /// the effect and whether it committed. On SQLite the source must have been captured
    /// (the measurement reads capture's changelog).
    async fn run_steps(
        &mut self,
        tenancy: &SourceTenancy,
        steps: &[String],
        decide: Decide<'_>,
    ) -> Result<(Effect, bool)>;

    /// Find `ids` in `table.column`, each with its tenant (`None` in a global table) and,
    /// when asked for, the value of column `label`. IDs not found are left out.
    async fn lookup_ids(
        &self,
        tenancy: &SourceTenancy,
        table: &str,
        column: &str,
        label: Option<&str>,
        ids: &[Value],
    ) -> Result<Vec<IdRow>>;

    /// Where the source's history stands now (see the contract above).
    async fn position(&self) -> Result<Position>;

    /// A position that a running capture of the source passes even when nothing else is
    /// committed afterwards: every change committed before the call is at or below it, and
    /// capture's vault head reaches it (or goes beyond) once the vault holds them all.
    /// PostgreSQL: the WAL insert position, then a transaction that holds only a logical
    /// message is committed (capture stores it as a transaction without changes, above the
    /// position). SQLite: the last sequence number the changelog handed out, which capture
    /// stores as the position of the commit group that ends with it.
    async fn position_to_capture(&self) -> Result<Position>;

    /// How many rows `tenant` has now in the tenant table of `schema`.
    async fn count_tenant_rows(
        &self,
        tenancy: &SourceTenancy,
        schema: &TableSchema,
        tenant: &TenantKey,
    ) -> Result<u64>;

    /// What capture installed in this database for the source named `name` (its slot and
    /// publication, or its changelog, triggers and tables), and the vault it records.
    async fn installed(&self, name: &str) -> Result<Installed>;

    /// Remove everything `installed` lists, leaving the database as it was before capture
    /// (a table's replica identity excepted); returns what was there. Refused, removing
    /// nothing, while a capture uses it (a slot streaming). A vault that holds the source's
    /// history cannot resume capturing it afterwards.
    async fn uninstall(&mut self, name: &str) -> Result<Installed>;

    /// What of the source's history waits for capture, as the database sees it, for the
    /// source named `name` whose vault history ends at `vault_head` (see `Backlog`).
    async fn backlog(&self, name: &str, vault_head: u64) -> Result<Backlog>;

    /// Capture the source named `name` into `vault` until `stop` is set or, with
    /// `until_caught_up`, until every change committed before the call is durable in the
    /// vault. The first capture of a source writes a base of every tenant; later ones
    /// resume where the vault's history ends. Consumes the source: capture opens the
    /// connections it needs itself. What it captures is counted in `metrics`. Once
    /// running, transient faults are retried (docs/faults.md) and counted in `faults`;
    /// permanent ones end the capture.
    #[allow(clippy::too_many_arguments)]
    async fn capture(
        self: Box<Self>,
        vault: &Vault,
        name: &str,
        tenancy: SourceTenancy,
        config: CaptureConfig,
        metrics: CaptureMetrics,
        until_caught_up: bool,
        stop: &Stop,
        faults: Arc<FaultStats>,
    ) -> Result<CaptureStats>;
}

/// What of a source's history waits for capture, read from the database (`lifeboat info`).
/// A field a kind cannot tell is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// PostgreSQL: the replication slot capture reads through (`None`: not created yet).
    pub slot: Option<String>,
    /// PostgreSQL: WAL bytes from the slot's confirmed position to the server's current one.
    pub slot_lag_bytes: Option<u64>,
    /// PostgreSQL: WAL bytes the server keeps for the slot (from its restart position).
    pub retained_wal_bytes: Option<u64>,
    /// SQLite: changelog rows after the vault's head, not captured yet.
    pub changelog_rows: Option<u64>,
    /// Whether a capture is reading the source now (`None`: the database cannot tell).
    pub capture_running: Option<bool>,
    /// PostgreSQL: the server process serving the capture's replication connection.
    pub capture_pid: Option<i64>,
}
