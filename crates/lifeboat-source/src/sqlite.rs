//! SQLite sources (`SqliteSource`). Capture installs a changelog table and one trigger per
//! table and operation, so that every committed change by any process lands in the
//! changelog in commit order (SQLite has one writer at a time). Capture reads the
//! changelog, writes it to the vault, and only then deletes what it wrote.
//!
//! rusqlite blocks, so every call on a connection runs on the runtime's blocking threads
//! (`Shared`); rows read for async code cross over in bounded batches.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use lifeboat_core::config::CaptureConfig;
use lifeboat_core::failpoint;
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{Dialect, Op, Position, Row, TableSchema, TenantKey, Value};
use lifeboat_core::tenancy::{LiveTable, SourceTenancy};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::capture::{CaptureCore, CaptureStats, Snapshot, Start};
use crate::faults::{self, FaultKind, FaultStats};
use crate::guard::{Effect, IdRow};
use crate::installed::{claim, Claim, Found, Installed};
use crate::live::RestoreCatalog;
use crate::restore::{table_order, ForeignKey, TenantRestore, WriteMode, WriteReport};
use crate::source::{Backlog, Decide, RowVisitor, Source};
use crate::{quote_ident, tenant_delete, tenant_query, Stop};

const CHANGELOG: &str = "_lifeboat_changelog";
/// The operation of a changelog mark: no change, only the last sequence handed out.
const MARK: &str = "A";
/// The trigger that refuses to delete the changelog's newest entry, so that SQLite never
/// hands its sequence, or a smaller one, out again (docs/vault-format.md, "A source's
/// vault").
const KEEP: &str = "_lifeboat_changelog_keep";
const META: &str = "_lifeboat_meta";
/// The vault the source feeds (docs/vault-format.md, "A source's vault").
const VAULT: &str = "_lifeboat_vault";
/// Unix microseconds of the statement's time.
const NOW_US: &str = "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)";

fn sqlite_error(path: &Path, e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    let error = Error::source(format!("sqlite {}: {e}", path.display()));
    if busy {
        error.transient()
    } else {
        error
    }
}

/// A SQLite source: one connection to its database file.
pub struct SqliteSource {
    shared: Shared,
}

impl SqliteSource {
    /// Open the database file, which must exist.
    pub async fn open(path: &Path) -> Result<SqliteSource> {
        Ok(SqliteSource {
            shared: Shared::open(path).await?,
        })
    }
}

#[async_trait]
impl Source for SqliteSource {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn live_tables(&self) -> Result<Vec<LiveTable>> {
        self.shared.run(|conn, path| live_tables(conn, path)).await
    }

    async fn for_each_tenant_row(
        &self,
        tenancy: &SourceTenancy,
        tenant: &TenantKey,
        visit: &mut RowVisitor<'_>,
    ) -> Result<()> {
        let tables: Vec<&TableSchema> = tenancy.tenant_tables().map(|t| &t.schema).collect();
        let (send, receive) = mpsc::channel(BATCHES_IN_FLIGHT);
        let reading = {
            let tenancy = tenancy.clone();
            let tenant = tenant.clone();
            self.shared.spawn(move |conn, path| {
                let mut batches = Batches::new(send);
                for_each_tenant_row(conn, path, &tenancy, &tenant, |table, row| {
                    batches.push(table, row)
                })?;
                batches.flush()
            })
        };
        receive_batches(reading, receive, |table, mut row| {
            let schema = tables[table];
            visit(&schema.name, &schema.columns, &mut row);
            Ok(())
        })
        .await
    }

    async fn restore_catalog(&self, tenancy: &SourceTenancy) -> Result<RestoreCatalog> {
        let foreign_keys = self
            .shared
            .run(|conn, path| foreign_keys(conn, path))
            .await?;
        Ok(RestoreCatalog {
            order: table_order(tenancy, &foreign_keys),
            foreign_keys,
            postgres: None,
        })
    }

    async fn write_tenant(
        &mut self,
        tenancy: &SourceTenancy,
        _catalog: &RestoreCatalog,
        delete_key: &TenantKey,
        mut restore: TenantRestore,
        mode: WriteMode,
    ) -> Result<(WriteReport, TenantRestore)> {
        let tenancy = tenancy.clone();
        let delete_key = delete_key.clone();
        self.shared
            .run(move |conn, path| {
                let report = write_tenant(conn, path, &tenancy, &delete_key, &mut restore, mode)?;
                Ok((report, restore))
            })
            .await
    }

    async fn run_steps(
        &mut self,
        tenancy: &SourceTenancy,
        steps: &[String],
        decide: Decide<'_>,
    ) -> Result<(Effect, bool)> {
        // The transaction stays open on the blocking thread while `decide`, which need not
        // outlive this call, runs here: the effect goes over, the decision comes back.
        let (effect_sender, effect_receiver) = tokio::sync::oneshot::channel::<Effect>();
        let (decision_sender, decision_receiver) = tokio::sync::oneshot::channel::<bool>();
        let running = {
            let tenancy = tenancy.clone();
            let steps = steps.to_vec();
            self.shared.spawn(move |conn, path| {
                run_steps(conn, path, &tenancy, &steps, move |effect| {
                    effect_sender.send(effect.clone()).is_ok()
                        && decision_receiver.blocking_recv().unwrap_or(false)
                })
            })
        };
        // No effect arrives when the steps fail before it is measured.
        if let Ok(effect) = effect_receiver.await {
            let _ = decision_sender.send(decide(&effect));
        }
        joined(running).await
    }

    async fn lookup_ids(
        &self,
        tenancy: &SourceTenancy,
        table: &str,
        column: &str,
        label: Option<&str>,
        ids: &[Value],
    ) -> Result<Vec<IdRow>> {
        let sql = crate::guard::id_query(tenancy, table, column, label, ids, Dialect::Sqlite)?;
        let with_label = label.is_some();
        self.shared
            .run(move |conn, path| lookup_ids(conn, path, &sql, with_label))
            .await
    }

    async fn position(&self) -> Result<Position> {
        self.shared
            .run(|conn, path| position(conn, path).map(Position::new))
            .await
    }

    async fn position_to_capture(&self) -> Result<Position> {
        // Every sequence handed out belongs to a committed change, and capture's head is
        // the last sequence of the commit group it stored.
        self.position().await
    }

    async fn count_tenant_rows(
        &self,
        tenancy: &SourceTenancy,
        schema: &TableSchema,
        tenant: &TenantKey,
    ) -> Result<u64> {
        let sql = count_query(tenancy, schema)?;
        let key = tenant_parameter(tenant);
        self.shared
            .run(move |conn, path| {
                let n: i64 = conn
                    .query_row(&sql, [key], |r| r.get(0))
                    .map_err(|e| sqlite_error(path, e))?;
                Ok(n as u64)
            })
            .await
    }

