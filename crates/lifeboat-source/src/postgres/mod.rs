//! PostgreSQL sources (`PostgresSource`): logical replication with the built-in pgoutput
//! plugin.
//!
//! Capture sets every tenant table to `REPLICA IDENTITY FULL` (so that deletes and updates
//! carry the whole old row, tenant column and `tenant_via` column included), publishes
//! them, and creates a replication slot whose exported snapshot gives the first base of
//! every tenant: no change falls between the snapshot and the stream. The slot's confirmed
//! position only moves once the vault holds the changes.

#[cfg(test)]
mod decode_bench;
pub mod pgoutput;
pub mod restore;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lifeboat_core::pg;
use pgwire_replication::{Lsn, ReplicationClient, ReplicationConfig, ReplicationEvent, TlsConfig};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use lifeboat_core::config::CaptureConfig;
use lifeboat_core::metrics::CaptureMetrics;
use lifeboat_core::model::{format_lsn, Dialect, Op, Position, Row, TableSchema, TenantKey, Value};
use lifeboat_core::tenancy::{LiveTable, SourceTenancy};
use lifeboat_core::vault::Vault;
use lifeboat_core::{Error, Result};

use crate::capture::{CaptureCore, CaptureStats, Snapshot, Start};
use crate::faults::{self, FaultKind, FaultStats};
use crate::guard::{Effect, IdRow};
use crate::installed::{claim, Claim, Found, Installed};
use crate::live::RestoreCatalog;
use crate::restore::{table_order, TenantRestore, WriteMode, WriteReport};
use crate::source::{Backlog, Decide, RowVisitor, Source};
use crate::{quote_ident, quote_literal, tenant_query, Stop};
use pgoutput::{Datum, Message};

/// Session settings that make every value's text form stable, on every connection.
const SESSION_OPTIONS: &str = "-c DateStyle=ISO,YMD -c TimeZone=UTC -c IntervalStyle=postgres \
     -c extra_float_digits=1 -c bytea_output=hex";
/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;
const CAUGHT_UP_PREFIX: &str = "lifeboat.caught-up";
/// The prefix of the transactional logical message `position_to_capture` commits.
const POSITION_MARK_PREFIX: &str = "lifeboat.position-mark";

/// A PostgreSQL source: one connection to a database, its tables in `schema`.
pub struct PostgresSource {
    url: String,
    schema: String,
    client: Client,
}

impl PostgresSource {
    /// Connect with Lifeboat's session settings, `schema` first on the search path.
    pub async fn connect(url: &str, schema: &str) -> Result<PostgresSource> {
        Ok(PostgresSource {
            url: url.to_string(),
            schema: schema.to_string(),
            client: connect(url, schema).await?,
        })
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn live_tables(&self) -> Result<Vec<LiveTable>> {
        live_tables(&self.client, &self.schema).await
    }

    /// Capture needs `wal_level = logical`.
    async fn check_capturable(&self) -> Result<()> {
        check_wal_level(&self.client, &self.url).await
    }

    async fn for_each_tenant_row(
        &self,
        tenancy: &SourceTenancy,
        tenant: &TenantKey,
        visit: &mut RowVisitor<'_>,
    ) -> Result<()> {
        for_each_tenant_row(&self.client, tenancy, tenant, visit).await
    }

    async fn restore_catalog(&self, tenancy: &SourceTenancy) -> Result<RestoreCatalog> {
        let catalog = restore::catalog(&self.client, &self.schema).await?;
        Ok(RestoreCatalog {
            order: table_order(tenancy, &catalog.foreign_keys),
            foreign_keys: catalog.foreign_keys.clone(),
            postgres: Some(catalog),
        })
    }

    async fn write_tenant(
        &mut self,
        tenancy: &SourceTenancy,
        catalog: &RestoreCatalog,
        delete_key: &TenantKey,
        restore: TenantRestore,
        mode: WriteMode,
    ) -> Result<(WriteReport, TenantRestore)> {
        let pg = catalog.postgres.clone().unwrap_or_default();
        restore::write_tenant(&mut self.client, tenancy, &pg, delete_key, restore, mode).await
    }

    async fn run_steps(
        &mut self,
        tenancy: &SourceTenancy,
        steps: &[String],
        decide: Decide<'_>,
    ) -> Result<(Effect, bool)> {
        run_steps(&mut self.client, tenancy, &self.schema, steps, decide).await
    }

    async fn lookup_ids(
        &self,
        tenancy: &SourceTenancy,
        table: &str,
        column: &str,
        label: Option<&str>,
        ids: &[Value],
    ) -> Result<Vec<IdRow>> {
        let sql = crate::guard::id_query(tenancy, table, column, label, ids, Dialect::Postgres)?;
        lookup_ids(&self.client, &sql, label.is_some()).await
    }

    async fn position(&self) -> Result<Position> {
        position(&self.client).await.map(Position::new)
    }

    async fn position_to_capture(&self) -> Result<Position> {
        let now = position(&self.client).await?;
        // Committed after `now`, so its position is above it: capture's head reaches `now`
        // when it stores this transaction, even on a source where nothing else commits.
        let marker = format!("{}-{}", std::process::id(), lifeboat_core::time::now_us());
        self.client
            .batch_execute(&format!(
                "SELECT pg_logical_emit_message(true, {}, {})",
                quote_literal(POSITION_MARK_PREFIX),
                quote_literal(&marker)
            ))
            .await
            .map_err(|e| pg_error("cannot write a position mark for capture", e))?;
        Ok(Position::new(now))
    }

    async fn count_tenant_rows(
        &self,
        tenancy: &SourceTenancy,
        schema: &TableSchema,
        tenant: &TenantKey,
    ) -> Result<u64> {
        count_tenant_rows(&self.client, tenancy, schema, tenant).await
    }

    async fn installed(&self, name: &str) -> Result<Installed> {
        installed(&self.client, &self.url, name).await
    }

    async fn uninstall(&mut self, name: &str) -> Result<Installed> {
        uninstall(&self.client, &self.url, name).await
    }

    async fn backlog(&self, name: &str, _vault_head: u64) -> Result<Backlog> {
        let slot = slot_name(name, &database_of(&self.url)?);
        let sql = "SELECT active, active_pid::int8, \
                   pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::int8, \
                   pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::int8 \
                   FROM pg_replication_slots WHERE slot_name = $1";
        let row = self
            .client
            .query_opt(sql, &[&slot])
            .await
            .map_err(|e| pg_error("reading the replication slot", e))?;
        let Some(row) = row else {
            return Ok(Backlog {
                capture_running: Some(false),
                ..Backlog::default()
            });
        };
        let bytes = |v: Option<i64>| v.map(|n| n.max(0) as u64);
        Ok(Backlog {
            slot: Some(slot),
            slot_lag_bytes: bytes(row.get(2)),
            retained_wal_bytes: bytes(row.get(3)),
            changelog_rows: None,
            capture_running: Some(row.get(0)),
            capture_pid: row.get(1),
        })
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
        let PostgresSource {
            url,
            schema,
            client,
        } = *self;
        drop(client);
        capture(
            vault,
            name,
            &url,
            &schema,
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

/// SQLSTATEs of failures that may go away by themselves: the connection (class 08), the
/// server shutting down or starting up (57P01–57P03), too many connections (53300), an
/// object in use (55006: a replication slot still held by a walsender that is going away),
/// a serialization failure or deadlock (40001, 40P01).
pub fn sqlstate_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "55006" | "40001" | "40P01"
        )
}

/// Whether a driver error is worth retrying: the server answered with a transient
/// SQLSTATE, or the connection failed or closed (an I/O error, no answer at all). Other
/// errors without an answer (a value that does not convert, a malformed setting) are
/// permanent.
pub fn pg_error_is_transient(e: &tokio_postgres::Error) -> bool {
    if let Some(code) = e.code() {
        return sqlstate_is_transient(code.code());
    }
    if e.is_closed() {
        return true;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return lifeboat_core::vault::io_error_is_transient(io)
                || io.kind() == std::io::ErrorKind::Other;
        }
        cause = current.source();
    }
    false
}

/// A replication client's error: transient for I/O and task failures and transient
/// SQLSTATEs (its server errors end with `(SQLSTATE XXXXX)`).
pub fn replication_error_is_transient(e: &pgwire_replication::PgWireError) -> bool {
    match e {
        pgwire_replication::PgWireError::Server(text) => sqlstate_in(text)
            .map(sqlstate_is_transient)
            .unwrap_or(false),
        other => other.is_transient(),
    }
}

fn sqlstate_in(text: &str) -> Option<&str> {
    let at = text.find("SQLSTATE ")? + "SQLSTATE ".len();
    text.get(at..at + 5)
}

/// A replication client's error, said for people: what happened to the replication
/// connection of `slot` on the server at `url`, and what to do about it.
fn replication_error(slot: &str, url: &str, e: pgwire_replication::PgWireError) -> Error {
    use pgwire_replication::PgWireError;
    let on = redact(url);
    let message = match &e {
        PgWireError::Server(text) => match sqlstate_in(text) {
            Some("55006") => {
                let pid: String = text
                    .split("PID ")
                    .nth(1)
                    .unwrap_or_default()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                format!(
                    "replication slot {slot} on {on} is in use by another process{}: is \
                     another lifeboat capture running against this database outside this \
                     control store? Stop it (or, if it is a capture going away, wait a moment)",
                    if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (PID {pid})")
                    }
                )
            }
            Some(code) if code.starts_with("57P") => format!(
                "the server {on} ended the replication connection of slot {slot} (it is \
                 shutting down or restarting, or an administrator terminated the connection; \
                 SQLSTATE {code})"
            ),
            _ => format!("the server {on} refused replication on slot {slot}: {text}"),
        },
        PgWireError::Io(io) => format!("the replication connection to {on} was lost ({io})"),
        PgWireError::Task(_) => format!("the replication connection to {on} was lost"),
        PgWireError::Auth(text) => format!(
            "the server {on} refused the replication connection ({text}): check the \
             source's credentials and that its role may replicate"
        ),
        PgWireError::Tls(text) => {
            format!("TLS failed on the replication connection to {on}: {text}")
        }
        other => format!("replication on slot {slot} from {on}: {other}"),
    };
    let error = Error::source(message);
    if replication_error_is_transient(&e) {
        error.transient()
    } else {
        error
    }
}

