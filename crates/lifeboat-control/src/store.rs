//! The store itself: opening it (and making its schema), where it is, and the change
//! counter that every write to incidents, components or campaigns moves.

use std::collections::BTreeSet;

use lifeboat_core::{Error, Result};

use crate::db::Db;

/// The guard's tables: the audit log (with the formats of its entries in `control_meta`
/// and the last entry known to be anchored), plan signatures, applies, tenants, halts,
/// apply locks and the wave each apply is about to commit. Valid for SQLite and
/// PostgreSQL: integers are BIGINT (64-bit in both). A store made before the audit log's
/// format 2 gets `audit_v1_through` = its last entry when first opened by this build: the
/// entries up to it keep format 1, every later one is format 2; its anchored entries
/// likewise.
const GUARD_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    subject TEXT NOT NULL, details TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_head (one BIGINT PRIMARY KEY CHECK (one = 1),
    seq BIGINT NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (one, seq, hash)
    VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000')
    ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS plan_signatures (plan TEXT NOT NULL, role TEXT NOT NULL,
    name TEXT NOT NULL, key TEXT NOT NULL, signature TEXT NOT NULL, at TEXT NOT NULL,
    PRIMARY KEY (plan, role, name));
CREATE TABLE IF NOT EXISTS control_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO control_meta (name, value)
    SELECT 'audit_v1_through', CAST(seq AS TEXT) FROM audit_head WHERE one = 1
    ON CONFLICT DO NOTHING;
INSERT INTO control_meta (name, value) VALUES ('audit_format', '2') ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS audit_anchored (one BIGINT PRIMARY KEY CHECK (one = 1),
    seq BIGINT NOT NULL);
INSERT INTO audit_anchored (one, seq)
    SELECT 1, seq FROM audit_head WHERE one = 1
    ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS applies (plan TEXT PRIMARY KEY, state TEXT NOT NULL,
    restore_point TEXT NOT NULL, at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applied (plan TEXT NOT NULL, tenant TEXT NOT NULL,
    wave BIGINT NOT NULL, point TEXT NOT NULL, PRIMARY KEY (plan, tenant));
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, state TEXT NOT NULL,
    plan TEXT NOT NULL, deleted_at TEXT NOT NULL, deleted_at_us BIGINT NOT NULL,
    point TEXT NOT NULL, purged_at TEXT);
CREATE TABLE IF NOT EXISTS halts (plan TEXT PRIMARY KEY, by_whom TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apply_locks (plan TEXT PRIMARY KEY, holder TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending_waves (plan TEXT PRIMARY KEY, wave BIGINT NOT NULL,
    tenants TEXT NOT NULL, point TEXT NOT NULL, at TEXT NOT NULL);
";

/// The status page's tables: components and their status changes, incidents (their
/// updates' translations and their postmortems too), campaigns, tenant attributes and the
/// change counter. A store made before translations or status changes were kept gets their
/// tables, empty, when this build first opens it.
const STATUS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS components (id TEXT PRIMARY KEY, source TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL, status TEXT NOT NULL, position BIGINT NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, name TEXT NOT NULL,
    status TEXT NOT NULL, impact TEXT NOT NULL, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, started_at TEXT NOT NULL, monitoring_at TEXT,
    resolved_at TEXT);
CREATE TABLE IF NOT EXISTS incident_updates (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
    status TEXT NOT NULL, body TEXT NOT NULL, created_at TEXT NOT NULL,
    affected TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incident_postmortems (incident TEXT PRIMARY KEY,
    body TEXT NOT NULL, published_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS incident_components (incident TEXT NOT NULL,
    component TEXT NOT NULL, PRIMARY KEY (incident, component));
CREATE TABLE IF NOT EXISTS incident_update_translations (update_id TEXT NOT NULL,
    lang TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (update_id, lang));
CREATE TABLE IF NOT EXISTS component_changes (component TEXT NOT NULL,
    status TEXT NOT NULL, at TEXT NOT NULL, at_us BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS component_changes_at ON component_changes (at_us);
CREATE TABLE IF NOT EXISTS campaigns (id TEXT PRIMARY KEY, incident TEXT NOT NULL,
    target TEXT NOT NULL, target_time TEXT NOT NULL, batch_size BIGINT NOT NULL,
    priority TEXT NOT NULL, created_at TEXT NOT NULL, created_at_us BIGINT NOT NULL,
    created_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS campaign_tenants (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
    rank BIGINT NOT NULL, token TEXT NOT NULL UNIQUE, users BIGINT NOT NULL,
    stage TEXT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0, reason TEXT,
    worker TEXT, lease_until_us BIGINT, started_at_us BIGINT, done_at_us BIGINT,
    awaiting_since_us BIGINT, rows_written BIGINT, PRIMARY KEY (campaign, tenant));
CREATE TABLE IF NOT EXISTS campaign_progress (campaign TEXT PRIMARY KEY,
    template TEXT NOT NULL, every_us BIGINT, last_posted_us BIGINT NOT NULL,
    milestone BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS campaign_tenants_stage ON campaign_tenants (stage, campaign, rank);
CREATE TABLE IF NOT EXISTS tenant_attributes (tenant TEXT NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, PRIMARY KEY (tenant, name));
CREATE TABLE IF NOT EXISTS status_version (one BIGINT PRIMARY KEY CHECK (one = 1),
    version BIGINT NOT NULL);
INSERT INTO status_version (one, version) VALUES (1, 0) ON CONFLICT DO NOTHING;
";

/// The audit log format this build writes and reads (docs/guard.md).
const AUDIT_FORMAT: &str = "2";

/// Refuse a store whose audit log a newer build wrote in a format this one does not know.
fn check_audit_format(db: &mut Db) -> Result<()> {
    let format = db
        .query_one(
            "SELECT value FROM control_meta WHERE name = 'audit_format'",
            &[],
        )?
        .map(|r| r.text(0))
        .transpose()?;
    match format.as_deref() {
        Some(AUDIT_FORMAT) => Ok(()),
        other => Err(Error::config(format!(
            "control store {}: its audit log is in format {}, this build knows format \
             {AUDIT_FORMAT} (and reads format 1): use a lifeboat that knows it",
            db.describe(),
            other.unwrap_or("(none)")
        ))),
    }
}

/// Tenant contacts and the copy each campaign keeps (contacts.rs).
const CONTACTS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contacts (tenant TEXT NOT NULL, email TEXT NOT NULL,
    name TEXT, locale TEXT, origin TEXT NOT NULL, read_at TEXT, updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant, origin, email));
CREATE TABLE IF NOT EXISTS campaign_contacts (campaign TEXT NOT NULL, tenant TEXT NOT NULL,
    email TEXT NOT NULL, name TEXT, locale TEXT, origin TEXT NOT NULL, read_at TEXT,
    PRIMARY KEY (campaign, tenant, origin, email));
";

/// A connection to the control store. Every operation is a method, defined beside its
/// concept (audit.rs, applies.rs, lifecycle.rs, incidents.rs, maintenances.rs,
/// campaigns.rs, contacts.rs, outbox.rs, subscribers.rs, support.rs).
pub struct ControlStore {
    pub(crate) db: Db,
}

/// Now (the control store's clock, `lifeboat_core::time::clock_us`): microseconds since
/// the epoch, and as RFC 3339 text.
pub(crate) fn now() -> (i64, String) {
    let us = lifeboat_core::time::clock_us();
    (us, lifeboat_core::time::format_us(us))
}

/// Move the change counter (`status_version`) inside the caller's transaction: for a
/// write that decides inside its transaction whether it changed anything.
pub(crate) fn status_changed(db: &mut Db) -> Result<()> {
    db.execute(
        "UPDATE status_version SET version = version + 1 WHERE one = 1",
        &[],
    )?;
    Ok(())
}

/// Now, as RFC 3339 text.
pub(crate) fn now_text() -> String {
    now().1
}

impl ControlStore {
    /// Open (and create) the control store at `url`: `sqlite:///abs/file`, a file path,
    /// or `postgres://…`.
    pub fn open(url: &str) -> Result<ControlStore> {
        // The schema is made once per store and process: workers open the store often, and
        // the DDL takes locks (PostgreSQL) or writes (SQLite) even when there is nothing
        // to create.
        static MADE: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());
        let mut db = Db::open(url)?;
        let done = MADE.lock().map(|m| m.contains(url)).unwrap_or(false);
        if !done {
            db.batch(GUARD_SCHEMA)?;
            db.batch(STATUS_SCHEMA)?;
            db.batch(crate::leases::SCHEMA)?;
            db.batch(crate::maintenances::SCHEMA)?;
            crate::maintenances::add_columns(&mut db)?;
            db.batch(CONTACTS_SCHEMA)?;
            db.batch(crate::outbox::SCHEMA)?;
            db.batch(crate::subscribers::SCHEMA)?;
            crate::subscribers::add_columns(&mut db)?;
            db.batch(crate::support::SCHEMA)?;
            db.batch(crate::exports::SCHEMA)?;
            db.batch(crate::campaigns::SCHEMA)?;
            crate::exports::add_columns(&mut db)?;
            if let Ok(mut made) = MADE.lock() {
                made.insert(url.to_string());
            }
        }
        check_audit_format(&mut db)?;
        Ok(ControlStore { db })
    }

    /// Where it is, for messages (a PostgreSQL URL without its password).
    pub fn describe(&self) -> String {
        self.db.describe()
    }

    /// Give up waiting for another connection's locks after `wait` (the default is 30
    /// seconds): a server that must answer quickly fails the statement instead.
    pub fn limit_lock_waits(&mut self, wait: std::time::Duration) -> Result<()> {
        self.db.limit_lock_waits(wait)
    }

    /// Run `work` in a write transaction that also moves the change counter.
    pub(crate) fn write<T>(&mut self, work: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        self.db.transaction(|db| {
            let out = work(db)?;
            status_changed(db)?;
            Ok(out)
        })
    }

    /// A number that grows with every change to incidents, components or campaigns: the
    /// status page rebuilds its snapshot when it moves.
    pub fn status_version(&mut self) -> Result<i64> {
        Ok(self
            .db
            .query_one("SELECT version FROM status_version", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0))
    }
}