    async fn installed(&self, _name: &str) -> Result<Installed> {
        self.shared.run(|conn, path| installed(conn, path)).await
    }

    async fn uninstall(&mut self, _name: &str) -> Result<Installed> {
        self.shared
            .run(|conn, path| {
                let err = |e| sqlite_error(path, e);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(err)?;
                let found = installed(&tx, path)?;
                let mut sql = String::new();
                for (trigger, _) in installed_triggers(&tx, path)? {
                    sql.push_str(&format!("DROP TRIGGER {};", quote_ident(&trigger)));
                }
                for table in [CHANGELOG, META, VAULT] {
                    sql.push_str(&format!("DROP TABLE IF EXISTS {table};"));
                }
                tx.execute_batch(&sql).map_err(err)?;
                tx.commit().map_err(err)?;
                Ok(found)
            })
            .await
    }

    async fn backlog(&self, _name: &str, vault_head: u64) -> Result<Backlog> {
        self.shared
            .run(move |conn, path| {
                let err = |e| sqlite_error(path, e);
                let installed: bool = conn
                    .query_row(
                        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
                        [CHANGELOG],
                        |r| r.get(0),
                    )
                    .map_err(err)?;
                let waiting: i64 = if installed {
                    conn.query_row(
                        &format!(
                            "SELECT count(*) FROM {CHANGELOG} WHERE seq > ?1 AND op <> '{MARK}'"
                        ),
                        [i64::try_from(vault_head).unwrap_or(i64::MAX)],
                        |r| r.get(0),
                    )
                    .map_err(err)?
                } else {
                    0
                };
                Ok(Backlog {
                    changelog_rows: Some(waiting as u64),
                    // Nothing in an SQLite file tells whether a capture polls it.
                    capture_running: None,
                    ..Backlog::default()
                })
            })
            .await
    }

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
    ) -> Result<CaptureStats> {
        let path = self.shared.path.to_path_buf();
        drop(self);
        capture(
            vault,
            name,
            &path,
            tenancy,
            config,
            metrics,
            until_caught_up,
            stop,
            faults,
        )
        .await
    }
}

/// A connection used from async code: each call on it runs on a blocking thread, one call
/// at a time.
#[derive(Clone)]
struct Shared {
    path: Arc<PathBuf>,
    conn: Arc<Mutex<Connection>>,
}

impl Shared {
    async fn open(path: &Path) -> Result<Shared> {
        let path = Arc::new(path.to_path_buf());
        let conn = {
            let path = path.clone();
            joined(tokio::task::spawn_blocking(move || open(&path))).await?
        };
        Ok(Shared {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Start `work` on a blocking thread, with the connection to itself until it returns.
    fn spawn<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Path) -> Result<T> + Send + 'static,
    ) -> JoinHandle<Result<T>> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = shared
                .conn
                .lock()
                .map_err(|_| Error::source("sqlite connection poisoned"))?;
            let done = work(&mut conn, &shared.path);
            // No work leaves a transaction open on the shared connection (its locks would
            // keep the application out of its database): one left by a failure is undone.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            done
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection, &Path) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        joined(self.spawn(work)).await
    }
}

/// What a blocking task returned; a panic in it goes on here.
async fn joined<T>(task: JoinHandle<Result<T>>) -> Result<T> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::source(format!("a SQLite task did not finish: {e}"))),
    }
}

/// Rows per batch sent from a blocking thread, and batches on their way at once.
const BATCH_ROWS: usize = 1000;
const BATCHES_IN_FLIGHT: usize = 4;

/// Rows of tables (by index) going from a blocking thread to async code, in batches of
/// one table's rows, in the order they were pushed.
struct Batches {
    send: mpsc::Sender<(usize, Vec<Row>)>,
    table: usize,
    rows: Vec<Row>,
}

impl Batches {
    fn new(send: mpsc::Sender<(usize, Vec<Row>)>) -> Batches {
        Batches {
            send,
            table: 0,
            rows: Vec::new(),
        }
    }

    /// Fails once the receiving side is gone, which stops the reading.
    fn push(&mut self, table: usize, row: Row) -> Result<()> {
        if table != self.table {
            self.flush()?;
            self.table = table;
        }
        self.rows.push(row);
        if self.rows.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.rows);
        self.send
            .blocking_send((self.table, rows))
            .map_err(|_| Error::source("the rows read from SQLite are no longer wanted"))
    }
}

/// Hand the rows `task` sends to `each` as they arrive, then return what `task` returned.
/// The first error of `each` is returned at once (the task then stops at its next batch).
async fn receive_batches<T>(
    task: JoinHandle<Result<T>>,
    mut receive: mpsc::Receiver<(usize, Vec<Row>)>,
    mut each: impl FnMut(usize, Row) -> Result<()>,
) -> Result<T> {
    while let Some((table, rows)) = receive.recv().await {
        for row in rows {
            each(table, row)?;
        }
    }
    joined(task).await
}

fn open(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::source(format!(
            "sqlite database {} does not exist",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sqlite_error(path, e))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| sqlite_error(path, e))?;
    Ok(conn)
}

/// Whether the database at `path` can be opened and read now (without creating it).
pub async fn ping(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    joined(tokio::task::spawn_blocking(move || {
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sqlite_error(&path, e))?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| sqlite_error(&path, e))?;
        Ok(())
    }))
    .await
}

/// The database's tables (Lifeboat's own and SQLite's internal ones excluded).
fn live_tables(conn: &Connection, path: &Path) -> Result<Vec<LiveTable>> {
    let err = |e| sqlite_error(path, e);
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT LIKE '\\_lifeboat\\_%' ESCAPE '\\' ORDER BY name",
        )
        .map_err(err)?;
    let names: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let mut stmt = conn
            .prepare(&format!("PRAGMA table_info({})", quote_ident(&name)))
            .map_err(err)?;
        let columns: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(5)?)))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        let mut key: Vec<(i64, usize)> = columns
            .iter()
            .enumerate()
            .filter(|(_, (_, pk))| *pk > 0)
            .map(|(i, (_, pk))| (*pk, i))
            .collect();
        key.sort();
        tables.push(LiveTable {
            schema: TableSchema {
                name,
                columns: columns.into_iter().map(|(c, _)| c).collect(),
                key: key.into_iter().map(|(_, i)| i).collect(),
            },
        });
    }
    Ok(tables)
}