pub(crate) fn pg_error(what: &str, e: tokio_postgres::Error) -> Error {
    let transient = pg_error_is_transient(&e);
    let message = match e.as_db_error() {
        Some(db) => format!("{what}: {}", db.message()),
        None => format!("{what}: {e}"),
    };
    let error = Error::source(message);
    if transient {
        error.transient()
    } else {
        error
    }
}

/// The name capture gives its slot and publication: `lifeboat_<source>_<database>`.
/// Slot names are global to a server, so the database is part of it; names longer than
/// PostgreSQL's 63 bytes keep a hash of the whole.
pub fn slot_name(source: &str, database: &str) -> String {
    let cleaned: String = format!("lifeboat_{source}_{database}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.len() <= 63 {
        return cleaned;
    }
    let hash = lifeboat_core::vault::content_hash(cleaned.as_bytes());
    format!("{}_{}", &cleaned[..46], &hash[..16])
}

fn database_of(url: &str) -> Result<String> {
    let (config, _) = parse_config(url, "public")?;
    Ok(config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres")
        .to_string())
}

fn parse_config(url: &str, schema: &str) -> Result<(tokio_postgres::Config, pg::Settings)> {
    let settings = pg::settings(url, None)?;
    let mut config: tokio_postgres::Config = settings
        .url
        .parse()
        .map_err(|e| Error::config(format!("postgres url {}: {e}", redact(url))))?;
    if let Some(password) = &settings.password {
        config.password(password);
    }
    if config.get_user().is_none() {
        config.user(&settings.user);
    }
    config.options(format!("{SESSION_OPTIONS} -c search_path={schema}"));
    config.application_name("lifeboat");
    config.connect_timeout(Duration::from_secs(10));
    Ok((config, settings))
}

/// The URL without its password, for messages.
pub use lifeboat_core::config::redact_url as redact;

/// A plain (non-replication) connection with Lifeboat's session settings.
/// Whether the server at `url` accepts a connection and answers now.
pub async fn ping(url: &str, schema: &str) -> Result<()> {
    let client = connect(url, schema).await?;
    client
        .simple_query("SELECT 1")
        .await
        .map_err(|e| pg_error("SELECT 1", e))?;
    Ok(())
}

pub async fn connect(url: &str, schema: &str) -> Result<Client> {
    let (mut config, settings) = parse_config(url, schema)?;
    let failed = |e: tokio_postgres::Error| {
        let what = format!("cannot connect to {}", redact(url));
        match pg::explain_tls_error(&format!("{e:?}"), &settings) {
            Some(why) => Error::source(format!("{what}: {why}")),
            None => pg_error(&what, e),
        }
    };
    let client = match pg::tls_config(&settings)? {
        None => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            client
        }
        Some(tls) => {
            config.ssl_mode(if settings.sslmode.requires_tls() {
                tokio_postgres::config::SslMode::Require
            } else {
                tokio_postgres::config::SslMode::Prefer
            });
            let (client, connection) = config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("postgres connection ended: {e}");
                }
            });
            client
        }
    };
    Ok(client)
}

/// Refuse a server that cannot do logical decoding, naming the setting.
async fn check_wal_level(client: &Client, url: &str) -> Result<()> {
    let level = simple_value(client, "SHOW wal_level").await?;
    if level.as_deref() != Some("logical") {
        return Err(Error::source(format!(
            "PostgreSQL at {} has wal_level = {}; capture needs wal_level = logical \
             (set it in postgresql.conf and restart the server)",
            redact(url),
            level.unwrap_or_default()
        )));
    }
    Ok(())
}

async fn simple_value(client: &Client, sql: &str) -> Result<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| pg_error(sql, e))?;
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            return Ok(row.get(0).map(str::to_string));
        }
    }
    Ok(None)
}

/// The schema's tables, their stored columns (generated and dropped columns excluded) in
/// column order, and their primary keys.
async fn live_tables(client: &Client, schema: &str) -> Result<Vec<LiveTable>> {
    let rows = client
        .query(
            "SELECT c.relname::text, a.attname::text,
                    COALESCE(a.attnum = ANY(i.indkey), false) AS is_key,
                    COALESCE(array_position(i.indkey::int2[], a.attnum), 0) AS key_order
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             JOIN pg_attribute a ON a.attrelid = c.oid
             LEFT JOIN pg_index i ON i.indrelid = c.oid AND i.indisprimary
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
               AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
             ORDER BY c.relname, a.attnum",
            &[&schema],
        )
        .await
        .map_err(|e| pg_error("cannot read the catalog", e))?;
    // table -> (columns, (key order, column index) of the primary key columns)
    type Shape = (Vec<String>, Vec<(i32, usize)>);
    let mut tables: BTreeMap<String, Shape> = BTreeMap::new();
    for row in rows {
        let table: String = row.get(0);
        let column: String = row.get(1);
        let is_key: bool = row.get(2);
        let key_order: i32 = row.get(3);
        let entry = tables.entry(table).or_default();
        if is_key {
            entry.1.push((key_order, entry.0.len()));
        }
        entry.0.push(column);
    }
    Ok(tables
        .into_iter()
        .map(|(name, (columns, mut key))| {
            key.sort();
            LiveTable {
                schema: TableSchema {
                    name,
                    columns,
                    key: key.into_iter().map(|(_, i)| i).collect(),
                },
            }
        })
        .collect())
}

/// The replica identity `relreplident` as `ALTER TABLE … REPLICA IDENTITY` writes it.
fn identity_name(identity: &str) -> &'static str {
    match identity {
        "f" => "FULL",
        "d" => "DEFAULT",
        "i" => "USING INDEX",
        "n" => "NOTHING",
        _ => "unknown",
    }
}

/// Replica identity FULL on every tenant table and each of its partitions, so that
/// updates and deletes carry their whole old row. On the first capture (`fresh`) capture
/// sets it; later, a tenant table that is no longer FULL stops capture, naming the table
/// and the fix: changes made meanwhile lack their old rows. Partitions are set FULL at
/// every start (partitions are added as a table grows; a change made to one before it was
/// FULL stops capture when it arrives).
async fn replica_identity(
    client: &Client,
    tenancy: &SourceTenancy,
    source: &str,
    fresh: bool,
) -> Result<()> {
    for table in tenancy.tenant_tables() {
        let name = quote_ident(&table.schema.name);
        let rows = client
            .query(
                "SELECT oid::regclass::text, relreplident::text, 0 FROM pg_class
                 WHERE oid = $1::text::regclass
                 UNION ALL
                 SELECT t.relid::regclass::text, c.relreplident::text, t.level
                 FROM pg_partition_tree($1::text::regclass) t JOIN pg_class c ON c.oid = t.relid
                 WHERE t.level > 0 AND c.relkind IN ('r', 'p')
                 ORDER BY 3",
                &[&name],
            )
            .await
            .map_err(|e| pg_error(&format!("cannot read the replica identity of {name}"), e))?;
        for row in rows {
            let relation: String = row.get(0);
            let identity: String = row.get(1);
            let level: i32 = row.get(2);
            if identity == "f" {
                continue;
            }
            if !fresh && level == 0 {
                return Err(Error::source(format!(
                    "table {} has REPLICA IDENTITY {}, not FULL: its updates and deletes no \
                     longer carry their old rows, so their tenants cannot be known. Run \
                     `ALTER TABLE {relation} REPLICA IDENTITY FULL` and start capture again (it \
                     stops at any update or delete made meanwhile; if there is one, capture \
                     the source into a new vault: `lifeboat source drop {source}`, then \
                     `lifeboat init` at a new [vault] url)",
                    table.schema.name,
                    identity_name(&identity)
                )));
            }
            client
                .batch_execute(&format!("ALTER TABLE {relation} REPLICA IDENTITY FULL"))
                .await
                .map_err(|e| {
                    pg_error(
                        &format!("cannot set REPLICA IDENTITY FULL on {relation}"),
                        e,
                    )
                })?;
        }
    }
    Ok(())
}

/// The record on the publication that says which vault the source feeds
/// (docs/vault-format.md, "A source's vault").
fn vault_record(vault_id: &str) -> String {
    serde_json::json!({ "lifeboat_vault": vault_id }).to_string()
}

/// The vault id recorded on the publication (`None`: no publication, or no record on it).
async fn recorded_vault(client: &Client, publication: &str) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT obj_description(oid, 'pg_publication') FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| pg_error("cannot read the publication", e))?;
    let comment: Option<String> = row.and_then(|r| r.get(0));
    Ok(comment.and_then(|text| {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()?
            .get("lifeboat_vault")?
            .as_str()
            .map(str::to_string)
    }))
}

/// A replication slot as the server shows it.
struct SlotState {
    /// The process streaming from it, if one is.
    active_pid: Option<i32>,
    /// What has been acknowledged: the changes before it are gone from the slot.
    confirmed: Option<u64>,
}

async fn slot_state(client: &Client, slot: &str) -> Result<Option<SlotState>> {
    let row = client
        .query_opt(
            "SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots \
             WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| pg_error("cannot read the replication slots", e))?;
    Ok(row.map(|row| SlotState {
        active_pid: row.get(0),
        confirmed: row
            .get::<_, Option<String>>(1)
            .and_then(|text| lifeboat_core::model::parse_position(&text)),
    }))
}

/// What capture installed for `source` in this database: its slot and its publication.
async fn installed(client: &Client, url: &str, source: &str) -> Result<Installed> {
    let slot = slot_name(source, &database_of(url)?);
    let mut out = Installed {
        vault_id: recorded_vault(client, &slot).await?,
        ..Installed::default()
    };
    if let Some(state) = slot_state(client, &slot).await? {
        let confirmed = state
            .confirmed
            .map(format_lsn)
            .unwrap_or_else(|| "nothing".to_string());
        out.objects.push(format!(
            "replication slot {slot} (confirmed up to {confirmed})"
        ));
        out.in_use = state
            .active_pid
            .map(|pid| format!("replication slot {slot} is streaming to process {pid} on the server (a running capture)"));
    }
    let publication = client
        .query_opt("SELECT 1 FROM pg_publication WHERE pubname = $1", &[&slot])
        .await
        .map_err(|e| pg_error("cannot read the publication", e))?;
    if publication.is_some() {
        out.objects.push(match &out.vault_id {
            Some(id) => format!("publication {slot} (recording vault {id})"),
            None => format!("publication {slot}"),
        });
    }
    Ok(out)
}

/// Remove the slot and the publication of `source`; refused while the slot is streaming.
async fn uninstall(client: &Client, url: &str, source: &str) -> Result<Installed> {
    let found = installed(client, url, source).await?;
    if let Some(in_use) = &found.in_use {
        return Err(Error::source(format!(
            "{in_use}: stop that capture first; nothing removed"
        )));
    }
    let slot = slot_name(source, &database_of(url)?);
    if slot_state(client, &slot).await?.is_some() {
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await
            .map_err(|e| pg_error(&format!("cannot drop replication slot {slot}"), e))?;
    }
    client
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&slot)
        ))
        .await
        .map_err(|e| pg_error(&format!("cannot drop publication {slot}"), e))?;
    Ok(found)
}