fn value_from_ref(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Parse one SQL literal as `quote()` writes it.
fn parse_literal(text: &str) -> Option<Value> {
    if text == "NULL" {
        return Some(Value::Null);
    }
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Some(Value::Text(inner.replace("''", "'")));
    }
    if let Some(hex) = text.strip_prefix("X'").and_then(|t| t.strip_suffix('\'')) {
        return hex::decode(hex).ok().map(Value::Blob);
    }
    if text.contains(['.', 'e', 'E']) || text.contains("Inf") {
        return text.parse::<f64>().ok().map(Value::Real);
    }
    text.parse::<i64>().ok().map(Value::Int)
}

fn parse_row(json: &str) -> Option<Row> {
    let literals: Vec<String> = serde_json::from_str(json).ok()?;
    literals.iter().map(|l| parse_literal(l)).collect()
}

fn row_expression(prefix: &str, schema: &TableSchema) -> String {
    let quoted: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("quote({prefix}.{})", quote_ident(c)))
        .collect();
    format!("json_array({})", quoted.join(", "))
}

/// Create the changelog and (re)create the triggers of every tenant table, recording the
/// columns they capture. Runs inside the caller's transaction.
fn install(conn: &Connection, path: &Path, tenancy: &SourceTenancy) -> Result<()> {
    let err = |e| sqlite_error(path, e);
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {CHANGELOG} (
            seq INTEGER PRIMARY KEY,
            tbl TEXT NOT NULL,
            op TEXT NOT NULL,
            old TEXT,
            new TEXT,
            at INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {META} (tbl TEXT PRIMARY KEY, columns TEXT NOT NULL);
         DROP TRIGGER IF EXISTS {KEEP};
         CREATE TRIGGER {KEEP} BEFORE DELETE ON {CHANGELOG}
         WHEN NOT EXISTS (SELECT 1 FROM {CHANGELOG} WHERE seq > OLD.seq) BEGIN
           SELECT RAISE(ABORT, 'the newest entry of {CHANGELOG} holds the last sequence \
             Lifeboat handed out and cannot be deleted: delete entries below it, or run \
             `lifeboat source drop` to remove capture from this database');
         END;"
    ))
    .map_err(err)?;
    for table in tenancy.tenant_tables() {
        let schema = &table.schema;
        let name = quote_ident(&schema.name);
        let literal = schema.name.replace('\'', "''");
        let new_row = row_expression("NEW", schema);
        let old_row = row_expression("OLD", schema);
        let trigger = |op: &str| quote_ident(&format!("_lifeboat_{}_{op}", schema.name));
        conn.execute_batch(&format!(
            "DROP TRIGGER IF EXISTS {ins};
             DROP TRIGGER IF EXISTS {upd};
             DROP TRIGGER IF EXISTS {del};
             CREATE TRIGGER {ins} AFTER INSERT ON {name} BEGIN
               INSERT INTO {CHANGELOG}(tbl, op, new, at) VALUES ('{literal}', 'I', {new_row}, {NOW_US});
             END;
             CREATE TRIGGER {upd} AFTER UPDATE ON {name} BEGIN
               INSERT INTO {CHANGELOG}(tbl, op, old, new, at) VALUES ('{literal}', 'U', {old_row}, {new_row}, {NOW_US});
             END;
             CREATE TRIGGER {del} AFTER DELETE ON {name} BEGIN
               INSERT INTO {CHANGELOG}(tbl, op, old, at) VALUES ('{literal}', 'D', {old_row}, {NOW_US});
             END;",
            ins = trigger("i"),
            upd = trigger("u"),
            del = trigger("d"),
        ))
        .map_err(err)?;
        conn.execute(
            &format!("INSERT OR REPLACE INTO {META}(tbl, columns) VALUES (?1, ?2)"),
            params![schema.name, serde_json::json!(schema.columns).to_string()],
        )
        .map_err(err)?;
    }
    Ok(())
}

/// Refuse to go on when a table's columns differ from what its triggers capture.
fn check_installed(conn: &Connection, path: &Path, tenancy: &SourceTenancy) -> Result<()> {
    let err = |e| sqlite_error(path, e);
    let live = live_tables(conn, path)?;
    for table in tenancy.tenant_tables() {
        let installed: Option<String> = conn
            .query_row(
                &format!("SELECT columns FROM {META} WHERE tbl = ?1"),
                [&table.schema.name],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        let live_columns = live
            .iter()
            .find(|t| t.schema.name == table.schema.name)
            .map(|t| serde_json::json!(t.schema.columns).to_string());
        if installed.is_some() && installed != live_columns {
            return Err(Error::source(format!(
                "sqlite {}: table {} changed its columns since capture installed its triggers \
                 (now {}); capture stops so that no change is stored without its new columns. \
                 Start capture into a new vault to protect the new shape (`lifeboat source \
                 drop` first)",
                path.display(),
                table.schema.name,
                live_columns.unwrap_or_else(|| "dropped".into())
            )));
        }
    }
    Ok(())
}

fn table_exists(conn: &Connection, path: &Path, name: &str) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
    .map_err(|e| sqlite_error(path, e))
}

/// The vault id `_lifeboat_vault` records, if it is there.
fn recorded_vault(conn: &Connection, path: &Path) -> Result<Option<String>> {
    if !table_exists(conn, path, VAULT)? {
        return Ok(None);
    }
    conn.query_row(&format!("SELECT vault_id FROM {VAULT}"), [], |r| r.get(0))
        .optional()
        .map_err(|e| sqlite_error(path, e))
}