/// The publication of the tenant tables, with the record of the vault they feed.
async fn prepare(
    client: &Client,
    tenancy: &SourceTenancy,
    publication: &str,
    vault_id: &str,
) -> Result<()> {
    let names: Vec<String> = tenancy
        .tenant_tables()
        .map(|t| quote_ident(&t.schema.name))
        .collect();
    let exists = simple_value(
        client,
        &format!(
            "SELECT 1 FROM pg_publication WHERE pubname = {}",
            quote_literal(publication)
        ),
    )
    .await?
    .is_some();
    let list = names.join(", ");
    // Partitioned tables publish their changes under the partitioned table's name.
    let mut sql = if exists {
        format!(
            "ALTER PUBLICATION {0} SET TABLE {list}; \
             ALTER PUBLICATION {0} SET (publish_via_partition_root = true); ",
            quote_ident(publication)
        )
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {list} WITH (publish_via_partition_root = true); ",
            quote_ident(publication)
        )
    };
    sql.push_str(&format!(
        "COMMENT ON PUBLICATION {} IS {}",
        quote_ident(publication),
        quote_literal(&vault_record(vault_id))
    ));
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| pg_error(&format!("cannot publish the tenant tables ({sql})"), e))?;
    Ok(())
}

fn replication_config(
    url: &str,
    schema: &str,
    slot: &str,
    start: u64,
    ack: Option<u64>,
) -> Result<ReplicationConfig> {
    let (config, settings) = parse_config(url, schema)?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.to_string_lossy().into_owned(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_string();
    let password = settings.password.clone().unwrap_or_default();
    let dbname = config.get_dbname().unwrap_or(&user).to_string();
    let tls = match settings.sslmode {
        pg::SslMode::Disable => TlsConfig::disabled(),
        pg::SslMode::Prefer => TlsConfig {
            mode: pgwire_replication::SslMode::Prefer,
            ..TlsConfig::require()
        },
        pg::SslMode::Require if settings.root_cert.is_none() => TlsConfig::require(),
        pg::SslMode::Require | pg::SslMode::VerifyCa => {
            TlsConfig::verify_ca(settings.root_cert.clone())
        }
        pg::SslMode::VerifyFull => TlsConfig::verify_full(settings.root_cert.clone()),
    };
    let tls = match (&settings.client_cert, &settings.client_key) {
        (Some(cert), Some(key)) => tls.with_client_cert(cert.clone(), key.clone()),
        _ => tls,
    };
    // The one crypto provider is in place before the replication client's TLS starts.
    pg::install_crypto_provider();
    let mut replication = ReplicationConfig::new(host, user, password, dbname, slot, slot)
        .with_port(port)
        .with_tls(tls);
    replication.start_lsn = Lsn::from_u64(start);
    replication.ack_lsn = ack.map(Lsn::from_u64);
    replication.status_interval = Duration::from_millis(500);
    replication.idle_wakeup_interval = Duration::from_secs(2);
    replication.options = Some(SESSION_OPTIONS.to_string());
    replication.application_name = Some(format!("lifeboat capture {slot}"));
    Ok(replication)
}

/// Parse COPY's text format: tab-separated fields, `\N` for NULL, backslash escapes. The
/// values are parsed into `out` in place: a text goes into the string already at its
/// place, if there is one, so a row buffer reused from line to line allocates nothing.
fn parse_copy_line(line: &[u8], out: &mut Vec<Value>) -> Result<()> {
    let mut at = 0;
    let mut put = |field: &[u8], checked: Option<&str>| -> Result<()> {
        if at == out.len() {
            out.push(Value::Null);
        }
        parse_copy_field(field, checked, &mut out[at])?;
        at += 1;
        Ok(())
    };
    // A line that is UTF-8 is checked once, its fields split as text; any other line is
    // checked field by field (an escape may make a field's bytes UTF-8 again).
    match std::str::from_utf8(line) {
        Ok(text) => {
            for field in text.split('\t') {
                put(field.as_bytes(), Some(field))?;
            }
        }
        Err(_) => {
            for field in line.split(|&b| b == b'\t') {
                put(field, None)?;
            }
        }
    }
    out.truncate(at);
    Ok(())
}

/// One field of a COPY line into `slot` (`checked`: the field as text, when known to be).
fn parse_copy_field(field: &[u8], checked: Option<&str>, slot: &mut Value) -> Result<()> {
    if field == b"\\N" {
        *slot = Value::Null;
        return Ok(());
    }
    let text = match slot {
        Value::Text(text) => {
            text.clear();
            text
        }
        other => {
            *other = Value::Text(String::with_capacity(field.len()));
            match other {
                Value::Text(text) => text,
                _ => unreachable!("just made a text"),
            }
        }
    };
    if !field.contains(&b'\\') {
        let plain = match checked {
            Some(plain) => plain,
            None => std::str::from_utf8(field)
                .map_err(|e| Error::source(format!("COPY produced text that is not UTF-8: {e}")))?,
        };
        text.push_str(plain);
        return Ok(());
    }
    let mut bytes = std::mem::take(text).into_bytes();
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' || i + 1 == field.len() {
            bytes.push(b);
            i += 1;
            continue;
        }
        let next = field[i + 1];
        i += 2;
        match next {
            b'b' => bytes.push(8),
            b'f' => bytes.push(12),
            b'n' => bytes.push(b'\n'),
            b'r' => bytes.push(b'\r'),
            b't' => bytes.push(b'\t'),
            b'v' => bytes.push(11),
            b'0'..=b'7' => {
                let mut value = (next - b'0') as u32;
                let mut digits = 1;
                while digits < 3 && i < field.len() && (b'0'..=b'7').contains(&field[i]) {
                    value = value * 8 + (field[i] - b'0') as u32;
                    i += 1;
                    digits += 1;
                }
                bytes.push(value as u8);
            }
            b'x' => {
                let mut value = 0u32;
                let mut digits = 0;
                while digits < 2 && i < field.len() && field[i].is_ascii_hexdigit() {
                    value = value * 16 + (field[i] as char).to_digit(16).unwrap_or(0);
                    i += 1;
                    digits += 1;
                }
                bytes.push(value as u8);
            }
            other => bytes.push(other),
        }
    }
    *text = String::from_utf8(bytes)
        .map_err(|e| Error::source(format!("COPY produced text that is not UTF-8: {e}")))?;
    Ok(())
}

/// Copy every tenant table inside the exported snapshot and hand the rows to capture.
async fn copy_snapshot(
    client: &mut Client,
    snapshot_name: &str,
    core: &mut CaptureCore,
    snapshot: &mut Snapshot,
) -> Result<()> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| pg_error("cannot start the snapshot transaction", e))?;
    tx.batch_execute(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot_name)
    ))
    .await
    .map_err(|e| pg_error("cannot use the replication slot's snapshot", e))?;
    let tables: Vec<TableSchema> = core
        .tenancy()
        .tenant_tables()
        .map(|t| t.schema.clone())
        .collect();
    for schema in &tables {
        let columns: Vec<String> = schema.columns.iter().map(|c| quote_ident(c)).collect();
        let sql = format!(
            "COPY (SELECT {} FROM {}) TO STDOUT",
            columns.join(", "),
            quote_ident(&schema.name)
        );
        let stream = tx
            .copy_out(&sql)
            .await
            .map_err(|e| pg_error(&format!("cannot copy {}", schema.name), e))?;
        read_copy(stream, &schema.name, |row| {
            core.snapshot_row(snapshot, &schema.name, std::mem::take(row))
        })
        .await?;
    }
    tx.commit()
        .await
        .map_err(|e| pg_error("cannot end the snapshot transaction", e))?;
    Ok(())
}