/// Capture's triggers (`_lifeboat_<table>_<op>`), by name.
fn installed_triggers(conn: &Connection, path: &Path) -> Result<Vec<(String, String)>> {
    let err = |e| sqlite_error(path, e);
    let mut stmt = conn
        .prepare(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger' \
             AND name LIKE '\\_lifeboat\\_%' ESCAPE '\\' ORDER BY name",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(err)?;
    Ok(rows)
}

/// What capture installed in the database, and the vault it records.
fn installed(conn: &Connection, path: &Path) -> Result<Installed> {
    let mut out = Installed {
        vault_id: recorded_vault(conn, path)?,
        ..Installed::default()
    };
    for (trigger, table) in installed_triggers(conn, path)? {
        out.objects.push(format!("trigger {trigger} on {table}"));
    }
    if table_exists(conn, path, CHANGELOG)? {
        let pending: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {CHANGELOG} WHERE op <> '{MARK}'"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| sqlite_error(path, e))?;
        out.objects.push(format!(
            "table {CHANGELOG} ({pending} changes not yet acknowledged by a vault)"
        ));
    }
    if table_exists(conn, path, META)? {
        out.objects.push(format!("table {META}"));
    }
    if let Some(id) = &out.vault_id {
        out.objects
            .push(format!("table {VAULT} (recording vault {id})"));
    } else if table_exists(conn, path, VAULT)? {
        out.objects.push(format!("table {VAULT}"));
    }
    Ok(out)
}

/// Decide, inside the transaction that installs capture, whether capture into `vault_id`
/// (holding the source's history up to `head`, or none) may use this database's changelog
/// (docs/vault-format.md, "A source's vault"), and record the vault.
fn claim_source(
    conn: &Connection,
    path: &Path,
    source: &str,
    vault_id: &str,
    head: Option<u64>,
) -> Result<()> {
    let err = |e| sqlite_error(path, e);
    let exists = table_exists(conn, path, CHANGELOG)?;
    let agrees = match (exists, head) {
        (true, Some(head)) => {
            let issued = position(conn, path)?;
            let first: Option<i64> = conn
                .query_row(
                    &format!("SELECT MIN(seq) FROM {CHANGELOG} WHERE op <> '{MARK}'"),
                    [],
                    |r| r.get(0),
                )
                .map_err(err)?;
            Some(match first {
                None => (
                    issued == head,
                    format!(
                        "the changelog holds no change and its last sequence is {issued}, the \
                         vault holds changes up to {head}"
                    ),
                ),
                Some(first) => (
                    first as u64 <= head + 1 && issued >= head,
                    format!(
                        "the changelog holds sequences {first} to {issued}, the vault holds \
                         changes up to {head}"
                    ),
                ),
            })
        }
        _ => None,
    };
    let found = Found {
        source,
        holder: format!("the changelog of {}", path.display()),
        recorded: recorded_vault(conn, path)?,
        exists,
        agrees,
    };
    if claim(&found, vault_id, head)? == Claim::Adopt {
        tracing::info!(
            source,
            vault = vault_id,
            "the changelog records no vault and continues this vault's history: recording this vault"
        );
    }
    if let (Some(head), false) = (head, exists) {
        return Err(Error::source(format!(
            "sqlite {}: capture's changelog is missing although the vault holds history up to \
             {head}: changes since then are lost to this vault. Capture this source into a new \
             vault (`lifeboat source drop {source}` first)",
            path.display()
        )));
    }
    if let (Some(head), true) = (head, exists) {
        let issued = position(conn, path)?;
        if issued < head {
            return Err(sequence_went_back(path, source, issued, head));
        }
        // Capture's changelog keeps its newest entry (`KEEP`), or, made by an earlier
        // Lifeboat, its last sequence in `sqlite_sequence`. One with neither was made again
        // outside capture: its sequences may have started over.
        if !guarded(conn, path)? && !autoincrement(conn, path)? {
            return Err(changelog_made_again(path, source));
        }
    }
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {VAULT} (vault_id TEXT NOT NULL); DELETE FROM {VAULT};"
    ))
    .map_err(err)?;
    conn.execute(
        &format!("INSERT INTO {VAULT}(vault_id) VALUES (?1)"),
        [vault_id],
    )
    .map_err(err)?;
    Ok(())
}

/// Whether the changelog has the trigger that keeps its newest entry.
fn guarded(conn: &Connection, path: &Path) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'trigger' AND name = ?1 \
         AND tbl_name = ?2",
        [KEEP, CHANGELOG],
        |r| r.get(0),
    )
    .map_err(|e| sqlite_error(path, e))
}

/// Whether the changelog was made `AUTOINCREMENT` (by an earlier Lifeboat).
fn autoincrement(conn: &Connection, path: &Path) -> Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1 \
         AND upper(sql) LIKE '%AUTOINCREMENT%'",
        [CHANGELOG],
        |r| r.get(0),
    )
    .map_err(|e| sqlite_error(path, e))
}

/// The changelog, or the trigger that keeps its newest entry, was made again or removed
/// outside capture: SQLite may have handed out sequences the vault already holds.
fn changelog_made_again(path: &Path, source: &str) -> Error {
    Error::source(format!(
        "sqlite {}: capture's changelog was made again, or its trigger {KEEP} removed, outside \
         capture: SQLite may have handed out sequences the vault already holds, and their \
         changes would be missed. Capture stopped and stored nothing more; capture this \
         source into a new vault (`lifeboat source drop {source}` first)",
        path.display()
    ))
}

/// The changelog's last sequence is below what the vault holds: its entries, mark
/// included, were deleted outside capture, and SQLite hands out those sequences again.
fn sequence_went_back(path: &Path, source: &str, issued: u64, head: u64) -> Error {
    Error::source(format!(
        "sqlite {}: the changelog's last sequence is {issued}, below the {head} the vault \
         holds: its entries were deleted outside capture, so new changes would take \
         sequences the vault already holds and be missed. Capture stopped and stored nothing \
         more; capture this source into a new vault (`lifeboat source drop {source}` first)",
        path.display()
    ))
}

fn schema_version(conn: &Connection, path: &Path) -> Result<i64> {
    conn.query_row("PRAGMA schema_version", [], |r| r.get(0))
        .map_err(|e| sqlite_error(path, e))
}

/// Capture one SQLite source until `stop` is set, or (with `until_caught_up`) until every
/// change committed before the call is durable in the vault.
#[allow(clippy::too_many_arguments)]
async fn capture(
    vault: &Vault,
    source: &str,
    path: &Path,
    tenancy: SourceTenancy,
    config: CaptureConfig,
    metrics: CaptureMetrics,
    until_caught_up: bool,
    stop: &Stop,
    faults: Arc<FaultStats>,
) -> Result<CaptureStats> {
    let poll = Duration::from_millis(config.poll_interval_ms.max(1));
    let (mut core, start) =
        CaptureCore::open(vault, source, tenancy, config, metrics, stop, faults).await?;
    let conn = Shared::open(path).await?;
    let (source_name, vault_id) = (source.to_string(), vault.id().to_string());
    match start {
        Start::Fresh => {
            let (position, snapshot) =
                take_snapshot(&conn, &mut core, &source_name, &vault_id).await?;
            let now = lifeboat_core::time::now_us();
            let tenants = core.finish_snapshot(vault, snapshot, position, now).await?;
            tracing::info!(source, tenants, position, "initial snapshot written");
        }
        Start::Resume { position } => {
            let tenancy = core.tenancy().clone();
            conn.run(move |conn, path| {
                let err = |e| sqlite_error(path, e);
                let tx = conn
                    .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                    .map_err(err)?;
                claim_source(&tx, path, &source_name, &vault_id, Some(position))?;
                check_installed(&tx, path, &tenancy)?;
                install(&tx, path, &tenancy)?;
                tx.commit().map_err(err)
            })
            .await?;
        }
    }

    let target = conn.run(|conn, path| last_sequence(conn, path)).await?;
    let mut known_schema = conn.run(|conn, path| schema_version(conn, path)).await?;
    let mut acknowledged = Acknowledged {
        head: core.head(),
        at: std::time::Instant::now(),
    };
    loop {
        let result = step(
            &conn,
            &mut core,
            vault,
            &mut known_schema,
            until_caught_up.then_some(target),
            stop,
            &mut acknowledged,
        )
        .await;
        match result {
            Ok(step) => {
                core.retry.succeeded(FaultKind::Source);
                match step {
                    Step::Done => break,
                    // A step reads everything committed when it starts: what came since
                    // waits for the next poll, so that a busy source is read in groups of
                    // a poll interval's changes, not one query round per transaction.
                    Step::Again => stop.sleep(poll).await,
                }
            }
            // The database was busy or locked: the commit group being read is dropped and
            // read again whole. (The vault's faults are retried inside `flush`.)
            Err(e) if e.is_transient() && !stop.is_set() => {
                core.abandon_open();
                let delay = core.retry.failed(FaultKind::Source, &e);
                stop.sleep(delay).await;
            }
            Err(e) if e.is_transient() => return Err(faults::stopped(e)),
            Err(e) => return Err(e),
        }
    }
    // Whatever is durable is trimmed on the way out.
    let head = core.finish(vault).await?.unwrap_or(core.head());
    if head > acknowledged.head {
        conn.run(move |conn, path| trim(conn, path, head)).await?;
        acknowledged.head = head;
    }
    tracing::info!(source, position = acknowledged.head, "capture stopped");
    Ok(core.stats.clone())
}

/// The changelog is trimmed at most this often: each trim is a write transaction on the
/// source's database (its lock, a sync of its log) beside the application's own writes;
/// what stays a little longer is skipped by position when read again.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// How far the changelog has been trimmed, and when.
struct Acknowledged {
    head: u64,
    at: std::time::Instant,
}

/// What one step of the capture loop did.
enum Step {
    /// Read what was committed, if anything: poll again after the poll interval.
    Again,
    /// Caught up (or stopped) with nothing pending: the loop ends.
    Done,
}

/// One step of SQLite capture: check the schema, read one commit group, write the pending
/// groups to the vault when due and trim the changelog after them.
async fn step(
    conn: &Shared,
    core: &mut CaptureCore,
    vault: &Vault,
    known_schema: &mut i64,
    target: Option<u64>,
    stop: &Stop,
    acknowledged: &mut Acknowledged,
) -> Result<Step> {
    let version = conn.run(|conn, path| schema_version(conn, path)).await?;
    if version != *known_schema {
        let tenancy = core.tenancy().clone();
        let source = core.source.clone();
        conn.run(move |conn, path| {
            check_installed(conn, path, &tenancy)?;
            match guarded(conn, path)? {
                true => Ok(()),
                false => Err(changelog_made_again(path, &source)),
            }
        })
        .await?;
        *known_schema = version;
    }
    // One commit group: every entry committed when this step starts, read in chunks so
    // that a large writer transaction is never split (docs/vault-format.md).
    let upto = conn.run(|conn, path| last_sequence(conn, path)).await?;
    if upto < core.received() {
        // An emptied changelog: fine when `sqlite_sequence` still holds its sequence (a
        // changelog made `AUTOINCREMENT` by an earlier Lifeboat), else its mark is gone.
        let received = core.received();
        let source = core.source.clone();
        conn.run(move |conn, path| {
            let issued = position(conn, path)?;
            match issued < received {
                true => Err(sequence_went_back(path, &source, issued, received)),
                false => Ok(()),
            }
        })
        .await?;
    }
    let read = upto > core.received();
    if read {
        let mut after = core.received();
        let mut began = false;
        let mut commit_time = 0;
        loop {
            let rows = conn
                .run(move |conn, path| read_changelog(conn, path, after, upto, 10_000))
                .await?;
            let Some(last) = rows.last() else {
                break;
            };
            after = last.seq;
            if !began {
                began = core.begin(rows[0].seq, rows[0].seq);
                if !began {
                    break;
                }
            }
            for row in rows {
                commit_time = commit_time.max(row.at);
                core.change(&row.table, row.op, row.old, row.new, row.seq, Some(row.at))?;
            }
            if after >= upto {
                break;
            }
        }
        if began {
            core.commit(after, commit_time);
        }
    }
    let caught_up = target.is_some_and(|target| core.received() >= target);
    let due = core.flush_due() || caught_up || stop.is_set();
    if due {
        core.flush(vault).await?;
    }
    // The changelog is trimmed up to the durable head, after the flush that made it
    // durable (or at the next step, when trimming failed).
    let head = core.head();
    if head > acknowledged.head
        && (acknowledged.at.elapsed() >= TRIM_EVERY || caught_up || stop.is_set())
    {
        conn.run(move |conn, path| trim(conn, path, head)).await?;
        *acknowledged = Acknowledged {
            head,
            at: std::time::Instant::now(),
        };
    }
    if due {
        core.compact_due(vault).await?;
    }
    if (caught_up && !core.has_pending()) || stop.is_set() {
        return Ok(Step::Done);
    }
    Ok(Step::Again)
}

/// Install the triggers, then read every row: triggers first, in their own transaction;
/// then one read transaction sees the rows and the changelog's last sequence together.
/// Every change after that snapshot is in the changelog above that sequence. The rows are
/// read on a blocking thread and handed to capture here as they arrive.
async fn take_snapshot(
    conn: &Shared,
    core: &mut CaptureCore,
    source: &str,
    vault_id: &str,
) -> Result<(u64, Snapshot)> {
    let (source, vault_id) = (source.to_string(), vault_id.to_string());
    let tenancy = core.tenancy().clone();
    let tables: Vec<TableSchema> = tenancy.tenant_tables().map(|t| t.schema.clone()).collect();
    let (send, receive) = mpsc::channel(BATCHES_IN_FLIGHT);
    let reading = {
        let tables = tables.clone();
        conn.spawn(move |conn, path| {
            let mut batches = Batches::new(send);
            let position = snapshot_rows(
                conn,
                path,
                &tenancy,
                &tables,
                &source,
                &vault_id,
                |table, row| batches.push(table, row),
            )?;
            batches.flush()?;
            Ok(position)
        })
    };
    let mut snapshot = core.start_snapshot()?;
    let position = receive_batches(reading, receive, |table, row| {
        core.snapshot_row(&mut snapshot, &tables[table].name, row)
    })
    .await?;
    Ok((position, snapshot))
}