/// Hand every row of a `COPY … TO STDOUT` (text format) to `visit`, as it arrives.
async fn read_copy(
    stream: tokio_postgres::CopyOutStream,
    table: &str,
    mut visit: impl FnMut(&mut Row) -> Result<()>,
) -> Result<()> {
    futures::pin_mut!(stream);
    let mut carry: Vec<u8> = Vec::new();
    // One row buffer, lent to `visit` for each line and parsed into again.
    let mut values = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.map_err(|e| pg_error(&format!("copy of {table}"), e))?;
        // Whole lines are parsed where they arrived; only a line cut between two chunks
        // is put together in `carry`.
        let mut rest: &[u8] = &chunk;
        if !carry.is_empty() {
            let Some(end) = memchr_newline(rest) else {
                carry.extend_from_slice(rest);
                continue;
            };
            carry.extend_from_slice(&rest[..end]);
            parse_copy_line(&carry, &mut values)?;
            visit(&mut values)?;
            carry.clear();
            rest = &rest[end + 1..];
        }
        while let Some(end) = memchr_newline(rest) {
            parse_copy_line(&rest[..end], &mut values)?;
            visit(&mut values)?;
            rest = &rest[end + 1..];
        }
        carry.extend_from_slice(rest);
    }
    Ok(())
}

/// Where the first newline of `bytes` is.
fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// What the stream decoder keeps between messages.
struct Decoder {
    /// Each relation's name and replica identity, from its latest Relation message.
    relations: HashMap<u32, (String, u8)>,
}

/// Capture one PostgreSQL source until `stop` is set, or (with `until_caught_up`) until
/// every change committed before the call is durable in the vault.
#[allow(clippy::too_many_arguments)]
async fn capture(
    vault: &Vault,
    source: &str,
    url: &str,
    schema: &str,
    tenancy: SourceTenancy,
    config: CaptureConfig,
    metrics: CaptureMetrics,
    until_caught_up: bool,
    stop: &Stop,
    faults: Arc<FaultStats>,
) -> Result<CaptureStats> {
    let slot = slot_name(source, &database_of(url)?);
    let mut client = connect(url, schema).await?;
    check_wal_level(&client, url).await?;
    let (mut core, start) =
        CaptureCore::open(vault, source, tenancy, config, metrics, stop, faults).await?;

    // Whose slot is it? Decided before anything in the source changes.
    let state = slot_state(&client, &slot).await?;
    let head = match start {
        Start::Fresh => None,
        Start::Resume { position } => Some(position),
    };
    let agrees = match (&state, head) {
        (Some(state), Some(head)) => Some(match state.confirmed {
            Some(confirmed) => (
                confirmed <= head,
                format!(
                    "the slot has confirmed changes up to {}, the vault holds them up to {}",
                    format_lsn(confirmed),
                    format_lsn(head)
                ),
            ),
            None => (false, "the slot has confirmed nothing".to_string()),
        }),
        _ => None,
    };
    let found = Found {
        source,
        holder: format!("replication slot {slot} on {}", redact(url)),
        recorded: recorded_vault(&client, &slot).await?,
        exists: state.is_some(),
        agrees,
    };
    if claim(&found, vault.id(), head)? == Claim::Adopt {
        tracing::info!(
            source,
            slot,
            vault = vault.id(),
            "the slot records no vault and continues this vault's history: recording this vault"
        );
    }
    if let (Start::Resume { position }, None) = (&start, &state) {
        return Err(Error::source(format!(
            "replication slot {slot} is missing on {} although the vault holds history \
             up to {}: changes since then cannot be recovered from the slot. Capture \
             this source into a new vault, after `lifeboat source drop {source}` (or \
             restore the slot's server)",
            redact(url),
            format_lsn(*position)
        )));
    }
    let slot_exists = state.is_some();
    replica_identity(&client, core.tenancy(), source, head.is_none()).await?;
    prepare(&client, core.tenancy(), &slot, vault.id()).await?;

    let mut replication = match start {
        Start::Fresh => {
            if slot_exists {
                // This vault's own slot, of a first snapshot that did not finish.
                client
                    .batch_execute(&format!(
                        "SELECT pg_drop_replication_slot({})",
                        quote_literal(&slot)
                    ))
                    .await
                    .map_err(|e| pg_error(&format!("cannot drop the stale slot {slot}"), e))?;
            }
            let before = lifeboat_core::time::now_us();
            let mut gated =
                ReplicationClient::connect_gated(replication_config(url, schema, &slot, 0, None)?)
                    .await
                    .map_err(|e| replication_error(&slot, url, e))?;
            let rows = gated
                .simple_query(&format!(
                    "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput (SNAPSHOT 'export')",
                    quote_ident(&slot)
                ))
                .await
                .map_err(|e| {
                    Error::source(format!("cannot create replication slot {slot}: {e}"))
                })?;
            let row = rows.first().ok_or_else(|| {
                Error::source("CREATE_REPLICATION_SLOT returned no row".to_string())
            })?;
            let text = |i: usize| -> Result<String> {
                row.get(i)
                    .and_then(|v| v.as_ref())
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .ok_or_else(|| {
                        Error::source(format!("CREATE_REPLICATION_SLOT: column {i} missing"))
                    })
            };
            let consistent = Lsn::parse(&text(1)?)
                .map_err(|e| Error::source(format!("CREATE_REPLICATION_SLOT: bad LSN: {e}")))?
                .as_u64();
            let snapshot_name = text(2)?;
            let mut snapshot = core.start_snapshot()?;
            copy_snapshot(&mut client, &snapshot_name, &mut core, &mut snapshot).await?;
            let tenants = core
                .finish_snapshot(vault, snapshot, consistent, before)
                .await?;
            tracing::info!(source, tenants, position = %format_lsn(consistent), "initial snapshot written");
            gated
                .start()
                .await
                .map_err(|e| replication_error(&slot, url, e))?;
            gated
                .wait_started()
                .await
                .map_err(|e| replication_error(&slot, url, e))?;
            gated
        }
        Start::Resume { position } => start_stream(url, schema, &slot, position).await?,
    };

    // A logical message marks "now" in the stream: once it arrives, everything committed
    // before this call has been received.
    let marker = format!("{}-{}", std::process::id(), lifeboat_core::time::now_us());
    if until_caught_up {
        client
            .batch_execute(&format!(
                "SELECT pg_logical_emit_message(false, {}, {})",
                quote_literal(CAUGHT_UP_PREFIX),
                quote_literal(&marker)
            ))
            .await
            .map_err(|e| pg_error("cannot write the catch-up marker", e))?;
        // Tests act on a one-shot capture here, its stream started (LIFEBOAT_PAUSE).
        let _ = tokio::task::spawn_blocking(|| {
            lifeboat_core::failpoint::pause("capture.one-shot-streaming")
        })
        .await;
    }

    let mut decoder = Decoder {
        relations: HashMap::new(),
    };
    let mut caught_up = false;
    let flush_interval = Duration::from_millis(50);
    // Made once, not per event: a new timer and stop wait per event each take the
    // runtime's locks. Moving the idle timer's deadline later is cheap; it fires after
    // `flush_interval` without an event, so that what is pending is written.
    let idle = tokio::time::sleep(flush_interval);
    tokio::pin!(idle);
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        if stop.is_set() || (caught_up && !core.in_transaction()) {
            break;
        }
        idle.as_mut()
            .reset(tokio::time::Instant::now() + flush_interval);
        // (Not `recv().now_or_never()` to skip the timers: a `recv` dropped while it
        // waits for the finished reader's result would lose that result, and capture
        // would stop instead of reconnecting.)
        let event = tokio::select! {
            event = replication.recv() => Some(event),
            _ = &mut idle => None,
            // Completes only once a stop is requested: the loop ends then.
            _ = &mut stopped => None,
        };
        let broken = match event {
            None => None,
            Some(Ok(Some(event))) => {
                let handled = handle_event(
                    source,
                    &mut core,
                    &mut decoder,
                    &client,
                    event,
                    &marker,
                    &mut caught_up,
                )
                .await;
                match handled {
                    Ok(()) => None,
                    // The plain connection broke while a change was being handled.
                    Err(e) if e.is_transient() => Some((FaultKind::Source, e)),
                    Err(e) => return Err(e),
                }
            }
            Some(Ok(None)) => Some((
                FaultKind::Replication,
                Error::source(format!("the replication stream from {} ended", redact(url)))
                    .transient(),
            )),
            Some(Err(e)) => {
                let e = replication_error(&slot, url, e);
                if !e.is_transient() {
                    return Err(e);
                }
                Some((FaultKind::Replication, e))
            }
        };
        if let Some((kind, error)) = broken {
            // The server restarted or a connection broke. Keep what committed, drop the
            // half-read transaction, write what is pending, then reconnect and resume from
            // the slot, which still holds everything not yet acknowledged: what arrives
            // again is dropped by position.
            core.abandon_open();
            if let Some(head) = core.flush(vault).await? {
                tracing::debug!(source, position = %format_lsn(head), "flushed before reconnecting");
            }
            let (new_client, new_replication) =
                reconnect_until_up(&mut core, kind, error, url, schema, &slot, stop).await?;
            client = new_client;
            replication = new_replication;
            decoder.relations.clear();
            continue;
        }
        if core.flush_due() || (caught_up && !core.in_transaction()) {
            if let Some(head) = core.flush(vault).await? {
                lifeboat_core::failpoint::hit("capture.before-ack");
                replication.update_applied_lsn(Lsn::from_u64(head));
                lifeboat_core::failpoint::hit("capture.after-ack");
            }
            core.compact_due(vault).await?;
        }
    }
    if let Some(head) = core.finish(vault).await? {
        replication.update_applied_lsn(Lsn::from_u64(head));
    }
    // Let the last acknowledgement reach the server before the session closes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), replication.shutdown()).await;
    tracing::info!(source, position = %format_lsn(core.head()), "capture stopped");
    Ok(core.stats.clone())
}

async fn start_stream(url: &str, schema: &str, slot: &str, head: u64) -> Result<ReplicationClient> {
    // Start from the slot's confirmed position (0); acknowledge only what the vault holds.
    let failed = |e: pgwire_replication::PgWireError| {
        if let pgwire_replication::PgWireError::Server(text) = &e {
            // 42704: undefined object, the slot.
            if sqlstate_in(text) == Some("42704") {
                return slot_missing(slot, url, head);
            }
        }
        replication_error(slot, url, e)
    };
    let mut client =
        ReplicationClient::connect(replication_config(url, schema, slot, 0, Some(head))?)
            .await
            .map_err(failed)?;
    client.wait_started().await.map_err(failed)?;
    Ok(client)
}

fn slot_missing(slot: &str, url: &str, head: u64) -> Error {
    Error::source(format!(
        "replication slot {slot} is missing on {} although the vault holds history up to {}: \
         changes since then cannot be recovered from the slot. Capture this source into a new \
         vault (or restore the slot's server)",
        redact(url),
        format_lsn(head)
    ))
}

/// Reconnect after `error` (of `kind`) broke the stream, with backoff, for as long as the
/// failures are transient; a permanent one (the slot gone, credentials refused) stops
/// capture.
async fn reconnect_until_up(
    core: &mut CaptureCore,
    kind: FaultKind,
    error: Error,
    url: &str,
    schema: &str,
    slot: &str,
    stop: &Stop,
) -> Result<(Client, ReplicationClient)> {
    let mut error = error;
    loop {
        let delay = core.retry.failed(kind, &error);
        stop.sleep(delay).await;
        if stop.is_set() {
            return Err(faults::stopped(error));
        }
        match reconnect(url, schema, slot, core.head()).await {
            Ok(connected) => {
                core.retry.succeeded(kind);
                return Ok(connected);
            }
            Err(e) if e.is_transient() => error = e,
            Err(e) => return Err(e),
        }
    }
}

async fn reconnect(
    url: &str,
    schema: &str,
    slot: &str,
    head: u64,
) -> Result<(Client, ReplicationClient)> {
    let client = connect(url, schema).await?;
    let replication = start_stream(url, schema, slot, head).await?;
    Ok((client, replication))
}

fn row_from(tuple: Vec<Datum>, old: Option<&Row>) -> Result<Row> {
    tuple
        .into_iter()
        .enumerate()
        .map(|(i, datum)| match datum {
            Datum::Value(v) => Ok(v),
            Datum::Unchanged => old.and_then(|o| o.get(i).cloned()).ok_or_else(|| {
                Error::source("an unchanged TOAST value arrived without the old row".to_string())
            }),
        })
        .collect()
}