/// The blocking part of `take_snapshot`: hands every row of `tables` (by index) to `each`
/// and returns the changelog's sequence the rows are consistent with.
fn snapshot_rows(
    conn: &mut Connection,
    path: &Path,
    tenancy: &SourceTenancy,
    tables: &[TableSchema],
    source: &str,
    vault_id: &str,
    mut each: impl FnMut(usize, Row) -> Result<()>,
) -> Result<u64> {
    let err = |e| sqlite_error(path, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    claim_source(&tx, path, source, vault_id, None)?;
    install(&tx, path, tenancy)?;
    let issued = position(&tx, path)?;
    forget(&tx, path, issued)?;
    tx.commit().map_err(err)?;
    let tx = conn.transaction().map_err(err)?;
    let position = position(&tx, path)?;
    for (index, schema) in tables.iter().enumerate() {
        let columns: Vec<String> = schema.columns.iter().map(|c| quote_ident(c)).collect();
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {} FROM {}",
                columns.join(", "),
                quote_ident(&schema.name)
            ))
            .map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let values: Row = (0..schema.columns.len())
                .map(|i| row.get_ref(i).map(value_from_ref))
                .collect::<rusqlite::Result<_>>()
                .map_err(err)?;
            each(index, values)?;
        }
    }
    tx.commit().map_err(err)?;
    Ok(position)
}

struct ChangelogRow {
    seq: u64,
    table: String,
    op: Op,
    old: Option<Row>,
    new: Option<Row>,
    at: i64,
}

/// The changelog's last sequence number (0 when empty).
fn last_sequence(conn: &Connection, path: &Path) -> Result<u64> {
    let seq: i64 = conn
        .query_row(
            &format!("SELECT COALESCE(MAX(seq), 0) FROM {CHANGELOG}"),
            [],
            |r| r.get(0),
        )
        .map_err(|e| sqlite_error(path, e))?;
    Ok(seq as u64)
}

/// Changelog entries with after < seq <= upto, at most `limit`, in order.
fn read_changelog(
    conn: &Connection,
    path: &Path,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<ChangelogRow>> {
    let err = |e| sqlite_error(path, e);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT seq, tbl, op, old, new, at FROM {CHANGELOG} WHERE seq > ?1 AND seq <= ?2 \
             AND op <> '{MARK}' ORDER BY seq LIMIT ?3"
        ))
        .map_err(err)?;
    let mut rows = stmt
        .query(params![after as i64, upto as i64, limit as i64])
        .map_err(err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        let seq: i64 = row.get(0).map_err(err)?;
        let op: String = row.get(2).map_err(err)?;
        let op = match op.as_str() {
            "I" => Op::Insert,
            "U" => Op::Update,
            "D" => Op::Delete,
            other => {
                return Err(Error::source(format!(
                    "sqlite {}: changelog entry {seq} has unknown operation {other:?}",
                    path.display()
                )))
            }
        };
        let parse = |i: usize| -> Result<Option<Row>> {
            let text: Option<String> = row.get(i).map_err(err)?;
            match text {
                None => Ok(None),
                Some(text) => parse_row(&text).map(Some).ok_or_else(|| {
                    Error::source(format!(
                        "sqlite {}: changelog entry {seq} cannot be read: {text}",
                        path.display()
                    ))
                }),
            }
        };
        out.push(ChangelogRow {
            seq: seq as u64,
            table: row.get(1).map_err(err)?,
            op,
            old: parse(3)?,
            new: parse(4)?,
            at: row.get(5).map_err(err)?,
        });
    }
    Ok(out)
}

/// Forget changelog entries up to `head`: they are durable in the vault. The entry at
/// `head` stays as a mark, no longer a change, so that SQLite never hands out its
/// sequence or a smaller one again (docs/vault-format.md, "A source's vault").
fn trim(conn: &Connection, path: &Path, head: u64) -> Result<()> {
    failpoint::hit("capture.before-ack");
    forget(conn, path, head)?;
    failpoint::hit("capture.after-ack");
    Ok(())
}

/// Make the changelog's entry at `head` a mark and delete the entries below it, in one
/// write: its own immediate transaction, or a savepoint inside the caller's. The mark comes
/// first: the newest entry is never deleted (`KEEP`).
fn forget(conn: &Connection, path: &Path, head: u64) -> Result<()> {
    let err = |e| sqlite_error(path, e);
    let own = conn.is_autocommit();
    conn.execute_batch(match own {
        true => "BEGIN IMMEDIATE",
        false => "SAVEPOINT lifeboat_forget",
    })
    .map_err(err)?;
    let forgotten = conn
        .execute(
            &format!(
                "UPDATE {CHANGELOG} SET tbl = '', op = '{MARK}', old = NULL, new = NULL \
                 WHERE seq = ?1 AND op <> '{MARK}'"
            ),
            [head as i64],
        )
        .and_then(|_| {
            conn.execute(
                &format!("DELETE FROM {CHANGELOG} WHERE seq < ?1"),
                [head as i64],
            )
        })
        .and_then(|_| {
            conn.execute_batch(match own {
                true => "COMMIT",
                false => "RELEASE lifeboat_forget",
            })
        });
    if let Err(e) = forgotten {
        // A failed commit (the database busy past the timeout) leaves the transaction
        // open, holding its lock: it is rolled back here, not left to the next call.
        let _ = conn.execute_batch(match own {
            true => "ROLLBACK",
            false => "ROLLBACK TO lifeboat_forget; RELEASE lifeboat_forget",
        });
        return Err(err(e));
    }
    Ok(())
}

/// Hand every row of `tenant` in every tenant table to `visit`, with the table's index
/// among the tenant tables. The first error `visit` returns stops the reading.
fn for_each_tenant_row(
    conn: &Connection,
    path: &Path,
    tenancy: &SourceTenancy,
    tenant: &TenantKey,
    mut visit: impl FnMut(usize, Row) -> Result<()>,
) -> Result<()> {
    let err = |e| sqlite_error(path, e);
    for (index, table) in tenancy.tenant_tables().enumerate() {
        let sql = tenant_query(tenancy, &table.schema, "?1", Dialect::Sqlite)?;
        let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
        let key = tenant_parameter(tenant);
        let mut rows = stmt.query([key]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let values: Row = (0..table.schema.columns.len())
                .map(|i| row.get_ref(i).map(value_from_ref))
                .collect::<rusqlite::Result<_>>()
                .map_err(err)?;
            visit(index, values)?;
        }
    }
    Ok(())
}

/// The tenant key as a parameter: an integer when it reads as one (SQLite compares
/// integers and text differently).
fn tenant_parameter(tenant: &TenantKey) -> rusqlite::types::Value {
    match tenant.as_str().parse::<i64>() {
        Ok(i) if i.to_string() == tenant.as_str() => rusqlite::types::Value::Integer(i),
        _ => rusqlite::types::Value::Text(tenant.as_str().to_string()),
    }
}