async fn handle_event(
    source: &str,
    core: &mut CaptureCore,
    decoder: &mut Decoder,
    client: &Client,
    event: ReplicationEvent,
    marker: &str,
    caught_up: &mut bool,
) -> Result<()> {
    match event {
        ReplicationEvent::Begin { final_lsn, xid, .. } => {
            core.begin(xid as u64, final_lsn.as_u64());
        }
        ReplicationEvent::Commit {
            end_lsn,
            commit_time_micros,
            ..
        } => {
            core.commit(end_lsn.as_u64(), commit_time_micros + PG_EPOCH_US);
        }
        ReplicationEvent::Message {
            prefix, content, ..
        } => {
            if prefix == CAUGHT_UP_PREFIX && content.as_ref() == marker.as_bytes() {
                *caught_up = true;
            }
        }
        ReplicationEvent::XLogData { data, .. } => {
            let message = pgoutput::decode(&data)
                .map_err(|e| Error::source(format!("cannot decode a pgoutput message: {e}")))?;
            match message {
                Message::Relation(relation) => {
                    let columns: Vec<String> =
                        relation.columns.iter().map(|c| c.name.clone()).collect();
                    if let Some(current) = core.schema(&relation.name).cloned() {
                        if current.columns != columns {
                            check_added_columns(client, &relation.name, &current, &columns).await?;
                            let key: Vec<usize> = current
                                .key
                                .iter()
                                .filter_map(|&i| current.columns.get(i))
                                .filter_map(|name| columns.iter().position(|c| c == name))
                                .collect();
                            core.change_schema(&relation.name, columns, key)?;
                        }
                    }
                    decoder
                        .relations
                        .insert(relation.id, (relation.name, relation.replica_identity));
                }
                Message::Insert { relation, new } => {
                    let (table, _) = table_of(decoder, relation)?;
                    core.change(
                        &table,
                        Op::Insert,
                        None,
                        Some(row_from(new, None)?),
                        0,
                        None,
                    )?;
                }
                Message::Update { relation, old, new } => {
                    let (table, identity) = table_of(decoder, relation)?;
                    let old = match old {
                        Some(old) if !old.key_only => row_from(old.tuple, None)?,
                        _ => return Err(without_old_row(source, &table, identity, "an update")),
                    };
                    let new = row_from(new, Some(&old))?;
                    core.change(&table, Op::Update, Some(old), Some(new), 0, None)?;
                }
                Message::Delete { relation, old } => {
                    let (table, identity) = table_of(decoder, relation)?;
                    if old.key_only {
                        return Err(without_old_row(source, &table, identity, "a delete"));
                    }
                    core.change(
                        &table,
                        Op::Delete,
                        Some(row_from(old.tuple, None)?),
                        None,
                        0,
                        None,
                    )?;
                }
                Message::Truncate { relations } => {
                    for relation in relations {
                        let (table, _) = table_of(decoder, relation)?;
                        core.change(&table, Op::Truncate, None, None, 0, None)?;
                    }
                }
                Message::Other(_) => {}
            }
        }
        ReplicationEvent::KeepAlive { .. } | ReplicationEvent::StoppedAt { .. } => {}
    }
    Ok(())
}

/// An update or delete that arrived without its whole old row: the table (or the partition
/// that holds the row) was not REPLICA IDENTITY FULL when the change was made. Its tenant
/// cannot be known, so capture stops before the transaction reaches the vault.
fn without_old_row(source: &str, table: &str, identity: u8, what: &str) -> Error {
    let identity = identity_name(&(identity as char).to_string());
    Error::source(format!(
        "table {table}: {what} arrived without its whole old row (replica identity {identity} \
         on the table or on the partition holding the row, not FULL), so its tenant cannot be \
         known; capture stops and stores nothing of its transaction. Run `ALTER TABLE {} \
         REPLICA IDENTITY FULL` (and on its partitions); the changes made while it was not FULL \
         cannot be attributed: capture the source into a new vault (`lifeboat source drop \
         {source}`, then `lifeboat init` at a new [vault] url)",
        as_typed(table)
    ))
}

/// A table's name as a person would type it in SQL: quoted only when it must be.
fn as_typed(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

fn table_of(decoder: &Decoder, relation: u32) -> Result<(String, u8)> {
    decoder.relations.get(&relation).cloned().ok_or_else(|| {
        Error::source(format!(
            "a change to relation {relation} arrived before its description"
        ))
    })
}

/// A column added with a default gives existing rows a value that the stream never
/// shows: refuse, naming the table and column, rather than store those rows without it.
async fn check_added_columns(
    client: &Client,
    table: &str,
    current: &TableSchema,
    columns: &[String],
) -> Result<()> {
    for column in columns.iter().filter(|c| !current.columns.contains(c)) {
        let has_default = simple_value(
            client,
            &format!(
                "SELECT (a.atthasmissing OR d.adbin IS NOT NULL)::text FROM pg_attribute a \
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = {}::regclass AND a.attname = {}",
                quote_literal(&quote_ident(table)),
                quote_literal(column)
            ),
        )
        .await?;
        if has_default.as_deref() == Some("true") {
            return Err(Error::source(format!(
                "table {table}: column {column} was added with a default, which gave every \
                 existing row a value the replication stream does not carry; capture stops \
                 rather than store those rows without it. Capture this source into a new vault \
                 to protect the new shape (`lifeboat source drop` first)"
            )));
        }
    }
    Ok(())
}

/// Hand every row of `tenant` in every tenant table to `visit`, as the database sends
/// them (COPY), with the table's name and columns.
async fn for_each_tenant_row(
    client: &Client,
    tenancy: &SourceTenancy,
    tenant: &TenantKey,
    visit: &mut RowVisitor<'_>,
) -> Result<()> {
    for table in tenancy.tenant_tables() {
        let name = &table.schema.name;
        let query = tenant_query(
            tenancy,
            &table.schema,
            &quote_literal(tenant.as_str()),
            Dialect::Postgres,
        )?;
        let stream = client
            .copy_out(&format!("COPY ({query}) TO STDOUT"))
            .await
            .map_err(|e| pg_error(&format!("cannot read {name}"), e))?;
        read_copy(stream, name, |row| {
            visit(name, &table.schema.columns, row);
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Rows of an ID lookup (`guard::id_query`): the ID, its label when asked for, its tenant.
async fn lookup_ids(
    client: &Client,
    sql: &str,
    with_label: bool,
) -> Result<Vec<crate::guard::IdRow>> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| pg_error("cannot look the IDs up", e))?;
    let mut out = Vec::new();
    for message in messages {
        if let SimpleQueryMessage::Row(row) = message {
            let text = |i: usize| row.get(i).map(str::to_string);
            let tenant_at = if with_label { 2 } else { 1 };
            out.push(crate::guard::IdRow {
                id: text(0).map(Value::Text).unwrap_or(Value::Null),
                label: if with_label { text(1) } else { None },
                tenant: text(tenant_at).map(TenantKey::new),
            });
        }
    }
    Ok(out)
}

/// How many rows `tenant` has in the table of `schema`.
async fn count_tenant_rows(
    client: &Client,
    tenancy: &SourceTenancy,
    schema: &TableSchema,
    tenant: &TenantKey,
) -> Result<u64> {
    let query = tenant_query(
        tenancy,
        schema,
        &quote_literal(tenant.as_str()),
        Dialect::Postgres,
    )?;
    let text = simple_value(client, &format!("SELECT count(*) FROM ({query}) x"))
        .await?
        .unwrap_or_default();
    Ok(text.parse().unwrap_or(0))
}

/// The server's WAL insert position: the source's position now.
async fn position(client: &Client) -> Result<u64> {
    let text = simple_value(client, "SELECT pg_current_wal_insert_lsn()::text")
        .await?
        .unwrap_or_default();
    lifeboat_core::model::parse_position(&text)
        .ok_or_else(|| Error::source(format!("cannot read the WAL position {text:?}")))
}

/// Run `steps` in one transaction and count, per tenant and table, the rows they touched.
/// Row triggers that record every change into a temporary table are created inside the
/// transaction (so cascades and triggers count) and dropped before it ends; the
/// transaction commits only when `decide` says so.
async fn run_steps(
    client: &mut Client,
    tenancy: &SourceTenancy,
    schema: &str,
    steps: &[String],
    decide: impl FnOnce(&crate::guard::Effect) -> bool,
) -> Result<(crate::guard::Effect, bool)> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| pg_error("cannot begin the operation's transaction", e))?;
    let mut records = Vec::new();
    for (table, column, sql) in crate::guard::keymap_queries(tenancy)? {
        let mut entries = Vec::new();
        for message in tx
            .simple_query(&sql)
            .await
            .map_err(|e| pg_error(&format!("cannot read the keys of {table}"), e))?
        {
            if let SimpleQueryMessage::Row(row) = message {
                if let (Some(key), Some(tenant)) = (row.get(0), row.get(1)) {
                    entries.push((Value::Text(key.to_string()), TenantKey::new(tenant)));
                }
            }
        }
        records.push(lifeboat_core::model::KeymapRecord {
            table,
            column,
            entries,
        });
    }
    let mut keymaps = lifeboat_core::tenancy::Keymaps::from_records(tenancy, &records);
    let function = format!(
        "{}.lifeboat_effect_{}",
        quote_ident(schema),
        std::process::id()
    );
    let mut setup = format!(
        "CREATE TEMP TABLE lifeboat_effect (seq bigserial, tbl text, op text, old jsonb, new jsonb) \
         ON COMMIT DROP;
         CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           INSERT INTO lifeboat_effect (tbl, op, old, new) VALUES (TG_TABLE_NAME, TG_OP,
             CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
             CASE WHEN TG_OP IN ('UPDATE', 'INSERT') THEN to_jsonb(NEW) END);
           RETURN NULL;
         END $f$;"
    );
    let mut teardown = String::new();
    for table in &tenancy.tables {
        let target = format!(
            "{}.{}",
            quote_ident(schema),
            quote_ident(&table.schema.name)
        );
        setup.push_str(&format!(
            "CREATE TRIGGER lifeboat_effect AFTER INSERT OR UPDATE OR DELETE ON {target} \
             FOR EACH ROW EXECUTE FUNCTION {function}();
             CREATE TRIGGER lifeboat_effect_truncate AFTER TRUNCATE ON {target} \
             FOR EACH STATEMENT EXECUTE FUNCTION {function}();"
        ));
        teardown.push_str(&format!(
            "DROP TRIGGER lifeboat_effect ON {target}; \
             DROP TRIGGER lifeboat_effect_truncate ON {target};"
        ));
    }
    teardown.push_str(&format!("DROP FUNCTION {function}();"));
    tx.batch_execute(&setup)
        .await
        .map_err(|e| pg_error("cannot set up the measurement of the operation", e))?;
    for step in steps {
        tx.batch_execute(step)
            .await
            .map_err(|e| pg_error(&format!("step failed (in: {step})"), e))?;
    }
    let rows = tx
        .query(
            "SELECT tbl, op, old::text, new::text FROM lifeboat_effect ORDER BY seq",
            &[],
        )
        .await
        .map_err(|e| pg_error("cannot read the measured changes", e))?;
    let mut log = Vec::new();
    for row in rows {
        let table: String = row.get(0);
        let op: String = row.get(1);
        let op = match op.as_str() {
            "INSERT" => Op::Insert,
            "UPDATE" => Op::Update,
            "DELETE" => Op::Delete,
            _ => {
                return Err(Error::usage(format!(
                    "a step truncates {table}: a truncation cannot be measured per tenant; \
                     delete the rows instead"
                )))
            }
        };
        let columns = tenancy
            .table(&table)
            .map(|t| t.schema.columns.clone())
            .unwrap_or_default();
        let parse = |text: Option<String>| -> Result<Option<Row>> {
            text.map(|t| {
                let json: serde_json::Value = serde_json::from_str(&t)
                    .map_err(|e| Error::source(format!("a recorded row: {e}")))?;
                crate::guard::row_from_json(&columns, &json)
            })
            .transpose()
        };
        log.push(crate::guard::Recorded {
            table,
            op,
            old: parse(row.get(2))?,
            new: parse(row.get(3))?,
        });
    }
    let effect = crate::guard::count_effect(tenancy, &mut keymaps, log)?;
    tx.batch_execute(&teardown)
        .await
        .map_err(|e| pg_error("cannot remove the measurement triggers", e))?;
    let commit = decide(&effect);
    if commit {
        tx.commit()
            .await
            .map_err(|e| pg_error("cannot commit the operation", e))?;
    } else {
        tx.rollback()
            .await
            .map_err(|e| pg_error("cannot roll the operation back", e))?;
    }
    Ok((effect, commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes() {
        let mut out = Vec::new();
        parse_copy_line(b"1\t\\N\ta\\tb\\\\c\\nd\t\\101\\x42", &mut out).expect("parse");
        assert_eq!(
            out,
            vec![
                Value::Text("1".into()),
                Value::Null,
                Value::Text("a\tb\\c\nd".into()),
                Value::Text("AB".into()),
            ]
        );
        // Parsed again into the same buffer: a shorter row, values of other kinds.
        parse_copy_line(b"\\N\tx\\\\y", &mut out).expect("parse");
        assert_eq!(out, vec![Value::Null, Value::Text("x\\y".into())]);
        parse_copy_line(b"a\t\t\\N", &mut out).expect("parse");
        assert_eq!(
            out,
            vec![Value::Text("a".into()), Value::Text("".into()), Value::Null]
        );
        assert!(parse_copy_line(b"ok\t\xff", &mut out).is_err());
    }

    #[test]
    fn transient_and_permanent_postgres_failures_are_told_apart() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "55006", "40P01",
        ] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
        // Bad credentials, an undefined object (a dropped slot), a syntax error, a unique
        // violation, wal_level too low for a slot (55000).
        for code in ["28P01", "28000", "42704", "42601", "23505", "55000"] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
        use pgwire_replication::PgWireError;
        let server = |text: &str| PgWireError::Server(text.to_string());
        assert!(replication_error_is_transient(&server(
            "terminating connection due to administrator command (SQLSTATE 57P01)"
        )));
        assert!(replication_error_is_transient(&server(
            "replication slot \"s\" is active for PID 7 (SQLSTATE 55006)"
        )));
        assert!(!replication_error_is_transient(&server(
            "replication slot \"s\" does not exist (SQLSTATE 42704)"
        )));
        assert!(!replication_error_is_transient(&server("no code at all")));
        assert!(replication_error_is_transient(&PgWireError::from(
            std::io::Error::from(std::io::ErrorKind::ConnectionReset)
        )));
        assert!(!replication_error_is_transient(&PgWireError::Auth(
            "password authentication failed".into()
        )));
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient() {
        // Port 1 on the loopback: nothing listens there.
        let e = connect("postgres://lifeboat@127.0.0.1:1/db", "public")
            .await
            .expect_err("refused");
        assert!(e.is_transient(), "{e}");
        assert!(e.message().contains("127.0.0.1:1"), "{e}");
    }

    #[test]
    fn slot_names_are_valid() {
        assert_eq!(slot_name("Tracker-EU", "prod"), "lifeboat_tracker_eu_prod");
        let long = slot_name("tracker", &"x".repeat(80));
        assert_eq!(long.len(), 63);
        assert_ne!(long, slot_name("tracker", &"x".repeat(81)));
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