/// The foreign keys between the database's tables.
fn foreign_keys(conn: &Connection, path: &Path) -> Result<Vec<ForeignKey>> {
    let err = |e| sqlite_error(path, e);
    let mut out = Vec::new();
    for table in live_tables(conn, path)? {
        let name = table.schema.name;
        let mut stmt = conn
            .prepare(&format!("PRAGMA foreign_key_list({})", quote_ident(&name)))
            .map_err(err)?;
        // id, seq, table, from, to, …: one row per column of each key.
        let rows: Vec<(i64, String, String, Option<String>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        let mut keys: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, parent, from, to) in rows {
            let fk = keys.entry(id).or_insert_with(|| ForeignKey {
                child: name.clone(),
                columns: Vec::new(),
                parent: parent.clone(),
                parent_columns: Vec::new(),
            });
            fk.columns.push(from);
            // A reference without columns names the parent's primary key.
            fk.parent_columns.push(to.unwrap_or_default());
        }
        out.extend(
            keys.into_values()
                .filter(|fk| fk.parent_columns.iter().all(|c| !c.is_empty())),
        );
    }
    Ok(out)
}

fn to_sql(value: &Value) -> rusqlite::types::Value {
    match value {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Real(f) => rusqlite::types::Value::Real(*f),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

/// Replace `delete_key`'s rows with `restore`'s rows (tables in write order) in one
/// transaction, with foreign key checks deferred to the commit. `WriteMode::DryRun`: count
/// what would be written and removed; `Trial`: write, then roll back.
fn write_tenant(
    conn: &mut Connection,
    path: &Path,
    tenancy: &SourceTenancy,
    delete_key: &TenantKey,
    restore: &mut TenantRestore,
    mode: WriteMode,
) -> Result<WriteReport> {
    let err = |e| sqlite_error(path, e);
    let key = tenant_parameter(delete_key);
    let mut report = WriteReport::default();
    // Foreign keys are enforced per connection in SQLite, and off unless asked for: the
    // restored rows must satisfy them all the same (checked at the commit, since rows of a
    // table that references itself may come before the rows they reference).
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(err)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    tx.execute_batch("PRAGMA defer_foreign_keys = ON")
        .map_err(err)?;
    for table in restore.tables.iter().rev() {
        let schema = &tenancy
            .table(&table.name)
            .ok_or_else(|| Error::source(format!("table {} vanished", table.name)))?
            .schema;
        let removed = if mode == WriteMode::DryRun {
            let sql = format!(
                "SELECT count(*) FROM ({})",
                tenant_query(tenancy, schema, "?1", Dialect::Sqlite)?
            );
            tx.query_row(&sql, [&key], |r| r.get::<_, i64>(0))
                .map_err(err)? as u64
        } else {
            tx.execute(
                &tenant_delete(tenancy, schema, "?1", Dialect::Sqlite)?,
                [&key],
            )
            .map_err(err)? as u64
        };
        report.tables.insert(table.name.clone(), (0, removed));
    }
    for index in 0..restore.tables.len() {
        let name = restore.tables[index].name.clone();
        let written = if mode == WriteMode::DryRun {
            restore.rows(index, |_| Ok(()))?
        } else {
            let columns: Vec<String> = restore.tables[index]
                .columns
                .iter()
                .map(|c| quote_ident(c))
                .collect();
            let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    quote_ident(&name),
                    columns.join(", "),
                    marks.join(", ")
                ))
                .map_err(err)?;
            restore.rows(index, |row| {
                stmt.execute(rusqlite::params_from_iter(row.iter().map(to_sql)))
                    .map(|_| ())
                    .map_err(|e| {
                        Error::source(format!(
                            "sqlite {}: cannot write a row of {name}: {e}",
                            path.display(),
                        ))
                    })
            })?
        };
        if let Some(entry) = report.tables.get_mut(&name) {
            entry.0 = written;
        }
    }
    if mode != WriteMode::Commit {
        tx.rollback().map_err(err)?;
    } else {
        failpoint::hit("restore.before-commit");
        tx.commit().map_err(err)?;
    }
    Ok(report)
}

/// Rows of an ID lookup (`guard::id_query`): the ID, its label when asked for, its tenant.
fn lookup_ids(
    conn: &Connection,
    path: &Path,
    sql: &str,
    with_label: bool,
) -> Result<Vec<crate::guard::IdRow>> {
    let err = |e| sqlite_error(path, e);
    let mut stmt = conn.prepare(sql).map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(err)? {
        let value = |i: usize| row.get_ref(i).map(value_from_ref).map_err(err);
        let tenant_at = if with_label { 2 } else { 1 };
        out.push(crate::guard::IdRow {
            id: value(0)?,
            label: if with_label {
                value(1)?.tenant_key().map(|k| k.to_string())
            } else {
                None
            },
            tenant: value(tenant_at)?.tenant_key(),
        });
    }
    Ok(out)
}

/// Run `steps` in one transaction and count, per tenant and table, the rows they touched
/// (read back from the changelog the capture triggers fill, so cascades and triggers
/// count). The transaction commits only when `decide` says so.
fn run_steps(
    conn: &mut Connection,
    path: &Path,
    tenancy: &SourceTenancy,
    steps: &[String],
    decide: impl FnOnce(&crate::guard::Effect) -> bool,
) -> Result<(crate::guard::Effect, bool)> {
    let err = |e| sqlite_error(path, e);
    let captured: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [CHANGELOG],
            |r| r.get(0),
        )
        .map_err(err)?;
    if !captured {
        return Err(Error::usage(format!(
            "source {} is not captured yet: run `lifeboat capture` first (operations are \
             measured through capture's triggers)",
            tenancy.source
        )));
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let mut records = Vec::new();
    for (table, column, sql) in crate::guard::keymap_queries(tenancy)? {
        let mut stmt = tx.prepare(&sql).map_err(err)?;
        let mut rows = stmt.query([]).map_err(err)?;
        let mut entries = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let key = row.get_ref(0).map(value_from_ref).map_err(err)?;
            if let Some(tenant) = row
                .get_ref(1)
                .map(value_from_ref)
                .map_err(err)?
                .tenant_key()
            {
                entries.push((key, tenant));
            }
        }
        records.push(lifeboat_core::model::KeymapRecord {
            table,
            column,
            entries,
        });
    }
    let mut keymaps = lifeboat_core::tenancy::Keymaps::from_records(tenancy, &records);
    let before = last_sequence(&tx, path)?;
    for step in steps {
        tx.execute_batch(step).map_err(|e| {
            Error::source(format!(
                "sqlite {}: step failed: {e} (in: {step})",
                path.display()
            ))
        })?;
    }
    let log = read_changelog(&tx, path, before, u64::MAX >> 1, usize::MAX >> 1)?
        .into_iter()
        .map(|row| crate::guard::Recorded {
            table: row.table,
            op: row.op,
            old: row.old,
            new: row.new,
        })
        .collect();
    let effect = crate::guard::count_effect(tenancy, &mut keymaps, log)?;
    let commit = decide(&effect);
    if commit {
        tx.commit().map_err(err)?;
    } else {
        tx.rollback().map_err(err)?;
    }
    Ok((effect, commit))
}

/// The query counting a tenant's rows in the table of `schema` (the tenant key is `?1`).
fn count_query(tenancy: &SourceTenancy, schema: &TableSchema) -> Result<String> {
    Ok(format!(
        "SELECT count(*) FROM ({})",
        tenant_query(tenancy, schema, "?1", Dialect::Sqlite)?
    ))
}

/// The source's position now: the last sequence number the changelog handed out (its rows
/// may be gone already, acknowledged by capture).
fn position(conn: &Connection, path: &Path) -> Result<u64> {
    issued(conn).map_err(|e| sqlite_error(path, e))
}

/// The last sequence the changelog handed out: its largest entry (a change or the mark
/// trimming leaves), or, for a changelog an earlier Lifeboat made `AUTOINCREMENT`, the
/// larger of that and `sqlite_sequence`'s record (docs/vault-format.md, "A source's
/// vault").
pub(crate) fn issued(conn: &Connection) -> rusqlite::Result<u64> {
    let autoincrement: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    let sql = if autoincrement {
        format!(
            "SELECT max(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{CHANGELOG}'), 0), \
             COALESCE((SELECT MAX(seq) FROM {CHANGELOG}), 0))"
        )
    } else {
        format!("SELECT COALESCE(MAX(seq), 0) FROM {CHANGELOG}")
    };
    let issued: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
    Ok(issued as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trim whose commit cannot get the database (a reader holding it past the busy
    /// timeout, in rollback-journal mode) fails and leaves no transaction open: the
    /// application can write again once the reader is gone, and the trim can be done then.
    #[test]
    fn a_trim_that_cannot_commit_leaves_no_transaction_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("app.db");
        let capture = Connection::open(&path).expect("open");
        capture
            .execute_batch(&format!(
                "PRAGMA journal_mode = DELETE;
                 CREATE TABLE {CHANGELOG} (seq INTEGER PRIMARY KEY, tbl TEXT NOT NULL,
                   op TEXT NOT NULL, old TEXT, new TEXT, at INTEGER NOT NULL);
                 INSERT INTO {CHANGELOG} (tbl, op, new, at) VALUES
                   ('t', 'I', '[1]', 0), ('t', 'I', '[2]', 0), ('t', 'I', '[3]', 0);"
            ))
            .expect("changelog");
        capture
            .busy_timeout(Duration::from_millis(100))
            .expect("timeout");
        let reader = Connection::open(&path).expect("reader");
        reader
            .execute_batch(&format!("BEGIN; SELECT count(*) FROM {CHANGELOG};"))
            .expect("read");
        assert!(
            forget(&capture, &path, 2).is_err(),
            "committed past a reader"
        );
        assert!(
            capture.is_autocommit(),
            "the trim left its transaction open"
        );
        reader.execute_batch("COMMIT").expect("end read");
        let app = Connection::open(&path).expect("app");
        app.execute_batch(&format!(
            "INSERT INTO {CHANGELOG} (tbl, op, new, at) VALUES ('t', 'I', '[4]', 0)"
        ))
        .expect("the application writes again");
        forget(&capture, &path, 2).expect("trim");
        let left: Vec<(i64, String)> = capture
            .prepare(&format!("SELECT seq, op FROM {CHANGELOG} ORDER BY seq"))
            .expect("prepare")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(
            left,
            vec![
                (2, MARK.to_string()),
                (3, "I".to_string()),
                (4, "I".to_string())
            ]
        );
    }

    /// The changelog reader's speed on one core, over a changelog that triggers recorded in
    /// a real database (`scripts/bench-decode`; `LIFEBOAT_DECODE_SQLITE=FILE`), read in
    /// capture's batches of 10,000.
    #[test]
    #[ignore = "a benchmark: scripts/bench-decode"]
    fn changelog_read_throughput() {
        let path = std::path::PathBuf::from(
            std::env::var("LIFEBOAT_DECODE_SQLITE").expect("LIFEBOAT_DECODE_SQLITE"),
        );
        let conn = Connection::open(&path).expect("open");
        let mut best = f64::MAX;
        let mut total = 0usize;
        for _ in 0..5 {
            let start = std::time::Instant::now();
            let (mut after, mut n) = (0u64, 0usize);
            loop {
                let batch =
                    read_changelog(&conn, &path, after, u64::MAX >> 1, 10_000).expect("read");
                let Some(last) = batch.last() else { break };
                after = last.seq;
                n += batch.len();
                std::hint::black_box(&batch);
            }
            best = best.min(start.elapsed().as_secs_f64());
            total = n;
        }
        println!(
            "sqlite changelog read: {total} row changes, {:.0} changes/s on one core",
            total as f64 / best
        );
    }

    #[test]
    fn literals_keep_their_storage_class() {
        assert_eq!(parse_literal("NULL"), Some(Value::Null));
        assert_eq!(parse_literal("-42"), Some(Value::Int(-42)));
        assert_eq!(parse_literal("1.5"), Some(Value::Real(1.5)));
        assert_eq!(parse_literal("9.0e+999"), Some(Value::Real(f64::INFINITY)));
        assert_eq!(
            parse_literal("-9.0e+999"),
            Some(Value::Real(f64::NEG_INFINITY))
        );
        assert_eq!(parse_literal("'it''s'"), Some(Value::Text("it's".into())));
        assert_eq!(parse_literal("X'00FF'"), Some(Value::Blob(vec![0, 255])));
    }

    #[test]
    fn quote_round_trips_through_sqlite() {
        let conn = Connection::open_in_memory().expect("memory db");
        let values: Vec<Value> = [
            "NULL",
            "9223372036854775807",
            "0.1",
            "1e300 * 10",
            "-1e300 * 10",
            "'x''y\u{e9}'",
            "X'DEADBEEF'",
            "123456789.123456789",
        ]
        .iter()
        .map(|expr| {
            let literal: String = conn
                .query_row(&format!("SELECT quote({expr})"), [], |r| r.get(0))
                .expect("quote");
            let direct: Value = conn
                .query_row(&format!("SELECT {expr}"), [], |r| {
                    Ok(value_from_ref(r.get_ref(0)?))
                })
                .expect("value");
            assert_eq!(
                parse_literal(&literal),
                Some(direct.clone()),
                "{expr} -> {literal}"
            );
            direct
        })
        .collect();
        assert_eq!(values[1], Value::Int(i64::MAX));
    }
}
